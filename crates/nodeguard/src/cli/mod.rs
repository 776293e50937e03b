//! The command line: flags, `--help` text, and turning them into a validated [`SupervisorConfig`].

mod app_options;
pub mod colour;
mod daemon;
pub mod env;
pub mod events;
pub mod logs;
pub mod monit;
pub mod profile;
pub mod progress;
pub mod render;
mod run;
mod scale;
mod start;
pub mod startup;
pub mod status;
mod triggers;

pub use app_options::AppOptions;
pub use daemon::plain_daemon;
pub use run::{choose_preload, PreloadChoice, RunArgs};
pub use scale::{parse_scale, ScaleCount};
pub use start::{ClusterOptions, StartArgs, StartError, StartPlan};

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Hang detection: every app is started with nodeguard's monitor preloaded (node --require), which
answers heartbeats from the app's JavaScript thread. A ping not answered within the heartbeat
timeout is a miss; after N consecutive misses the app is killed (SIGKILL to its process group) and
restarted. With the defaults a blocked event loop is restarted 3 to 4 seconds after it blocks.

Examples:
  nodeguard -m examples/main1.js -m examples/main2.js
  nodeguard -m 'npm start' -m worker.py   (foreground: anything `start` takes, a command quoted)
  nodeguard start app.js --log-date-format 'YYYY-MM-DD HH:mm:ss Z' -l -p /run/app.pid
  nodeguard --heartbeat-interval 500ms --heartbeat-misses 4 -m server.js -- --port 8080
  nodeguard status --json
  nodeguard monit   (live view: CPU, memory, loop delay, logs and events; r restart, s stop, q quit)
  nodeguard start server.js --name api -- --port 8080   (background daemon)
  nodeguard start app.js --name web -i 4 --listen 3000   (cluster mode: 4 instances, one port)
  nodeguard -i 2 --listen 3000 -m app.js   (cluster mode in the foreground)
  nodeguard scale web 4; nodeguard scale web +2   (more instances; -1: one fewer)
  nodeguard reload web   (rolling, zero-downtime with --listen; aborts if a new instance fails)
  nodeguard restart api; nodeguard stop all; nodeguard kill
  nodeguard start ecosystem.config.js --env production   (env_production over env)
  NODE_ENV=staging nodeguard restart api --update-env   (the app gets this shell's environment)
  nodeguard env api   (what it was started with; secrets masked unless --reveal)
  nodeguard events --json   (live: exits, hangs with stacks, restarts; one JSON object a line)
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
    /// Stop apps (they stay listed); returns once they have exited. TARGET: a name, an id, or all
    /// (several targets: `stop api worker`).
    Stop {
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Restart apps, or start stopped ones; returns once the new processes run.
    ///
    /// A cluster app (--listen) rolls over its instances as `reload` does: each replacement is
    /// ready before its old process drains, so no request fails.
    Restart {
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// Give the apps this shell's environment in place of the one they were started with
        /// (their config's env still wins over it), and print which variables changed.
        #[arg(long)]
        update_env: bool,
    },
    /// Rolling reload: for each instance, start a replacement, wait until it is ready, then drain
    /// the old one (apps with --listen lose no request). A replacement that fails aborts the
    /// reload and the old instances keep serving (exit code 1). Apps without --listen are
    /// restarted one instance at a time instead.
    Reload {
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// Give the apps this shell's environment in place of the one they were started with
        /// (their config's env still wins over it), and print which variables changed.
        #[arg(long)]
        update_env: bool,
    },
    /// Stop apps and forget them.
    #[command(visible_alias = "del")]
    Delete {
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Show every app: pid, state, restarts, hangs, uptime, CPU (% of one core, whole process
    /// tree, over the last second), memory (whole tree), heap, loop delay. In colour on a
    /// terminal (not with NO_COLOR set or --no-color).
    #[command(visible_alias = "ls", alias = "list")]
    Status {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// No colour, even on a terminal (as NO_COLOR does).
        #[arg(long)]
        no_color: bool,
        /// Only the apps whose name matches this glob (`web*`: `*` any run of characters, `?`
        /// one; quote it from the shell), or with this id.
        #[arg(value_name = "PATTERN")]
        pattern: Option<String>,
        /// Only the apps in this state: starting, running, stopping, stopped, backoff, errored.
        #[arg(long, value_name = "STATE", value_parser = status::parse_state)]
        state: Option<nodeguard_proto::control::AppState>,
        /// With --json: only these fields of each app, comma-separated (e.g. name,pid,state),
        /// on one line; for scripts polling many apps.
        #[arg(long, value_name = "FIELDS", value_parser = status::parse_fields, requires = "json")]
        fields: Option<status::FieldList>,
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
    /// A full-screen live view of the apps (PM2's `monit`): state, pid, uptime, restarts, hangs,
    /// CPU, memory, heap and loop delay per app or instance; memory and loop-delay sparklines,
    /// log tail and recent events (a hang with its stack) of the selected one.
    ///
    /// Keys: ↑/↓ (or k/j) select, r restart, R (or l) reload, s stop, f follow logs (full
    /// height), q, Esc or Ctrl-C quit. It asks the daemon for status once a second. Needs a
    /// terminal.
    Monit,
    /// Zero apps' restart and hang counters and their restart budget (PM2's `reset`).
    Reset {
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Set how many instances an app runs (PM2's `scale`): `scale web 4`, `scale web +2` (two
    /// more), `scale web -1` (one fewer). New instances take the next instance numbers
    /// (NODE_APP_INSTANCE) and, in cluster mode (-i, exec_mode 'cluster' or --listen), share
    /// the app's port (in fork mode they bind their own); the highest instances are stopped
    /// gracefully and forgotten. The count is saved for `resurrect`. At least 1 and at
    /// most 256 instances (to run none: `stop`).
    Scale {
        /// An app name or id.
        app: String,
        /// N, +N or -N.
        #[arg(value_name = "N|+N|-N", value_parser = parse_scale, allow_hyphen_values = true)]
        count: ScaleCount,
    },
    /// Every app as one line of JSON (PM2's `jlist`; `status --json` is the same, indented).
    Jlist,
    /// Every app as indented JSON (PM2's `prettylist`).
    Prettylist,
    /// Start the apps of a config file that are not running and restart the others (by name).
    #[command(name = "startOrRestart")]
    StartOrRestart(Box<StartArgs>),
    /// Start the apps of a config file that are not running and reload the others (by name).
    #[command(name = "startOrReload")]
    StartOrReload(Box<StartArgs>),
    /// Show an app's configuration, counters and recent events (starts, exits, hangs, restarts).
    #[command(visible_alias = "show")]
    Describe {
        /// An app name or id.
        target: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// No colour, even on a terminal (as NO_COLOR does).
        #[arg(long)]
        no_color: bool,
    },
    /// Show the environment an app was started with, one NAME=value per line. Values that look
    /// secret (names with TOKEN, SECRET, PASS, KEY, AUTH, CREDENTIAL or PRIVATE; passwords in
    /// URLs) are masked unless --reveal.
    Env {
        /// An app name or id.
        target: String,
        /// Show secret-looking values as they are.
        #[arg(long, visible_alias = "show-secrets")]
        reveal: bool,
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
    /// Follow what happens to apps, live: starts, exits (code or signal), hangs with their stack,
    /// memory restarts, errored, reload steps, readiness, state changes. One line per event, or
    /// one JSON object per line with --json. Ends when the supervisor goes away (exit 0).
    Events {
        /// An app name, id or namespace (default: every app, those started later too).
        target: Option<String>,
        /// One JSON object per line (NDJSON): at, app, id, instance, kind, pid, state, code,
        /// signal, restarts, hangs, message, stack.
        #[arg(long)]
        json: bool,
    },
    /// Take a CPU profile or heap snapshot of a running app, through the monitor inside it
    /// (Node's own inspector module, in process: no port is opened, nothing is loaded until
    /// asked). `profile web --cpu --duration 5s -o web.cpuprofile`, `profile web --heap`.
    Profile(profile::ProfileArgs),
    /// Check that a supervisor is running on this home.
    Ping,
    /// Stop every app, then the daemon.
    Kill,
    /// Run the daemon in this process, in the foreground (for systemd and containers).
    ///
    /// `start` launches the same daemon in the background. Verbs from other shells control it as
    /// usual. Under systemd (NOTIFY_SOCKET set) it sends READY=1, STATUS= and WATCHDOG=1.
    Daemon(DaemonArgs),
    /// Print (or --install) a systemd user unit (or with --system --user NAME, a system unit)
    /// that resurrects the saved apps at boot.
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

    /// Serve the dashboard (/), /healthz, /readyz and /metrics over HTTP on this address (e.g.
    /// 127.0.0.1:9615). Read-only unless --http-token-file is given.
    #[arg(long, value_name = "ADDR", value_parser = parse_http_address)]
    pub http: Option<SocketAddr>,

    /// Allow the dashboard's restart, reload and stop buttons (POST /api/...) for whoever sends
    /// the token in this file as `Authorization: Bearer`. The file must be yours, mode 0600, not
    /// a symlink, and hold one line of 16 to 512 visible characters (`openssl rand -hex 32`).
    #[arg(long, value_name = "PATH", requires = "http")]
    pub http_token_file: Option<std::path::PathBuf>,
}

/// `nodeguard startup`.
#[derive(Debug, Clone, Args)]
pub struct StartupArgs {
    /// The init system (only systemd so far).
    #[arg(value_enum)]
    pub system: InitSystem,

    /// Write the unit to ~/.config/systemd/user/nodeguard.service instead of printing it (with
    /// --system: /etc/systemd/system/nodeguard-USER.service, as root).
    #[arg(long)]
    pub install: bool,

    /// A system unit instead of a user unit, for root installs: the daemon runs as --user (its
    /// home defaults to that user's ~/.nodeguard) and starts at boot without lingering.
    #[arg(long = "system", requires = "user")]
    pub system_unit: bool,

    /// The account a --system unit runs the daemon (and its apps) as.
    #[arg(long, value_name = "NAME", requires = "system_unit")]
    pub user: Option<String>,

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn no_flags_give_the_one_set_of_defaults() {
        use crate::core::machine::Timing;
        let cli = Cli::try_parse_from(["nodeguard", "-m", "app.js"]).expect("parses");
        assert_eq!(cli.run.app.timing().expect("valid"), Timing::default());
    }

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
        assert!(matches!(cli.command, Some(Verb::Status { json: true, .. })));
        assert_eq!(cli.home.as_deref(), Some(std::path::Path::new("/h")));
    }
}
