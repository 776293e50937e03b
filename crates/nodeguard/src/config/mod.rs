//! What to supervise: validated app specs and supervisor settings, built from the command line and
//! checked up front so that a bad script or node path is refused before anything starts.

pub mod file;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nodeguard_proto::control::AppDefinition;

use crate::core::machine::{
    Autorestart, ExitCodes, RestartPolicy, Timing, BACKOFF_BASE, DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART_WINDOW, STABLE_UPTIME,
};

/// Default time between heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default time a ping may stay unanswered before it counts as a miss.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive misses that declare a worker hung.
pub const DEFAULT_HEARTBEAT_MISSES: u32 = 3;
/// Default time a new worker has before its first pong is due.
pub const DEFAULT_START_GRACE: Duration = Duration::from_secs(5);
/// Default time between SIGTERM and SIGKILL when stopping.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a cluster-mode instance has to become ready (PM2's `listen_timeout` default).
pub const DEFAULT_LISTEN_TIMEOUT: Duration = Duration::from_secs(8);
/// The most instances one app may have.
pub const MAX_INSTANCES: u32 = 256;

/// One app to supervise.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub id: u32,
    pub name: String,
    /// Absolute path of the entry script.
    pub script: PathBuf,
    pub args: Vec<String>,
    pub node: PathBuf,
    pub node_args: Vec<String>,
    pub cwd: PathBuf,
    /// Extra environment, on top of the supervisor's own.
    pub env: Vec<(String, String)>,
    pub timing: Timing,
    /// Log file paths instead of the defaults under `<home>/logs/`.
    pub out_file: Option<PathBuf>,
    pub error_file: Option<PathBuf>,
    /// Prefix each log-file line with its time.
    pub log_timestamps: bool,
    /// How many processes run the app.
    pub instances: u32,
    /// Which of them this spec is for (0-based).
    pub instance: u32,
    /// Addresses the supervisor listens on and hands to every instance.
    pub listen: Vec<ListenAddress>,
    /// Ready only at `monitor.ready()`.
    pub wait_ready: bool,
    /// How long an instance has to become ready (cluster mode only).
    pub listen_timeout: Duration,
}

/// A `[host:]port` the supervisor binds for an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// `None`: every interface, as Node's `listen(port)` (`::` dual-stack, else `0.0.0.0`).
    pub host: Option<String>,
    pub port: u16,
}

impl ListenAddress {
    /// `3000`, `127.0.0.1:3000`, `[::1]:3000`, `localhost:3000`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::Listen(text.to_string());
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    return Err(bad());
                }
                (Some(host.to_string()), port)
            }
            None => (None, text),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(Self { host, port })
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) if host.contains(':') => write!(f, "[{host}]:{}", self.port),
            Some(host) => write!(f, "{host}:{}", self.port),
            None => write!(f, "{}", self.port),
        }
    }
}

impl AppSpec {
    /// Whether the app runs in cluster mode: readiness by `Ready`, rolling reloads.
    pub fn cluster_mode(&self) -> bool {
        !self.listen.is_empty() || self.wait_ready
    }

    /// The instance number, for an app with several instances or in cluster mode (what status
    /// shows as `name:instance`).
    pub fn shown_instance(&self) -> Option<u32> {
        (self.instances > 1 || self.cluster_mode()).then_some(self.instance)
    }

    /// The name as output prefixes and log lines show it: `web:1` for an instance, else `web`.
    pub fn display_name(&self) -> String {
        match self.shown_instance() {
            Some(instance) => format!("{}:{instance}", self.name),
            None => self.name.clone(),
        }
    }

    /// The ready timeout the state machine enforces, in cluster mode.
    pub fn ready_timeout(&self) -> Option<Duration> {
        self.cluster_mode().then_some(self.listen_timeout)
    }
}

impl AppSpec {
    /// The wire form of this app (for `describe` and the state file).
    pub fn definition(&self) -> AppDefinition {
        let millis = |d: Duration| d.as_millis() as u64;
        AppDefinition {
            name: Some(self.name.clone()),
            script: self.script.display().to_string(),
            args: self.args.clone(),
            node: self.node.display().to_string(),
            node_args: self.node_args.clone(),
            cwd: self.cwd.display().to_string(),
            env: self.env.clone(),
            out_file: self.out_file.as_ref().map(|p| p.display().to_string()),
            error_file: self.error_file.as_ref().map(|p| p.display().to_string()),
            log_timestamps: self.log_timestamps,
            autorestart: Some(self.timing.policy.autorestart.as_str().to_string()),
            max_restarts: Some(self.timing.policy.max_restarts),
            restart_window_ms: Some(millis(self.timing.policy.restart_window)),
            max_memory: self.timing.policy.max_memory,
            clean_exit_codes: Some(self.timing.policy.clean_exit_codes.codes()),
            min_uptime_ms: Some(millis(self.timing.policy.min_uptime)),
            restart_delay_ms: Some(millis(self.timing.policy.restart_delay)),
            backoff_base_ms: Some(millis(self.timing.policy.backoff_base)),
            heartbeat_interval_ms: millis(self.timing.heartbeat_interval),
            heartbeat_timeout_ms: millis(self.timing.heartbeat_timeout),
            heartbeat_misses: self.timing.heartbeat_misses,
            start_grace_ms: millis(self.timing.start_grace),
            kill_timeout_ms: millis(self.timing.kill_timeout),
            instances: self.instances,
            listen: self.listen.iter().map(ToString::to_string).collect(),
            wait_ready: self.wait_ready,
            listen_timeout_ms: Some(millis(self.listen_timeout)),
        }
    }

    /// An app from its wire form, with the given id and name; the timing is validated.
    pub fn from_definition(
        id: u32,
        name: String,
        definition: AppDefinition,
    ) -> Result<Self, ConfigError> {
        let ms = Duration::from_millis;
        let timing = Timing {
            heartbeat_interval: ms(definition.heartbeat_interval_ms),
            heartbeat_timeout: ms(definition.heartbeat_timeout_ms),
            heartbeat_misses: definition.heartbeat_misses,
            start_grace: ms(definition.start_grace_ms),
            kill_timeout: ms(definition.kill_timeout_ms),
            policy: RestartPolicy {
                autorestart: match definition.autorestart.as_deref() {
                    Some(mode) => Autorestart::parse(mode).map_err(ConfigError::Policy)?,
                    None => Autorestart::Always,
                },
                max_restarts: definition.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
                restart_window: definition
                    .restart_window_ms
                    .map_or(DEFAULT_RESTART_WINDOW, ms),
                max_memory: definition.max_memory,
                clean_exit_codes: match definition.clean_exit_codes {
                    Some(codes) => ExitCodes::from_codes(codes.into_iter().map(i64::from))
                        .map_err(ConfigError::Policy)?,
                    None => ExitCodes::default(),
                },
                min_uptime: definition.min_uptime_ms.map_or(STABLE_UPTIME, ms),
                restart_delay: definition.restart_delay_ms.map_or(Duration::ZERO, ms),
                backoff_base: definition.backoff_base_ms.map_or(BACKOFF_BASE, ms),
            },
        };
        validate_timing(&timing)?;
        let instances = definition.instances.max(1);
        if instances > MAX_INSTANCES {
            return Err(ConfigError::Instances(instances));
        }
        let listen = definition
            .listen
            .iter()
            .map(|text| ListenAddress::parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        let listen_timeout = definition
            .listen_timeout_ms
            .map_or(DEFAULT_LISTEN_TIMEOUT, ms);
        if listen_timeout.is_zero() {
            return Err(ConfigError::Policy(
                "--listen-timeout must be greater than zero".into(),
            ));
        }
        Ok(AppSpec {
            id,
            name,
            script: PathBuf::from(definition.script),
            args: definition.args,
            node: PathBuf::from(definition.node),
            node_args: definition.node_args,
            cwd: PathBuf::from(definition.cwd),
            env: definition.env,
            timing,
            out_file: definition.out_file.map(PathBuf::from),
            error_file: definition.error_file.map(PathBuf::from),
            log_timestamps: definition.log_timestamps,
            instances,
            instance: 0,
            listen,
            wait_ready: definition.wait_ready,
            listen_timeout,
        })
    }
}

/// A problem with the configuration, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("script not found: {}", .0.display())]
    ScriptNotFound(PathBuf),
    #[error("node binary not found: {0} (install Node.js, or pass --node PATH)")]
    NodeNotFound(String),
    #[error("heartbeat timeout ({timeout}) must not exceed the heartbeat interval ({interval})")]
    TimeoutExceedsInterval { timeout: String, interval: String },
    #[error("--heartbeat-misses must be at least 1")]
    ZeroMisses,
    #[error("--heartbeat-interval must be greater than zero")]
    ZeroInterval,
    #[error("no app to run: give at least one script with -m")]
    NoApps,
    #[error("cannot determine the state directory: set NODEGUARD_HOME or HOME")]
    NoHome,
    #[error("{0}")]
    Policy(String),
    #[error("cannot read the current directory: {0}")]
    Cwd(#[source] std::io::Error),
    #[error("'{0}' is not a listen address (write PORT or HOST:PORT, port 1-65535)")]
    Listen(String),
    #[error("{0} instances is too many (at most {MAX_INSTANCES})")]
    Instances(u32),
}

/// Checks the heartbeat settings against each other.
pub fn validate_timing(timing: &Timing) -> Result<(), ConfigError> {
    if timing.heartbeat_interval.is_zero() {
        return Err(ConfigError::ZeroInterval);
    }
    if timing.heartbeat_misses == 0 {
        return Err(ConfigError::ZeroMisses);
    }
    if timing.heartbeat_timeout > timing.heartbeat_interval {
        return Err(ConfigError::TimeoutExceedsInterval {
            timeout: crate::core::exit::human(timing.heartbeat_timeout),
            interval: crate::core::exit::human(timing.heartbeat_interval),
        });
    }
    Ok(())
}

/// Finds the node binary: a path is taken as is, a bare name is looked up on PATH.
pub fn resolve_node(node: &str) -> Result<PathBuf, ConfigError> {
    which::which(node).map_err(|_| ConfigError::NodeNotFound(node.to_string()))
}

/// Resolves a script against `cwd` and checks that it is a file.
pub fn resolve_script(script: &Path, cwd: &Path) -> Result<PathBuf, ConfigError> {
    let full = cwd.join(script);
    if full.is_file() {
        Ok(full)
    } else {
        Err(ConfigError::ScriptNotFound(script.to_path_buf()))
    }
}

/// App names from script file names without their extension; a repeated name gets `-1`, `-2`, ….
pub fn app_names<'a>(scripts: impl IntoIterator<Item = &'a Path>) -> Vec<String> {
    let mut names = Vec::new();
    for script in scripts {
        let name = unique_name(script, &names);
        names.push(name);
    }
    names
}

/// A name for `script` that is not in `taken` and cannot be mistaken for a target (`all`, or an
/// id): its file stem, suffixed `-1`, `-2`, … if needed.
pub fn unique_name(script: &Path, taken: &[String]) -> String {
    let base = script
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .filter(|stem| !stem.is_empty())
        .unwrap_or_else(|| "app".to_string());
    let mut name = base.clone();
    let mut suffix = 1;
    while taken.contains(&name) || name == "all" || name.chars().all(|c| c.is_ascii_digit()) {
        name = format!("{base}-{suffix}");
        suffix += 1;
    }
    name
}

/// `NODEGUARD_HOME`, else `~/.nodeguard`.
pub fn default_home() -> Result<PathBuf, ConfigError> {
    if let Some(home) = std::env::var_os("NODEGUARD_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".nodeguard"))
        .ok_or(ConfigError::NoHome)
}

/// Foreground mode's home when none is given (no `--home`, no `NODEGUARD_HOME`):
/// `<default home>/foreground-<pid>`, a home of its own, so that a foreground run (`npm run demo`)
/// never collides with a daemon on the default home. `None` when `NODEGUARD_HOME` names one.
pub fn foreground_home() -> Result<Option<PathBuf>, ConfigError> {
    if std::env::var_os("NODEGUARD_HOME").is_some_and(|h| !h.is_empty()) {
        return Ok(None);
    }
    let home = default_home()?.join(format!("foreground-{}", std::process::id()));
    Ok(Some(home))
}

/// Name of the monitor's preload script in the `nodeguard-monitor` package.
pub const PRELOAD_FILE: &str = "preload.js";

/// Finds the monitor's preload script next to this binary: in a checkout
/// (`target/release/nodeguard` → `preload.js` at the root) or in an npm install (the platform
/// package beside `node_modules/nodeguard-monitor/`).
pub fn find_preload() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let dir = exe.parent()?;
    let candidates = [
        dir.join(PRELOAD_FILE),
        dir.join("../nodeguard-monitor").join(PRELOAD_FILE),
        dir.join("../../nodeguard-monitor").join(PRELOAD_FILE),
        dir.join("../..").join(PRELOAD_FILE),
        dir.join("../../..").join(PRELOAD_FILE),
    ];
    candidates
        .into_iter()
        .find(|candidate| candidate.is_file())
        .and_then(|found| found.canonicalize().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_stems_and_clashes_get_suffixes() {
        let scripts = [
            Path::new("examples/main1.js"),
            Path::new("a/app.js"),
            Path::new("b/app.mjs"),
            Path::new("c/app.js"),
        ];
        assert_eq!(app_names(scripts), ["main1", "app", "app-1", "app-2"]);
        let reserved = [Path::new("all.js"), Path::new("2024.js")];
        assert_eq!(app_names(reserved), ["all-1", "2024-1"]);
    }

    #[test]
    fn listen_addresses_parse_with_or_without_a_host() {
        let parse = |t: &str| ListenAddress::parse(t).map(|a| (a.host, a.port));
        assert_eq!(parse("3000").unwrap(), (None, 3000));
        assert_eq!(
            parse("127.0.0.1:8080").unwrap(),
            (Some("127.0.0.1".into()), 8080)
        );
        assert_eq!(parse("[::1]:80").unwrap(), (Some("::1".into()), 80));
        for bad in ["", "0", "x", ":80", "70000", "host:"] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(
            ListenAddress::parse("[::1]:80").unwrap().to_string(),
            "[::1]:80"
        );
    }

    #[test]
    fn timeout_longer_than_interval_is_refused() {
        let timing = Timing {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(2),
            heartbeat_misses: 3,
            start_grace: DEFAULT_START_GRACE,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            policy: RestartPolicy::default(),
        };
        assert!(matches!(
            validate_timing(&timing),
            Err(ConfigError::TimeoutExceedsInterval { .. })
        ));
    }
}
