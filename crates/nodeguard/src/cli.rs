//! The command line: flags, `--help` text, and turning them into a validated [`SupervisorConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, AppSpec, ConfigError, SupervisorConfig, DEFAULT_HEARTBEAT_MISSES};
use crate::config_file::{self, AppDefaults, ConfigFileError};
use nodeguard_proto::control::AppDefinition;

use crate::duration::parse_duration;
use crate::machine::{Autorestart, ExitCodes, RestartPolicy, Timing, DEFAULT_MAX_RESTARTS};

const AFTER_HELP: &str = "\
Hang detection: every app is started with nodeguard's monitor preloaded (node --require), which
answers heartbeats from the app's JavaScript thread. A ping not answered within the heartbeat
timeout is a miss; after N consecutive misses the app is killed (SIGKILL to its process group) and
restarted. With the defaults a blocked event loop is restarted 3 to 4 seconds after it blocks.

Examples:
  nodeguard -m examples/main1.js -m examples/main2.js
  nodeguard --heartbeat-interval 500ms --heartbeat-misses 4 -m server.js -- --port 8080
  nodeguard status --json
  nodeguard start server.js --name api -- --port 8080   (background daemon)
  nodeguard start app.js --name web -i 4 --listen 3000   (cluster mode: 4 instances, one port)
  nodeguard -i 2 --listen 3000 -m app.js   (cluster mode in the foreground)
  nodeguard reload web   (rolling, zero-downtime with --listen; aborts if a new instance fails)
  nodeguard restart api; nodeguard stop all; nodeguard kill
  nodeguard --http 127.0.0.1:9615 -m server.js   (/healthz, /readyz, /metrics)
  nodeguard startup systemd --install   (a user unit that resurrects the saved apps at boot)

Under systemd (NOTIFY_SOCKET set) nodeguard sends READY=1, STATUS= and WATCHDOG=1 itself, and
removes NOTIFY_SOCKET from its apps' environment.

Signals: SIGINT, SIGTERM or SIGQUIT stop every app gracefully (again: at once). SIGHUP reopens the
log files (rotate with mv, then kill -HUP). SIGUSR1, SIGUSR2 and SIGALRM are ignored.";

#[derive(Debug, Parser)]
#[command(
    name = "nodeguard",
    version,
    about = "Supervise Node.js apps: restart them when they exit or when their event loop hangs",
    after_help = AFTER_HELP,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Verb>,
    #[command(flatten)]
    pub run: RunArgs,
    /// State directory: sockets, daemon log [env: NODEGUARD_HOME] [default: ~/.nodeguard; in
    /// foreground mode a home of its own, ~/.nodeguard/foreground-<pid>, removed on exit]. It must
    /// be a real directory (not a symlink) that you own and nobody else can write to; one others
    /// can read is made 0700
    #[arg(long, value_name = "DIR", global = true)]
    pub home: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Start an app in the background daemon (starting the daemon if needed); returns once it runs.
    Start(Box<StartArgs>),
    /// Stop apps (they stay listed); returns once they have exited. TARGET: a name, an id, or all.
    Stop { target: String },
    /// Restart apps, or start stopped ones; returns once the new processes run.
    Restart { target: String },
    /// Rolling reload: for each instance, start a replacement, wait until it is ready, then drain
    /// the old one (apps with --listen lose no request). A replacement that fails aborts the
    /// reload and the old instances keep serving (exit code 1). Apps without --listen are
    /// restarted one instance at a time instead.
    Reload { target: String },
    /// Stop apps and forget them.
    #[command(visible_alias = "del")]
    Delete { target: String },
    /// Show every app: pid, state, restarts, hangs, memory, loop delay.
    #[command(visible_alias = "ls", alias = "list")]
    Status {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the last lines of apps' logs (daemon apps, or foreground with --log-files).
    Logs {
        /// An app name or id (default: all apps).
        target: Option<String>,
        /// How many lines of each log to print.
        #[arg(long, default_value_t = 15)]
        lines: usize,
        /// Keep printing new lines as they are written.
        #[arg(long, short)]
        follow: bool,
        /// Only the apps' stderr.
        #[arg(long, conflicts_with = "out")]
        err: bool,
        /// Only the apps' stdout.
        #[arg(long)]
        out: bool,
    },
    /// Show an app's configuration, counters and recent events (starts, exits, hangs, restarts).
    Describe {
        /// An app name or id.
        target: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Save the daemon's app list now (it is also kept up to date on every change).
    Save,
    /// Bring back the saved apps that are not running (after `kill`, a reboot or a crash).
    Resurrect,
    /// Empty apps' log files.
    Flush {
        /// An app name or id (default: all apps).
        target: Option<String>,
    },
    /// Check that a supervisor is running on this home.
    Ping,
    /// Stop every app, then the daemon.
    Kill,
    /// Run the daemon in this process, in the foreground (for systemd and containers).
    ///
    /// `start` launches the same daemon in the background. Verbs from other shells control it as
    /// usual. Under systemd (NOTIFY_SOCKET set) it sends READY=1, STATUS= and WATCHDOG=1.
    Daemon(DaemonArgs),
    /// Print (or --install) a systemd user unit that resurrects the saved apps at boot.
    ///
    /// The unit runs `nodeguard daemon --resurrect` as a Type=notify service with a watchdog and
    /// Restart=on-failure. --install writes it to ~/.config/systemd/user/nodeguard.service (or
    /// under $XDG_CONFIG_HOME) and prints the systemctl command to run.
    Startup(StartupArgs),
}

/// `nodeguard daemon`.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Bring back the saved apps (as `resurrect` does) as soon as the daemon runs.
    #[arg(long)]
    pub resurrect: bool,

    /// Serve /healthz, /readyz and /metrics over HTTP on this address (e.g. 127.0.0.1:9615).
    #[arg(long, value_name = "ADDR", value_parser = parse_http_address)]
    pub http: Option<SocketAddr>,
}

/// `nodeguard startup`.
#[derive(Debug, Clone, Args)]
pub struct StartupArgs {
    /// The init system (only systemd so far).
    #[arg(value_enum)]
    pub system: InitSystem,

    /// Write the unit to ~/.config/systemd/user/nodeguard.service instead of printing it.
    #[arg(long)]
    pub install: bool,

    /// Have the daemon serve /healthz, /readyz and /metrics on this address.
    #[arg(long, value_name = "ADDR", value_parser = parse_http_address)]
    pub http: Option<SocketAddr>,
}

/// Init systems `startup` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitSystem {
    Systemd,
}

/// An `--http` address: an IP address and a port.
pub fn parse_http_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "'{text}' is not an IP address and port (write e.g. 127.0.0.1:9615 or 0.0.0.0:9615)"
        )
    })
}

impl Cli {
    /// Parses the command line. Foreground-only options given together with a verb are refused
    /// rather than ignored (`--home` is the one option every verb shares).
    pub fn parse_checked() -> Result<Self, clap::Error> {
        use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
        let mut command = Self::command();
        let matches = command.try_get_matches_from_mut(std::env::args_os())?;
        if let Some((verb, _)) = matches.subcommand() {
            let misplaced = matches.ids().find(|id| {
                id.as_str() != "home"
                    && matches.value_source(id.as_str()) == Some(ValueSource::CommandLine)
            });
            if let Some(id) = misplaced {
                let flag = command
                    .get_arguments()
                    .find(|arg| arg.get_id() == id)
                    .and_then(|arg| arg.get_long())
                    .unwrap_or(id.as_str());
                let message = format!(
                    "--{flag} is an option of foreground mode (nodeguard -m SCRIPT) and cannot \
                     come before the '{verb}' verb"
                );
                return Err(command.error(clap::error::ErrorKind::ArgumentConflict, message));
            }
        }
        Self::from_arg_matches(&matches)
    }
}

/// How to run an app: the options shared by foreground mode and `start`.
#[derive(Debug, Clone, Args)]
pub struct AppOptions {
    /// Node.js binary to run the apps with.
    #[arg(long, value_name = "PATH", default_value = "node")]
    pub node: String,

    /// Extra argument for node itself (before the script); repeat for more.
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub node_args: Vec<String>,

    /// Time between heartbeats.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Time a heartbeat may stay unanswered before it counts as missed (at most the interval)
    /// [default: 1s, or the interval if that is shorter]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,

    /// Consecutive missed heartbeats after which the app counts as hung and is restarted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HEARTBEAT_MISSES)]
    pub heartbeat_misses: u32,

    /// Time a newly started app has before its first heartbeat answer is due.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub start_grace: Duration,

    /// Time between SIGTERM and SIGKILL when stopping an app.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub kill_timeout: Duration,

    /// Prefix each log-file line with its time (RFC 3339, UTC), like PM2's `time: true`.
    #[arg(long)]
    pub log_timestamps: bool,

    /// Which exits restart the app: always, on-failure (any but a clean exit code), never.
    #[arg(long, value_name = "MODE", default_value = "always", value_parser = Autorestart::parse)]
    pub autorestart: Autorestart,

    /// Exit codes that count as a clean stop under --autorestart on-failure (e.g. 0,3).
    #[arg(long, value_name = "CODES", default_value = "0", value_parser = ExitCodes::parse)]
    pub clean_exit_codes: ExitCodes,

    /// A run at least this long counts as stable: the backoff resets.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub min_uptime: Duration,

    /// Delay before every restart (quick crashes wait at least the backoff).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub restart_delay: Duration,

    /// First delay after a quick crash, doubling with each further one up to 10 s.
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = parse_duration)]
    pub backoff_base: Duration,

    /// More restarts than this within --restart-window mark the app errored (0: no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RESTARTS)]
    pub max_restarts: u32,

    /// The window of the restart budget.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    pub restart_window: Duration,

    /// Restart the app gracefully when its RSS exceeds this (e.g. 200M, 1G), checked at every
    /// heartbeat.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub max_memory: Option<u64>,
}

/// A memory size on the command line: `200M`, `1.5G`, `512K`, or bytes; at most
/// [`config::MAX_MEMORY`].
fn parse_memory(text: &str) -> Result<u64, String> {
    match config_file::parse_size(text) {
        Some(0) | None => Err(format!(
            "'{text}' is not a memory size (write e.g. 200M or 1G)"
        )),
        Some(bytes) if bytes > config::MAX_MEMORY => {
            Err(format!("'{text}' is too large (at most 1024T)"))
        }
        Some(bytes) => Ok(bytes),
    }
}

impl AppOptions {
    /// The heartbeat and stop timing, validated.
    pub fn timing(&self) -> Result<Timing, ConfigError> {
        // Without an explicit timeout, the default follows a shorter interval.
        let heartbeat_timeout = self
            .heartbeat_timeout
            .unwrap_or(config::DEFAULT_HEARTBEAT_TIMEOUT.min(self.heartbeat_interval));
        let timing = Timing {
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout,
            heartbeat_misses: self.heartbeat_misses,
            start_grace: self.start_grace,
            kill_timeout: self.kill_timeout,
            policy: RestartPolicy {
                autorestart: self.autorestart,
                clean_exit_codes: self.clean_exit_codes,
                min_uptime: self.min_uptime,
                restart_delay: self.restart_delay,
                backoff_base: self.backoff_base,
                max_restarts: self.max_restarts,
                restart_window: self.restart_window,
                max_memory: self.max_memory,
            },
        };
        config::validate_timing(&timing)?;
        Ok(timing)
    }
}

/// `nodeguard start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The script to run, or a config file (*.json, *.config.js such as PM2's ecosystem.config.js)
    /// whose apps to start.
    #[arg(value_name = "SCRIPT|CONFIG")]
    pub script: PathBuf,

    /// The app's name (default: the script's file name without extension).
    #[arg(long)]
    pub name: Option<String>,

    #[command(flatten)]
    pub app: AppOptions,

    #[command(flatten)]
    pub cluster: ClusterOptions,
    /// Accepted only to refuse it with a clear message: the HTTP endpoint belongs to the daemon.
    #[arg(long, value_name = "ADDR", hide = true)]
    pub http: Option<String>,

    /// Arguments passed to the app, after `--`.
    #[arg(last = true, value_name = "APP_ARGS")]
    pub app_args: Vec<String>,
}

/// Cluster mode: several instances sharing supervisor-owned listening sockets.
#[derive(Debug, Clone, Args)]
pub struct ClusterOptions {
    /// How many processes run the app: a number, or max (one per CPU).
    #[arg(short = 'i', long = "instances", value_name = "N|max", value_parser = parse_instances)]
    pub instances: Option<u32>,

    /// [HOST:]PORT for the supervisor to listen on and hand to every instance (repeatable). The
    /// app's own server.listen(PORT) is mapped onto it by the monitor. Without a host it listens
    /// on every interface, as Node's listen(PORT) does (:: dual-stack, else 0.0.0.0). Closed once
    /// every instance is stopped, deleted or errored; a port that cannot be bound fails at once.
    #[arg(long, value_name = "[HOST:]PORT")]
    pub listen: Vec<String>,

    /// An instance is ready only once it calls monitor.ready() (not when it listens).
    #[arg(long)]
    pub wait_ready: bool,

    /// How long a new instance has to become ready; one that misses it is killed (and a reload
    /// is aborted), and `start` fails with the reason. More misses in a row than --max-restarts
    /// end it errored.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub listen_timeout: Option<Duration>,
}

/// `-i 4` or `-i max`.
fn parse_instances(text: &str) -> Result<u32, String> {
    if text == "max" {
        return Ok(config_file::cpu_count());
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=config::MAX_INSTANCES).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{text}' is not an instance count (1 to {}, or max)",
            config::MAX_INSTANCES
        )),
    }
}

/// `Some(json)` when the arguments (after the program name) are exactly `status`, `ls` or `list`,
/// optionally followed by `--json`: a status request with nothing else to parse, which `main`
/// serves without building the clap command (measured: 0.28 ms and 60 page faults of a 1.6 ms
/// `status --json` run). Anything else, `--home` or a typo included, is `None` and goes through
/// clap as usual, so every error and every other spelling behaves exactly as before.
pub fn plain_status(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<bool> {
    let mut args = args.into_iter();
    let verb = args.next()?;
    if !matches!(verb.to_str(), Some("status" | "ls" | "list")) {
        return None;
    }
    let json = match args.next() {
        None => false,
        Some(flag) if flag == "--json" => true,
        Some(_) => return None,
    };
    args.next().is_none().then_some(json)
}

impl ClusterOptions {
    /// Validates the addresses and writes the options into `definition` (flags given on the
    /// command line win over a config file's fields).
    fn apply(&self, definition: &mut AppDefinition) -> Result<(), ConfigError> {
        for address in &self.listen {
            config::ListenAddress::parse(address)?;
        }
        if let Some(instances) = self.instances {
            definition.instances = instances;
        }
        if !self.listen.is_empty() {
            definition.listen = self.listen.clone();
        }
        definition.wait_ready |= self.wait_ready;
        if let Some(timeout) = self.listen_timeout {
            definition.listen_timeout_ms = Some(crate::duration::millis(timeout));
        }
        Ok(())
    }
}

/// Why `start` could not describe its apps.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error(
        "--http is not an option of `start`: the daemon serves HTTP, and one that `start` launches \
         serves none; run it yourself with `nodeguard daemon --http ADDR` (or `nodeguard startup \
         systemd --http ADDR`), or use foreground mode"
    )]
    HttpBelongsToTheDaemon,
}

/// What `start` sends to the daemon, and the warnings to print first.
pub struct StartPlan {
    pub apps: Vec<AppDefinition>,
    pub warnings: Vec<String>,
}

impl StartArgs {
    /// Validates the script or config file locally (scripts, node, timing) and describes the
    /// apps for the daemon. A config file is recognised as PM2 does: `*.json` or `*.config.js`.
    pub fn into_plan(self) -> Result<StartPlan, StartError> {
        if self.http.is_some() {
            return Err(StartError::HttpBelongsToTheDaemon);
        }
        let timing = self.app.timing()?;
        let node = config::resolve_node(&self.app.node)?;
        let cwd = std::env::current_dir().map_err(ConfigError::Cwd)?;
        if config_file::looks_like_config(&self.script) {
            let file = cwd.join(&self.script);
            let defaults = AppDefaults {
                node: node.clone(),
                timing,
            };
            let loaded = config_file::load(&file, &defaults)?;
            if loaded.apps.len() > 1 && !self.cluster.listen.is_empty() {
                return Err(ConfigError::Policy(format!(
                    "--listen would give all {} apps of {} the same address; put `listen` in \
                     each app of the file instead",
                    loaded.apps.len(),
                    self.script.display()
                ))
                .into());
            }
            let warnings = loaded.warnings;
            let mut apps = Vec::new();
            for app in &loaded.apps {
                let mut definition = definition(
                    Some(app.name.clone()),
                    &app.script,
                    app.args.clone(),
                    &node,
                    app.node_args.clone(),
                    &app.cwd,
                    app.env.clone(),
                    &app.timing,
                );
                let path_text =
                    |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
                definition.out_file = path_text(&app.out_file);
                definition.error_file = path_text(&app.error_file);
                definition.log_timestamps = app.log_timestamps || self.app.log_timestamps;
                if let Some(codes) = &app.stop_exit_codes {
                    // PM2's stop_exit_codes: those exits do not restart the app.
                    definition.clean_exit_codes = Some(codes.codes());
                    definition.autorestart = Some(Autorestart::OnFailure.as_str().to_string());
                }
                if !app.autorestart {
                    definition.autorestart = Some(Autorestart::Never.as_str().to_string());
                }
                let millis = crate::duration::millis;
                if let Some(min_uptime) = app.min_uptime {
                    definition.min_uptime_ms = Some(millis(min_uptime));
                }
                if let Some(restart_delay) = app.restart_delay {
                    definition.restart_delay_ms = Some(millis(restart_delay));
                }
                if let Some(backoff_base) = app.exp_backoff_restart_delay {
                    definition.backoff_base_ms = Some(millis(backoff_base));
                }
                if let Some(max_restarts) = app.max_restarts {
                    definition.max_restarts = Some(max_restarts);
                }
                if let Some(max_memory) = app.max_memory {
                    definition.max_memory = Some(max_memory);
                }
                definition.instances = app.instances.resolve(config_file::cpu_count());
                definition.listen = app.listen.clone();
                definition.wait_ready = app.wait_ready;
                definition.listen_timeout_ms = app.listen_timeout.map(millis);
                self.cluster.apply(&mut definition)?;
                apps.push(definition);
            }
            return Ok(StartPlan { apps, warnings });
        }
        if let Some(name) = &self.name {
            config::check_name(name)?;
        }
        let script = config::resolve_script(&self.script, &cwd)?;
        let app = definition(
            self.name,
            &script,
            self.app_args,
            &node,
            self.app.node_args,
            &cwd,
            Vec::new(),
            &timing,
        );
        let mut app = AppDefinition {
            log_timestamps: self.app.log_timestamps,
            ..app
        };
        self.cluster.apply(&mut app)?;
        Ok(StartPlan {
            apps: vec![app],
            warnings: Vec::new(),
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn definition(
    name: Option<String>,
    script: &Path,
    args: Vec<String>,
    node: &Path,
    node_args: Vec<String>,
    cwd: &Path,
    env: Vec<(String, String)>,
    timing: &Timing,
) -> AppDefinition {
    let millis = crate::duration::millis;
    AppDefinition {
        name,
        script: script.display().to_string(),
        args,
        node: node.display().to_string(),
        node_args,
        cwd: cwd.display().to_string(),
        env,
        out_file: None,
        error_file: None,
        log_timestamps: false,
        autorestart: Some(timing.policy.autorestart.as_str().to_string()),
        max_restarts: Some(timing.policy.max_restarts),
        restart_window_ms: Some(millis(timing.policy.restart_window)),
        max_memory: timing.policy.max_memory,
        clean_exit_codes: Some(timing.policy.clean_exit_codes.codes()),
        min_uptime_ms: Some(millis(timing.policy.min_uptime)),
        restart_delay_ms: Some(millis(timing.policy.restart_delay)),
        backoff_base_ms: Some(millis(timing.policy.backoff_base)),
        heartbeat_interval_ms: millis(timing.heartbeat_interval),
        heartbeat_timeout_ms: millis(timing.heartbeat_timeout),
        heartbeat_misses: timing.heartbeat_misses,
        start_grace_ms: millis(timing.start_grace),
        kill_timeout_ms: millis(timing.kill_timeout),
        instances: 1,
        listen: Vec::new(),
        wait_ready: false,
        listen_timeout_ms: None,
    }
}

/// Running apps in the foreground.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Script to run with node; repeat for more apps. An app is named after its file.
    #[arg(short = 'm', long = "main", value_name = "SCRIPT", required = true)]
    pub scripts: Vec<PathBuf>,

    #[command(flatten)]
    pub app: AppOptions,

    #[command(flatten)]
    pub cluster: ClusterOptions,

    /// The monitor preload script (default: found beside the nodeguard binary) [env: NODEGUARD_PRELOAD]
    #[arg(long, value_name = "PATH", env = "NODEGUARD_PRELOAD", hide_env = true)]
    pub preload: Option<PathBuf>,

    /// Start apps without preloading the monitor (only apps that call start() get hang detection).
    #[arg(long, conflicts_with = "preload")]
    pub no_preload: bool,

    /// Never colour app names in the output.
    #[arg(long)]
    pub no_color: bool,

    /// Also write each app's output to <home>/logs/<app>-out.log and -err.log (rotated at 10 MiB).
    #[arg(long)]
    pub log_files: bool,

    /// Keep running once every app has finished or been given up on (default: exit, with 0 if
    /// every app ended cleanly and 3 otherwise).
    #[arg(long)]
    pub keep_alive: bool,

    /// Serve /healthz, /readyz and /metrics over HTTP on this address (e.g. 127.0.0.1:9615).
    #[arg(long, value_name = "ADDR", value_parser = parse_http_address)]
    pub http: Option<SocketAddr>,

    /// Arguments passed to every app, after `--`.
    #[arg(last = true, value_name = "APP_ARGS")]
    pub app_args: Vec<String>,
}

/// Where the monitor preload comes from, and whether it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreloadChoice {
    Found(PathBuf),
    Disabled,
    NotFound,
}

impl RunArgs {
    /// Validates everything and builds the supervisor's configuration.
    pub fn into_config(
        self,
        home: Option<PathBuf>,
        color_terminal: bool,
    ) -> Result<(SupervisorConfig, PreloadChoice), ConfigError> {
        let timing = self.app.timing()?;
        if self.scripts.is_empty() {
            return Err(ConfigError::NoApps);
        }
        let cwd = std::env::current_dir().map_err(ConfigError::Cwd)?;
        let node = config::resolve_node(&self.app.node)?;
        let scripts = self
            .scripts
            .iter()
            .map(|script| config::resolve_script(script, &cwd))
            .collect::<Result<Vec<_>, _>>()?;
        let names = config::app_names(self.scripts.iter().map(PathBuf::as_path));
        for name in &names {
            config::check_name(name)?;
        }
        if scripts.len() > 1 && !self.cluster.listen.is_empty() {
            return Err(ConfigError::Policy(format!(
                "--listen would give all {} apps the same address; run one app per --listen (one \
                 -m), or use `nodeguard start` with a config file that gives each app its own",
                scripts.len()
            )));
        }
        let listen = self
            .cluster
            .listen
            .iter()
            .map(|address| config::ListenAddress::parse(address))
            .collect::<Result<Vec<_>, _>>()?;
        let instances = self.cluster.instances.unwrap_or(1);
        // Each app's instances take consecutive ids, as in the daemon.
        let first_ids = (0..scripts.len())
            .map(|index| {
                u32::try_from(index)
                    .ok()
                    .and_then(|index| index.checked_mul(instances))
                    .ok_or_else(|| ConfigError::Policy("too many apps".into()))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let apps = scripts
            .into_iter()
            .zip(names)
            .zip(first_ids)
            .map(|((script, name), id)| AppSpec {
                id,
                name,
                script,
                args: self.app_args.clone(),
                node: node.clone(),
                node_args: self.app.node_args.clone(),
                cwd: cwd.clone(),
                env: Vec::new(),
                timing,
                out_file: None,
                error_file: None,
                log_timestamps: self.app.log_timestamps,
                instances,
                instance: 0,
                listen: listen.clone(),
                wait_ready: self.cluster.wait_ready,
                listen_timeout: self
                    .cluster
                    .listen_timeout
                    .unwrap_or(config::DEFAULT_LISTEN_TIMEOUT),
            })
            .collect();
        let home = match home {
            Some(home) => home,
            None => config::default_home()?,
        };
        let preload = choose_preload(self.no_preload, self.preload)?;
        let config = SupervisorConfig {
            home,
            apps,
            preload: preload.path(),
            color: color_terminal && !self.no_color,
            terminal_output: true,
            log_files: self.log_files,
            persist: false,
            exit_when_done: !self.keep_alive,
            service: config::ServiceOptions {
                http: self.http,
                ..Default::default()
            },
        };
        Ok((config, preload))
    }
}

/// Picks the monitor preload: disabled, an explicit path (which must exist), or found beside the
/// binary.
pub fn choose_preload(
    disabled: bool,
    explicit: Option<PathBuf>,
) -> Result<PreloadChoice, ConfigError> {
    if disabled {
        return Ok(PreloadChoice::Disabled);
    }
    if let Some(path) = explicit {
        if !path.is_file() {
            return Err(ConfigError::ScriptNotFound(path));
        }
        return Ok(PreloadChoice::Found(path.canonicalize().unwrap_or(path)));
    }
    Ok(config::find_preload().map_or(PreloadChoice::NotFound, PreloadChoice::Found))
}

impl PreloadChoice {
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            PreloadChoice::Found(path) => Some(path.clone()),
            PreloadChoice::Disabled | PreloadChoice::NotFound => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_bare_status_request_skips_clap() {
        let plain = |args: &[&str]| plain_status(args.iter().map(std::ffi::OsString::from));
        assert_eq!(plain(&["status"]), Some(false));
        assert_eq!(plain(&["status", "--json"]), Some(true));
        assert_eq!(plain(&["ls"]), Some(false));
        assert_eq!(plain(&["list", "--json"]), Some(true));
        for other in [
            &[][..],
            &["status", "--home", "/tmp/x"],
            &["--home", "/tmp/x", "status"],
            &["status", "--json", "--json"],
            &["status", "--jsn"],
            &["stat"],
            &["-m", "app.js"],
        ] {
            assert_eq!(plain(other), None, "{other:?}");
        }
    }

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn app_args_follow_the_double_dash() {
        let cli = Cli::try_parse_from(["nodeguard", "-m", "a.js", "--", "--port", "1"]).unwrap();
        assert_eq!(cli.run.app_args, ["--port", "1"]);
        assert_eq!(cli.run.app.heartbeat_interval, Duration::from_secs(1));
    }

    #[test]
    fn a_malformed_duration_is_a_parse_error() {
        let err = Cli::try_parse_from([
            "nodeguard",
            "-m",
            "a.js",
            "--heartbeat-interval",
            "5parsecs",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("5parsecs"), "{err}");
    }

    #[test]
    fn status_needs_no_script() {
        let cli = Cli::try_parse_from(["nodeguard", "status", "--json", "--home", "/h"]).unwrap();
        assert!(matches!(cli.command, Some(Verb::Status { json: true })));
        assert_eq!(cli.home.as_deref(), Some(std::path::Path::new("/h")));
    }
}
