//! The `nodeguard` binary: parses the command line, installs logging and signal handling, and runs
//! the supervisor or a client verb. Errors become one line on stderr and a non-zero exit.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use nodeguard::cli::{Cli, PreloadChoice, RunArgs, Verb};
use nodeguard::config::{self, ConfigError};
use nodeguard::home::HomePaths;
use nodeguard::supervisor::{self, Shutdown};
use nodeguard_proto::control::{Command, Outcome};

/// Exit code for a bad command line or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit code after a forced (second-signal) stop: 128 + SIGINT, as shells report an interrupt.
const EXIT_FORCED: u8 = 130;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return clap_error(error),
    };
    init_logging();
    let outcome = match cli.command {
        Some(Verb::Status { json, home }) => status(json, home),
        None => foreground(cli.run),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            let usage = error.downcast_ref::<ConfigError>().is_some();
            eprintln!("nodeguard: error: {error:#}");
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("NODEGUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn status(json: bool, home: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let home = match home {
        Some(home) => home,
        None => config::default_home()?,
    };
    let paths = HomePaths::new(&home);
    let outcome = runtime()?.block_on(nodeguard::client::request(&paths, Command::Status))?;
    let Outcome::Status { apps } = outcome else {
        anyhow::bail!("unexpected answer from the supervisor");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
    } else {
        print!("{}", nodeguard::render::status_table(&apps));
    }
    Ok(ExitCode::SUCCESS)
}

fn foreground(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config, preload) = args.into_config(std::io::stdout().is_terminal())?;
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
    let runtime = runtime()?;
    let summary = runtime.block_on(async {
        let shutdown = Shutdown::default();
        let signals = watch_signals(shutdown.clone())?;
        let summary = supervisor::run(config, shutdown).await;
        signals.abort();
        anyhow::Ok(summary?)
    })?;
    if summary.forced {
        tracing::warn!("forced stop: apps were killed");
        return Ok(ExitCode::from(EXIT_FORCED));
    }
    tracing::info!("all apps stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT, SIGTERM or SIGQUIT stop gracefully; a second one forces the stop.
fn watch_signals(shutdown: Shutdown) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut quit = signal(SignalKind::quit()).context("cannot handle SIGQUIT")?;
    Ok(tokio::spawn(async move {
        for stage in 0.. {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = quit.recv() => "SIGQUIT",
            };
            if stage == 0 {
                tracing::info!("{name}: stopping every app (send it again to force)");
                shutdown.graceful.cancel();
            } else {
                tracing::warn!("{name} again: killing every app now");
                shutdown.force.cancel();
                break;
            }
        }
    }))
}
