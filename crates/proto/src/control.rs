//! Messages on the control socket, between the `nodeguard` CLI and a running supervisor.
//!
//! One request per connection: the client writes a [`Request`], the supervisor writes one
//! [`Response`] and closes. A request may be answered by any number of [`Outcome::Event`]
//! responses before its one final response (any other outcome): [`Command::Events`] streams
//! them until the client goes away.

use serde::{Deserialize, Serialize};

use crate::worker::MemoryUsage;

/// A command from the CLI. `version` must equal [`crate::PROTOCOL_VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A snapshot of every app.
    Status,
    /// Is the supervisor there? Answered with [`Outcome::Pong`].
    Ping,
    /// Add apps and start them; answered once each runs (or failed to). Build it with
    /// [`Command::start`].
    Start {
        apps: Vec<AppDefinition>,
        /// The callers' environment, sent once for every app whose `caller_env` is `None`
        /// (thousands of apps from one config share it: sent with each, a start of 10,000 apps
        /// was 24 MB, over the frame limit). `None` (older clients): each app carries its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller_env: Option<Vec<(String, String)>>,
    },
    /// Stop the target's processes; answered once they have exited. The apps stay listed.
    Stop { target: Target },
    /// Restart the target (or start it if stopped); answered once the new processes run.
    /// `update_env`: the caller's environment, replacing the one the apps were started with
    /// (`--update-env`).
    Restart {
        target: Target,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        update_env: Option<Vec<(String, String)>>,
    },
    /// Rolling reload: for each instance start a replacement, wait until it is ready, then drain
    /// the old one. Apps without listen addresses are restarted one instance at a time instead.
    /// Answered with [`Outcome::Reloaded`], or an error once a replacement failed (the old
    /// instances then keep serving).
    Reload {
        target: Target,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        update_env: Option<Vec<(String, String)>>,
    },
    /// Stop the target and forget it.
    Delete { target: Target },
    /// Set how many instances one app runs (PM2's `scale`): `count`, or with `relative` the
    /// current count plus `count` (negative: fewer). New instances take the next instance
    /// numbers and start as the others did; the highest ones are stopped gracefully and
    /// forgotten. Answered once the new ones run and the removed ones have exited, with the
    /// app's instances as they are then.
    Scale {
        target: Target,
        count: i64,
        #[serde(default)]
        relative: bool,
    },
    /// The target's configuration, counters and recent events.
    Describe { target: Target },
    /// Empty the target's log files.
    Flush { target: Target },
    /// Zero the target's restart and hang counters and its restart budget (PM2's `reset`).
    Reset { target: Target },
    /// Write the app list (configs, counters, stopped or not) to the state file now.
    Save,
    /// Bring back the apps of the state file that are not running.
    Resurrect,
    /// Stop every app, then the supervisor itself.
    Kill,
    /// A live stream of what happens to the target's apps (every app's, with no target or
    /// `all`): one [`Outcome::Event`] per event until the client closes the connection. The
    /// final outcome is an error for an unknown target; a supervisor going away just closes.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<Target>,
    },
    /// Take a CPU profile (over `duration_ms`) or a heap snapshot of each of the target's
    /// running processes, through the monitor inside it. Each is written to `<home>/profiles/`
    /// as it streams in; answered with [`Outcome::Profiled`] once all are complete.
    Profile {
        target: Target,
        kind: crate::worker::ProfileKind,
        #[serde(default)]
        duration_ms: Option<u64>,
    },
}

impl Command {
    /// A start of `apps`: when they all carry the same caller environment (one `start` of a
    /// config file), it is sent once for all of them instead of once per app.
    pub fn start(mut apps: Vec<AppDefinition>) -> Command {
        let shared = apps.first().and_then(|app| app.caller_env.clone());
        let Some(shared) = shared else {
            return Command::Start {
                apps,
                caller_env: None,
            };
        };
        if apps.len() < 2
            || apps
                .iter()
                .any(|app| app.caller_env.as_ref() != Some(&shared))
        {
            return Command::Start {
                apps,
                caller_env: None,
            };
        }
        for app in &mut apps {
            app.caller_env = None;
        }
        Command::Start {
            apps,
            caller_env: Some(shared),
        }
    }
}

/// Which apps a command applies to: `all`, an app id, or an app name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target(pub String);

impl Target {
    pub fn all() -> Self {
        Target("all".into())
    }

    pub fn is_all(&self) -> bool {
        self.0 == "all"
    }
}

/// An app as the CLI asks for it; the supervisor gives it an id and a unique name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppDefinition {
    /// Requested name; `None` derives it from the script's file name.
    pub name: Option<String>,
    /// Absolute path of the entry script.
    pub script: String,
    pub args: Vec<String>,
    /// Absolute path of the node binary.
    pub node: String,
    pub node_args: Vec<String>,
    pub cwd: String,
    /// Variables set on top of `caller_env`: from env files, the config's `env` and its
    /// `env_<name>` block, already put together in their order of precedence.
    pub env: Vec<(String, String)>,
    /// The environment of the `start` command's caller (less the variables that belong to the
    /// caller alone), the base of the app's environment; `None` (older clients and state files)
    /// means the supervisor's own environment.
    #[serde(default)]
    pub caller_env: Option<Vec<(String, String)>>,
    /// PM2's `filter_env`: the caller's variables whose names start with one of these prefixes
    /// are not passed (at `start` and at `--update-env`); the empty prefix (PM2's `true`) passes
    /// only the system's basics (PATH, HOME, USER, locale …).
    #[serde(default)]
    pub filter_env: Option<Vec<String>>,
    /// Where the app's stdout goes instead of `<home>/logs/<name>-out.log`.
    #[serde(default)]
    pub out_file: Option<String>,
    /// Where the app's stderr goes instead of `<home>/logs/<name>-err.log`.
    #[serde(default)]
    pub error_file: Option<String>,
    /// PM2's `disable_logs`: stdout and stderr go to /dev/null in the process itself (no pipe
    /// to the supervisor, no log files). An `out_file` or `error_file` of `/dev/null` (with no
    /// `log_file`) does the same for its one stream.
    #[serde(default)]
    pub disable_logs: bool,
    /// Prefix each log-file line with its time (RFC 3339, UTC).
    #[serde(default)]
    pub log_timestamps: bool,
    /// PM2's `log_type: 'json'`: each log-file line is a JSON object (`message`, `timestamp`,
    /// `type`, `process_id`, `app_name`), as PM2 writes it.
    #[serde(default)]
    pub log_json: bool,
    /// A hang's report names the requests in flight with their query string (left out by
    /// default: it may hold secrets).
    #[serde(default)]
    pub hang_show_query: bool,
    /// Before the memory guard (`max_memory`) restarts the app, take a heap snapshot into
    /// `<home>/profiles/` (bounded in time; the restart follows either way).
    #[serde(default)]
    pub heap_snapshot_on_memory_restart: bool,
    /// Take a short CPU profile into `<home>/profiles/` when the loop delay p99 of a pong reaches
    /// this many milliseconds (at most one per app every 10 minutes).
    #[serde(default)]
    pub profile_on_stall_ms: Option<u64>,
    /// `always`, `on-failure` or `never`; `None` means always.
    #[serde(default)]
    pub autorestart: Option<String>,
    /// Restart budget; `None` means the supervisor's default, 0 no limit.
    #[serde(default)]
    pub max_restarts: Option<u32>,
    #[serde(default)]
    pub restart_window_ms: Option<u64>,
    /// RSS limit in bytes, checked at every heartbeat.
    #[serde(default)]
    pub max_memory: Option<u64>,
    /// Exit codes that count as a clean stop under `on-failure`; `None` means `[0]`.
    #[serde(default)]
    pub clean_exit_codes: Option<Vec<i32>>,
    /// Uptime that resets the backoff; `None` means the default (1 s).
    #[serde(default)]
    pub min_uptime_ms: Option<u64>,
    /// Delay before every restart; `None` means none.
    #[serde(default)]
    pub restart_delay_ms: Option<u64>,
    /// First backoff delay after a quick crash; `None` means the default (100 ms).
    #[serde(default)]
    pub backoff_base_ms: Option<u64>,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub heartbeat_misses: u32,
    pub start_grace_ms: u64,
    pub kill_timeout_ms: u64,
    /// How many processes run the app (cluster mode); 0 is read as 1.
    #[serde(default = "one")]
    pub instances: u32,
    /// PM2's cluster mode asked for (`exec_mode: 'cluster'`, or `-i` on the command line): with
    /// no `listen`, the supervisor shares the address the app listens on even with one instance,
    /// so `reload` overlaps the old and the new process and `scale` can add instances.
    #[serde(default)]
    pub cluster: bool,
    /// `[host:]port` addresses the supervisor binds once and hands to every instance.
    #[serde(default)]
    pub listen: Vec<String>,
    /// An instance is ready only once it calls `monitor.ready()`.
    #[serde(default)]
    pub wait_ready: bool,
    /// How long a new instance has to become ready; `None` means the default.
    #[serde(default)]
    pub listen_timeout_ms: Option<u64>,
    /// Absolute paths whose changes restart the app (reload it, with listen addresses); empty
    /// means no watching.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Globs of paths under the watched ones to leave out (besides `node_modules` and `.git`).
    #[serde(default)]
    pub ignore_watch: Vec<String>,
    /// Quiet time after a change before the restart; `None` means the default.
    #[serde(default)]
    pub watch_delay_ms: Option<u64>,
    /// A cron pattern (5 or 6 fields, seconds first when 6) of graceful restarts, in local time.
    #[serde(default)]
    pub cron_restart: Option<String>,
    /// The signal that asks the app to stop (`SIGINT`, `SIGTERM`, ...); `None` means SIGTERM.
    #[serde(default)]
    pub kill_signal: Option<String>,
    /// Ask the app to stop with the message `'shutdown'` on `process.on('message')`.
    #[serde(default)]
    pub shutdown_with_message: bool,
    /// What runs `script`: `None` is node (`node` above, with the monitor preloaded); `"none"`
    /// runs `script` itself as a command (a file or a program found on PATH); anything else is
    /// the absolute path of an interpreter (bun, python3, tsx, ...) run as
    /// `interpreter interpreter_args script args`. Node processes started by a command or an
    /// interpreter carry the monitor through `NODE_OPTIONS`.
    #[serde(default)]
    pub interpreter: Option<String>,
    /// Arguments for a non-node interpreter, before the script.
    #[serde(default)]
    pub interpreter_args: Vec<String>,
    /// The variable holding the instance number (PM2's `instance_var`); `None` means
    /// `NODE_APP_INSTANCE`, as in PM2.
    #[serde(default)]
    pub instance_var: Option<String>,
    /// A variable of the app's environment (e.g. `PORT`) whose number grows by one per instance
    /// (PM2's `increment_var`).
    #[serde(default)]
    pub increment_var: Option<String>,
    /// A group name that targets every app in it (`restart <namespace>`), PM2's `namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Run the app as this user (a name, or a number with `gid`), PM2's `uid`; root only. Its
    /// group is the user's own unless `gid` says otherwise.
    #[serde(default)]
    pub uid: Option<String>,
    /// Run the app with this group (a name or a number), PM2's `gid`; root only.
    #[serde(default)]
    pub gid: Option<String>,
    /// PM2's `log_date_format` (moment/dayjs tokens): each log-file line starts with its local
    /// time in this format; wins over `log_timestamps`.
    #[serde(default)]
    pub log_date_format: Option<String>,
    /// PM2's `log_file`: a file that gets both streams' lines, besides the out and error files.
    /// An absolute path, or `""` for `<home>/logs/<name>-combined.log`.
    #[serde(default)]
    pub log_file: Option<String>,
    /// PM2's `pid_file`: an absolute path written with the app's pid at each spawn and removed
    /// when the process ends; with several instances, `-<id>` goes before its extension.
    #[serde(default)]
    pub pid_file: Option<String>,
    /// Event hooks, each `KINDS=COMMAND` or `KINDS=http://HOST:PORT/PATH` (`--on-event`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_event: Vec<String>,
}

fn one() -> u32 {
    1
}

/// The supervisor's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    Status {
        apps: Vec<AppStatus>,
    },
    /// Answer to [`Command::Ping`].
    Pong {
        pid: u32,
        version: String,
    },
    /// A command took effect; the apps it touched, as they are now.
    Done {
        apps: Vec<AppStatus>,
    },
    /// Answer to [`Command::Reload`]: the apps as they are now, and what was done (one line
    /// each, e.g. that an app without listen addresses was restarted rather than reloaded).
    Reloaded {
        apps: Vec<AppStatus>,
        notes: Vec<String>,
    },
    /// Answer to [`Command::Describe`].
    Described {
        apps: Vec<AppDescription>,
    },
    Error {
        message: String,
    },
    /// One event of a stream, before the request's final outcome (see [`Command::Events`]).
    Event {
        event: EventRecord,
    },
    /// Answer to [`Command::Profile`]: the files written (one per process), and one line for
    /// each process that could not be profiled.
    Profiled {
        profiles: Vec<ProfileFile>,
        #[serde(default)]
        errors: Vec<String>,
    },
}

/// One thing that happened to one app (or one instance), as `nodeguard events --json` prints it:
/// one JSON object per line. Fields that do not apply are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// RFC 3339, UTC.
    pub at: String,
    pub app: String,
    pub id: u32,
    /// The instance, for cluster-mode apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// What happened: `state` (the app's state, pid or counters changed), a kind of
    /// [`AppEvent::kind`] (`started`, `exited`, `hung`, `stack`, `memory`, `errored`, `stopped`,
    /// `ready`, `not_ready`, `reloaded`, `reload_aborted`, ...), or `lagged` (this stream fell
    /// behind and `missed` events were dropped for it; the `app` is then empty).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// For `state`: the app's state now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AppState>,
    /// For `exited` and `stopped`: the exit code, when the process exited by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// For `exited` and `stopped`: the signal that ended the process (`SIGKILL`, or `SIG<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// For `state`: the app's restart and hang counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangs: Option<u64>,
    /// The event's line, as `describe` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `stack`: where the hung event loop was, innermost frame first, one frame per line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    /// For `lagged`: how many events this stream missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// A profile the supervisor wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileFile {
    pub name: String,
    pub id: u32,
    #[serde(default)]
    pub instance: Option<u32>,
    pub pid: u32,
    /// Absolute path, inside `<home>/profiles/`.
    pub path: String,
    pub bytes: u64,
    /// The function with the most self time (CPU profiles), e.g. `burnCpu (/srv/app.js:3) 62%`.
    #[serde(default)]
    pub hottest: Option<String>,
}

/// Lifecycle state of an app, as shown by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Spawned; its first pong (or the end of its start grace) has not come yet.
    Starting,
    /// Alive, and answering heartbeats if it has a monitor.
    Running,
    /// Asked to stop; waiting for it to exit before the kill timeout.
    Stopping,
    /// Not running, by request.
    Stopped,
    /// Exited unexpectedly; waiting out the restart delay.
    Backoff,
    /// Could not be started, or gave up restarting it; needs an operator.
    Errored,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Starting => "starting",
            AppState::Running => "running",
            AppState::Stopping => "stopping",
            AppState::Stopped => "stopped",
            AppState::Backoff => "backoff",
            AppState::Errored => "errored",
        }
    }
}

/// One app's row in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub id: u32,
    /// Which instance of the app this row is (0-based), for apps run in cluster mode (several
    /// instances or shared listen addresses); `None` otherwise.
    #[serde(default)]
    pub instance: Option<u32>,
    pub script: String,
    pub pid: Option<u32>,
    pub state: AppState,
    /// Restarts performed after unexpected exits, hangs and memory-limit breaches.
    pub restarts: u64,
    /// Hung event loops detected (each killed; restarted unless over the restart budget).
    pub hangs: u64,
    /// Time since the current process was spawned.
    pub uptime_ms: Option<u64>,
    /// Whether a monitor connected from this process (hang detection applies only then).
    pub monitored: bool,
    /// From the latest pong: the main process alone.
    pub memory: Option<MemoryUsage>,
    /// Resident memory of the app's whole process tree (main process from the latest pong, its
    /// descendants from the supervisor's last scan), in bytes. What `--max-memory` checks.
    #[serde(default)]
    pub tree_rss: Option<u64>,
    /// Processes in the app's tree, the main one included.
    #[serde(default)]
    pub processes: Option<u32>,
    /// p99 event-loop delay over the interval before the latest pong.
    pub loop_delay_ms: Option<f64>,
    /// Event-loop delay over that interval: mean, p50, p99 and max.
    #[serde(default)]
    pub loop_delay: Option<crate::worker::LoopDelay>,
    /// Time since the latest pong arrived.
    pub last_pong_ms: Option<u64>,
    /// Round trip of the latest answered ping (socket, monitor thread, JS thread and back).
    pub pong_rtt_ms: Option<f64>,
    /// Why the app is errored, or what ended its last process.
    pub last_exit: Option<String>,
    /// CPU use of the app's whole process tree over the supervisor's last scan interval (about
    /// a second), in percent of one core (200 is two cores busy); `None` until two scans have
    /// seen the process, and where process trees are not tracked (not Linux).
    #[serde(default)]
    pub cpu_percent: Option<f64>,
}

/// Everything `describe` shows of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppDescription {
    pub status: AppStatus,
    pub definition: AppDefinition,
    /// Oldest first.
    pub events: Vec<AppEvent>,
}

/// Something that happened to an app, with its wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppEvent {
    /// RFC 3339, UTC.
    pub at: String,
    /// `started`, `ready`, `not_ready`, `exited`, `hung`, `stack` (where a hung loop was stuck),
    /// `hang_disproved`, `stack_timeout`, `memory`, `profile`, `errored`, `stopped`, `kill_timeout`,
    /// `spawn_failed`, `unmonitored`, `late_check`, `reloaded` or `reload_aborted`.
    pub kind: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_sends_the_caller_environment_once_for_apps_that_share_it() {
        let app = |name: &str, env: &[(&str, &str)]| -> AppDefinition {
            let mut app: AppDefinition = serde_json::from_value(serde_json::json!({
                "name": name, "script": "/srv/app.js", "args": [], "node": "/usr/bin/node",
                "node_args": [], "cwd": "/srv", "env": [], "autorestart": "always",
                "max_restarts": 3, "restart_window_ms": 60000, "max_memory": null,
                "clean_exit_codes": [0], "min_uptime_ms": 1000, "restart_delay_ms": 0,
                "backoff_base_ms": 100, "heartbeat_interval_ms": 1000,
                "heartbeat_timeout_ms": 1000, "heartbeat_misses": 3, "start_grace_ms": 2000,
                "kill_timeout_ms": 2000, "instances": 1, "listen": []
            }))
            .expect("a minimal definition parses");
            app.caller_env = Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            app
        };
        let big = "x".repeat(10_000);
        let shared = [("PATH", "/usr/bin"), ("BIG", big.as_str())];
        let apps: Vec<AppDefinition> = (0..100).map(|i| app(&format!("a{i}"), &shared)).collect();
        let separate = serde_json::to_vec(&Command::Start {
            apps: apps.clone(),
            caller_env: None,
        })
        .expect("serializes");
        let once = serde_json::to_vec(&Command::start(apps.clone())).expect("serializes");
        assert!(separate.len() > 1_000_000, "{}", separate.len());
        assert!(once.len() < 200_000, "{}", once.len());
        let Command::Start {
            apps: sent,
            caller_env,
        } = Command::start(apps.clone())
        else {
            panic!("a start");
        };
        assert!(sent.iter().all(|app| app.caller_env.is_none()));
        assert_eq!(caller_env.as_ref(), apps[0].caller_env.as_ref());
        // Apps with different environments (or one app) keep their own.
        let mixed = vec![app("a", &shared), app("b", &[("PATH", "/bin")])];
        let Command::Start {
            apps: sent,
            caller_env,
        } = Command::start(mixed.clone())
        else {
            panic!("a start");
        };
        assert_eq!(sent, mixed);
        assert_eq!(caller_env, None);
        // An older client's start (no shared environment) still parses.
        let old: Command = serde_json::from_str(r#"{"type":"start","apps":[]}"#).expect("parses");
        assert_eq!(
            old,
            Command::Start {
                apps: vec![],
                caller_env: None
            }
        );
    }

    #[test]
    fn events_takes_no_target_and_a_record_leaves_out_what_does_not_apply() {
        let request: Request =
            serde_json::from_str(r#"{"version":1,"command":{"type":"events"}}"#).unwrap();
        assert_eq!(request.command, Command::Events { target: None });
        let record = EventRecord {
            at: "2026-11-29T23:00:00.000Z".into(),
            app: "api".into(),
            id: 3,
            kind: "exited".into(),
            pid: Some(42),
            code: Some(1),
            ..EventRecord::default()
        };
        let response = Response {
            version: 1,
            outcome: Outcome::Event {
                event: record.clone(),
            },
        };
        let json = serde_json::to_string(&response).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"outcome":{"type":"event","event":{"at":"2026-11-29T23:00:00.000Z","app":"api","id":3,"kind":"exited","pid":42,"code":1}}}"#
        );
        let back: Response = serde_json::from_str(&json).unwrap();
        assert_eq!(back.outcome, Outcome::Event { event: record });
    }
}
