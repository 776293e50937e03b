//! Running a supervisor: foreground mode and the daemon, with the signals that stop it, reopen
//! its logs, or are ignored.

use super::*;

pub(super) fn foreground(
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
    let http_token = http_token(args.http_token_file.as_deref())?;
    let (mut config, preload) = args.into_config(home, std::io::stdout().is_terminal())?;
    config.service.notify = notifier;
    config.service.http_token = http_token;
    log_preload(&preload);
    let outcome = supervise(config, None);
    if let Some(dir) = own_home {
        remove_foreground_home(&dir);
    }
    outcome
}

/// Removes what a foreground run without `--home` left in its own home: the lock file, `run/`,
/// and the home itself unless `--log-files` wrote logs there (those are kept, and said so).
pub(super) fn remove_foreground_home(dir: &std::path::Path) {
    let paths = HomePaths::new(dir);
    let _ = std::fs::remove_file(&paths.lock_file);
    nodeguard::io::sourcemap::remove_recorded_dir(&paths.run_dir);
    let _ = std::fs::remove_dir(&paths.run_dir);
    let _ = std::fs::remove_dir(nodeguard::io::logfile::logs_dir(dir));
    if std::fs::remove_dir(dir).is_err() && dir.exists() {
        tracing::info!("app logs kept in {}", dir.display());
    }
}

/// The dashboard's token from `--http-token-file`, read (and its permissions checked) at start.
fn http_token(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<nodeguard::io::dashboard::Token>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let uid = nodeguard::platform::current_uid();
    Ok(Some(Arc::new(nodeguard::io::dashboard::read_token_file(
        path, uid,
    )?)))
}

/// The background supervisor: no apps at first; `start` adds them.
pub(super) fn daemon(
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
    let http_token = http_token(args.http_token_file.as_deref())?;
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
            http_token,
            notify: notifier,
            resurrect: args.resurrect,
        },
    };
    supervise(config, daemon_log)
}

pub(super) fn log_preload(preload: &PreloadChoice) {
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

/// How long after a supervisor starts its clean file pages are dropped
/// (`platform::memory::drop_clean_file_pages`): by then its arguments and config were parsed and
/// the apps given on its command line spawned (a daemon's first `start` comes as it starts); what
/// keeps running afterwards faults its pages back in, and only those stay resident.
const START_SETTLES: Duration = Duration::from_secs(2);

pub(super) fn supervise(
    config: SupervisorConfig,
    daemon_log: Option<Arc<DaemonLog>>,
) -> anyhow::Result<ExitCode> {
    // Before the runtime, the spawner and the output thread start.
    nodeguard::platform::memory::single_malloc_arena();
    let runtime = runtime()?;
    let summary = runtime.block_on(async {
        let shutdown = Shutdown::default();
        let signals = watch_signals(shutdown.clone(), daemon_log)?;
        // Once the start is over, the pages only it used leave the RSS (bench figures 1 and 8).
        let settled = tokio::spawn(async {
            tokio::time::sleep(START_SETTLES).await;
            let bytes = nodeguard::platform::memory::drop_clean_file_pages();
            tracing::debug!(bytes, "start's file pages dropped");
        });
        let summary = supervisor::run(config, shutdown).await;
        settled.abort();
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
pub(super) fn watch_signals(
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
pub(super) fn reopen_logs(shutdown: &Shutdown, daemon_log: Option<&DaemonLog>) {
    if let Some(log) = daemon_log {
        if let Err(error) = log.reopen() {
            tracing::warn!(path = %log.path().display(), %error, "SIGHUP: cannot reopen the daemon log; writing on to the old one");
        }
    }
    tracing::info!("SIGHUP: reopening log files");
    shutdown.reopen_logs.notify_one();
}
