//! sd_notify against a real Unix datagram socket standing in for systemd: the real binary, in
//! foreground and daemon mode, with a real node app; a path socket and an abstract one.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed step should stop it loudly

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: a loaded 2-core machine is slow, not broken.
const DEADLINE: Duration = Duration::from_secs(30);

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("random bytes");
        let path =
            std::env::temp_dir().join(format!("ng-{tag}-{:012x}", u64::from_ne_bytes(bytes) >> 16));
        std::fs::create_dir(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A supervisor process, killed (with its process group) on drop whatever happened.
struct Supervisor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Supervisor {
    fn start(args: &[&str], home: &Path, notify_socket: &str, watchdog_usec: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(env!("CARGO_BIN_EXE_nodeguard"))
            .args(args)
            .arg("--home")
            .arg(home)
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", watchdog_usec)
            .env_remove("WATCHDOG_PID")
            .env_remove("NODEGUARD_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("NODEGUARD_LOG", "warn")
            .process_group(0)
            .spawn()
            .expect("run nodeguard");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Supervisor { child, lines }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal the supervisor");
    }

    /// Waits for a stdout line containing `needle`.
    fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no output line with {needle:?} within {DEADLINE:?}"),
            }
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the supervisor did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// Collects notifications, each split into its assignments.
struct Manager {
    socket: UnixDatagram,
    received: Vec<String>,
}

impl Manager {
    fn new(socket: UnixDatagram) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Manager {
            socket,
            received: Vec::new(),
        }
    }

    /// Waits for a message satisfying `wanted`; returns it. Every message is kept in `received`.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                self.received.push(message.clone());
                if wanted(&message) {
                    return message;
                }
            }
        }
        panic!(
            "no {what} within {DEADLINE:?}; received {:?}",
            self.received
        );
    }
}

const FIXTURE: &str = "\
console.log(`env NOTIFY_SOCKET=${process.env.NOTIFY_SOCKET} WATCHDOG_USEC=${process.env.WATCHDOG_USEC}`);
setInterval(() => {}, 1 << 30);
";

#[test]
fn foreground_mode_notifies_ready_status_watchdog_and_stopping() {
    let dir = TempDir::new("sdn");
    let socket_path = dir.0.join("notify.sock");
    let mut manager = Manager::new(UnixDatagram::bind(&socket_path).expect("bind"));
    let script = dir.0.join("app.js");
    std::fs::write(&script, FIXTURE).expect("fixture");
    let home = dir.0.join("home");
    let script = script.to_string_lossy().into_owned();
    let mut supervisor = Supervisor::start(
        &["--no-preload", "--start-grace", "300ms", "-m", &script],
        &home,
        &socket_path.to_string_lossy(),
        // Every 200 ms.
        "400000",
    );

    let ready = manager.wait_for("READY=1", |m| m.starts_with("READY=1"));
    assert_eq!(ready, "READY=1\nSTATUS=1 app: 1 running");
    // Nothing said ready before the app ran.
    let before: Vec<&String> = manager
        .received
        .iter()
        .take_while(|m| **m != ready)
        .collect();
    assert!(
        before
            .iter()
            .all(|m| *m == "WATCHDOG=1" || m.starts_with("STATUS=1 app: 1 starting")),
        "{:?}",
        manager.received
    );
    for _ in 0..3 {
        manager.wait_for("WATCHDOG=1", |m| m == "WATCHDOG=1");
    }
    // The app did not inherit systemd's variables.
    let env = supervisor.line_with("env NOTIFY_SOCKET=");
    assert!(
        env.ends_with("env NOTIFY_SOCKET=undefined WATCHDOG_USEC=undefined"),
        "{env}"
    );

    supervisor.signal(rustix::process::Signal::TERM);
    manager.wait_for("STOPPING=1", |m| m.starts_with("STOPPING=1"));
    assert!(supervisor.wait_exit().success());
}

#[cfg(target_os = "linux")]
#[test]
fn the_daemon_notifies_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let dir = TempDir::new("sda");
    let name = format!(
        "nodeguard-test-{}-{}",
        std::process::id(),
        dir.0.file_name().unwrap().to_string_lossy()
    );
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut manager = Manager::new(UnixDatagram::bind_addr(&address).expect("bind abstract"));
    let home = dir.0.join("home");
    let mut supervisor = Supervisor::start(&["daemon"], &home, &format!("@{name}"), "0");

    // No saved apps: the daemon is ready at once.
    let ready = manager.wait_for("READY=1", |m| m.starts_with("READY=1"));
    assert_eq!(ready, "READY=1\nSTATUS=no apps");
    supervisor.signal(rustix::process::Signal::TERM);
    manager.wait_for("STOPPING=1", |m| m.starts_with("STOPPING=1"));
    assert!(supervisor.wait_exit().success());
    // WATCHDOG_USEC=0 turns the watchdog off.
    assert!(
        !manager.received.iter().any(|m| m == "WATCHDOG=1"),
        "{:?}",
        manager.received
    );
}
