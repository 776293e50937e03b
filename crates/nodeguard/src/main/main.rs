//! The `nodeguard` binary: parses the command line, installs logging and signal handling, and runs
//! the supervisor or a client verb. Errors become one line on stderr and a non-zero exit.
//!
//! Layout: `verbs.rs` runs the client verbs against a daemon (and `startup`), `serve.rs` runs a
//! supervisor (foreground or daemon) with its signals; this file parses, logs and turns outcomes
//! into exit codes.

mod serve;
mod verbs;

use serve::{daemon, foreground};
use verbs::{client_verb, startup};

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
        let verb = Verb::Status {
            json,
            no_color: false,
            pattern: None,
            state: None,
            fields: None,
        };
        return finish(run_client(verb, None));
    }
    // The daemon as `start` and the systemd unit launch it: without clap (see `plain_daemon`).
    if let Some((args, home)) = nodeguard::cli::plain_daemon(std::env::args_os().skip(1)) {
        return finish(run_daemon(args, home));
    }
    // Bare `nodeguard`, as PM2 does: the usage, and the exit code of a usage error.
    if std::env::args_os().len() <= 1 {
        use clap::CommandFactory;
        eprint!("{}", Cli::command().render_help());
        return ExitCode::from(EXIT_USAGE);
    }
    let cli = match Cli::parse_checked() {
        Ok(cli) => cli,
        Err(error) => return clap_error(error),
    };
    let outcome = match cli.command {
        Some(Verb::Daemon(args)) => run_daemon(args, cli.home),
        command => {
            init_logging(None);
            // Before any thread starts: systemd's variables leave the environment whatever the
            // verb, so neither apps nor a daemon that `start` launches inherit them.
            let notifier = systemd::Notifier::take_from_env();
            match command {
                None => foreground(cli.run, cli.home, notifier),
                Some(Verb::Startup(args)) => startup(args, cli.home),
                Some(verb) => run_client(verb, cli.home),
            }
        }
    };
    finish(outcome)
}

/// The background supervisor, its logging and systemd's variables set up first.
fn run_daemon(args: DaemonArgs, home: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // A daemon that `start` launched writes to `<home>/daemon.log`: it adopts the file, to
    // rotate it and reopen it on SIGHUP.
    let daemon_log = home_paths(home.clone()).ok().and_then(|paths| {
        DaemonLog::adopt(&paths.home.join(nodeguard::io::control_client::DAEMON_LOG)).map(Arc::new)
    });
    init_logging(daemon_log.clone());
    // Before any thread starts, as for every verb (see `main`).
    let notifier = systemd::Notifier::take_from_env();
    daemon(args, home, notifier, daemon_log)
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
    // A mistyped verb (`nodeguard resart api`): one line naming the verb it resembles.
    if let Some(line) = mistyped_verb(&error) {
        eprintln!("nodeguard: error: {line}");
        return ExitCode::from(EXIT_USAGE);
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

/// "unknown verb 'resart' (did you mean 'restart'?)" when clap found a word where a verb goes
/// and a verb resembles it (clap's own suggestions are compiled out, to keep the binary small).
fn mistyped_verb(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let Some(ContextValue::String(typed)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    // Only a word in the verb's place: first, or after `--home DIR`.
    let mut args = std::env::args().skip(1);
    let mut first = args.next()?;
    if first == "--home" {
        args.next()?;
        first = args.next()?;
    } else if first.starts_with("--home=") {
        first = args.next()?;
    }
    if typed.starts_with('-') || first != *typed {
        return None;
    }
    let command = Cli::command();
    let verbs = command.get_subcommands().flat_map(|verb| {
        std::iter::once(verb.get_name()).chain(verb.get_all_aliases().collect::<Vec<_>>())
    });
    let (distance, verb) = verbs
        .map(|verb| {
            (
                nodeguard::core::units::edit_distance(&typed.to_lowercase(), &verb.to_lowercase()),
                verb,
            )
        })
        .min_by_key(|(distance, _)| *distance)?;
    let hint = if distance <= 2.max(typed.chars().count() / 3) {
        format!(" (did you mean '{verb}'?)")
    } else {
        String::new()
    };
    Some(format!(
        "unknown verb '{typed}'{hint} (see nodeguard --help)"
    ))
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
