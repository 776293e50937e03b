//! systemd integration: sd_notify(3) notifications when `NOTIFY_SOCKET` is set (`READY=1`,
//! `STATUS=`, `WATCHDOG=1`, `STOPPING=1`), and the user unit `nodeguard startup systemd` prints.
//!
//! The notification protocol is one datagram per message on a Unix socket, so it is done here on
//! std's `UnixDatagram` (in `platform`) rather than with a dependency.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::health::{self, Probe, PROBE_DEADLINE};
use crate::platform::NotifySocket;

/// The variables systemd sets for a notify service; taken out of the environment so that apps
/// (and a daemon that `start` launches) do not inherit them and talk to systemd themselves.
const NOTIFY_VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];
/// How often the apps' states are checked for `READY=1` and `STATUS=` changes.
const STATUS_POLL: Duration = Duration::from_millis(500);
/// `WatchdogSec=` of the unit `startup systemd` writes.
pub const UNIT_WATCHDOG_SEC: u64 = 30;
/// The unit's file name.
pub const UNIT_NAME: &str = "nodeguard.service";

/// Where notifications go, and how often the watchdog wants to hear from us.
pub struct Notifier {
    socket: NotifySocket,
    address: OsString,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on and meant for this process.
    watchdog_every: Option<Duration>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("address", &self.address)
            .field("watchdog_every", &self.watchdog_every)
            .finish()
    }
}

impl Notifier {
    /// Reads and removes systemd's notification variables. Call it before any thread starts
    /// (changing the environment is not thread-safe). `None` when `NOTIFY_SOCKET` is unset, or
    /// when it cannot be used (which is logged).
    pub fn take_from_env() -> Option<Arc<Notifier>> {
        let values: Vec<Option<OsString>> = NOTIFY_VARIABLES.iter().map(std::env::var_os).collect();
        for name in NOTIFY_VARIABLES {
            std::env::remove_var(name);
        }
        let address = values[0].clone().filter(|a| !a.is_empty())?;
        fn text(value: &Option<OsString>) -> Option<&str> {
            value.as_ref().and_then(|v| v.to_str())
        }
        let for_us = text(&values[2])
            .map(|pid| pid.trim().parse::<u32>().ok() == Some(std::process::id()))
            .unwrap_or(true);
        let watchdog_every = text(&values[1])
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec) / 2);
        match NotifySocket::connect(&address) {
            Ok(socket) => Some(Arc::new(Notifier {
                socket,
                address,
                watchdog_every,
            })),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "NOTIFY_SOCKET={}: cannot reach the service manager; not notifying it",
                    address.to_string_lossy()
                );
                None
            }
        }
    }

    /// Sends one notification; a failure is logged, never fatal.
    pub fn send(&self, message: &str) {
        if let Err(error) = self.socket.send(message) {
            tracing::warn!(%error, "cannot notify the service manager ({message:?})");
        }
    }
}

/// Tells the service manager how the apps are doing until a stop begins: `READY=1` once the apps
/// have settled after starting (see [`health::settled`]), `STATUS=` whenever the count of apps by
/// state changes, `WATCHDOG=1` every half `WATCHDOG_USEC` while the supervision loop answers
/// (until it has finished, so also while apps stop), and `STOPPING=1` when the stop begins.
pub async fn notify(notifier: Arc<Notifier>, probe: Probe, stopping: CancellationToken) {
    let mut status_poll = tokio::time::interval(STATUS_POLL);
    status_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let watchdog_every = notifier.watchdog_every.unwrap_or(Duration::MAX);
    let mut watchdog = tokio::time::interval(
        watchdog_every.clamp(Duration::from_millis(10), Duration::from_secs(86_400)),
    );
    watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The health check must finish well within the watchdog interval.
    let watchdog_deadline = PROBE_DEADLINE.min(watchdog_every / 2);
    let mut ready = false;
    let mut last_summary = String::new();
    let mut stop_announced = false;
    loop {
        tokio::select! {
            _ = stopping.cancelled(), if !stop_announced => {
                stop_announced = true;
                notifier.send("STOPPING=1\nSTATUS=stopping every app");
                if notifier.watchdog_every.is_none() {
                    return;
                }
            }
            _ = status_poll.tick(), if !stop_announced => {
                let Some(apps) = probe.statuses(PROBE_DEADLINE).await else { continue };
                let summary = health::summary(&apps);
                if !ready && health::settled(&apps) {
                    ready = true;
                    notifier.send(&format!("READY=1\nSTATUS={summary}"));
                    tracing::debug!("notified the service manager: ready ({summary})");
                } else if summary != last_summary {
                    notifier.send(&format!("STATUS={summary}"));
                }
                last_summary = summary;
            }
            // While apps stop, too: a slow stop is not a hung supervisor.
            _ = watchdog.tick(), if notifier.watchdog_every.is_some() => {
                if probe.alive(watchdog_deadline).await {
                    notifier.send("WATCHDOG=1");
                } else if probe.closed() {
                    // The supervision loop has finished: the process is about to exit.
                    return;
                } else {
                    tracing::warn!(
                        "the supervision loop did not answer within {watchdog_deadline:?}; \
                         withholding the watchdog keep-alive"
                    );
                }
            }
        }
    }
}

/// What the unit file says.
#[derive(Debug, Clone)]
pub struct UnitSettings {
    /// Absolute path of the nodeguard binary.
    pub exe: PathBuf,
    /// Absolute path of the nodeguard home.
    pub home: PathBuf,
    /// `PATH` for the supervisor and its apps (a user manager's default is minimal).
    pub path_env: Option<String>,
    /// `--http ADDR` for the daemon, if wanted.
    pub http: Option<String>,
    /// The saved apps' names, for a comment.
    pub saved_apps: Vec<String>,
    /// The state file they are saved in.
    pub state_file: PathBuf,
}

/// Why no unit can be written for these settings.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(
        "the {what} path {path} holds a control character (a newline?): a unit file cannot name \
         it safely; use a path without one"
    )]
    ControlCharacter { what: &'static str, path: String },
}

/// A systemd user unit that runs the supervisor in the foreground as a notify service and brings
/// back the saved apps. Paths with control characters are refused: a newline in the home would
/// otherwise end a comment line and inject unit directives.
pub fn unit(settings: &UnitSettings) -> Result<String, UnitError> {
    for (what, path) in [
        ("nodeguard binary", &settings.exe),
        ("home", &settings.home),
        ("state file", &settings.state_file),
    ] {
        let text = path.to_string_lossy();
        if text.chars().any(char::is_control) {
            return Err(UnitError::ControlCharacter {
                what,
                path: text.escape_debug().to_string(),
            });
        }
    }
    // Saved names come from a file: quoted so that none can break out of its comment line.
    let saved_apps: Vec<String> = settings
        .saved_apps
        .iter()
        .map(|name| name.escape_debug().to_string())
        .collect();
    let mut exec = vec![
        exec_word(&settings.exe.to_string_lossy()),
        "daemon".to_string(),
        "--resurrect".to_string(),
        "--home".to_string(),
        exec_word(&settings.home.to_string_lossy()),
    ];
    if let Some(http) = &settings.http {
        exec.push("--http".to_string());
        exec.push(exec_word(http));
    }
    let saved = if settings.saved_apps.is_empty() {
        format!(
            "# No apps are saved in {} yet: add them with `nodeguard start` (the daemon saves its\n\
             # app list on every change).",
            settings.state_file.display()
        )
    } else {
        format!(
            "# Brings back the {} app(s) saved in {}: {}.",
            saved_apps.len(),
            settings.state_file.display(),
            saved_apps.join(", ")
        )
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# nodeguard supervisor for this user, written by `nodeguard startup systemd`.\n\
         {saved}\n\
         # Type=notify: the daemon runs in the foreground, sends READY=1 once the apps have\n\
         # started, and keeps the watchdog fed while its supervision loop answers.\n\
         \n\
         [Unit]\n\
         Description=nodeguard: supervised Node.js apps\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={}\n\
         Restart=on-failure\n\
         RestartSec=2s\n\
         WatchdogSec={UNIT_WATCHDOG_SEC}s\n\
         # SIGTERM to nodeguard alone: it stops every app itself (SIGTERM, then SIGKILL after the\n\
         # kill timeout); whatever is left when TimeoutStopSec runs out is killed.\n\
         KillMode=mixed\n\
         TimeoutStopSec=60s",
        exec.join(" ")
    );
    if let Some(path) = &settings.path_env {
        let _ = writeln!(text, "Environment={}", exec_word(&format!("PATH={path}")));
    }
    let _ = writeln!(text, "\n[Install]\nWantedBy=default.target");
    Ok(text)
}

/// One word of a unit-file command line or assignment: `%` and `$` escaped (specifiers and
/// variable expansion), and quoted when it holds whitespace, quotes or backslashes.
fn exec_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let needs_quotes = escaped.is_empty()
        || escaped
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | ';'));
    if !needs_quotes {
        return escaped;
    }
    let mut quoted = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\n' => quoted.push_str("\\n"),
            // Any other control character as a C escape: never a raw line break in the unit.
            c if c.is_ascii_control() => {
                let _ = write!(quoted, "\\x{:02x}", u32::from(c));
            }
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Where a user unit goes: `$XDG_CONFIG_HOME/systemd/user/` or `~/.config/systemd/user/`.
pub fn user_unit_path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(|home| Path::new(&home).join(".config"))
        })?;
    Some(config.join("systemd").join("user").join(UNIT_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::ControlRequest;
    use nodeguard_proto::control::{Command, Outcome};
    use std::os::unix::net::UnixDatagram;
    use tokio::sync::mpsc;

    mod tempdir {
        /// A private temporary directory, removed on drop.
        pub struct Dir(pub std::path::PathBuf);

        impl Dir {
            pub fn new() -> Self {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).unwrap();
                let name = format!("ng-sd-{:016x}", u64::from_ne_bytes(bytes));
                let path = std::env::temp_dir().join(name);
                std::fs::create_dir(&path).unwrap();
                Dir(path)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn settings() -> UnitSettings {
        UnitSettings {
            exe: PathBuf::from("/opt/node guard/nodeguard"),
            home: PathBuf::from("/home/ann/.nodeguard"),
            path_env: Some("/usr/local/bin:/usr/bin".into()),
            http: Some("127.0.0.1:9615".into()),
            saved_apps: vec!["api".into(), "worker".into()],
            state_file: PathBuf::from("/home/ann/.nodeguard/dump.json"),
        }
    }

    #[test]
    fn the_unit_runs_the_daemon_as_a_notify_service() {
        let text = unit(&settings()).expect("a unit for plain paths");
        for line in [
            "Type=notify",
            "ExecStart=\"/opt/node guard/nodeguard\" daemon --resurrect --home /home/ann/.nodeguard --http 127.0.0.1:9615",
            "Restart=on-failure",
            "WatchdogSec=30s",
            "KillMode=mixed",
            "Environment=PATH=/usr/local/bin:/usr/bin",
            "WantedBy=default.target",
            "# Brings back the 2 app(s) saved in /home/ann/.nodeguard/dump.json: api, worker.",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    /// A stand-in for systemd: a bound datagram socket and a notifier connected to it.
    fn service_manager(watchdog_every: Duration) -> (tempdir::Dir, UnixDatagram, Arc<Notifier>) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let notifier = Arc::new(Notifier {
            socket: NotifySocket::connect(path.as_os_str()).unwrap(),
            address: path.into_os_string(),
            watchdog_every: Some(watchdog_every),
        });
        (dir, manager, notifier)
    }

    /// The messages that arrive within `within`.
    async fn received(manager: &UnixDatagram, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut messages = Vec::new();
        let mut buffer = [0u8; 4096];
        while tokio::time::Instant::now() < deadline {
            match manager.recv(&mut buffer) {
                Ok(n) => messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned()),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        messages
    }

    /// Answers the probe's questions as the supervisor actor would, with no apps.
    async fn answer(mut inbox: mpsc::Receiver<ControlRequest>) {
        while let Some(ControlRequest { command, reply }) = inbox.recv().await {
            let outcome = match command {
                Command::Ping => Outcome::Pong {
                    pid: 1,
                    version: "test".into(),
                },
                _ => Outcome::Status { apps: Vec::new() },
            };
            let _ = reply.send(outcome);
        }
    }

    #[tokio::test]
    async fn the_watchdog_is_fed_only_while_the_supervision_loop_answers() {
        let (_dir, manager, notifier) = service_manager(Duration::from_millis(50));
        let (requests, inbox) = mpsc::channel(64);
        let stopping = CancellationToken::new();
        let task = tokio::spawn(notify(notifier, Probe::new(requests), stopping.clone()));

        // The actor is stuck: its queue fills, nobody answers. No keep-alive, no READY=1.
        let silent = received(&manager, Duration::from_millis(800)).await;
        assert!(silent.is_empty(), "{silent:?}");

        // The actor answers again: READY=1 (no apps have settled at once), then keep-alives.
        let responder = tokio::spawn(answer(inbox));
        let messages = received(&manager, Duration::from_secs(4)).await;
        assert!(
            messages.iter().any(|m| m == "READY=1\nSTATUS=no apps"),
            "{messages:?}"
        );
        let fed = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
        assert!(fed >= 3, "{messages:?}");

        // STOPPING=1 once; keep-alives go on while the loop answers during the stop.
        stopping.cancel();
        let stop = received(&manager, Duration::from_millis(500)).await;
        let announced: Vec<&String> = stop.iter().filter(|m| *m != "WATCHDOG=1").collect();
        assert_eq!(
            announced,
            ["STOPPING=1\nSTATUS=stopping every app"],
            "{stop:?}"
        );
        let fed_after = stop
            .iter()
            .skip_while(|m| *m == "WATCHDOG=1")
            .filter(|m| *m == "WATCHDOG=1")
            .count();
        assert!(fed_after >= 2, "{stop:?}");
        // Once the supervision loop has finished, the notifier ends.
        responder.abort();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the notifier ends with the supervision loop")
            .unwrap();
    }

    #[test]
    fn unit_words_are_escaped() {
        assert_eq!(exec_word("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(exec_word("/a b"), "\"/a b\"");
        assert_eq!(exec_word("100%"), "100%%");
        assert_eq!(exec_word("$HOME"), "$$HOME");
        assert_eq!(exec_word("a\"b"), "\"a\\\"b\"");
    }
}
