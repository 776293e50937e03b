//! Restarts nobody typed: `watch` (a file change, after `watch_delay` of quiet) and `cron_restart`
//! (a schedule in local time). One task per app that has either, none for the others; each sends
//! the actor [`Internal::Trigger`], which restarts the app, or reloads it when it has listen
//! addresses.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{AppSpec, WatchSpec};
use crate::io::watch::{FileWatch, Ignore};
use crate::supervisor::reload::Internal;

/// Starts the app's trigger tasks, if it has `watch` or `cron_restart`; they end with `stop`.
pub(super) fn start(
    spec: &AppSpec,
    internal: &mpsc::UnboundedSender<Internal>,
    stop: &CancellationToken,
) {
    if let Some(watch) = &spec.watch {
        // The app's own log files (when they sit in a watched directory, as `logs/` inside the
        // project often does) are never a reason to restart it: every line it wrote would.
        let own = [&spec.out_file, &spec.error_file]
            .into_iter()
            .flatten()
            .map(|file| spec.cwd.join(file))
            .collect();
        tokio::spawn(watch_files(
            spec.name.clone(),
            watch.clone(),
            own,
            spec.cwd.clone(),
            internal.clone(),
            stop.clone(),
        ));
    }
    if let Some(pattern) = &spec.cron_restart {
        tokio::spawn(on_schedule(
            spec.name.clone(),
            pattern.clone(),
            internal.clone(),
            stop.clone(),
        ));
    }
}

async fn watch_files(
    name: String,
    watch: WatchSpec,
    own: Vec<PathBuf>,
    cwd: PathBuf,
    internal: mpsc::UnboundedSender<Internal>,
    stop: CancellationToken,
) {
    let ignore = Ignore::new(&cwd, &watch.ignore, WatchSpec::ALWAYS_IGNORED).with_own_files(own);
    let mut files = match FileWatch::new(&watch.paths, ignore) {
        Ok(files) => files,
        Err(error) => {
            tracing::error!(app = %name, %error, "cannot watch files; restarts on change are off");
            return;
        }
    };
    tracing::info!(app = %name, dirs = files.dirs(), "watching for changes");
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            change = files.next_change() => change,
        };
        let first = match first {
            Ok(path) => path,
            Err(error) => {
                tracing::error!(app = %name, %error, "lost the file watch");
                return;
            }
        };
        // One burst of saves is one restart: wait for `delay` without a change.
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                () = tokio::time::sleep(watch.delay) => break,
                change = files.next_change() => if let Err(error) = change {
                    tracing::error!(app = %name, %error, "lost the file watch");
                    return;
                },
            }
        }
        let why = format!("{} changed", first.display());
        if internal
            .send(Internal::Trigger {
                name: name.clone(),
                why,
            })
            .is_err()
        {
            return;
        }
    }
}

async fn on_schedule(
    name: String,
    pattern: String,
    internal: mpsc::UnboundedSender<Internal>,
    stop: CancellationToken,
) {
    let cron = match pattern.parse::<croner::Cron>() {
        Ok(cron) => cron,
        Err(error) => {
            tracing::error!(app = %name, %error, "cron_restart");
            return;
        }
    };
    let mut last = chrono::Local::now();
    loop {
        // Never before the last firing: a timer that wakes a hair early fires once, not twice.
        let now = chrono::Local::now().max(last);
        let next = match cron.find_next_occurrence(&now, false) {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(app = %name, %error, "cron_restart has no next time");
                return;
            }
        };
        let wait = (next - chrono::Local::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        last = next;
        let why = format!("cron_restart '{pattern}'");
        if internal
            .send(Internal::Trigger {
                name: name.clone(),
                why,
            })
            .is_err()
        {
            return;
        }
    }
}
