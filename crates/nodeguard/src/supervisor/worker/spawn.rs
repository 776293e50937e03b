//! Spawning an app's process: the command line, environment and token, pipes to the output
//! writer, on the spawner thread.

use crate::config::command;
use crate::core::machine::Event;
use crate::io::forensics::StackTap;
use crate::io::monitor_socket::new_token;
use crate::io::output::{prefix_for, Origin, StreamKind};
use crate::io::proctree::{self};
use crate::platform::ProcessSpec;
use nodeguard_proto::{
    ENV_APP_NAME, ENV_INSTANCE, ENV_KILL_SIGNAL, ENV_KILL_TIMEOUT, ENV_LISTEN, ENV_SHARE,
    ENV_SHUTDOWN_MESSAGE, ENV_SOCKET, ENV_TOKEN, ENV_WAIT_READY,
};
use std::path::Path;
use std::sync::Arc;

use super::*;

impl WorkerTask {
    pub(super) async fn spawn(&mut self) -> Event {
        self.generation += 1;
        if !self.leased && !self.listeners.is_empty() {
            if let Err(error) = self.listeners.acquire() {
                return Event::SpawnFailed {
                    error: error.to_string(),
                };
            }
            self.leased = true;
        }
        self.forget_token();
        self.metrics = Metrics::default();
        let token = match new_token() {
            Ok(token) => token,
            Err(error) => {
                return Event::SpawnFailed {
                    error: format!("cannot make a token: {error}"),
                }
            }
        };
        self.ctx
            .registry
            .register(token.clone(), self.generation, self.deliver.clone());
        self.token = Some(token.clone());

        let spec = self.spec.clone();
        let mut node_options_value = None;
        let mut command = match spec.interpreter.as_deref() {
            None => {
                let mut command = ProcessSpec::new(&spec.node);
                // A hung process then prints its JS stack on SIGINT (see `forensics`).
                command.arg("--trace-sigint");
                if let Some(preload) = &self.ctx.preload {
                    command.arg("--require").arg(preload);
                }
                command.args(&spec.node_args).arg(&spec.script);
                command
            }
            Some(interpreter) => {
                let command = if interpreter == command::NONE {
                    ProcessSpec::new(&spec.script)
                } else {
                    let mut command = ProcessSpec::new(interpreter);
                    if command::is_bun(interpreter) {
                        if let Some(preload) = &self.ctx.preload {
                            command.arg("--preload").arg(preload);
                        }
                    }
                    command.args(&spec.interpreter_args).arg(&spec.script);
                    command
                };
                // Every Node process the command starts is a candidate for the monitor; the
                // preload skips package managers' own CLIs (see preload.js), and the first other
                // one to connect is the app.
                let inherited = spec
                    .env
                    .iter()
                    .rev()
                    .find(|(key, _)| key == "NODE_OPTIONS")
                    .map(|(_, value)| value.clone())
                    .or_else(|| match &spec.caller_env {
                        // The app's environment is its caller's: so is the NODE_OPTIONS it had.
                        Some(caller_env) => caller_env
                            .iter()
                            .find(|(key, _)| key == "NODE_OPTIONS")
                            .map(|(_, value)| value.clone()),
                        None => std::env::var("NODE_OPTIONS").ok(),
                    });
                node_options_value = Some(node_options(
                    inherited,
                    self.ctx.preload.as_deref(),
                    &spec.node_args,
                ));
                command
            }
        };
        // The app's environment is its caller's, not this supervisor's (which is whatever the
        // shell that first started the daemon had, or systemd's at boot); PWD follows its cwd.
        // Shared, not copied: a start of thousands of apps queues their spawns at once.
        if let Some(caller_env) = &spec.caller_env {
            command.env_base(caller_env.clone()).env("PWD", &spec.cwd);
        }
        // An app run as another user cannot reach the home: it gets that user's own socket.
        let socket = match &spec.run_as {
            Some(crate::config::RunAs {
                uid: Some(uid),
                gid,
                ..
            }) => match self.ctx.user_sockets.path_for(*uid, *gid) {
                Ok(path) => path,
                Err(error) => {
                    self.forget_token();
                    return Event::SpawnFailed {
                        error: format!("cannot make the monitor socket for uid {uid}: {error}"),
                    };
                }
            },
            _ => self.ctx.worker_socket.clone(),
        };
        if let Some(run_as) = &spec.run_as {
            command.run_as(run_as.uid, run_as.gid);
        }
        command
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_SOCKET, &socket)
            .env(ENV_TOKEN, &token)
            .env(ENV_APP_NAME, &spec.name)
            .env(ENV_INSTANCE, spec.instance.to_string())
            .envs(spec.instance_vars.for_instance(spec.instance, &spec.env));
        if let Some(options) = node_options_value {
            command.env("NODE_OPTIONS", options).env(ENV_COMMAND, "1");
        }
        if self.listeners.shares_on_request() {
            // The instance asks for each address as it listens. Once this instance number has
            // shared some, its next process (restart, reload) is ready when it listens on them all.
            let ports = self.listeners.shared_ports(spec.instance);
            self.machine.ready_timeout =
                (!ports.is_empty() || spec.wait_ready).then_some(spec.listen_timeout);
            let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
            command.env(ENV_SHARE, ports.join(","));
        } else if !self.listeners.is_empty() {
            command.env(ENV_LISTEN, self.listeners.env_value());
            command.inherit_fds(self.listeners.fds());
        }
        if spec.wait_ready {
            command.env(ENV_WAIT_READY, "1");
        }
        if spec.kill_signal != crate::core::machine::StopSignal::Terminate {
            command.env(ENV_KILL_SIGNAL, spec.kill_signal.name());
        }
        if spec.shutdown_with_message {
            command.env(ENV_SHUTDOWN_MESSAGE, "1");
        }
        if spec.timing.kill_timeout != crate::core::policy::DEFAULT_KILL_TIMEOUT {
            command.env(
                ENV_KILL_TIMEOUT,
                spec.timing.kill_timeout.as_millis().to_string(),
            );
        }

        // `disable_logs` (or a /dev/null log file): the stream goes to /dev/null in the process
        // itself, with no pipe here, so such an app costs the supervisor no descriptor for it.
        command.discard_output(spec.discards_stdout(), spec.discards_stderr());

        let spawn_key = NEXT_SPAWN_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.spawn_key = spawn_key;
        command.env(proctree::ENV_SPAWN_KEY, spawn_key.to_string());
        // The kernel log's reader is open before the process exists (once: a check after), so
        // that its OOM kill, if it comes, is among the records read after its exit.
        crate::platform::oom::watch_kernel_log();
        match self.ctx.spawner.launch(command, spawn_key).await {
            Ok(launched) => {
                let pid = launched.pid;
                let origin = Origin {
                    app: spec.name.as_str().into(),
                    prefix: prefix_for(&spec.display_name(), spec.id as usize, self.ctx.color),
                    out_file: spec.out_file.clone().map(Arc::new),
                    error_file: spec.error_file.clone().map(Arc::new),
                    timestamps: spec.log_timestamps,
                    date_format: spec.log_date_format.clone(),
                    log_file: spec.log_file.clone().map(Arc::new),
                    json: spec.log_json,
                    id: spec.id,
                };
                if let Some(path) = spec.pid_file_path() {
                    if let Err(error) = crate::io::pidfile::write(&path, pid) {
                        tracing::warn!(path = %path.display(), %error, "cannot write the pid file");
                    }
                }
                let tap = Arc::new(StackTap::default());
                if launched.stderr.is_none() {
                    // Nothing will be read from stderr: a stack printed there never comes.
                    tap.close();
                }
                if let Some(stdout) = launched.stdout {
                    let sink = self.ctx.output.clone();
                    let task = sink.copy_lines(stdout, origin.clone(), StreamKind::Stdout, None);
                    self.ctx.output_tasks.spawn(task);
                }
                if let Some(stderr) = launched.stderr {
                    let sink = self.ctx.output.clone();
                    let task = sink.copy_lines(
                        stderr,
                        origin.clone(),
                        StreamKind::Stderr,
                        Some(tap.clone()),
                    );
                    self.ctx.output_tasks.spawn(task);
                }
                self.origin = Some(origin);
                self.tap = Some(tap);
                self.capture = None;
                self.hang_requests.clear();
                self.stack_frames = None;
                self.hang_tail.clear();
                self.mark_spawn_for_oom();
                self.capture_lost = false;
                self.interrupt_timed_out = false;
                self.child = Some(launched.exit);
                Event::Spawned { pid }
            }
            Err(error) if crate::supervisor::spawner::is_cancelled(&error) => {
                // Dropped by `kill`, `stop all` or shutdown before it began: the app rests
                // stopped (its start hears "stopped before it was running").
                self.forget_token();
                self.drop_starts = true;
                tracing::info!("start cancelled before the process was spawned");
                Event::Stop
            }
            Err(error) => {
                self.forget_token();
                Event::SpawnFailed {
                    error: format!("cannot start {}: {error}", spec.runtime().display()),
                }
            }
        }
    }
}

/// Set for a command or interpreter run: the preload then skips package managers' own CLIs.
pub const ENV_COMMAND: &str = "NODEGUARD_COMMAND";

/// `NODE_OPTIONS` for the Node processes inside a command: what the app had, then
/// `--trace-sigint`, the monitor's preload (quoted, as NODE_OPTIONS allows) and the node args.
fn node_options(inherited: Option<String>, preload: Option<&Path>, node_args: &[String]) -> String {
    let quote = |word: &str| {
        if word.contains([' ', '"', '\\']) {
            format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
        } else {
            word.to_string()
        }
    };
    let mut words: Vec<String> = inherited
        .into_iter()
        .filter(|o| !o.trim().is_empty())
        .collect();
    words.push("--trace-sigint".to_string());
    if let Some(preload) = preload {
        words.push("--require".to_string());
        words.push(quote(&preload.display().to_string()));
    }
    words.extend(node_args.iter().map(|arg| quote(arg)));
    words.join(" ")
}

#[cfg(test)]
mod node_options_tests {
    use super::*;

    #[test]
    fn node_options_keep_the_apps_own_and_quote_paths_with_spaces() {
        let options = node_options(
            Some("--max-old-space-size=256".into()),
            Some(Path::new("/opt/my apps/preload.js")),
            &["--import".to_string(), "tsx".to_string()],
        );
        assert_eq!(
            options,
            r#"--max-old-space-size=256 --trace-sigint --require "/opt/my apps/preload.js" --import tsx"#
        );
        assert_eq!(node_options(Some("  ".into()), None, &[]), "--trace-sigint");
    }
}
