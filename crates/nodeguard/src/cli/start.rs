//! `nodeguard start`: a script or a config file with flags, turned into app definitions for the
//! daemon.

use crate::config::file::{self, AppDefaults, ConfigFileError};
use crate::config::{self, AppCommand, ConfigError};
use crate::core::duration::parse_duration;
use clap::Args;
use nodeguard_proto::control::AppDefinition;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// `nodeguard start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The script to run, or a config file (*.json, *.yml, *.yaml, *.config.js|cjs|mjs, such as
    /// PM2's ecosystem.config.js or process.yml) whose apps to start. A .js/.mjs/.cjs file runs
    /// with node (with the monitor), a .ts file with node's type stripping or the project's tsx, a
    /// .py file with python3, an executable or a command on PATH (npm, yarn, pnpm, npx, uvicorn,
    /// ...) as a command, and so does a quoted command line ("npm run start"); Node processes
    /// inside a command carry the monitor. Or the name or id of an app the daemon knows (which is
    /// then restarted, or started if stopped, as PM2's `start <name>` does).
    #[arg(value_name = "SCRIPT|CONFIG|COMMAND")]
    pub script: PathBuf,

    /// What runs the script, as PM2's --interpreter: node, bun, python3, tsx, deno, none (the
    /// script runs itself), or a path.
    #[arg(long, value_name = "PROGRAM")]
    pub interpreter: Option<String>,

    /// Arguments for the interpreter, before the script (split as a shell would).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub interpreter_args: Option<String>,

    /// The app's name (default: the script's file name without extension).
    #[arg(long)]
    pub name: Option<String>,

    #[command(flatten)]
    pub app: AppOptions,

    #[command(flatten)]
    pub cluster: ClusterOptions,

    #[command(flatten)]
    pub triggers: super::triggers::TriggerOptions,
    /// The app's working directory; a relative script is found from it (default: the current
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Write the app's stdout to this file instead of <home>/logs/<name>-out.log (PM2's -o).
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "out-file",
        value_name = "FILE"
    )]
    pub output: Option<PathBuf>,

    /// Write the app's stderr to this file instead of <home>/logs/<name>-err.log (PM2's -e).
    #[arg(
        short = 'e',
        long = "error",
        visible_alias = "error-file",
        value_name = "FILE"
    )]
    pub error: Option<PathBuf>,

    /// Also write stdout and stderr, interleaved, to this file (PM2's -l/--log); without a path,
    /// to <home>/logs/<name>-combined.log. Rotated as the other logs.
    #[arg(
        short = 'l',
        long = "log",
        visible_alias = "log-file",
        value_name = "FILE",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    pub log: Option<String>,

    /// Send the app's stdout and stderr to /dev/null, in the process itself (PM2's
    /// --disable-logs): no log files, nothing for `logs`, and no pipes in the daemon, so the app
    /// costs it one open file (its pidfd, plus the monitor's connection for a Node app) instead
    /// of three. `-o /dev/null` or `-e /dev/null` does the same for one stream. Lost with them: the
    /// app's output, and the stderr lines a hang report carries.
    #[arg(long)]
    pub disable_logs: bool,

    /// Write the app's pid to this file at each start and remove it when the process ends
    /// (PM2's -p/--pid); with several instances, FILE-<id>.pid per instance. Created 0600; a
    /// symlink or non-regular file there is refused.
    #[arg(
        short = 'p',
        long = "pid",
        visible_alias = "pid-file",
        value_name = "FILE"
    )]
    pub pid: Option<PathBuf>,

    /// Never restart the app when it exits (PM2's spelling of --autorestart never).
    #[arg(long)]
    pub no_autorestart: bool,

    /// Put the app in a group that verbs can target by its name (`restart <namespace>`), as PM2's
    /// --namespace.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,

    /// Run the app as this user (a name, or a number with --gid), PM2's --uid; root only. Its
    /// group is the user's own, with no supplementary groups. nodeguard stays root and still
    /// writes the app's logs; the app reaches its monitor socket without access to the home.
    #[arg(long, value_name = "USER")]
    pub uid: Option<String>,

    /// Run the app with this group (a name or a number), PM2's --gid; root only.
    #[arg(long, value_name = "GROUP")]
    pub gid: Option<String>,

    /// With a config file: use each app's env_NAME block on top of its env (PM2's
    /// `--env production` for `env_production`).
    #[arg(long = "env", value_name = "NAME")]
    pub env_name: Option<String>,

    /// Read variables from this dotenv file (KEY=VALUE lines, as node --env-file reads them);
    /// repeatable, later files win. These win over the caller's environment and everything in a
    /// config file (see "Environment" in the README).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,

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
    /// How many processes run the app: a number, or max (one per CPU). As in PM2, -i means
    /// cluster mode (even -i 1): without --listen, the supervisor binds the address the app's
    /// server.listen(port, host) asks for (that host only) once and hands the socket to every
    /// instance, as Node's cluster module does; reload is then zero-downtime and scale adds
    /// instances on the same socket.
    #[arg(short = 'i', long = "instances", value_name = "N|max", value_parser = parse_instances)]
    pub instances: Option<u32>,

    /// [HOST:]PORT for the supervisor to listen on and hand to every instance (repeatable), bound
    /// before any app runs. The app's own server.listen(PORT) is mapped onto it by the monitor
    /// (a listen on another port is reported: "web:0 listened on 3721, not 3720"). Without a host it listens
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
pub(super) fn parse_instances(text: &str) -> Result<u32, String> {
    if text == "max" {
        return Ok(file::cpu_count());
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=config::MAX_INSTANCES).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{text}' is not an instance count (1 to {}, or max)",
            config::MAX_INSTANCES
        )),
    }
}

impl ClusterOptions {
    /// Validates the addresses and writes the options into `definition` (flags given on the
    /// command line win over a config file's fields).
    fn apply(&self, definition: &mut AppDefinition) -> Result<(), ConfigError> {
        for address in &self.listen {
            config::ListenAddress::parse(address)?;
        }
        if let Some(instances) = self.instances {
            // As in PM2, -i means cluster mode: the port is shared even with one instance.
            definition.instances = instances;
            definition.cluster = true;
        }
        if !self.listen.is_empty() {
            definition.listen = self.listen.clone();
        }
        definition.wait_ready |= self.wait_ready;
        if let Some(timeout) = self.listen_timeout {
            definition.listen_timeout_ms = Some(crate::core::duration::millis(timeout));
        }
        Ok(())
    }
}

/// The node arguments the runtime needs, then the user's; the user's own TypeScript loader
/// (--node-arg="--import tsx") replaces ours.
pub(super) fn node_args_with(mut needed: Vec<String>, user: &[String]) -> Vec<String> {
    if user
        .iter()
        .any(|arg| arg.contains("tsx") || arg.contains("ts-node"))
    {
        needed.retain(|arg| arg != "--import=tsx");
    }
    needed.extend_from_slice(user);
    needed
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
    /// apps for the daemon. A config file is recognised as PM2 does: `*.json`, `*.yml`, `*.yaml`
    /// or `*.config.{js,cjs,mjs}`.
    pub fn into_plan(self) -> Result<StartPlan, StartError> {
        if self.http.is_some() {
            return Err(StartError::HttpBelongsToTheDaemon);
        }
        let timing = self.app.timing()?;
        let node = config::resolve_node(&self.app.node)?;
        let cwd = std::env::current_dir().map_err(ConfigError::Cwd)?;
        // The app's environment: this caller's, then the config's layers, then --env-file.
        let (caller_env, skipped) = config::env::caller_env();
        let mut env_warnings: Vec<String> = skipped
            .iter()
            .map(|name| {
                format!("{name} from your environment is not passed on: it is not UTF-8 text")
            })
            .collect();
        let cli_env = super::env::env_files(&self.env_files, &cwd)?;
        if file::looks_like_config(&self.script) {
            let file = cwd.join(&self.script);
            let defaults = AppDefaults {
                node: node.clone(),
                timing,
            };
            let loaded = file::load(&file, &defaults)?;
            let per_app = [
                ("--cwd", self.cwd.is_some(), "cwd"),
                ("-o/--output", self.output.is_some(), "out_file"),
                ("-e/--error", self.error.is_some(), "error_file"),
                ("-l/--log", self.log.is_some(), "log_file"),
                ("-p/--pid", self.pid.is_some(), "pid_file"),
            ];
            if let Some((flag, _, field)) = per_app.iter().find(|(_, given, _)| *given) {
                return Err(ConfigError::Policy(format!(
                    "{flag} applies to a script; with a config file ({}), put `{field}` in its \
                     apps instead",
                    self.script.display()
                ))
                .into());
            }
            if loaded.apps.len() > 1 && !self.cluster.listen.is_empty() {
                return Err(ConfigError::Policy(format!(
                    "--listen would give all {} apps of {} the same address; put `listen` in \
                     each app of the file instead",
                    loaded.apps.len(),
                    self.script.display()
                ))
                .into());
            }
            let mut warnings = loaded.warnings;
            let env_name = self.env_name.as_deref();
            if let Some(name) = env_name {
                super::env::check_env_name(name, &self.script, &loaded.apps)?;
            }
            let mut apps = Vec::new();
            for app in &loaded.apps {
                let mut definition = app.definition(&node, self.app.log_timestamps);
                definition.hang_show_query |= self.app.hang_show_query;
                definition.heap_snapshot_on_memory_restart |=
                    self.app.heap_snapshot_on_memory_restart;
                if let Some(stall) = self.app.profile_on_stall {
                    definition.profile_on_stall_ms = Some(crate::core::duration::millis(stall));
                }
                if let Some(json) = self.app.log_type {
                    definition.log_json = json;
                }
                if self.app.log_date_format.is_some() {
                    definition
                        .log_date_format
                        .clone_from(&self.app.log_date_format);
                }
                if self.no_autorestart {
                    definition.autorestart = Some("never".to_string());
                }
                definition.disable_logs |= self.disable_logs;
                if self.namespace.is_some() {
                    definition.namespace = self.namespace.clone();
                }
                if self.uid.is_some() {
                    definition.uid = self.uid.clone();
                }
                if self.gid.is_some() {
                    definition.gid = self.gid.clone();
                }
                definition.env = config::env::layered([&app.env_for(env_name)[..], &cli_env]);
                definition.caller_env = Some(config::env::filtered(
                    &caller_env,
                    app.filter_env.as_deref(),
                ));
                if let Some(name) = env_name.filter(|name| !app.has_env_block(name)) {
                    env_warnings.push(format!(
                        "{}: app '{}' has no env_{name} block; it gets its env only",
                        self.script.display(),
                        app.name
                    ));
                }
                self.cluster.apply(&mut definition)?;
                self.triggers.apply(&mut definition, &cwd)?;
                apps.push(definition);
            }
            warnings.append(&mut env_warnings);
            return Ok(StartPlan { apps, warnings });
        }
        if let Some(name) = &self.name {
            config::check_name(name)?;
        }
        if let Some(name) = &self.env_name {
            return Err(ConfigError::Policy(format!(
                "--env {name} chooses the env_{name} block of a config file, and {} is a script; \
                 give variables with --env-file FILE, or in the shell that runs start",
                self.script.display()
            ))
            .into());
        }
        if let Some(namespace) = &self.namespace {
            config::check_name(namespace)?;
        }
        let cwd = match &self.cwd {
            Some(dir) => {
                let dir = cwd.join(dir);
                if !dir.is_dir() {
                    return Err(ConfigError::Policy(format!(
                        "--cwd {} is not a directory",
                        dir.display()
                    ))
                    .into());
                }
                dir
            }
            None => cwd,
        };
        let entry = config::command::resolve_entry(
            &self.script.to_string_lossy(),
            self.interpreter.as_deref(),
            &cwd,
            &node,
        )?;
        let user_node_args = self.app.split_node_args()?;
        let node_args = node_args_with(entry.node_args, &user_node_args);
        let interpreter_args = match &self.interpreter_args {
            Some(text) => shell_words::split(text).map_err(|error| {
                ConfigError::Policy(format!("--interpreter-args {text:?}: {error}"))
            })?,
            None => Vec::new(),
        };
        let mut args = entry.args;
        args.extend(self.app_args);
        let mut app = AppCommand {
            name: self.name,
            script: &entry.script,
            args,
            node: &node,
            node_args,
            cwd: &cwd,
            env: cli_env,
            timing: &timing,
        }
        .definition();
        app.interpreter = entry.interpreter;
        app.interpreter_args = interpreter_args;
        app.caller_env = Some(caller_env);
        app.log_timestamps = self.app.log_timestamps;
        app.log_json = self.app.log_json();
        app.hang_show_query = self.app.hang_show_query;
        app.heap_snapshot_on_memory_restart = self.app.heap_snapshot_on_memory_restart;
        app.profile_on_stall_ms = self.app.profile_on_stall.map(crate::core::duration::millis);
        let in_cwd = |file: &PathBuf| cwd.join(file).to_string_lossy().into_owned();
        if let Some(file) = &self.output {
            app.out_file = Some(in_cwd(file));
        }
        if let Some(file) = &self.error {
            app.error_file = Some(in_cwd(file));
        }
        app.log_date_format.clone_from(&self.app.log_date_format);
        if let Some(file) = &self.log {
            app.log_file = Some(if file.is_empty() {
                String::new()
            } else {
                in_cwd(&PathBuf::from(file))
            });
            let same = app
                .log_file
                .as_ref()
                .filter(|log| !log.is_empty())
                .is_some_and(|log| {
                    Some(log) == app.out_file.as_ref() || Some(log) == app.error_file.as_ref()
                });
            if same {
                return Err(ConfigError::Policy(
                    "-l/--log is the -o or -e file too; the combined log needs a file of its own"
                        .into(),
                )
                .into());
            }
        }
        if let Some(file) = &self.pid {
            let path = cwd.join(file);
            config::check_pid_file(&path)
                .map_err(|message| ConfigError::Policy(format!("-p/--pid {message}")))?;
            app.pid_file = Some(path.to_string_lossy().into_owned());
        }
        if self.no_autorestart {
            app.autorestart = Some("never".to_string());
        }
        app.disable_logs = self.disable_logs;
        app.namespace = self.namespace;
        app.uid = self.uid;
        app.gid = self.gid;
        self.cluster.apply(&mut app)?;
        self.triggers.apply(&mut app, &cwd)?;
        Ok(StartPlan {
            apps: vec![app],
            warnings: env_warnings,
        })
    }
}
