//! The supervisor's own memory: one malloc arena for all its threads, free heap pages given back
//! after a burst of work, and the file pages its start used dropped once it is over.

/// glibc gives each thread that allocates while another holds the main arena an arena of its own
/// (a 64 MiB reservation whose first pages are touched): the spawner, the output writer, the
/// sweeper and tokio's blocking threads each cost one, ~50 kB of RSS in all. They allocate
/// rarely and briefly, so one shared arena costs them nothing measurable. Call before any thread
/// starts. A no-op elsewhere than glibc.
pub fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called from main before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the free pages inside glibc's heaps to the kernel (`malloc_trim(0)`).
///
/// glibc gives back only the free memory at the top of a heap on its own; a start or stop of
/// thousands of apps leaves the freed memory of its transient buffers (command lines,
/// environments, state-file snapshots) between live allocations, where it stayed resident: about
/// 7 kB per app after a storm of 2,000. The call walks the free chunks (a millisecond or so at
/// thousands of apps) and is made after each state-file write, which is rarer and costlier.
/// A no-op where the C library is not glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and madvises glibc's own free lists, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps this process's clean, read-only file pages: the binary's code and read-only data, and
/// those of libc, the dynamic linker and libgcc_s (`madvise(MADV_DONTNEED)` on each private,
/// non-writable file mapping that holds no page of its own). Returns the bytes of mappings
/// advised.
///
/// A supervisor's RSS is mostly such pages, and most of them served only its start: the dynamic
/// linker's relocation of the binary, argument and config parsing, the first spawns. They are
/// page cache, shared and unchanged, so dropping them from this process's page tables loses
/// nothing: whatever code runs later faults its pages back in from the cache (a minor fault,
/// with the kernel's 64 KiB fault-around), and only that stays resident. With two apps it took
/// about 1.4 MB off a supervisor's 4.6 MB. Call it once the start is over; a mapping holding
/// anonymous pages (a relocated RELRO segment, a breakpoint a debugger wrote) is left alone, as
/// dropping those would lose their contents.
///
/// The supervisor maps and unmaps no files as it runs (glibc never unloads the NSS modules it
/// may dlopen), so a mapping read from /proc/self/smaps is still the same one when advised.
/// A no-op (returning 0) elsewhere than Linux.
pub fn drop_clean_file_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut advised = 0;
        for (start, end) in clean_file_mappings(&smaps) {
            let Some(len) = end.checked_sub(start) else {
                continue;
            };
            // SAFETY: the range is a whole private, read-only file mapping of this process with
            // no anonymous (written) page: MADV_DONTNEED only drops page-table entries, and the
            // next access reads the same bytes from the file's pages again.
            let done =
                unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 };
            if done {
                advised += len;
            }
        }
        advised
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The (start, end) of each mapping in a /proc/<pid>/smaps text that is private, not writable,
/// of a file (a path, not `[vdso]` or `[heap]`), and holds no anonymous page.
#[cfg(any(target_os = "linux", test))]
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            // A mapping's header: "start-end perms offset dev inode [path]".
            let range = usize::from_str_radix(start, 16)
                .ok()
                .zip(usize::from_str_radix(end, 16).ok());
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let private_read_only =
                perms.len() == 4 && perms.as_bytes()[1] == b'-' && perms.as_bytes()[3] == b'p';
            current = range.filter(|_| private_read_only && path.starts_with('/'));
        } else if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if fields.next() == Some("0") {
                    found.push(range);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_only_file_mappings_without_anonymous_pages_are_dropped() {
        let smaps = "\
55d0c0000000-55d0c00f4000 r--p 00000000 fe:01 123 /usr/bin/nodeguard
Rss:                 576 kB
Anonymous:             0 kB
55d0c00f4000-55d0c0521000 r-xp 000f3000 fe:01 123 /usr/bin/nodeguard
Anonymous:             0 kB
55d0c0521000-55d0c0536000 r--p 00520000 fe:01 123 /usr/bin/nodeguard
Anonymous:            84 kB
55d0c0536000-55d0c0538000 rw-p 00534000 fe:01 123 /usr/bin/nodeguard
Anonymous:             8 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:           352 kB
7f0000000000-7f0000001000 r--s 00000000 fe:01 9 /dev/shm/shared
Anonymous:             0 kB
7f0000010000-7f0000020000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000030000-7f0000040000 r-xp 00028000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![
                (0x55d0c0000000, 0x55d0c00f4000),
                (0x55d0c00f4000, 0x55d0c0521000),
                (0x7f0000030000, 0x7f0000040000),
            ]
        );
    }

    fn rss_file_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("RssFile:"))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn dropped_pages_leave_the_rss_and_read_back_the_same() {
        static TEXT: &str = "read-only data of the test binary";
        // SAFETY: reads 32 bytes of this function's own machine code (mapped readable).
        let code = || unsafe {
            std::slice::from_raw_parts(rss_file_kb as fn() -> u64 as *const u8, 32).to_vec()
        };
        let (code_before, text_before) = (code(), TEXT.as_bytes().to_vec());
        let before = rss_file_kb();
        let advised = drop_clean_file_pages();
        let after = rss_file_kb();
        assert!(advised > 0, "this test binary has clean file mappings");
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        assert_eq!(code(), code_before);
        assert_eq!(TEXT.as_bytes(), &text_before[..]);
        assert_eq!(format!("{:?}", Some(1u8)), "Some(1)");
    }
}
