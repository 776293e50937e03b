//! The `nodeguard` binary: parses the command line, installs logging and signal handling, and runs
//! the supervisor or a client verb. Errors become one line on stderr and a non-zero exit.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nodeguard::cli::logs;
use nodeguard::cli::render;
use nodeguard::cli::startup;
use nodeguard::cli::{
    choose_preload, Cli, DaemonArgs, PreloadChoice, RunArgs, StartError, StartupArgs, Verb,
};
use nodeguard::config::{self, ConfigError};
use nodeguard::io::control_client as client;
use nodeguard::io::home::HomePaths;
use nodeguard::io::logfile::DaemonLog;
use nodeguard::io::systemd::{self, Notifier};
use nodeguard::supervisor::{self, ServiceOptions, Shutdown, SupervisorConfig};
use nodeguard_proto::control::{Command, Outcome, Target};

/// Exit code for a bad command line or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit code of foreground mode when every app came to rest on its own and at least one of them
/// failed (gave up on as errored, or exited uncleanly with no restart due).
const EXIT_APPS_FAILED: u8 = 3;
/// Exit code after a forced (second-signal) stop: 128 + SIGINT, as shells report an interrupt.
const EXIT_FORCED: u8 = 130;
/// How long `kill` waits for the supervisor to exit after its apps stopped.
const KILL_WAIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // `status [--json]` with nothing else is what scripts and dashboards poll: it skips building
    // the whole command-line parser, a fifth of such a run (see `cli::plain_status`).
    if let Some(json) = nodeguard::cli::plain_status(std::env::args_os().skip(1)) {
        init_logging(None);
        return finish(run_client(Verb::Status { json }, None));
    }
    let cli = match Cli::parse_checked() {
        Ok(cli) => cli,
        Err(error) => return clap_error(error),
    };
    // A daemon that `start` launched writes to `<home>/daemon.log`: it adopts the file, to
    // rotate it and reopen it on SIGHUP.
    let daemon_log = match &cli.command {
        Some(Verb::Daemon(_)) => home_paths(cli.home.clone()).ok().and_then(|paths| {
            DaemonLog::adopt(&paths.home.join(nodeguard::io::control_client::DAEMON_LOG))
                .map(Arc::new)
        }),
        _ => None,
    };
    init_logging(daemon_log.clone());
    // Before any thread starts: systemd's variables leave the environment whatever the verb, so
    // neither apps nor a daemon that `start` launches inherit them.
    let notifier = systemd::Notifier::take_from_env();
    let outcome = match cli.command {
        None => foreground(cli.run, cli.home, notifier),
        Some(Verb::Daemon(args)) => daemon(args, cli.home, notifier, daemon_log),
        Some(Verb::Startup(args)) => startup(args, cli.home),
        Some(verb) => run_client(verb, cli.home),
    };
    finish(outcome)
}

/// A client verb: it prints and exits. When its reader goes away (`nodeguard status | head -1`)
/// it ends quietly, as other Unix tools do, instead of panicking in println!.
fn run_client(verb: Verb, home: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    nodeguard::platform::restore_default_sigpipe();
    client_verb(verb, home)
}

/// The exit code for an outcome; an error is one line on stderr.
fn finish(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(error) => {
            let usage = error.downcast_ref::<ConfigError>().is_some()
                || error.downcast_ref::<StartError>().is_some();
            eprintln!("nodeguard: error: {}", error_chain(&error));
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}

/// An error and its causes, `outer: cause: …`, leaving out a cause the message already quotes
/// (many messages carry their source's text, e.g. the OS error, which would otherwise show twice).
/// A config file's list of problems keeps its one line per problem.
fn error_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Help and version print as clap renders them; a usage error becomes one line.
fn clap_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    // clap puts details (such as which argument is missing) on indented lines after the first.
    let rendered = error.render().to_string();
    let mut lines = rendered.lines().filter(|line| !line.trim().is_empty());
    let mut first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    let details = lines
        .take_while(|line| line.starts_with(' '))
        .filter(|line| !line.trim_start().starts_with("tip:"));
    for detail in details {
        first.push(' ');
        first.push_str(detail.trim());
    }
    eprintln!("nodeguard: error: {first} (see nodeguard --help)");
    ExitCode::from(EXIT_USAGE)
}

/// Logs at the level named by `NODEGUARD_LOG` (`error`, `warn`, `info`, `debug`, `trace` or
/// `off`; default `info`). A plain level rather than per-module directives keeps the regex engine
/// out of the binary, which is resident in every supervisor. To stderr, or to the daemon's own
/// log file (rotated) when given one.
fn init_logging(daemon_log: Option<Arc<DaemonLog>>) {
    use tracing_subscriber::filter::LevelFilter;
    let level = std::env::var("NODEGUARD_LOG")
        .ok()
        .and_then(|text| text.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let writer = move || LogWriter(daemon_log.clone());
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(writer)
        // A stderr whose reader went away (a pipe into `head`, a restarted log collector) must
        // not stop supervision: tracing-subscriber would otherwise report the failed write with
        // eprintln!, which panics on that same broken stderr, in whichever task was logging.
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Where one log event goes: stderr, or the daemon's log file (one write per event, so the file
/// rotates between whole lines).
struct LogWriter(Option<Arc<DaemonLog>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(log) => log.write_record(bytes).map(|()| bytes.len()),
            None => std::io::stderr().write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.0 {
            Some(_) => Ok(()),
            None => std::io::stderr().flush(),
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn home_paths(home: Option<PathBuf>) -> anyhow::Result<HomePaths> {
    let home = match home {
        Some(home) => home,
        None => config::default_home()?,
    };
    Ok(HomePaths::new(&home))
}

/// The verbs that talk to a running supervisor.
fn client_verb(verb: Verb, home: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let paths = home_paths(home)?;
    let runtime = runtime()?;
    match verb {
        Verb::Status { json } => {
            let Outcome::Status { apps } =
                runtime.block_on(client::request(&paths, Command::Status))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                print!("{}", render::status_table(&apps));
            }
        }
        Verb::Start(args) => {
            let plan = args.into_plan()?;
            for warning in &plan.warnings {
                eprintln!("nodeguard: warning: {warning}");
            }
            let outcome = runtime.block_on(async {
                if client::ensure_daemon(&paths).await? {
                    println!("nodeguard: daemon started on {}", paths.home.display());
                }
                client::request(&paths, Command::Start { apps: plan.apps }).await
            })?;
            print_done(outcome)?;
        }
        Verb::Stop { target } => print_done(runtime.block_on(client::request(
            &paths,
            Command::Stop {
                target: Target(target),
            },
        ))?)?,
        Verb::Restart { target } => print_done(runtime.block_on(client::request(
            &paths,
            Command::Restart {
                target: Target(target),
            },
        ))?)?,
        Verb::Reload { target } => {
            let outcome = runtime.block_on(client::request(
                &paths,
                Command::Reload {
                    target: Target(target),
                },
            ))?;
            let Outcome::Reloaded { apps, notes } = outcome else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            for note in notes {
                println!("{note}");
            }
            print!("{}", render::status_table(&apps));
        }
        Verb::Delete { target } => {
            let Outcome::Done { apps } = runtime.block_on(client::request(
                &paths,
                Command::Delete {
                    target: Target(target),
                },
            ))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            for app in apps {
                println!("deleted {} (id {})", app.name, app.id);
            }
        }
        Verb::Ping => {
            let Outcome::Pong { pid, version } =
                runtime.block_on(client::request(&paths, Command::Ping))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            println!(
                "nodeguard {version} supervisor running, pid {pid}, home {}",
                paths.home.display()
            );
        }
        Verb::Kill => {
            let Outcome::Pong { pid, .. } =
                runtime.block_on(client::request(&paths, Command::Ping))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            let Outcome::Done { apps } =
                runtime.block_on(client::request(&paths, Command::Kill))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            if !runtime.block_on(client::wait_until_exited(pid, KILL_WAIT)) {
                anyhow::bail!(
                    "stopped {} app(s), but the supervisor (pid {pid}) is still running",
                    apps.len()
                );
            }
            println!("stopped {} app(s); the supervisor has exited", apps.len());
        }
        Verb::Logs {
            target,
            lines,
            follow,
            err,
            out,
        } => {
            let streams = logs::Streams {
                out: !err || out,
                err: !out || err,
            };
            runtime.block_on(logs::show(&paths, target, lines, follow, streams))?;
        }
        Verb::Flush { target } => {
            let target = Target(target.unwrap_or_else(|| "all".into()));
            let Outcome::Done { apps } =
                runtime.block_on(client::request(&paths, Command::Flush { target }))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            for app in apps {
                println!("flushed the logs of {}", app.name);
            }
        }
        Verb::Describe { target, json } => {
            let Outcome::Described { apps } = runtime.block_on(client::request(
                &paths,
                Command::Describe {
                    target: Target(target),
                },
            ))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                for app in &apps {
                    print!("{}", render::description(app));
                }
            }
        }
        Verb::Save => {
            let Outcome::Done { apps } =
                runtime.block_on(client::request(&paths, Command::Save))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            let file = nodeguard::io::state_file::state_path(&paths.home);
            println!("saved {} app(s) to {}", apps.len(), file.display());
        }
        Verb::Resurrect => {
            let outcome = runtime.block_on(async {
                if client::ensure_daemon(&paths).await? {
                    println!("nodeguard: daemon started on {}", paths.home.display());
                }
                client::request(&paths, Command::Resurrect).await
            })?;
            print_done(outcome)?;
        }
        Verb::Daemon(_) | Verb::Startup(_) => not_a_client_verb()?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `daemon` and `startup` are dispatched before `client_verb`; reaching it here is a programming
/// error that must still not panic.
fn not_a_client_verb() -> anyhow::Result<()> {
    anyhow::bail!("internal error: a non-client verb was routed to the client")
}

/// `nodeguard startup systemd [--install]`: prints or writes the user unit.
fn startup(args: StartupArgs, home: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let nodeguard::cli::InitSystem::Systemd = args.system;
    let exe = std::env::current_exe().context("cannot find the nodeguard binary's path")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let home = home_paths(home)?.home;
    let home = if home.is_absolute() {
        home
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(home)
    };
    let state_file = nodeguard::io::state_file::state_path(&home);
    let saved_apps = match nodeguard::io::state_file::read(&state_file) {
        Ok(Some(saved)) => saved
            .apps
            .into_iter()
            .map(|app| app.definition.name.unwrap_or_else(|| app.id.to_string()))
            .collect(),
        Ok(None) => Vec::new(),
        Err(error) => {
            eprintln!("nodeguard: warning: {error}");
            Vec::new()
        }
    };
    let settings = startup::UnitSettings {
        exe,
        home,
        path_env: std::env::var("PATH").ok().filter(|path| !path.is_empty()),
        http: args.http.map(|address| address.to_string()),
        saved_apps,
        state_file,
    };
    let unit = startup::unit(&settings).map_err(|error| ConfigError::Policy(error.to_string()))?;
    if !args.install {
        print!("{unit}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = startup::user_unit_path()
        .context("cannot tell where user units go: neither XDG_CONFIG_HOME nor HOME is set")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, unit).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    println!("now run (stop a daemon already running on this home first: nodeguard kill):");
    println!(
        "  systemctl --user daemon-reload && systemctl --user enable --now {}",
        startup::UNIT_NAME
    );
    println!("to start it at boot rather than at your first login, also run:");
    println!("  loginctl enable-linger \"$USER\"");
    Ok(ExitCode::SUCCESS)
}

fn print_done(outcome: Outcome) -> anyhow::Result<()> {
    let Outcome::Done { apps } = outcome else {
        anyhow::bail!("unexpected answer from the supervisor");
    };
    print!("{}", render::status_table(&apps));
    Ok(())
}

fn foreground(
    args: RunArgs,
    home: Option<PathBuf>,
    notifier: Option<std::sync::Arc<Notifier>>,
) -> anyhow::Result<ExitCode> {
    // No home given: one of its own, removed on exit, so it never meets a daemon on the default.
    let own_home = match home {
        Some(_) => None,
        None => config::foreground_home()?,
    };
    if let Some(dir) = own_home.as_deref().and_then(std::path::Path::parent) {
        nodeguard::io::home::ensure_private_home(dir)?;
    }
    let home = home.or_else(|| own_home.clone());
    let (mut config, preload) = args.into_config(home, std::io::stdout().is_terminal())?;
    config.service.notify = notifier;
    log_preload(&preload);
    let outcome = supervise(config, None);
    if let Some(dir) = own_home {
        remove_foreground_home(&dir);
    }
    outcome
}

/// Removes what a foreground run without `--home` left in its own home: the lock file, `run/`,
/// and the home itself unless `--log-files` wrote logs there (those are kept, and said so).
fn remove_foreground_home(dir: &std::path::Path) {
    let paths = HomePaths::new(dir);
    let _ = std::fs::remove_file(&paths.lock_file);
    let _ = std::fs::remove_dir(&paths.run_dir);
    let _ = std::fs::remove_dir(nodeguard::io::logfile::logs_dir(dir));
    if std::fs::remove_dir(dir).is_err() && dir.exists() {
        tracing::info!("app logs kept in {}", dir.display());
    }
}

/// The background supervisor: no apps at first; `start` adds them.
fn daemon(
    args: DaemonArgs,
    home: Option<PathBuf>,
    notifier: Option<std::sync::Arc<Notifier>>,
    daemon_log: Option<Arc<DaemonLog>>,
) -> anyhow::Result<ExitCode> {
    let preload = choose_preload(
        false,
        std::env::var_os("NODEGUARD_PRELOAD").map(PathBuf::from),
    )?;
    log_preload(&preload);
    let config = SupervisorConfig {
        home: home_paths(home)?.home,
        apps: Vec::new(),
        preload: preload.path(),
        color: false,
        terminal_output: false,
        log_files: true,
        persist: true,
        exit_when_done: false,
        service: ServiceOptions {
            http: args.http,
            notify: notifier,
            resurrect: args.resurrect,
        },
    };
    supervise(config, daemon_log)
}

fn log_preload(preload: &PreloadChoice) {
    match preload {
        PreloadChoice::Found(path) => tracing::debug!(preload = %path.display(), "monitor preload"),
        PreloadChoice::Disabled => {
            tracing::info!(
                "monitor preload disabled; only apps that call start() get hang detection"
            )
        }
        PreloadChoice::NotFound => tracing::warn!(
            "monitor preload ({}) not found beside the nodeguard binary; only apps that call \
             require('nodeguard-monitor').start() get hang detection (pass --preload PATH)",
            config::PRELOAD_FILE
        ),
    }
}

fn supervise(
    config: SupervisorConfig,
    daemon_log: Option<Arc<DaemonLog>>,
) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let summary = runtime.block_on(async {
        let shutdown = Shutdown::default();
        let signals = watch_signals(shutdown.clone(), daemon_log)?;
        let summary = supervisor::run(config, shutdown).await;
        signals.abort();
        anyhow::Ok(summary?)
    })?;
    if let Some(reason) = summary.home_lost {
        anyhow::bail!("{reason}; stopped every app and exited");
    }
    if summary.forced {
        tracing::warn!("forced stop: apps were killed");
        return Ok(ExitCode::from(EXIT_FORCED));
    }
    if summary.apps_finished == Some(false) {
        return Ok(ExitCode::from(EXIT_APPS_FAILED));
    }
    tracing::info!("all apps stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT, SIGTERM or SIGQUIT stop gracefully; a second one forces the stop. SIGHUP reopens the
/// log files (app logs, and the daemon's own log when it writes one), so rotation by `mv` and
/// SIGHUP works; SIGUSR1, SIGUSR2 and SIGALRM are ignored with a log line. None of these four
/// ends the supervisor: their handlers stay installed until the process exits.
fn watch_signals(
    shutdown: Shutdown,
    daemon_log: Option<Arc<DaemonLog>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut quit = signal(SignalKind::quit()).context("cannot handle SIGQUIT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut user1 = signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?;
    let mut user2 = signal(SignalKind::user_defined2()).context("cannot handle SIGUSR2")?;
    let mut alarm = signal(SignalKind::alarm()).context("cannot handle SIGALRM")?;
    Ok(tokio::spawn(async move {
        let mut stage = 0;
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = quit.recv() => "SIGQUIT",
                _ = hangup.recv() => {
                    reopen_logs(&shutdown, daemon_log.as_deref());
                    continue;
                }
                _ = user1.recv() => {
                    tracing::info!("SIGUSR1 ignored (it has no meaning to nodeguard)");
                    continue;
                }
                _ = user2.recv() => {
                    tracing::info!("SIGUSR2 ignored (it has no meaning to nodeguard)");
                    continue;
                }
                _ = alarm.recv() => {
                    tracing::info!("SIGALRM ignored (it has no meaning to nodeguard)");
                    continue;
                }
            };
            if stage == 0 {
                tracing::info!("{name}: stopping every app (send it again to force)");
                shutdown.graceful.cancel();
                stage = 1;
            } else {
                tracing::warn!("{name} again: killing every app now");
                shutdown.force.cancel();
                stage = 2;
            }
        }
    }))
}

/// SIGHUP: the daemon's own log first (so the line saying so lands in the new file), then every
/// app's log files.
fn reopen_logs(shutdown: &Shutdown, daemon_log: Option<&DaemonLog>) {
    if let Some(log) = daemon_log {
        if let Err(error) = log.reopen() {
            tracing::warn!(path = %log.path().display(), %error, "SIGHUP: cannot reopen the daemon log; writing on to the old one");
        }
    }
    tracing::info!("SIGHUP: reopening log files");
    shutdown.reopen_logs.notify_one();
}
