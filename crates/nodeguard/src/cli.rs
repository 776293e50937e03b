//! The command line: flags, `--help` text, and turning them into a validated [`SupervisorConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, AppSpec, ConfigError, SupervisorConfig, DEFAULT_HEARTBEAT_MISSES};
use crate::duration::parse_duration;
use crate::machine::Timing;

const AFTER_HELP: &str = "\
Hang detection: every app is started with nodeguard's monitor preloaded (node --require), which
answers heartbeats from the app's JavaScript thread. A ping not answered within the heartbeat
timeout is a miss; after N consecutive misses the app is killed (SIGKILL to its process group) and
restarted. With the defaults a blocked event loop is restarted 3 to 4 seconds after it blocks.

Examples:
  nodeguard -m examples/main1.js -m examples/main2.js
  nodeguard --heartbeat-interval 500ms --heartbeat-misses 4 -m server.js -- --port 8080
  nodeguard status --json";

#[derive(Debug, Parser)]
#[command(
    name = "nodeguard",
    version,
    about = "Supervise Node.js apps: restart them when they exit or when their event loop hangs",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Verb>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Show every app of the running supervisor: pid, state, restarts, hangs, memory, loop delay.
    #[command(visible_alias = "ls", alias = "list")]
    Status {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// State directory of the supervisor to ask [env: NODEGUARD_HOME] [default: ~/.nodeguard]
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
    },
}

/// Running apps in the foreground.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Script to run with node; repeat for more apps. An app is named after its file.
    #[arg(short = 'm', long = "main", value_name = "SCRIPT", required = true)]
    pub scripts: Vec<PathBuf>,

    /// Node.js binary to run the apps with.
    #[arg(long, value_name = "PATH", default_value = "node")]
    pub node: String,

    /// Extra argument for node itself (before the script); repeat for more.
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub node_args: Vec<String>,

    /// Time between heartbeats.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Time a heartbeat may stay unanswered before it counts as missed (at most the interval).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// Consecutive missed heartbeats after which the app counts as hung and is restarted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HEARTBEAT_MISSES)]
    pub heartbeat_misses: u32,

    /// Time a newly started app has before its first heartbeat answer is due.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub start_grace: Duration,

    /// Time between SIGTERM and SIGKILL when stopping an app.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub kill_timeout: Duration,

    /// State directory for sockets [env: NODEGUARD_HOME] [default: ~/.nodeguard]
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The monitor preload script (default: found beside the nodeguard binary) [env: NODEGUARD_PRELOAD]
    #[arg(long, value_name = "PATH", env = "NODEGUARD_PRELOAD", hide_env = true)]
    pub preload: Option<PathBuf>,

    /// Start apps without preloading the monitor (only apps that call start() get hang detection).
    #[arg(long, conflicts_with = "preload")]
    pub no_preload: bool,

    /// Never colour app names in the output.
    #[arg(long)]
    pub no_color: bool,

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
        color_terminal: bool,
    ) -> Result<(SupervisorConfig, PreloadChoice), ConfigError> {
        let timing = Timing {
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            heartbeat_misses: self.heartbeat_misses,
            start_grace: self.start_grace,
            kill_timeout: self.kill_timeout,
        };
        config::validate_timing(&timing)?;
        if self.scripts.is_empty() {
            return Err(ConfigError::NoApps);
        }
        let cwd = std::env::current_dir().map_err(ConfigError::Cwd)?;
        let node = config::resolve_node(&self.node)?;
        let scripts = self
            .scripts
            .iter()
            .map(|script| config::resolve_script(script, &cwd))
            .collect::<Result<Vec<_>, _>>()?;
        let names = config::app_names(self.scripts.iter().map(PathBuf::as_path));
        let apps = scripts
            .into_iter()
            .zip(names)
            .enumerate()
            .map(|(index, (script, name))| AppSpec {
                id: index as u32,
                name,
                script,
                args: self.app_args.clone(),
                node: node.clone(),
                node_args: self.node_args.clone(),
                cwd: cwd.clone(),
                env: Vec::new(),
                timing,
            })
            .collect();
        let home = match self.home {
            Some(home) => home,
            None => config::default_home()?,
        };
        let preload = if self.no_preload {
            PreloadChoice::Disabled
        } else if let Some(path) = self.preload {
            if !path.is_file() {
                return Err(ConfigError::ScriptNotFound(path));
            }
            PreloadChoice::Found(path.canonicalize().unwrap_or(path))
        } else {
            config::find_preload().map_or(PreloadChoice::NotFound, PreloadChoice::Found)
        };
        let config = SupervisorConfig {
            home,
            apps,
            preload: match &preload {
                PreloadChoice::Found(path) => Some(path.clone()),
                _ => None,
            },
            color: color_terminal && !self.no_color,
        };
        Ok((config, preload))
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(cli.run.heartbeat_interval, Duration::from_secs(1));
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
        let cli = Cli::try_parse_from(["nodeguard", "status", "--json"]).unwrap();
        assert!(matches!(cli.command, Some(Verb::Status { json: true, .. })));
    }
}
