//! Kernel OOM kills: whether the kernel's OOM killer killed a given process. Two witnesses, both
//! read only when a process of an app ended in a way an OOM kill explains: the kernel log
//! (`/dev/kmsg`, readable by root or with `kernel.dmesg_restrict=0`), whose `Killed process <pid>`
//! lines name the victim, and the `oom_kill` counter of the supervisor's memory cgroup (cgroup v2
//! `memory.events`, which counts the cgroups below too; v1 `memory.oom_control`), which says one
//! happened but not to whom. Linux only; elsewhere neither is found (and nothing is reported).

use std::io::Read;

/// Most kernel log records read in one scan (the kernel's ring holds far fewer).
const MOST_RECORDS: usize = 200_000;

/// The pid an OOM-kill line of the kernel log names: `... Killed process 4242 (node) ...`.
pub fn kmsg_victim(line: &str) -> Option<u32> {
    let rest = &line[line.find("Killed process ")? + "Killed process ".len()..];
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// A `/dev/kmsg` record's time (microseconds of the monotonic clock) and message:
/// `6,1234,567890,-;message`.
pub fn kmsg_record(record: &str) -> Option<(u64, &str)> {
    let (prefix, message) = record.split_once(';')?;
    let micros = prefix.split(',').nth(2)?.parse().ok()?;
    Some((micros, message.lines().next().unwrap_or_default()))
}

/// The processes the kernel log says the OOM killer killed at or after `since_micros` (the
/// monotonic clock, as [`monotonic_micros`]). `None` if the log cannot be read.
pub fn kmsg_victims(since_micros: u64) -> Option<Vec<u32>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut victims = Vec::new();
    let mut buffer = vec![0u8; 8192];
    for _ in 0..MOST_RECORDS {
        // Each read returns one record.
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                let record = String::from_utf8_lossy(buffer.get(..n).unwrap_or_default());
                if let Some((micros, message)) = kmsg_record(&record) {
                    if micros >= since_micros {
                        victims.extend(kmsg_victim(message));
                    }
                }
            }
            // Records overwritten while reading: go on with the next.
            Err(error) if error.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            // EAGAIN: the end of the log.
            Err(_) => break,
        }
    }
    Some(victims)
}

/// The monotonic clock in microseconds (the kernel log's clock).
pub fn monotonic_micros() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is valid for writes; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

/// The `oom_kill` count in a cgroup's `memory.events` (v2) or `memory.oom_control` (v1).
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
}

/// The OOM kills counted in the supervisor's own memory cgroup, if it has one this can read.
pub fn cgroup_oom_kills() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup/{path}/memory.events"));
            candidates.push(format!("/sys/fs/cgroup/unified/{path}/memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory/{path}/memory.oom_control"));
        }
    }
    candidates
        .iter()
        .find_map(|path| oom_kill_count(&std::fs::read_to_string(path).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_log_records_name_the_victim() {
        let record = "3,1412,20701683600,-;Memory cgroup out of memory: Killed process 27249 \
                      (node) total-vm:1050256kB, anon-rss:64512kB, file-rss:33568kB, shmem-rss:0kB, \
                      UID:0 pgtables:568kB oom_score_adj:0\n SUBSYSTEM=memory";
        let (micros, message) = kmsg_record(record).unwrap();
        assert_eq!(micros, 20_701_683_600);
        assert_eq!(kmsg_victim(message), Some(27249));
        assert_eq!(
            kmsg_victim("Out of memory: Killed process 77 (node) total-vm:1kB"),
            Some(77)
        );
        assert_eq!(kmsg_victim("oom_reaper: reaped process 27249 (node)"), None);
        assert_eq!(kmsg_victim("Killed process x"), None);
        assert_eq!(kmsg_record("no separator"), None);
    }

    #[test]
    fn cgroup_counters_are_read_from_either_version() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        assert_eq!(oom_kill_count(v1), Some(1));
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), None);
    }
}
