//! `nodeguard logs`: prints the last lines of apps' log files, and with `--follow` streams new
//! ones. It reads the files directly; the supervisor, if running, only maps ids to names.
//!
//! The instances of a cluster app write to the app's one pair of files (as PM2 with
//! `merge_logs`), which records no instance per line: each file is read once however many
//! instances share it, and its lines are labelled with the app's name.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use nodeguard_proto::control::{Command, Outcome, Target};

use crate::io::control_client::{self, ClientError};
use crate::io::home::HomePaths;
use crate::io::logfile::{self, LogError, LogSpec};
use crate::io::logread;

/// Which of an app's logs to show.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub out: bool,
    pub err: bool,
}

/// Lines in flight from the followers to the printer.
const FOLLOW_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("no app named or numbered '{0}'")]
    NoSuchApp(String),
    #[error("no logs in {}", .0.display())]
    NoLogs(PathBuf),
}

/// Prints the last `lines` lines of each targeted app's logs, then follows them if asked.
pub async fn show(
    paths: &HomePaths,
    target: Option<String>,
    lines: usize,
    follow: bool,
    streams: Streams,
) -> Result<(), LogsError> {
    let apps = app_logs(paths, target.as_deref()).await?;
    let mut files = Vec::new();
    for app in apps {
        if streams.out {
            files.push((app.label.clone(), app.out_path));
        }
        if streams.err {
            files.push((app.label, app.err_path));
        }
    }
    {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for (name, path) in &files {
            for line in logread::tail_lines(path, lines)? {
                let _ = print_line(&mut out, name, &line);
            }
        }
        let _ = out.flush();
    }
    if !follow {
        return Ok(());
    }
    let (sender, mut received) = mpsc::channel::<(usize, Vec<u8>)>(FOLLOW_QUEUE);
    for (index, (_, path)) in files.iter().enumerate() {
        let (lines_in, mut lines_out) = mpsc::channel(FOLLOW_QUEUE);
        tokio::spawn(logread::follow(path.clone(), lines_in, true));
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some(line) = lines_out.recv().await {
                if sender.send((index, line)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(sender);
    while let Some((index, line)) = received.recv().await {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if print_line(&mut out, &files[index].0, &line).is_err() {
            // The reader went away (a closed pipe): nothing left to do.
            return Ok(());
        }
        let _ = out.flush();
    }
    Ok(())
}

fn print_line(out: &mut impl Write, name: &str, line: &[u8]) -> std::io::Result<()> {
    out.write_all(name.as_bytes())?;
    out.write_all(b" | ")?;
    out.write_all(line)?;
    out.write_all(b"\n")
}

/// One app's log files.
struct AppLogs {
    /// What its lines are prefixed with.
    label: String,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl AppLogs {
    fn at_default_paths(home: &Path, name: String) -> Self {
        let spec = LogSpec::default_for(home, &name);
        Self {
            label: name,
            out_path: spec.out_path,
            err_path: spec.err_path,
        }
    }
}

/// The targeted apps and their log paths: from the running supervisor when there is one (so ids
/// and configured `out_file`/`error_file` paths work), else from the logs directory.
async fn app_logs(paths: &HomePaths, target: Option<&str>) -> Result<Vec<AppLogs>, LogsError> {
    let wanted = target.filter(|t| *t != "all");
    let describe = Command::Describe {
        target: Target(wanted.unwrap_or("all").to_string()),
    };
    match control_client::request(paths, describe).await {
        Ok(Outcome::Described { apps }) => {
            let mut logs: Vec<AppLogs> = Vec::with_capacity(apps.len());
            let mut seen: std::collections::HashSet<(PathBuf, PathBuf)> =
                std::collections::HashSet::new();
            // Apps whose output goes to /dev/null in the process: nothing to show, said once.
            let mut disabled: Vec<String> = Vec::new();
            for app in apps {
                if app.definition.disable_logs {
                    disabled.push(app.status.name);
                    continue;
                }
                let mut these = AppLogs::at_default_paths(&paths.home, app.status.name);
                if let Some(out) = app.definition.out_file {
                    these.out_path = PathBuf::from(out);
                }
                if let Some(err) = app.definition.error_file {
                    these.err_path = PathBuf::from(err);
                }
                // Instances of one app share its files: read them once, under the app's name.
                let files = (these.out_path.clone(), these.err_path.clone());
                if seen.insert(files) {
                    logs.push(these);
                }
            }
            disabled.dedup();
            match disabled.as_slice() {
                [] => {}
                [name] => eprintln!(
                    "nodeguard: {} has its logs disabled (disable_logs): its output is not kept",
                    crate::config::shown_name(name)
                ),
                names => {
                    eprintln!(
                    "nodeguard: {} apps have their logs disabled (disable_logs): their output is \
                     not kept",
                    crate::core::units::group_digits(u64::try_from(names.len()).unwrap_or(u64::MAX))
                )
                }
            }
            Ok(logs)
        }
        Ok(_) | Err(ClientError::NotRunning(_) | ClientError::Refused(_)) => {
            let mut names = names_on_disk(&paths.home);
            if let Some(t) = wanted {
                if !has_logs(&paths.home, t) {
                    return Err(LogsError::NoSuchApp(t.into()));
                }
                names = vec![t.to_string()];
            } else if names.is_empty() {
                return Err(LogsError::NoLogs(logfile::logs_dir(&paths.home)));
            }
            Ok(names
                .into_iter()
                .map(|name| AppLogs::at_default_paths(&paths.home, name))
                .collect())
        }
        Err(error) => Err(error.into()),
    }
}

fn has_logs(home: &Path, name: &str) -> bool {
    let spec = LogSpec::default_for(home, name);
    spec.out_path.exists() || spec.err_path.exists()
}

/// Apps that have `<name>-out.log` or `<name>-err.log` in the logs directory.
fn names_on_disk(home: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(logfile::logs_dir(home)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            file.strip_suffix("-out.log")
                .or_else(|| file.strip_suffix("-err.log"))
                .and_then(logfile::app_name_of_stem)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
