//! What to supervise: validated app specs and supervisor settings, built from the command line and
//! checked up front so that a bad script or node path is refused before anything starts.

pub mod command;
pub mod env;
pub mod file;
pub mod hooks;

use crate::core::date_format::DateFormat;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodeguard_proto::control::AppDefinition;

use crate::core::machine::{
    Autorestart, ExitCodes, RestartPolicy, StopSignal, Timing, BACKOFF_BASE, DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART_WINDOW, STABLE_UPTIME,
};

pub use crate::core::policy::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_MISSES, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_KILL_TIMEOUT, DEFAULT_START_GRACE,
};
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
    /// Extra environment, on top of `caller_env` (or the supervisor's own).
    pub env: Vec<(String, String)>,
    /// The environment of `start`'s caller, which the app gets instead of the supervisor's own
    /// (see [`env`]); `None` in foreground mode and for apps saved before it was recorded. Shared
    /// by the app's instances and reload replacements.
    pub caller_env: Option<std::sync::Arc<[(String, String)]>>,
    /// PM2's `filter_env`, applied to a new caller environment (`--update-env`).
    pub filter_env: Option<Vec<String>>,
    pub timing: Timing,
    /// Log file paths instead of the defaults under `<home>/logs/`.
    pub out_file: Option<PathBuf>,
    pub error_file: Option<PathBuf>,
    /// PM2's `disable_logs` (see [`AppSpec::discards_stdout`]).
    pub disable_logs: bool,
    /// Prefix each log-file line with its time.
    pub log_timestamps: bool,
    /// PM2's `log_type: 'json'`: each log-file line is a JSON object.
    pub log_json: bool,
    /// A hang's report shows the in-flight requests' query strings.
    pub hang_show_query: bool,
    /// A heap snapshot before a memory restart.
    pub heap_snapshot_on_memory_restart: bool,
    /// A CPU profile when the loop delay p99 reaches this.
    pub profile_on_stall: Option<Duration>,
    /// How many processes run the app.
    pub instances: u32,
    /// PM2's cluster mode asked for (see [`AppDefinition::cluster`]): the port is shared by the
    /// supervisor even with one instance.
    pub cluster: bool,
    /// Which of them this spec is for (0-based).
    pub instance: u32,
    /// Addresses the supervisor listens on and hands to every instance.
    pub listen: Vec<ListenAddress>,
    /// Ready only at `monitor.ready()`.
    pub wait_ready: bool,
    /// How long an instance has to become ready (cluster mode only).
    pub listen_timeout: Duration,
    /// Restart (or reload) when files change.
    pub watch: Option<WatchSpec>,
    /// Restart (or reload) on this schedule (a checked cron pattern).
    pub cron_restart: Option<String>,
    /// What a graceful stop sends the app when its monitor cannot be asked.
    pub kill_signal: StopSignal,
    /// Ask the app to stop with `'shutdown'` on `process.on('message')`.
    pub shutdown_with_message: bool,
    /// What runs the script (see [`AppDefinition::interpreter`]): `None` is node.
    pub interpreter: Option<String>,
    pub interpreter_args: Vec<String>,
    /// PM2's `instance_var` and `increment_var`.
    pub instance_vars: InstanceVars,
    /// PM2's `namespace`: a target naming every app in it.
    pub namespace: Option<String>,
    /// PM2's `uid`/`gid`: the user and group the app runs as (root only).
    pub run_as: Option<RunAs>,
    /// PM2's `log_date_format`, compiled once for the app.
    pub log_date_format: Option<std::sync::Arc<DateFormat>>,
    /// PM2's `log_file`: both streams in one more file; an empty path means the default place.
    pub log_file: Option<PathBuf>,
    /// PM2's `pid_file` (see [`AppSpec::pid_file_path`]).
    pub pid_file: Option<PathBuf>,
    /// Event hooks (`--on-event`, `on_event`); empty costs nothing.
    pub hooks: std::sync::Arc<[hooks::HookSpec]>,
}

/// The user and group an app runs as instead of the supervisor's (which must be root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `None`: the supervisor's user (only the group changes).
    pub uid: Option<u32>,
    pub gid: u32,
    /// As given (a name or a number), for the wire form.
    pub user: Option<String>,
    pub group: Option<String>,
}

impl RunAs {
    /// From PM2's `uid` and `gid` (names or numbers): `None` when neither is given. Refused
    /// unless this process is root, and for a user or group the system does not know.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Self>, ConfigError> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let euid = crate::platform::current_uid();
        if euid != 0 {
            return Err(ConfigError::Policy(format!(
                "uid/gid: only root can run an app as another user or group (nodeguard runs as \
                 uid {euid}); start the daemon as that user instead"
            )));
        }
        let shown = |text: &str| text.escape_debug().to_string();
        let number = |text: &str| {
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<u32>().ok())
                .flatten()
        };
        let lookup_error = |what: &str, text: &str, error: std::io::Error| {
            ConfigError::Policy(format!(
                "{what} '{}': cannot look it up: {error}",
                shown(text)
            ))
        };
        let group_gid = match group {
            None => None,
            Some(text) => Some(match number(text) {
                Some(gid) => gid,
                None => crate::platform::group_id(text)
                    .map_err(|e| lookup_error("gid", text, e))?
                    .ok_or_else(|| {
                        ConfigError::Policy(format!("gid: no group named '{}'", shown(text)))
                    })?,
            }),
        };
        let (uid, user_gid) = match user {
            None => (None, None),
            Some(text) => match number(text) {
                Some(uid) if group_gid.is_some() => (Some(uid), None),
                Some(_) => {
                    return Err(ConfigError::Policy(format!(
                        "uid: '{}' is a number: give the group too (gid), or the user's name",
                        shown(text)
                    )))
                }
                None => {
                    let account = crate::platform::user_account(text)
                        .map_err(|e| lookup_error("uid", text, e))?
                        .ok_or_else(|| {
                            ConfigError::Policy(format!("uid: no user named '{}'", shown(text)))
                        })?;
                    (Some(account.uid), Some(account.gid))
                }
            },
        };
        let Some(gid) = group_gid.or(user_gid) else {
            // A user given by name brings its group; by number it needs `gid` (checked above).
            return Err(ConfigError::Policy("uid: give the group too (gid)".into()));
        };
        Ok(Some(RunAs {
            uid,
            gid,
            user: user.map(str::to_string),
            group: group.map(str::to_string),
        }))
    }
}

/// The environment variables PM2 sets per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceVars {
    /// Holds the instance number; `None` is `NODE_APP_INSTANCE`.
    pub instance_var: Option<String>,
    /// A numeric variable of the app's environment that grows by one per instance.
    pub increment_var: Option<String>,
}

/// PM2's default name for the instance-number variable.
pub const DEFAULT_INSTANCE_VAR: &str = "NODE_APP_INSTANCE";

impl InstanceVars {
    /// The variables for instance `instance`, given the app's environment (`env`, then the
    /// supervisor's own for an `increment_var` the app's does not set). An `increment_var` that is
    /// missing or not a number is left as it is.
    pub fn for_instance(&self, instance: u32, env: &[(String, String)]) -> Vec<(String, String)> {
        let name = self.instance_var.as_deref().unwrap_or(DEFAULT_INSTANCE_VAR);
        let mut vars = vec![(name.to_string(), instance.to_string())];
        if let Some(var) = &self.increment_var {
            let base = env
                .iter()
                .rev()
                .find(|(key, _)| key == var)
                .map(|(_, value)| value.clone())
                .or_else(|| std::env::var(var).ok());
            let next = base
                .and_then(|text| text.trim().parse::<u64>().ok())
                .and_then(|base| base.checked_add(u64::from(instance)));
            if let Some(value) = next {
                vars.push((var.clone(), value.to_string()));
            }
        }
        vars
    }
}

/// An environment variable name given in a config (`instance_var`, `increment_var`): non-empty,
/// no `=` or NUL, at most 256 bytes.
pub fn check_var_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 256 || name.contains(['=', '\0']) {
        return Err(ConfigError::Policy(format!(
            "{field}: '{}' is not an environment variable name",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Default quiet time after a file change before the restart (PM2's `watch_delay` default).
pub const DEFAULT_WATCH_DELAY: Duration = Duration::from_millis(1000);

/// What to watch for an app's `watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// Absolute files or directories (directories recursively).
    pub paths: Vec<PathBuf>,
    /// Globs to leave out, besides [`WatchSpec::ALWAYS_IGNORED`].
    pub ignore: Vec<String>,
    /// How long changes must stop before the restart: one burst of saves is one restart.
    pub delay: Duration,
}

impl WatchSpec {
    /// Never watched, whatever `ignore_watch` says (as PM2).
    pub const ALWAYS_IGNORED: &'static [&'static str] = &["node_modules", ".git"];
}

/// Checks a `cron_restart` pattern: 5 fields, or 6 with seconds first (PM2's croner syntax).
pub fn check_cron(pattern: &str) -> Result<(), ConfigError> {
    let fields = pattern.split_whitespace().count();
    let nickname = pattern.trim_start().starts_with('@');
    if !nickname && !(5..=6).contains(&fields) {
        return Err(ConfigError::Cron(format!(
            "'{pattern}' has {fields} fields; cron_restart takes 5 (minute first) or 6 (second first)"
        )));
    }
    pattern
        .parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|error| ConfigError::Cron(format!("'{pattern}': {error}")))
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

/// What every app's wire definition starts from, wherever the app comes from (the command line,
/// a config file, a running app): the command it runs and its timing.
pub struct AppCommand<'a> {
    pub name: Option<String>,
    pub script: &'a Path,
    pub args: Vec<String>,
    pub node: &'a Path,
    pub node_args: Vec<String>,
    pub cwd: &'a Path,
    pub env: Vec<(String, String)>,
    pub timing: &'a Timing,
}

impl AppCommand<'_> {
    /// The one mapping of a command and its timing to the wire's `AppDefinition`; log files and
    /// cluster settings are left at their defaults for the caller to set.
    pub fn definition(self) -> AppDefinition {
        let millis = crate::core::duration::millis;
        let policy = &self.timing.policy;
        AppDefinition {
            name: self.name,
            script: self.script.display().to_string(),
            args: self.args,
            node: self.node.display().to_string(),
            node_args: self.node_args,
            cwd: self.cwd.display().to_string(),
            env: self.env,
            caller_env: None,
            filter_env: None,
            out_file: None,
            error_file: None,
            disable_logs: false,
            log_timestamps: false,
            log_json: false,
            hang_show_query: false,
            heap_snapshot_on_memory_restart: false,
            profile_on_stall_ms: None,
            autorestart: Some(policy.autorestart.as_str().to_string()),
            max_restarts: Some(policy.max_restarts),
            restart_window_ms: Some(millis(policy.restart_window)),
            max_memory: policy.max_memory,
            clean_exit_codes: Some(policy.clean_exit_codes.codes()),
            min_uptime_ms: Some(millis(policy.min_uptime)),
            restart_delay_ms: Some(millis(policy.restart_delay)),
            backoff_base_ms: Some(millis(policy.backoff_base)),
            heartbeat_interval_ms: millis(self.timing.heartbeat_interval),
            heartbeat_timeout_ms: millis(self.timing.heartbeat_timeout),
            heartbeat_misses: self.timing.heartbeat_misses,
            start_grace_ms: millis(self.timing.start_grace),
            kill_timeout_ms: millis(self.timing.kill_timeout),
            instances: 1,
            cluster: false,
            listen: Vec::new(),
            wait_ready: false,
            listen_timeout_ms: None,
            watch: Vec::new(),
            ignore_watch: Vec::new(),
            watch_delay_ms: None,
            cron_restart: None,
            kill_signal: None,
            shutdown_with_message: false,
            interpreter: None,
            interpreter_args: Vec::new(),
            instance_var: None,
            increment_var: None,
            namespace: None,
            uid: None,
            gid: None,
            log_date_format: None,
            log_file: None,
            pid_file: None,
            on_event: Vec::new(),
        }
    }
}

impl AppSpec {
    /// The program the app's process runs: node, the interpreter, or the command itself.
    pub fn runtime(&self) -> &Path {
        match self.interpreter.as_deref() {
            None => &self.node,
            Some(command::NONE) => &self.script,
            Some(interpreter) => Path::new(interpreter),
        }
    }

    /// Why no monitor can be expected in this app's process, if that is known up front: an
    /// interpreter that is neither Node nor Bun (python3, deno, ...).
    pub fn unmonitorable(&self) -> Option<String> {
        let interpreter = self.interpreter.as_deref()?;
        if interpreter == command::NONE || command::is_bun(interpreter) {
            return None;
        }
        let name = Path::new(interpreter)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("node")
            || name == "tsx"
            || name == "ts-node"
            || name == "sh"
            || name == "bash"
        {
            return None;
        }
        if name == "deno" {
            // Deno loads the preload from NODE_OPTIONS and the addon through Node-API, given the
            // env, read and ffi permissions; nodeguard does not widen an app's permissions.
            let granted = self.interpreter_args.iter().any(|arg| {
                matches!(arg.as_str(), "-A" | "--allow-all") || arg.starts_with("--allow-ffi")
            });
            return (!granted).then(|| {
                "deno without permissions for the monitor (give interpreter_args \"run -A\", \
                 or --allow-env --allow-read --allow-ffi)"
                    .to_string()
            });
        }
        Some(format!(
            "{name} is not Node or Bun: the monitor cannot run in it"
        ))
    }

    /// Whether the app runs in cluster mode: readiness by `Ready`, rolling reloads.
    pub fn cluster_mode(&self) -> bool {
        !self.listen.is_empty() || self.wait_ready
    }

    /// Whether the app's instances share what they listen on by asking the supervisor (several
    /// instances, no `--listen`): see `io::listen::SharedListeners::share`.
    pub fn shares_on_request(&self) -> bool {
        self.listen.is_empty() && (self.instances > 1 || self.cluster)
    }

    /// Whether a reload can overlap old and new instances (the supervisor owns the sockets, or
    /// will once the app listens): rolling, never fewer instances ready.
    pub fn reloads_rolling(&self) -> bool {
        !self.listen.is_empty() || self.shares_on_request()
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

    /// The id after this app's last instance (ids `id..end_id()` are its instances'); saturates
    /// at `u32::MAX`, which [`AppSpec::from_definition`] refuses to reach.
    pub fn end_id(&self) -> u32 {
        self.id.saturating_add(self.instances.max(1))
    }

    /// The ready timeout the state machine enforces, in cluster mode.
    pub fn ready_timeout(&self) -> Option<Duration> {
        self.cluster_mode().then_some(self.listen_timeout)
    }
}

impl AppSpec {
    /// The wire form of this app (for `describe` and the state file).
    pub fn definition(&self) -> AppDefinition {
        let mut definition = AppCommand {
            name: Some(self.name.clone()),
            script: &self.script,
            args: self.args.clone(),
            node: &self.node,
            node_args: self.node_args.clone(),
            cwd: &self.cwd,
            env: self.env.clone(),
            timing: &self.timing,
        }
        .definition();
        definition.out_file = self.out_file.as_ref().map(|p| p.display().to_string());
        definition.error_file = self.error_file.as_ref().map(|p| p.display().to_string());
        definition.disable_logs = self.disable_logs;
        definition.log_timestamps = self.log_timestamps;
        definition.log_json = self.log_json;
        definition.hang_show_query = self.hang_show_query;
        definition.heap_snapshot_on_memory_restart = self.heap_snapshot_on_memory_restart;
        definition.profile_on_stall_ms = self.profile_on_stall.map(crate::core::duration::millis);
        definition.instances = self.instances;
        definition.cluster = self.cluster;
        definition.listen = self.listen.iter().map(ToString::to_string).collect();
        definition.wait_ready = self.wait_ready;
        definition.listen_timeout_ms = Some(crate::core::duration::millis(self.listen_timeout));
        if let Some(watch) = &self.watch {
            definition.watch = watch
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            definition.ignore_watch = watch.ignore.clone();
            definition.watch_delay_ms = Some(crate::core::duration::millis(watch.delay));
        }
        definition.cron_restart = self.cron_restart.clone();
        definition.kill_signal = (self.kill_signal != StopSignal::Terminate)
            .then(|| self.kill_signal.name().to_string());
        definition.shutdown_with_message = self.shutdown_with_message;
        definition.interpreter = self.interpreter.clone();
        definition.interpreter_args = self.interpreter_args.clone();
        definition.instance_var = self.instance_vars.instance_var.clone();
        definition.increment_var = self.instance_vars.increment_var.clone();
        definition.namespace = self.namespace.clone();
        if let Some(run_as) = &self.run_as {
            definition.uid.clone_from(&run_as.user);
            definition.gid.clone_from(&run_as.group);
        }
        definition.log_date_format = self.log_date_format.as_ref().map(|f| f.text().to_string());
        definition.log_file = self.log_file.as_ref().map(|p| p.display().to_string());
        definition.pid_file = self.pid_file.as_ref().map(|p| p.display().to_string());
        definition.on_event = self.hooks.iter().map(|hook| hook.text.clone()).collect();
        definition.caller_env = self.caller_env.as_deref().map(<[_]>::to_vec);
        definition.filter_env.clone_from(&self.filter_env);
        definition
    }

    /// An app from its wire form, with the given id and name; the timing is validated.
    pub fn from_definition(
        id: u32,
        name: String,
        definition: AppDefinition,
    ) -> Result<Self, ConfigError> {
        check_name(&name)?;
        // Every count of milliseconds is bounded before it becomes a duration (a crafted client
        // or state file may send anything).
        let ms = |field: &'static str, value: u64| {
            crate::core::duration::from_millis(value)
                .map_err(|message| ConfigError::Policy(format!("{field}: {message}")))
        };
        let optional = |field: &'static str, value: Option<u64>, default: Duration| {
            value.map_or(Ok(default), |value| ms(field, value))
        };
        if let Some(max_memory) = definition.max_memory {
            check_memory(max_memory)?;
        }
        env::check_vars("env", &definition.env).map_err(ConfigError::Policy)?;
        if let Some(caller_env) = &definition.caller_env {
            env::check_vars("caller_env", caller_env).map_err(ConfigError::Policy)?;
        }
        let timing = Timing {
            heartbeat_interval: ms("heartbeat interval", definition.heartbeat_interval_ms)?,
            heartbeat_timeout: ms("heartbeat timeout", definition.heartbeat_timeout_ms)?,
            heartbeat_misses: definition.heartbeat_misses,
            start_grace: ms("start grace", definition.start_grace_ms)?,
            kill_timeout: ms("kill timeout", definition.kill_timeout_ms)?,
            policy: RestartPolicy {
                autorestart: match definition.autorestart.as_deref() {
                    Some(mode) => Autorestart::parse(mode).map_err(ConfigError::Policy)?,
                    None => Autorestart::Always,
                },
                max_restarts: definition.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
                restart_window: optional(
                    "restart window",
                    definition.restart_window_ms,
                    DEFAULT_RESTART_WINDOW,
                )?,
                max_memory: definition.max_memory,
                clean_exit_codes: match definition.clean_exit_codes {
                    Some(codes) => ExitCodes::from_codes(codes.into_iter().map(i64::from))
                        .map_err(ConfigError::Policy)?,
                    None => ExitCodes::default(),
                },
                min_uptime: optional("min uptime", definition.min_uptime_ms, STABLE_UPTIME)?,
                restart_delay: optional(
                    "restart delay",
                    definition.restart_delay_ms,
                    Duration::ZERO,
                )?,
                backoff_base: optional("backoff base", definition.backoff_base_ms, BACKOFF_BASE)?,
            },
        };
        validate_timing(&timing)?;
        let instances = definition.instances.max(1);
        if instances > MAX_INSTANCES {
            return Err(ConfigError::Instances(instances));
        }
        // Ids never wrap: every instance's id (`id..id + instances`) fits in a u32.
        if id.checked_add(instances).is_none() {
            return Err(ConfigError::Policy(format!(
                "no ids left: id {id} with {instances} instance(s) would pass {}",
                u32::MAX
            )));
        }
        let listen = definition
            .listen
            .iter()
            .map(|text| ListenAddress::parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        let listen_timeout = optional(
            "listen timeout",
            definition.listen_timeout_ms,
            DEFAULT_LISTEN_TIMEOUT,
        )?;
        if listen_timeout.is_zero() {
            return Err(ConfigError::Policy(
                "--listen-timeout must be greater than zero".into(),
            ));
        }
        let watch = if definition.watch.is_empty() {
            None
        } else {
            Some(WatchSpec {
                paths: definition.watch.iter().map(PathBuf::from).collect(),
                ignore: definition.ignore_watch,
                delay: optional(
                    "watch delay",
                    definition.watch_delay_ms,
                    DEFAULT_WATCH_DELAY,
                )?,
            })
        };
        if let Some(pattern) = &definition.cron_restart {
            check_cron(pattern)?;
        }
        let kill_signal = match &definition.kill_signal {
            Some(name) => StopSignal::parse(name).map_err(ConfigError::Policy)?,
            None => StopSignal::Terminate,
        };
        for (field, var) in [
            ("instance_var", &definition.instance_var),
            ("increment_var", &definition.increment_var),
        ] {
            if let Some(var) = var {
                check_var_name(field, var)?;
            }
        }
        if let Some(namespace) = &definition.namespace {
            check_name(namespace)?;
        }
        let run_as = RunAs::resolve(definition.uid.as_deref(), definition.gid.as_deref())?;
        let log_date_format = match &definition.log_date_format {
            Some(text) => Some(std::sync::Arc::new(
                DateFormat::parse(text).map_err(ConfigError::Policy)?,
            )),
            None => None,
        };
        let log_file = definition.log_file.map(PathBuf::from);
        let pid_file = definition.pid_file.map(PathBuf::from);
        for (field, path) in [("log_file", &log_file), ("pid_file", &pid_file)] {
            if let Some(path) = path.as_ref().filter(|p| !p.as_os_str().is_empty()) {
                if !path.is_absolute() {
                    return Err(ConfigError::Policy(format!(
                        "{field}: {} is not an absolute path",
                        path.display()
                    )));
                }
            }
        }
        if pid_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(ConfigError::Policy("pid_file: empty path".into()));
        }
        let hooks = hooks::parse_all(&definition.on_event).map_err(ConfigError::Policy)?;
        Ok(AppSpec {
            id,
            name,
            script: PathBuf::from(definition.script),
            args: definition.args,
            node: PathBuf::from(definition.node),
            node_args: definition.node_args,
            cwd: PathBuf::from(definition.cwd),
            env: definition.env,
            caller_env: definition.caller_env.map(std::sync::Arc::from),
            filter_env: definition.filter_env,
            timing,
            out_file: definition.out_file.map(PathBuf::from),
            error_file: definition.error_file.map(PathBuf::from),
            disable_logs: definition.disable_logs,
            log_timestamps: definition.log_timestamps,
            log_json: definition.log_json,
            hang_show_query: definition.hang_show_query,
            heap_snapshot_on_memory_restart: definition.heap_snapshot_on_memory_restart,
            profile_on_stall: definition.profile_on_stall_ms.map(Duration::from_millis),
            instances,
            instance: 0,
            cluster: definition.cluster,
            listen,
            wait_ready: definition.wait_ready,
            listen_timeout,
            watch,
            cron_restart: definition.cron_restart,
            kill_signal,
            shutdown_with_message: definition.shutdown_with_message,
            interpreter: definition.interpreter.filter(|i| !i.is_empty()),
            interpreter_args: definition.interpreter_args,
            instance_vars: InstanceVars {
                instance_var: definition.instance_var,
                increment_var: definition.increment_var,
            },
            namespace: definition.namespace,
            run_as,
            log_date_format,
            log_file,
            pid_file,
            hooks: hooks.into(),
        })
    }

    /// Whether the app's stdout goes to /dev/null in the process itself, with no pipe to the
    /// supervisor: PM2's `disable_logs`, or an `out_file` of `/dev/null` with no `log_file`
    /// (which would want the lines too). Such a stream costs the supervisor no open file.
    pub fn discards_stdout(&self) -> bool {
        discards(
            self.disable_logs,
            self.out_file.as_deref(),
            self.log_file.is_some(),
        )
    }

    /// The same for stderr (`error_file`).
    pub fn discards_stderr(&self) -> bool {
        discards(
            self.disable_logs,
            self.error_file.as_deref(),
            self.log_file.is_some(),
        )
    }

    /// Where this instance's pid is written: `pid_file` itself, or with several instances
    /// `-<id>` before its extension (`/run/api.pid` → `/run/api-3.pid`), as PM2 names its
    /// per-instance pid files `<name>-<id>.pid`.
    pub fn pid_file_path(&self) -> Option<PathBuf> {
        let path = self.pid_file.as_ref()?;
        if self.instances <= 1 {
            return Some(path.clone());
        }
        let stem = path.file_stem()?.to_string_lossy();
        let name = match path.extension() {
            Some(extension) => format!("{stem}-{}.{}", self.id, extension.to_string_lossy()),
            None => format!("{stem}-{}", self.id),
        };
        Some(path.with_file_name(name))
    }
}

/// The path PM2 treats as "no file" for `out_file`/`error_file`: `/dev/null`.
pub const NULL_DEVICE: &str = "/dev/null";

/// Whether a stream whose log file is `file` goes to /dev/null with no pipe: under
/// `disable_logs`, or when `file` is [`NULL_DEVICE`] and no combined `log_file` wants its lines.
pub fn discards(disable_logs: bool, file: Option<&Path>, log_file: bool) -> bool {
    disable_logs || (file == Some(Path::new(NULL_DEVICE)) && !log_file)
}

/// A `pid_file` path as `start` checks it: whatever is at the path is a regular file (not a
/// symlink, fifo or directory), which is then replaced. A missing directory is created 0700 at
/// the first spawn, as for log files.
pub fn check_pid_file(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(format!(
            "{} is a symbolic link; refusing to write a pid through it",
            path.display()
        )),
        Ok(meta) if !meta.is_file() => Err(format!(
            "{} is not a regular file; refusing to write a pid there",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// A problem with the configuration, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cron_restart: {0}")]
    Cron(String),
    #[error("script not found: {}", .0.display())]
    ScriptNotFound(PathBuf),
    #[error("{} is a directory, not a script", .0.display())]
    ScriptIsDirectory(PathBuf),
    #[error("node binary not found: {0} (install Node.js, or pass --node PATH)")]
    NodeNotFound(String),
    #[error("interpreter not found: {0} (install it, or give its path)")]
    InterpreterNotFound(String),
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
    #[error("app name \"{name}\": {problem}")]
    Name { name: String, problem: String },
    #[error("{0} instances is too many (at most {MAX_INSTANCES})")]
    Instances(u32),
}

/// Checks the heartbeat settings against each other.
pub fn validate_timing(timing: &Timing) -> Result<(), ConfigError> {
    let policy = &timing.policy;
    for (flag, duration) in [
        ("--heartbeat-interval", timing.heartbeat_interval),
        ("--heartbeat-timeout", timing.heartbeat_timeout),
        ("--start-grace", timing.start_grace),
        ("--kill-timeout", timing.kill_timeout),
        ("--min-uptime", policy.min_uptime),
        ("--restart-delay", policy.restart_delay),
        ("--backoff-base", policy.backoff_base),
        ("--restart-window", policy.restart_window),
    ] {
        crate::core::duration::bounded(duration)
            .map_err(|message| ConfigError::Policy(format!("{flag}: {message}")))?;
    }
    if let Some(max_memory) = policy.max_memory {
        check_memory(max_memory)?;
    }
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

/// The largest `--max-memory` (1 PiB): more is a typo, and the bound keeps sums of memory sizes
/// far from overflowing.
pub const MAX_MEMORY: u64 = 1 << 50;

/// The smallest memory limit (1 MiB). No Node process fits under it, so a smaller limit would
/// restart the app in a loop; it is nearly always a PM2 config's bare number meant as megabytes
/// (PM2 reads `max_memory_restart: 200` as 200 bytes).
pub const MIN_MEMORY: u64 = 1 << 20;

/// The one-line refusal of a memory limit under [`MIN_MEMORY`], with the likely intent.
pub fn memory_too_small(text: &str, bytes: u64) -> String {
    format!(
        "{text} is {bytes} bytes, under 1M: every process is larger, so the app would restart in \
         a loop (a bare number is bytes, as in PM2; write e.g. \"{bytes}M\" for megabytes)"
    )
}

/// A memory limit is at least [`MIN_MEMORY`] and at most [`MAX_MEMORY`].
pub fn check_memory(bytes: u64) -> Result<(), ConfigError> {
    // The command line and config files refuse 0 when they parse it; a crafted control client or
    // dump.json must not get past with it either (the app would be restarted at every heartbeat).
    if bytes == 0 {
        return Err(ConfigError::Policy(
            "a memory limit of 0 bytes would restart the app at every heartbeat; leave it out \
             for no limit"
                .to_string(),
        ));
    }
    if bytes > MAX_MEMORY {
        return Err(ConfigError::Policy(format!(
            "a memory limit of {bytes} bytes is too large (at most 1024T)"
        )));
    }
    if bytes < MIN_MEMORY {
        return Err(ConfigError::Policy(format!(
            "a memory limit of {}",
            memory_too_small(&bytes.to_string(), bytes)
        )));
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
    } else if full.is_dir() {
        Err(ConfigError::ScriptIsDirectory(script.to_path_buf()))
    } else {
        Err(ConfigError::ScriptNotFound(script.to_path_buf()))
    }
}

/// The longest app name, in bytes. Log file names escape some bytes as three (`%2F`), so this
/// keeps `<name>-out.log.<n>` well under the usual 255-byte file name limit.
pub const MAX_NAME_BYTES: usize = 64;

/// What is wrong with `name` as an app name, if anything: empty or only spaces, longer than
/// [`MAX_NAME_BYTES`], holding control characters (newlines, escapes), or readable as a target
/// (`all`, or a number, which addresses an app by id). The same rules hold for `--name`, config
/// files, control-socket clients and the state file.
pub fn name_problem(name: &str) -> Option<String> {
    let problem = if name.trim().is_empty() {
        "must not be empty or only spaces".to_string()
    } else if name.len() > MAX_NAME_BYTES {
        format!("is {} bytes long (at most {MAX_NAME_BYTES})", name.len())
    } else if name.chars().any(is_hidden_character) {
        "must not contain control characters (newlines, tabs, escapes) or invisible \
         direction marks"
            .to_string()
    } else if name == "all" {
        "'all' is reserved (it means every app)".to_string()
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        "must not be a number (numbers address apps by id)".to_string()
    } else {
        return None;
    };
    Some(problem)
}

/// Control characters, and the invisible Unicode marks that reorder or hide text (bidi
/// overrides, zero-width characters): either could make a name forge or garble output.
fn is_hidden_character(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// `Ok` if `name` can be an app name (see [`name_problem`]).
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    match name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(ConfigError::Name {
            name: shown_name(name),
            problem,
        }),
    }
}

/// `name` as an error message may quote it: escaped, and cut after 80 characters.
pub fn shown_name(name: &str) -> String {
    const SHOWN: usize = 80;
    let mut shown: String = name
        .chars()
        .take(SHOWN)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if name.chars().nth(SHOWN).is_some() {
        shown.push('…');
    }
    shown
}

/// App names from script file names without their extension; a repeated name gets `-1`, `-2`, ….
pub fn app_names<'a>(scripts: impl IntoIterator<Item = &'a Path>) -> Vec<String> {
    let mut names = Vec::new();
    for script in scripts {
        let name = unique_name(script, |name| names.iter().any(|n| n == name));
        names.push(name);
    }
    names
}

/// A name for `script` that is not in `taken` and cannot be mistaken for a target (`all`, or an
/// id): its file stem, suffixed `-1`, `-2`, … if needed.
pub fn unique_name(script: &Path, taken: impl Fn(&str) -> bool) -> String {
    // A stem that breaks the name rules is made to fit them: control characters become `_`,
    // and it is cut (at a character boundary) to leave room for a `-N` suffix.
    let stem: String = script
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if is_hidden_character(c) { '_' } else { c })
        .collect();
    let mut base = String::new();
    for c in stem.chars() {
        if base.len() + c.len_utf8() > MAX_NAME_BYTES - 8 {
            break;
        }
        base.push(c);
    }
    if base.trim().is_empty() {
        base = "app".to_string();
    }
    let mut name = base.clone();
    let mut suffix = 1;
    while taken(&name) || name == "all" || name.chars().all(|c| c.is_ascii_digit()) {
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
        let long = format!("{}.js", "é".repeat(100));
        let odd = [Path::new("a\nb.js"), Path::new(&long), Path::new(" .js")];
        let names = app_names(odd);
        assert_eq!(names[0], "a_b");
        assert!(names[1].len() <= MAX_NAME_BYTES - 8, "{}", names[1]);
        for name in &names {
            assert_eq!(name_problem(name), None, "{name:?}");
        }
    }

    #[test]
    fn a_zero_or_huge_memory_limit_is_refused_wherever_it_comes_from() {
        assert!(check_memory(0).is_err());
        assert!(check_memory(MAX_MEMORY + 1).is_err());
        assert!(check_memory(200 << 20).is_ok());
    }

    #[test]
    fn names_follow_one_rule() {
        for good in ["api", "a/b", "web server", "é", &"n".repeat(MAX_NAME_BYTES)] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
        let too_long = "n".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "",
            "   ",
            "all",
            "42",
            "a\nb",
            "a\u{1b}[2J",
            "a\tb",
            "evil\u{202E}gnp",
            "a\u{200B}",
            too_long.as_str(),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} was accepted");
        }
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
