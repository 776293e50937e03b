//! Unix implementation: signals to process groups, `PR_SET_PDEATHSIG` and the child subreaper on
//! Linux, the process table from /proc, `SO_PEERCRED` / `getpeereid` for socket peers, owner-only
//! permissions.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal};

use crate::core::machine::StopSignal;

/// Sends `signal` to every process in group `pgid`. A group that is already gone is not an error.
pub fn signal_group(pgid: u32, signal: StopSignal) -> io::Result<()> {
    let signal = match signal {
        StopSignal::Terminate => Signal::TERM,
        StopSignal::Kill => Signal::KILL,
        StopSignal::Interrupt => Signal::INT,
        StopSignal::Hangup => Signal::HUP,
        StopSignal::Quit => Signal::QUIT,
        StopSignal::User1 => Signal::USR1,
        StopSignal::User2 => Signal::USR2,
    };
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    match rustix::process::kill_process_group(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Sends SIGINT to process `pid` alone (not its group). A process already gone is not an error.
pub fn interrupt(pid: u32) -> io::Result<()> {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    match rustix::process::kill_process(pid, Signal::INT) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// The open-file limit this process started with, given back to every app (see
/// [`raise_open_file_limit`]); unset until raised.
static APP_OPEN_FILES: std::sync::OnceLock<rustix::process::Rlimit> = std::sync::OnceLock::new();

/// Raises this process's soft limit on open files to its hard limit, as systemd and nginx do: a
/// supervisor holds pipes and sockets for every app, and the common soft limit of 1024 runs out
/// long before the hard one. Apps get the soft limit the supervisor started with back
/// ([`configure_child`]), so nothing changes for them. Returns the soft limit before and after;
/// `None` is unlimited. A hard limit of "unlimited" is left alone (Linux refuses it for files).
pub fn raise_open_file_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let started = getrlimit(Resource::Nofile);
    let Some(hard) = started.maximum else {
        return Ok((started.current, started.current));
    };
    if started.current.is_some_and(|soft| soft >= hard) {
        return Ok((started.current, started.current));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    let _ = APP_OPEN_FILES.set(started);
    Ok((started.current, Some(hard)))
}

/// The open-file limit apps get: the one this process started with, once raised.
pub(super) fn app_open_files() -> Option<rustix::process::Rlimit> {
    APP_OPEN_FILES.get().copied()
}

/// This process's open files against its `RLIMIT_NOFILE` soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub limit: u64,
    pub open: u64,
}

impl OpenFiles {
    /// How many more files this process may open.
    pub fn left(&self) -> u64 {
        self.limit.saturating_sub(self.open)
    }
}

/// How many files this process has open (counted in /proc/self/fd) and may open at most; `None`
/// when the limit is unlimited or the count cannot be taken (no /proc).
pub fn open_files() -> Option<OpenFiles> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    // Less the descriptor read_dir itself held.
    let open = u64::try_from(open).ok()?.saturating_sub(1);
    Some(OpenFiles { limit, open })
}

/// Prepares a child, between fork and exec: its own process group, the open-file limit the
/// supervisor started with, and on Linux SIGKILL when the spawning thread dies (which must
/// therefore be a thread that lives as long as the supervisor).
pub fn configure_child(command: &mut tokio::process::Command) {
    command.process_group(0);
    if let Some(limit) = APP_OPEN_FILES.get().copied() {
        // SAFETY: the closure makes one async-signal-safe system call (setrlimit).
        unsafe {
            command.pre_exec(move || {
                // A failure leaves the app the supervisor's higher limit: not worth failing for.
                let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
                Ok(())
            });
        }
    }
    #[cfg(target_os = "linux")]
    {
        let parent = rustix::process::getpid();
        // SAFETY: the closure only makes async-signal-safe system calls (prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // The parent may have died between fork and prctl; then nobody would signal us.
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::other("supervisor exited during spawn"));
                }
                Ok(())
            });
        }
    }
}

/// The user id of the process at the other end of a Unix socket.
pub fn peer_uid(socket: &impl AsFd) -> io::Result<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let cred = rustix::net::sockopt::socket_peercred(socket)?;
        Ok(cred.uid.as_raw())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        use std::os::fd::AsRawFd;
        let mut uid: libc::uid_t = 0;
        let mut gid: libc::gid_t = 0;
        // SAFETY: valid fd, and pointers to two locals.
        let rc = unsafe { libc::getpeereid(socket.as_fd().as_raw_fd(), &mut uid, &mut gid) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// The process id at the other end of a Unix socket, where the system tells it (Linux).
pub fn peer_pid(socket: &impl AsFd) -> Option<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let cred = rustix::net::sockopt::socket_peercred(socket).ok()?;
        u32::try_from(cred.pid.as_raw_nonzero().get()).ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        None
    }
}

/// Whether process `pid` still runs (a zombie counts as exited: it has finished, only its
/// parent has not collected it yet).
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    // EPERM means it exists but belongs to someone else: alive.
    if rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        // No /proc (macOS): the signal test is all there is.
        Err(_) => true,
    }
}

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    /// Clock ticks after boot when it started: with the pid, identifies it across pid reuse.
    pub start_time: u64,
    /// Resident set size in bytes.
    pub rss: u64,
    /// CPU time used so far, user and system (`utime + stime`), in clock ticks
    /// ([`clock_ticks_per_second`]).
    pub cpu_ticks: u64,
    pub zombie: bool,
}

/// Clock ticks per second, the unit of [`ProcessInfo::cpu_ticks`] (100 if the system will not
/// say). From sysconf, not rustix's auxiliary-vector reader, which faults under valgrind
/// (rustix issue 1559), where scripts/order-symbols.js runs the daemon.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes no pointer and has no precondition.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// The memory page size in bytes (4096 if the system will not say); from sysconf, as
/// [`clock_ticks_per_second`].
fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointer and has no precondition.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|size| *size > 0)
        .unwrap_or(4096)
}

/// Every process on the machine (Linux: from /proc). Processes that vanish mid-scan are skipped.
#[cfg(target_os = "linux")]
pub fn list_processes() -> io::Result<Vec<ProcessInfo>> {
    list_processes_but(|_| false)
}

/// [`list_processes`] without the pids `skip` names, whose stat is then never read: a scan for
/// a few processes among thousands of known ones (the supervisor's own children) costs a
/// directory listing and the few reads.
#[cfg(target_os = "linux")]
pub fn list_processes_but(skip: impl Fn(u32) -> bool) -> io::Result<Vec<ProcessInfo>> {
    let page_size = page_size();
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if skip(pid) {
            continue;
        }
        if let Some(info) = read_process(pid, page_size) {
            processes.push(info);
        }
    }
    Ok(processes)
}

/// This process's own children (Linux: each of its threads' `/proc/self/task/<tid>/children`;
/// an adopted orphan is the child of whichever thread the kernel picked). A read of a few small
/// files, where finding them in the whole process table reads every process's stat (2,000 on a
/// busy machine: about 20 ms of CPU). `None` when the files are not there (a kernel without
/// CONFIG_PROC_CHILDREN, a /proc of another PID namespace, not Linux): then scan the table.
pub fn own_children() -> Option<Vec<u32>> {
    #[cfg(target_os = "linux")]
    {
        // A /proc of another PID namespace (the host's, seen from a container) numbers processes
        // its own way: its pids must not be signalled from here.
        let me = std::fs::read_link("/proc/self").ok()?;
        if me.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
        let mut children = Vec::new();
        for thread in std::fs::read_dir("/proc/self/task").ok()? {
            let Ok(thread) = thread else { continue };
            match std::fs::read_to_string(thread.path().join("children")) {
                Ok(list) => children.extend(
                    list.split_ascii_whitespace()
                        .filter_map(|pid| pid.parse::<u32>().ok()),
                ),
                // A thread that ended meanwhile has no children left to list.
                Err(error) if error.kind() == io::ErrorKind::NotFound && thread.path().exists() => {
                    return None
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(_) => return None,
            }
        }
        Some(children)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Without /proc there is no cheap whole-table scan; process trees are not tracked.
#[cfg(not(target_os = "linux"))]
pub fn list_processes_but(_skip: impl Fn(u32) -> bool) -> io::Result<Vec<ProcessInfo>> {
    list_processes()
}

/// Without /proc there is no cheap whole-table scan; process trees are not tracked.
#[cfg(not(target_os = "linux"))]
pub fn list_processes() -> io::Result<Vec<ProcessInfo>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "process trees are tracked on Linux only",
    ))
}

/// One process now, if it exists (Linux only; `None` elsewhere).
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    read_process(pid, page_size())
}

fn read_process(pid: u32, page_size: u64) -> Option<ProcessInfo> {
    use std::io::Read;
    // One read into a stack buffer: a stat line is a few hundred bytes, and read_to_string would
    // stat the file and read it in 32-byte, then doubling, pieces (the scan does this for every
    // process on the machine). A longer line (a huge command name) falls back to that.
    let path = format!("/proc/{pid}/stat");
    let mut file = std::fs::File::open(&path).ok()?;
    let mut buffer = [0u8; 1024];
    let length = file.read(&mut buffer).ok()?;
    if length < buffer.len() {
        return parse_stat(std::str::from_utf8(&buffer[..length]).ok()?, page_size);
    }
    let stat = std::fs::read_to_string(&path).ok()?;
    parse_stat(&stat, page_size)
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may itself contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str, page_size: u64) -> Option<ProcessInfo> {
    let (head, rest) = stat.rsplit_once(')')?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    // Fields after the name, from field 3 (state) on.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcessInfo {
        pid,
        ppid: field(4)?.parse().ok()?,
        pgid: field(5)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
        rss: field(24)?.parse::<u64>().ok()?.saturating_mul(page_size),
        cpu_ticks: field(14)?
            .parse::<u64>()
            .ok()?
            .saturating_add(field(15)?.parse::<u64>().ok()?),
        zombie: field(3)? == "Z",
    })
}

/// The value of `name` in process `pid`'s initial environment (Linux: /proc/<pid>/environ,
/// readable for processes of the same user), if set.
pub fn environment_variable(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        String::from_utf8(value.to_vec()).ok()
    })
}

/// Makes orphaned descendants of this process be re-parented to it instead of to init, so
/// grandchildren that escape an app's process group stay within reach (Linux only; a no-op
/// elsewhere). Needless when we are PID 1, which is every orphan's parent anyway.
pub fn become_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if rustix::process::getpid().as_raw_nonzero().get() != 1 {
            rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
        }
    }
    Ok(())
}

/// Lets SIGPIPE end the process again (Rust's runtime ignores it, so writes to a closed pipe fail
/// with EPIPE instead). For short-lived client commands only: a supervisor keeps ignoring it.
pub fn restore_default_sigpipe() {
    // SAFETY: installing the default disposition has no handler to run; called from main before
    // any thread that could be writing to a pipe starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Collects exited child `pid` if it is a zombie; true if it was collected.
pub fn reap(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    matches!(
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG),
        Ok(Some(_))
    )
}

/// Collects every exited child that `is_ours` does not claim (tokio waits for those), without
/// reading /proc: `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)` names an exited child without
/// collecting it, and only one that is not ours is then collected. It stops at the first exited
/// child that is ours (waitid names the same one until tokio collects it), so a later call picks
/// up the rest. Returns how many were collected, and whether it stopped at one of ours.
pub fn reap_exited_orphans(is_ours: impl Fn(u32) -> bool) -> (usize, bool) {
    // Each round collects one zombie; the bound keeps a storm of them from holding the caller.
    const MOST_PER_CALL: usize = 4096;
    let mut reaped = 0;
    while reaped < MOST_PER_CALL {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid, which fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writes; with WNOWAIT nothing is collected.
        let result = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if result != 0 {
            // ECHILD: no children at all.
            return (reaped, false);
        }
        // SAFETY: waitid succeeded; si_pid is set (0 when no child has exited yet).
        let pid = unsafe { info.si_pid() };
        let Ok(pid) = u32::try_from(pid) else {
            return (reaped, false);
        };
        if pid == 0 {
            return (reaped, false);
        }
        if is_ours(pid) {
            return (reaped, true);
        }
        if !reap(pid) {
            return (reaped, false);
        }
        reaped += 1;
    }
    (reaped, false)
}

/// SIGKILL to process `pid` alone. A process already gone is not an error.
pub fn kill_process(pid: u32) -> io::Result<()> {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    match rustix::process::kill_process(pid, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// This process's effective user id.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A user account from the system's user database (getpwnam_r, so NSS sources such as LDAP
/// count too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccount {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Runs a reentrant `get*nam_r` lookup with a buffer of its own, growing it while the call says
/// ERANGE (up to 1 MiB): `call` makes the lookup in the buffer it is given and returns the C
/// library's code with what it found (read out before the buffer goes).
fn lookup_in_buffer<T>(
    mut call: impl FnMut(&mut [u8]) -> (i32, Option<T>),
) -> io::Result<Option<T>> {
    let mut size = 16 * 1024;
    loop {
        let mut buffer = vec![0_u8; size];
        let (rc, found) = call(&mut buffer);
        if rc == libc::ERANGE && size < 1024 * 1024 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok(found);
    }
}

/// The account named `name`; `Ok(None)` if there is none.
pub fn user_account(name: &str) -> io::Result<Option<UserAccount>> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    lookup_in_buffer(|buffer| {
        // SAFETY: all-zero bytes are a valid `passwd` (null pointers and zero ids), and
        // getpwnam_r only writes it and the buffer, whose real length it is given.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the strings it stores point into `buffer`,
        // which outlives their use below.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        if rc != 0 || found.is_null() || entry.pw_dir.is_null() {
            return (rc, None);
        }
        // SAFETY: getpwnam_r succeeded, so pw_dir is a NUL-terminated string inside `buffer`.
        let home = unsafe { std::ffi::CStr::from_ptr(entry.pw_dir) };
        let account = UserAccount {
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes())),
        };
        (rc, Some(account))
    })
}

/// The id of the group named `name`; `Ok(None)` if there is none (getgrnam_r).
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    lookup_in_buffer(|buffer| {
        // SAFETY: all-zero bytes are a valid `group`; getgrnam_r only writes it and the buffer,
        // whose real length it is given.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        (rc, (!found.is_null()).then_some(entry.gr_gid))
    })
}

/// Makes the child drop root for `uid` (if given) and `gid` before it runs anything: no
/// supplementary groups (setgroups), then setgid, then setuid, so it keeps none of root's
/// groups or ids. Call it before [`configure_child`]: changing ids clears the parent-death
/// signal, which that sets afterwards.
pub fn run_as(command: &mut tokio::process::Command, uid: Option<u32>, gid: u32) {
    // SAFETY: the closure only makes async-signal-safe system calls (setgroups, setgid, setuid).
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(gid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(uid) = uid {
                if libc::setuid(uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Why a directory or file cannot hold nodeguard's private state.
#[derive(Debug, thiserror::Error)]
pub enum PrivatePathError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is a symbolic link; give the real directory (nodeguard never follows a link in its home)", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a {expected}", path.display())]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{} belongs to another user (uid {owner}); nodeguard only uses a home it owns", path.display())]
    OtherOwner { path: PathBuf, owner: u32 },
    #[error("{} is writable by other users (mode {mode:04o}); use a directory only you can write to (chmod 700 it, or another --home)", path.display())]
    WritableByOthers { path: PathBuf, mode: u32 },
}

impl PrivatePathError {
    fn io(path: &Path) -> impl Fn(io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What [`ensure_private_dir`] finds wrong with a directory's owner or mode, if anything:
/// `Ok(true)` when it is ours and private, `Ok(false)` when it is ours and only readable by
/// others (which the caller may tighten), an error when another user owns it or may write to it.
fn check_private_dir_mode(path: &Path, owner: u32, mode: u32) -> Result<bool, PrivatePathError> {
    if owner != current_uid() {
        return Err(PrivatePathError::OtherOwner {
            path: path.to_path_buf(),
            owner,
        });
    }
    if mode & 0o022 != 0 {
        return Err(PrivatePathError::WritableByOthers {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(mode & 0o077 == 0)
}

/// Makes `dir` exist as a private directory: created 0700 (with any missing parents) if missing;
/// if it exists, it must be a real directory (not a symbolic link) that we own and that nobody
/// else can write to, and one that others can merely read or enter (0755, as systemd's
/// `StateDirectory=` makes it) is tightened to 0700. Nothing is ever chmodded through a link or
/// on a directory of another user or one others may write to (a 1777 `/tmp` keeps its mode).
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivatePathError> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::DirBuilderExt;
    // Without a trailing slash (`link/` would resolve a final symbolic link) or `.` components.
    let dir: PathBuf = dir.components().collect();
    let dir = dir.as_path();
    let io_err = PrivatePathError::io(dir);
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
            {
                Ok(()) => {}
                // Created by someone else meanwhile: checked below like any existing one.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(io_err(error)),
            }
        }
        Err(error) => return Err(io_err(error)),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let directory = match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            let is_link = std::fs::symlink_metadata(dir)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            return Err(if is_link {
                PrivatePathError::Symlink {
                    path: dir.to_path_buf(),
                }
            } else {
                PrivatePathError::WrongType {
                    path: dir.to_path_buf(),
                    expected: "directory",
                }
            });
        }
        Err(errno) => return Err(io_err(errno.into())),
    };
    // Checked and tightened through the descriptor: what we checked is what we chmod.
    let directory = std::fs::File::from(directory);
    let metadata = directory.metadata().map_err(&io_err)?;
    use std::os::unix::fs::MetadataExt;
    if !check_private_dir_mode(dir, metadata.uid(), metadata.mode())? {
        directory
            .set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(&io_err)?;
    }
    Ok(())
}

/// Opens (creating it 0600 if missing) a regular file inside a private directory, never through
/// a symbolic link: `append` for a log, else read-write (a lock file). An existing file must be
/// ours; one that others could read (written by an older version) is tightened to 0600.
pub fn open_private_file(path: &Path, append: bool) -> Result<std::fs::File, PrivatePathError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut options = std::fs::OpenOptions::new();
    options
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if append {
        options.append(true);
    } else {
        options.read(true).write(true).truncate(false);
    }
    let file = options.open(path).map_err(|error| {
        if error.raw_os_error() == Some(libc::ELOOP) {
            PrivatePathError::Symlink {
                path: path.to_path_buf(),
            }
        } else {
            PrivatePathError::io(path)(error)
        }
    })?;
    let metadata = file.metadata().map_err(PrivatePathError::io(path))?;
    if !metadata.file_type().is_file() {
        return Err(PrivatePathError::WrongType {
            path: path.to_path_buf(),
            expected: "regular file",
        });
    }
    if metadata.uid() != current_uid() {
        return Err(PrivatePathError::OtherOwner {
            path: path.to_path_buf(),
            owner: metadata.uid(),
        });
    }
    if metadata.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(PrivatePathError::io(path))?;
    }
    Ok(file)
}

/// The device and inode of what `path` names now (not following a final symbolic link), if
/// anything: compared with a remembered pair, it tells whether a file was removed or replaced.
pub fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// The device and inode of an open file.
pub fn open_file_identity(file: &std::fs::File) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = file.metadata()?;
    Ok((metadata.dev(), metadata.ino()))
}

/// Restricts a socket file to its owner.
pub fn make_owner_only(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Takes an exclusive advisory lock on `file` without waiting; `Ok(false)` if another process
/// holds it.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// Makes a spawned process the leader of a new session, detached from our terminal, so it
/// outlives the command that launched it and gets no terminal signals.
pub fn detach(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
}

/// Binds a listening TCP socket on `host:port` (SO_REUSEADDR, as std sets it on Unix). Without a
/// host it binds every interface as Node's `server.listen(port)` does: `::` (dual-stack, so IPv4
/// clients reach it too), or `0.0.0.0` where IPv6 is unavailable.
pub fn bind_listener(host: Option<&str>, port: u16) -> io::Result<std::net::TcpListener> {
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
    match host {
        Some(host) => TcpListener::bind((host, port)),
        None => match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
            Ok(listener) => Ok(listener),
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                ) =>
            {
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            }
            Err(error) => Err(error),
        },
    }
}

/// Lets a child inherit `fds` at the same numbers: clears their close-on-exec flag between fork
/// and exec (in the child only). The numbers are announced to the app in an environment variable,
/// so nothing is moved: no `dup2` onto a number std's exec-error pipe might hold.
pub fn inherit_fds(command: &mut tokio::process::Command, fds: Vec<std::os::fd::RawFd>) {
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure only calls fcntl, which is async-signal-safe, on fds the parent keeps
    // open for as long as the spawn takes.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A datagram socket connected to the service manager's notification socket (`NOTIFY_SOCKET`,
/// see sd_notify(3)): a filesystem path, or on Linux an abstract name written `@name`.
pub struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    /// Connects to `address` as `NOTIFY_SOCKET` spells it.
    pub fn connect(address: &std::ffi::OsStr) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::UnixDatagram;
        let socket = UnixDatagram::unbound()?;
        let bytes = address.as_bytes();
        match bytes.split_first() {
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET is empty",
                ))
            }
            Some((b'@', name)) => {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                {
                    #[cfg(target_os = "android")]
                    use std::os::android::net::SocketAddrExt;
                    #[cfg(target_os = "linux")]
                    use std::os::linux::net::SocketAddrExt;
                    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    socket.connect_addr(&address)?;
                }
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                {
                    let _ = name;
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "abstract socket names need Linux",
                    ));
                }
            }
            Some(_) => socket.connect(Path::new(address))?,
        }
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }

    /// Sends one notification (newline-separated `KEY=VALUE` assignments). Never blocks: a full
    /// queue drops the message and says so.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket.send(message.as_bytes()).map(|_| ())
    }
}

/// Sends `bytes` on the Unix stream `socket` with `fd` attached (SCM_RIGHTS, on the first byte):
/// the peer gets its own descriptor for the same open socket. One non-blocking `sendmsg`;
/// returns how many bytes went (fewer than all leaves the stream mid-frame: the caller drops it).
pub fn send_with_fd(
    socket: std::os::fd::BorrowedFd<'_>,
    bytes: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<usize> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !ancillary.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let sent = sendmsg(
        socket,
        &[io::IoSlice::new(bytes)],
        &mut ancillary,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?;
    Ok(sent)
}

/// The name Node gives an errno (`error.code`), for the common errors of binding a socket.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn own_children_lists_a_child_of_this_process() {
        let mut child = match std::process::Command::new("sleep").arg("5").spawn() {
            Ok(child) => child,
            Err(error) => panic!("cannot run sleep: {error}"),
        };
        let listed = own_children();
        let _ = child.kill();
        let _ = child.wait();
        let listed = listed.unwrap_or_else(|| panic!("/proc/self/task/*/children not readable"));
        assert!(
            listed.contains(&child.id()),
            "{} not in {listed:?}",
            child.id()
        );
    }

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let stat =
            "4242 (node (worker) x) S 4000 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 11 0 \
                    987654 1000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat, 4096),
            Some(ProcessInfo {
                pid: 4242,
                ppid: 4000,
                pgid: 4242,
                start_time: 987654,
                rss: 2560 * 4096,
                cpu_ticks: 11,
                zombie: false,
            })
        );
        let zombie = "77 (sh) Z 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert!(parse_stat(zombie, 4096).is_some_and(|p| p.zombie && p.rss == 0));
        assert_eq!(parse_stat("garbage", 4096), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_own_process_is_in_the_table() {
        let me = std::process::id();
        let table = list_processes().unwrap();
        let entry = table.iter().find(|p| p.pid == me).expect("ourselves");
        assert!(entry.rss > 0);
        assert_eq!(
            process_info(me).map(|p| p.start_time),
            Some(entry.start_time)
        );
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ng-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_missing_private_dir_is_made_0700_with_its_parents() {
        let base = scratch("missing");
        let dir = base.join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode_of(&base.join("a")), 0o700);
        assert_eq!(mode_of(&dir), 0o700);
    }

    #[test]
    fn a_readable_dir_of_ours_is_tightened_and_a_writable_one_refused_untouched() {
        let base = scratch("modes");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&base).unwrap();
        assert_eq!(mode_of(&base), 0o700);
        for mode in [0o1777, 0o777, 0o720, 0o702] {
            std::fs::set_permissions(&base, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = ensure_private_dir(&base).unwrap_err();
            assert!(
                matches!(error, PrivatePathError::WritableByOthers { .. }),
                "{mode:o}: {error}"
            );
            assert_eq!(mode_of(&base), mode, "chmodded a {mode:o} directory");
        }
    }

    #[test]
    fn a_symlinked_dir_is_refused_and_its_target_left_alone() {
        let base = scratch("symlink");
        let target = base.join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for given in [link.clone(), base.join("link/"), base.join("link/.")] {
            let error = ensure_private_dir(&given).unwrap_err();
            assert!(
                matches!(error, PrivatePathError::Symlink { .. }),
                "{}: {error}",
                given.display()
            );
            assert_eq!(mode_of(&target), 0o755);
        }
        let file = base.join("file");
        std::fs::write(&file, b"").unwrap();
        let error = ensure_private_dir(&file).unwrap_err();
        assert!(
            matches!(error, PrivatePathError::WrongType { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_private_file_is_made_0600_never_through_a_link_and_an_old_one_is_tightened() {
        let base = scratch("files");
        let log = base.join("daemon.log");
        drop(open_private_file(&log, true).unwrap());
        assert_eq!(mode_of(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_private_file(&log, true).unwrap());
        assert_eq!(mode_of(&log), 0o600);
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = base.join("planted.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let error = open_private_file(&link, true).unwrap_err();
        assert!(matches!(error, PrivatePathError::Symlink { .. }), "{error}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}

/// What waiting on the terminal's input found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalInput {
    /// Bytes to read.
    Ready,
    /// Nothing within the time.
    Idle,
    /// The terminal hung up (its window closed, its multiplexer killed), or stdin is no
    /// terminal any more: reads would return end-of-file at once, forever.
    HungUp,
}

/// Waits up to `timeout` for input on stdin, telling a hung-up terminal apart from one that is
/// just quiet (crossterm's own poll spins on a hung-up terminal's end-of-file).
pub fn wait_for_terminal_input(timeout: std::time::Duration) -> TerminalInput {
    let mut fds = [libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    }];
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    if ready < 0 {
        return if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            TerminalInput::Idle
        } else {
            TerminalInput::HungUp
        };
    }
    if ready == 0 {
        return TerminalInput::Idle;
    }
    if fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return TerminalInput::HungUp;
    }
    // Readable: a hung-up terminal reads as end-of-file, and is then no terminal any more.
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
        TerminalInput::Ready
    } else {
        TerminalInput::HungUp
    }
}
