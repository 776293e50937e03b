//! `--watch`, `--cron-restart`, `--kill-signal`, `--shutdown-with-message`: restarts nobody types
//! and how an app is asked to stop, as PM2 spells them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use nodeguard_proto::control::AppDefinition;

use crate::config::{self, ConfigError};
use crate::core::duration::parse_duration;
use crate::core::machine::StopSignal;

/// Restart triggers and the stop contract.
#[derive(Debug, Clone, Default, Args)]
pub struct TriggerOptions {
    /// Restart the app when a file changes (reload it, with --listen or -i 2+): the app's
    /// directory, or the given paths (comma-separated or repeated; put --watch after the script).
    /// node_modules and .git are never watched.
    #[arg(long, value_name = "PATHS", num_args = 0..=1, value_delimiter = ',', action = clap::ArgAction::Append)]
    pub watch: Option<Vec<PathBuf>>,

    /// A glob of paths --watch leaves out (repeatable): `logs`, `*.log`, `public/**`.
    #[arg(long, value_name = "GLOB")]
    pub ignore_watch: Vec<String>,

    /// How long changes must stop before the restart [default: 1s]: one burst of saves is one
    /// restart.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub watch_delay: Option<Duration>,

    /// Restart (reload, with --listen or -i 2+) on a cron schedule in local time: 5 fields, or
    /// 6 with seconds first ("*/30 * * * * *").
    #[arg(long, visible_alias = "cron", value_name = "PATTERN")]
    pub cron_restart: Option<String>,

    /// The signal that asks the app to stop [default: SIGTERM; SIGINT for apps from a PM2 config
    /// file]. An app that handles only the other of SIGINT and SIGTERM gets that one.
    #[arg(long, value_name = "SIGNAL")]
    pub kill_signal: Option<String>,

    /// Ask the app to stop with the message 'shutdown' on process.on('message'), as PM2 does.
    #[arg(long)]
    pub shutdown_with_message: bool,

    /// Run a hook on the app's events (repeatable): KINDS=COMMAND or KINDS=http://HOST:PORT/PATH.
    /// KINDS: a comma-separated list of crash, hang, errored, memory, oom, start, stop, exit, or
    /// all. A command is split like a shell would split it, then run without a shell, in the
    /// app's directory, with the event as JSON on stdin and in NODEGUARD_* variables; a URL gets
    /// the JSON POSTed (http only: for https, use a command such as curl). Each hook has 10 s
    /// (or timeout:DUR among its kinds), then its process group is killed; at most 4 run at
    /// once. E.g. --on-event 'crash,hang=./notify.sh' --on-event
    /// 'hang,timeout:3s=http://127.0.0.1:9000/hook'
    #[arg(long, value_name = "KINDS=TARGET")]
    pub on_event: Vec<String>,
}

/// The parts of an `AppSpec` these options set, for foreground mode.
pub struct SpecTriggers {
    pub watch: Option<config::WatchSpec>,
    pub cron_restart: Option<String>,
    pub kill_signal: StopSignal,
    pub shutdown_with_message: bool,
    pub hooks: std::sync::Arc<[crate::config::hooks::HookSpec]>,
}

impl TriggerOptions {
    /// The options checked, as foreground mode's specs take them (paths against `cwd`).
    pub fn spec(&self, cwd: &Path) -> Result<SpecTriggers, ConfigError> {
        let mut definition = crate::config::AppCommand {
            name: None,
            script: cwd,
            args: Vec::new(),
            node: cwd,
            node_args: Vec::new(),
            cwd,
            env: Vec::new(),
            timing: &crate::core::machine::Timing::default(),
        }
        .definition();
        self.apply(&mut definition, cwd)?;
        let watch = (!definition.watch.is_empty()).then(|| config::WatchSpec {
            paths: definition.watch.iter().map(PathBuf::from).collect(),
            ignore: definition.ignore_watch.clone(),
            delay: self.watch_delay.unwrap_or(config::DEFAULT_WATCH_DELAY),
        });
        Ok(SpecTriggers {
            watch,
            cron_restart: definition.cron_restart,
            kill_signal: match &definition.kill_signal {
                Some(name) => StopSignal::parse(name).map_err(ConfigError::Policy)?,
                None => StopSignal::Terminate,
            },
            shutdown_with_message: definition.shutdown_with_message,
            hooks: crate::config::hooks::parse_all(&definition.on_event)
                .map_err(ConfigError::Policy)?
                .into(),
        })
    }

    /// Checks the options and writes them into `definition` (over a config file's fields);
    /// `--watch` paths are resolved against `cwd`, none meaning `cwd` itself.
    pub fn apply(&self, definition: &mut AppDefinition, cwd: &Path) -> Result<(), ConfigError> {
        if let Some(paths) = &self.watch {
            definition.watch = if paths.is_empty() {
                vec![cwd.display().to_string()]
            } else {
                let mut resolved = Vec::new();
                for path in paths {
                    let path = cwd.join(path);
                    if !path.exists() {
                        return Err(ConfigError::Policy(format!(
                            "--watch: {} does not exist",
                            path.display()
                        )));
                    }
                    resolved.push(path.display().to_string());
                }
                resolved
            };
        }
        definition
            .ignore_watch
            .extend(self.ignore_watch.iter().cloned());
        if let Some(delay) = self.watch_delay {
            definition.watch_delay_ms = Some(crate::core::duration::millis(delay));
        }
        if let Some(pattern) = &self.cron_restart {
            config::check_cron(pattern)?;
            definition.cron_restart = Some(pattern.clone());
        }
        if let Some(signal) = &self.kill_signal {
            let signal = StopSignal::parse(signal).map_err(ConfigError::Policy)?;
            definition.kill_signal = Some(signal.name().to_string());
        }
        definition.shutdown_with_message |= self.shutdown_with_message;
        if !self.on_event.is_empty() {
            crate::config::hooks::parse_all(&self.on_event).map_err(|message| {
                ConfigError::Policy(message.replacen("on_event", "--on-event", 1))
            })?;
            definition.on_event.extend(self.on_event.iter().cloned());
        }
        Ok(())
    }
}
