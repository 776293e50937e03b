//! Foreground mode (`nodeguard -m app.js …`): flags turned into a validated supervisor config, and
//! the choice of the monitor preload.

use crate::config::{self, AppSpec, ConfigError};
use crate::supervisor::{ServiceOptions, SupervisorConfig};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;

/// Running apps in the foreground.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to run, as `start` takes it; repeat for more apps: a .js/.mjs/.cjs file with node, a
    /// .ts file with node's type stripping or the project's tsx, app.py with python3, run.sh
    /// with sh, an executable, a program on PATH, or a quoted command line (-m "npm start",
    /// -m "yarn start"); Node processes inside a command carry the monitor. An app is named
    /// after its file or program.
    #[arg(
        short = 'm',
        long = "main",
        value_name = "SCRIPT|COMMAND",
        required = true
    )]
    pub scripts: Vec<String>,

    #[command(flatten)]
    pub app: AppOptions,

    #[command(flatten)]
    pub cluster: ClusterOptions,

    #[command(flatten)]
    pub triggers: super::triggers::TriggerOptions,

    /// The monitor preload script (default: found beside the nodeguard binary) [env: NODEGUARD_PRELOAD]
    #[arg(long, value_name = "PATH", env = "NODEGUARD_PRELOAD", hide_env = true)]
    pub preload: Option<PathBuf>,

    /// Start apps without preloading the monitor (only apps that call start() get hang detection).
    #[arg(long, conflicts_with = "preload")]
    pub no_preload: bool,

    /// Read variables from this dotenv file (KEY=VALUE lines, as node --env-file reads them) and
    /// give them to every app, over this process's environment; repeatable, later files win.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,

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

    /// Serve the dashboard (/), /healthz, /readyz and /metrics over HTTP on this address (e.g.
    /// 127.0.0.1:9615). Read-only unless --http-token-file is given.
    #[arg(long, value_name = "ADDR", value_parser = parse_http_address)]
    pub http: Option<SocketAddr>,

    /// Allow the dashboard's restart, reload and stop buttons for whoever sends the token in
    /// this file (yours, mode 0600) as `Authorization: Bearer`.
    #[arg(long, value_name = "PATH", requires = "http")]
    pub http_token_file: Option<PathBuf>,

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
        // Each -m as `start` resolves its script: a file by its kind, or a command.
        let scripts = self
            .scripts
            .iter()
            .map(|script| config::command::resolve_entry(script, None, &cwd, &node))
            .collect::<Result<Vec<_>, _>>()?;
        let names = config::app_names(scripts.iter().map(|entry| entry.script.as_path()));
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
        let env = super::env::env_files(&self.env_files, &cwd)?;
        let listen = self
            .cluster
            .listen
            .iter()
            .map(|address| config::ListenAddress::parse(address))
            .collect::<Result<Vec<_>, _>>()?;
        let instances = self.cluster.instances.unwrap_or(1);
        let triggers = self.triggers.spec(&cwd)?;
        // Each app's instances take consecutive ids, as in the daemon.
        let first_ids = (0..scripts.len())
            .map(|index| {
                u32::try_from(index)
                    .ok()
                    .and_then(|index| index.checked_mul(instances))
                    .ok_or_else(|| ConfigError::Policy("too many apps".into()))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let user_node_args = self.app.split_node_args()?;
        let log_date_format = match &self.app.log_date_format {
            Some(text) => Some(std::sync::Arc::new(
                crate::core::date_format::DateFormat::parse(text).map_err(ConfigError::Policy)?,
            )),
            None => None,
        };
        let apps = scripts
            .into_iter()
            .zip(names)
            .zip(first_ids)
            .map(|((entry, name), id)| AppSpec {
                id,
                name,
                script: entry.script,
                args: entry
                    .args
                    .into_iter()
                    .chain(self.app_args.clone())
                    .collect(),
                node: node.clone(),
                node_args: super::start::node_args_with(entry.node_args, &user_node_args),
                cwd: cwd.clone(),
                env: env.clone(),
                caller_env: None,
                filter_env: None,
                timing,
                out_file: None,
                error_file: None,
                disable_logs: false,
                log_timestamps: self.app.log_timestamps,
                log_json: self.app.log_json(),
                hang_show_query: self.app.hang_show_query,
                heap_snapshot_on_memory_restart: self.app.heap_snapshot_on_memory_restart,
                profile_on_stall: self.app.profile_on_stall,
                instances,
                // PM2's -i: cluster mode, the port shared even with one instance.
                cluster: self.cluster.instances.is_some(),
                instance: 0,
                listen: listen.clone(),
                wait_ready: self.cluster.wait_ready,
                listen_timeout: self
                    .cluster
                    .listen_timeout
                    .unwrap_or(config::DEFAULT_LISTEN_TIMEOUT),
                watch: triggers.watch.clone(),
                cron_restart: triggers.cron_restart.clone(),
                kill_signal: triggers.kill_signal,
                shutdown_with_message: triggers.shutdown_with_message,
                hooks: triggers.hooks.clone(),
                interpreter: entry.interpreter,
                interpreter_args: Vec::new(),
                instance_vars: config::InstanceVars::default(),
                namespace: None,
                run_as: None,
                log_date_format: log_date_format.clone(),
                log_file: None,
                pid_file: None,
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
            service: ServiceOptions {
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
