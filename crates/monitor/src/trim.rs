//! Gives back the read-only file pages that loading and starting the monitor mapped into the app
//! and that it no longer needs (Linux only; elsewhere every function here does nothing).
//!
//! Why: the kernel maps file pages 64 kB at a time around each fault ("fault-around"; an
//! `madvise(MADV_RANDOM)` does not change that, checked on Linux 6.18). Each Node-API function the
//! addon calls is bound by name, and every lookup touches a few scattered 4 kB pages of node's
//! multi-MB `.gnu.hash`/`.dynsym`/`.dynstr`: about 0.6 MB of node's symbol tables end up in the
//! app's RSS although they are read once. Likewise the addon's own code and read-only data
//! used only to register and connect.
//!
//! What: [`snapshot`] (an ELF constructor, run when the addon is loaded, before Node-API
//! registration and before any lazily bound Node-API call) records which pages of node's
//! read-only segment holding those tables are mapped. [`trim`] (after the first few pings) then
//! unmaps, with `madvise(MADV_DONTNEED)`, the pages of that segment mapped since, and every mapped
//! page of the addon's own read-only and executable segments.
//!
//! Harmless to the app: these are clean, read-only, file-backed private pages; unmapping one only
//! drops this process's page-table entry (the page stays in the page cache, shared with every
//! other process) and the next read maps it again, with the same contents. Pages that were
//! copied on write (a debugger's breakpoint) are anonymous and never unmapped (pagemap bit 61),
//! nor are writable or RELRO segments (their contents are relocated). Pages node had mapped
//! before the addon loaded are left alone: this gives back only what the monitor itself caused.
//! Cost: reading a few kB of `/proc/self/pagemap` a few times (see [`trim_after_ping`]).

/// Left out of the unit-test build, like `addon`: it acts on the process that loaded the addon.
#[cfg(all(target_os = "linux", target_pointer_width = "64", not(test)))]
mod linux {
    use std::ffi::c_void;
    use std::os::unix::fs::FileExt;
    use std::sync::{Mutex, PoisonError};

    const PAGE: usize = 4096;
    /// `/proc/self/pagemap`: the page is mapped.
    const PRESENT: u64 = 1 << 63;
    /// `/proc/self/pagemap`: the page is file-backed (not a private copy).
    const FILE_PAGE: u64 = 1 << 61;

    /// A page-aligned range of this process's address space.
    #[derive(Clone, Copy)]
    struct Range {
        start: usize,
        end: usize,
    }

    /// Node's symbol-table segment and which of its pages were mapped before the addon ran.
    struct Node {
        range: Range,
        mapped: Vec<bool>,
    }

    struct State {
        node: Option<Node>,
        addon: Vec<Range>,
    }

    static STATE: Mutex<Option<State>> = Mutex::new(None);

    /// The pagemap entries of `range`; `None` if they cannot be read.
    fn pagemap(range: Range) -> Option<Vec<u64>> {
        let pages = (range.end - range.start) / PAGE;
        let mut bytes = vec![0u8; pages.checked_mul(8)?];
        let file = std::fs::File::open("/proc/self/pagemap").ok()?;
        let offset = u64::try_from(range.start / PAGE).ok()?.checked_mul(8)?;
        file.read_exact_at(&mut bytes, offset).ok()?;
        Some(
            bytes
                .chunks_exact(8)
                .map(|b| u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        )
    }

    /// Unmaps the file-backed pages of `range` that are mapped and for which `drop(index)` holds,
    /// a run of pages per call.
    fn unmap(range: Range, drop: impl Fn(usize) -> bool) {
        let Some(entries) = pagemap(range) else {
            return;
        };
        let mut run: Option<usize> = None;
        for index in 0..=entries.len() {
            let wanted = entries
                .get(index)
                .is_some_and(|&e| e & PRESENT != 0 && e & FILE_PAGE != 0 && drop(index));
            match (wanted, run) {
                (true, None) => run = Some(index),
                (false, Some(first)) => {
                    run = None;
                    let start = range.start + first * PAGE;
                    let len = (index - first) * PAGE;
                    // SAFETY: the range lies inside a read-only, non-RELRO PT_LOAD segment of a
                    // loaded object, mapped privately from its file and never written (the pages
                    // are file pages, checked above): dropping them only makes the next access
                    // map the same file contents again.
                    unsafe {
                        libc::madvise(start as *mut c_void, len, libc::MADV_DONTNEED);
                    }
                }
                _ => {}
            }
        }
    }

    /// The segments found by [`find`].
    struct Found {
        /// Objects visited so far.
        visited: usize,
        node: Option<Range>,
        addon: Vec<Range>,
    }

    /// Address of a function in this addon, to recognise its own loaded object.
    fn here() -> usize {
        here as fn() -> usize as usize
    }

    /// An ELF address or size as a `usize` (the same width here: this module is 64-bit only).
    fn word(value: u64) -> usize {
        usize::try_from(value).unwrap_or(usize::MAX)
    }

    /// Page-aligned ranges of the read-only (R or R+X, not W) PT_LOAD segments of `info` that are
    /// not covered by its PT_GNU_RELRO.
    ///
    /// # Safety
    /// `info` comes from `dl_iterate_phdr`.
    unsafe fn readonly_segments(info: &libc::dl_phdr_info) -> Vec<Range> {
        let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
        let base = word(info.dlpi_addr);
        let relro: Option<Range> = phdrs
            .iter()
            .find(|p| p.p_type == libc::PT_GNU_RELRO)
            .map(|p| Range {
                start: base.wrapping_add(word(p.p_vaddr)),
                end: base
                    .wrapping_add(word(p.p_vaddr))
                    .wrapping_add(word(p.p_memsz)),
            });
        phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W == 0)
            .filter_map(|p| {
                let start = base.wrapping_add(word(p.p_vaddr));
                let end = start.wrapping_add(word(p.p_memsz));
                // Whole pages only: a partial last page may be shared with the next segment.
                let range = Range {
                    start: start.checked_add(PAGE - 1)? & !(PAGE - 1),
                    end: end & !(PAGE - 1),
                };
                let overlaps = relro.is_some_and(|r| r.start < range.end && range.start < r.end);
                (range.start < range.end && !overlaps).then_some(range)
            })
            .collect()
    }

    /// The main program's read-only segment holding its dynamic string table (`DT_STRTAB`), or,
    /// if that cannot be told, none.
    ///
    /// # Safety
    /// `info` comes from `dl_iterate_phdr` for the main program.
    unsafe fn symbol_segment(info: &libc::dl_phdr_info) -> Option<Range> {
        /// An entry of the dynamic section (`ElfN_Dyn`).
        #[repr(C)]
        struct Dyn {
            tag: isize,
            value: usize,
        }
        const DT_NULL: isize = 0;
        const DT_STRTAB: isize = 5;
        let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
        let base = word(info.dlpi_addr);
        let dynamic = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
        let mut entry = base.wrapping_add(word(dynamic.p_vaddr)) as *const Dyn;
        let mut strtab = None;
        loop {
            let d = &*entry;
            if d.tag == DT_NULL {
                break;
            }
            if d.tag == DT_STRTAB {
                strtab = Some(d.value);
                break;
            }
            entry = entry.add(1);
        }
        let strtab = strtab?;
        let segments = readonly_segments(info);
        // glibc stores DT_* addresses already relocated; elsewhere they may be relative.
        [strtab, base.wrapping_add(strtab)]
            .into_iter()
            .find_map(|address| {
                segments
                    .iter()
                    .copied()
                    .find(|r| r.start <= address && address < r.end)
            })
    }

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        let found = &mut *data.cast::<Found>();
        let info = &*info;
        let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
        let base = word(info.dlpi_addr);
        if found.visited == 0 {
            // The first object is the main program (node).
            found.node = symbol_segment(info);
        }
        found.visited = found.visited.saturating_add(1);
        let ours = phdrs.iter().any(|p| {
            let start = base.wrapping_add(word(p.p_vaddr));
            p.p_type == libc::PT_LOAD
                && start <= here()
                && here() < start.wrapping_add(word(p.p_memsz))
        });
        if ours {
            found.addon = readonly_segments(info);
        }
        0
    }

    pub fn snapshot() {
        let mut found = Found {
            visited: 0,
            node: None,
            addon: Vec::new(),
        };
        // SAFETY: `visit` only reads what dl_iterate_phdr hands it and writes `found`.
        unsafe {
            libc::dl_iterate_phdr(Some(visit), (&raw mut found).cast());
        }
        let node = found.node.and_then(|range| {
            let mapped = pagemap(range)?.iter().map(|e| e & PRESENT != 0).collect();
            Some(Node { range, mapped })
        });
        *STATE.lock().unwrap_or_else(PoisonError::into_inner) = Some(State {
            node,
            addon: found.addon,
        });
    }

    pub fn trim() {
        let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(state) = state.as_ref() else {
            return;
        };
        if let Some(node) = &state.node {
            unmap(node.range, |i| !node.mapped.get(i).copied().unwrap_or(true));
        }
        for &range in &state.addon {
            unmap(range, |_| true);
        }
    }
}

/// Records which pages of node's symbol tables are mapped (see the module docs). Runs as an ELF
/// constructor when the addon is loaded.
#[cfg(all(target_os = "linux", target_pointer_width = "64", not(test)))]
#[used]
#[link_section = ".init_array"]
static SNAPSHOT: extern "C" fn() = {
    extern "C" fn snapshot() {
        if std::env::var_os("NODEGUARD_MONITOR_TRIM").is_some_and(|v| v == "0") {
            return;
        }
        linux::snapshot();
    }
    snapshot
};

/// Unmaps what the monitor mapped and no longer needs (see the module docs).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_pointer_width = "64", not(test)))]
    linux::trim();
}

/// Called after answering ping number `count` (1 = the first): trims after the first three
/// pings (by then the ping path's Node-API functions are bound, and the registration and connect
/// code ran) and after every power of two (a path used later, such as the first HTTP request,
/// binds more), so a long-lived app trims about 20 times in a day.
pub fn trim_after_ping(count: u64) {
    if count <= 3 || count.is_power_of_two() {
        trim();
    }
}
