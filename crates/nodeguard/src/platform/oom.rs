//! Kernel OOM kills: whether the kernel's OOM killer killed a given process. Two witnesses, both
//! read only when a process of an app ended in a way an OOM kill explains: the kernel log
//! (`/dev/kmsg`, readable by root or with `kernel.dmesg_restrict=0`), whose `Killed process <pid>`
//! lines name the victim, and the `oom_kill` counter of the supervisor's memory cgroup (cgroup v2
//! `memory.events`, which counts the cgroups below too; v1 `memory.oom_control`, which counts
//! only its own, not a cgroup an app moved into), which says one happened but not to whom. The
//! kernel log is held open from the first spawn on and read from where the last look stopped, so
//! a look after an exit reads the few records logged since, not the whole ring. Linux only;
//! elsewhere neither is found (and nothing is reported).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Mutex, PoisonError, TryLockError};

/// Most kernel log records read in one scan (the kernel's ring holds far fewer).
pub const MOST_RECORDS: usize = 200_000;

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

/// Records read on the runtime's thread before the rest of a scan goes to a blocking thread.
pub const INLINE_RECORDS: usize = 64;

/// OOM victims remembered from records already read (a record read for one app's exit may name
/// another app's process, whose exit is handled next); the oldest go first.
const REMEMBERED_VICTIMS: usize = 256;

/// The daemon's one reader of the kernel log, kept open from the first spawn (or the first scan)
/// on: each scan reads only the records logged since the previous one, where one that opened the
/// log anew read all of it (1,400 records, a millisecond or two, on every death by SIGKILL).
static KERNEL_LOG: Mutex<LogState> = Mutex::new(LogState::Unopened);

enum LogState {
    Unopened,
    /// `/dev/kmsg` cannot be opened (not root, `kernel.dmesg_restrict=1`): not tried again.
    Unreadable,
    Open(KernelLog<std::fs::File>),
}

/// A reader of kernel log records (one record per read, `WouldBlock` at the end, as
/// `/dev/kmsg` opened non-blocking) and the OOM victims its records named so far.
struct KernelLog<R> {
    source: R,
    /// (record's time, pid), oldest first.
    victims: VecDeque<(u64, u32)>,
}

impl<R: Read> KernelLog<R> {
    fn new(source: R) -> Self {
        Self {
            source,
            victims: VecDeque::new(),
        }
    }

    /// Reads at most `most` new records; true once at the end of the log.
    fn catch_up(&mut self, most: usize) -> bool {
        let mut buffer = [0u8; 8192];
        for _ in 0..most {
            match self.source.read(&mut buffer) {
                Ok(0) => return true,
                Ok(n) => {
                    let record = String::from_utf8_lossy(buffer.get(..n).unwrap_or_default());
                    if let Some((micros, message)) = kmsg_record(&record) {
                        if let Some(pid) = kmsg_victim(message) {
                            if self.victims.len() >= REMEMBERED_VICTIMS {
                                self.victims.pop_front();
                            }
                            self.victims.push_back((micros, pid));
                        }
                    }
                }
                // Records overwritten while reading: go on with the next.
                Err(error) if error.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                // EAGAIN: the end of the log.
                Err(_) => return true,
            }
        }
        false
    }

    /// The victims of records at or after `since_micros`.
    fn victims_since(&self, since_micros: u64) -> Vec<u32> {
        self.victims
            .iter()
            .filter(|(micros, _)| *micros >= since_micros)
            .map(|(_, pid)| *pid)
            .collect()
    }
}

fn open_kmsg() -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()
}

/// Opens the daemon's reader of the kernel log at the log's end, unless it is open already (or
/// cannot be): called before each spawn, so every record that can name a process spawned from
/// now on is read by the next [`kmsg_victims`], and none from before.
pub fn watch_kernel_log() {
    let mut state = KERNEL_LOG.lock().unwrap_or_else(PoisonError::into_inner);
    if !matches!(*state, LogState::Unopened) {
        return;
    }
    *state = match open_kmsg() {
        Some(file) => {
            use std::os::fd::AsRawFd;
            // SAFETY: lseek on a descriptor we own; SEEK_END on /dev/kmsg moves to the record
            // after the last one.
            unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            LogState::Open(KernelLog::new(file))
        }
        None => LogState::Unreadable,
    };
}

/// What [`kmsg_victims`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The processes the kernel log says the OOM killer killed at or after the time asked.
    Victims(Vec<u32>),
    /// The kernel log cannot be read.
    Unreadable,
    /// More than the records asked for are left to read, or another thread is reading (only
    /// when not asked to wait): ask again with `wait` on a thread that may block.
    Behind,
}

/// The processes the kernel log says the OOM killer killed at or after `since_micros` (the
/// monotonic clock, as [`monotonic_micros`]), reading at most `most` records logged since the
/// last look. With `wait`, waits for a scan under way on another thread; without, says
/// [`Scan::Behind`] instead.
pub fn kmsg_victims(since_micros: u64, most: usize, wait: bool) -> Scan {
    let mut state = if wait {
        KERNEL_LOG.lock().unwrap_or_else(PoisonError::into_inner)
    } else {
        match KERNEL_LOG.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Scan::Behind,
        }
    };
    if matches!(*state, LogState::Unopened) {
        // No spawn opened it (tests): from the log's beginning.
        *state = open_kmsg().map_or(LogState::Unreadable, |file| {
            LogState::Open(KernelLog::new(file))
        });
    }
    let LogState::Open(log) = &mut *state else {
        return Scan::Unreadable;
    };
    if log.catch_up(most) || wait {
        Scan::Victims(log.victims_since(since_micros))
    } else {
        Scan::Behind
    }
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

    /// Records as `/dev/kmsg` opened non-blocking gives them: one per read, then `WouldBlock`
    /// (or `EPIPE` for records overwritten meanwhile).
    struct Records(VecDeque<std::io::Result<String>>);

    impl Read for Records {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                None => Err(std::io::ErrorKind::WouldBlock.into()),
                Some(Err(error)) => Err(error),
                Some(Ok(record)) => {
                    buffer[..record.len()].copy_from_slice(record.as_bytes());
                    Ok(record.len())
                }
            }
        }
    }

    fn record(micros: u64, message: &str) -> std::io::Result<String> {
        Ok(format!("6,1,{micros},-;{message}"))
    }

    #[test]
    fn the_kernel_log_is_read_on_from_where_the_last_look_stopped() {
        let mut log = KernelLog::new(Records(VecDeque::from([
            record(100, "eth0: link up"),
            record(200, "Out of memory: Killed process 41 (node) total-vm:1kB"),
        ])));
        assert!(log.catch_up(MOST_RECORDS));
        assert_eq!(log.victims_since(0), vec![41]);
        // A victim logged before the process was spawned is not it (a pid used again).
        assert_eq!(log.victims_since(201), Vec::<u32>::new());
        // Later records: only they are read, and the earlier victim is still known (read for one
        // app's exit, it may be another's, handled next).
        log.source.0.extend([
            Err(std::io::Error::from_raw_os_error(libc::EPIPE)),
            record(300, "Memory cgroup out of memory: Killed process 42 (node)"),
            record(301, "oom_reaper: reaped process 42 (node)"),
        ]);
        assert!(log.catch_up(MOST_RECORDS));
        assert!(log.source.0.is_empty());
        assert_eq!(log.victims_since(150), vec![41, 42]);
        // A look that may read only so many records says it is not at the end yet.
        log.source
            .0
            .extend((0..5).map(|i| record(400 + i, "noise")));
        assert!(!log.catch_up(3));
        assert!(log.catch_up(3));
        // The victims remembered are bounded; the oldest go first.
        for pid in 0..u32::try_from(REMEMBERED_VICTIMS).unwrap() {
            log.source
                .0
                .push_back(record(500, &format!("Killed process {} (x)", 1000 + pid)));
        }
        assert!(log.catch_up(MOST_RECORDS));
        assert_eq!(log.victims.len(), REMEMBERED_VICTIMS);
        assert!(!log.victims_since(0).contains(&41));
        assert!(log.victims_since(0).contains(&1000));
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
