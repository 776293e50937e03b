//! How the actor answers a command that waits on apps: which apps a target names, what each
//! waiting reply watches, and the one answer sent once every app has acted (an error naming each
//! app that failed, or an app list that could not be saved).

use super::*;
use crate::config::AppSpec;
use crate::io::proctree;
use crate::supervisor::worker::{CommandError, CommandResult, WorkerHandle, WorkerSnapshot};
use nodeguard_proto::control::{AppStatus, Outcome, Target};
use tokio::sync::{oneshot, watch};

/// What an awaiting task needs to report on an app once its command is done.
pub(super) struct Watched {
    pub(super) spec: Arc<AppSpec>,
    pub(super) snapshot: watch::Receiver<WorkerSnapshot>,
    pub(super) tree: watch::Receiver<Arc<proctree::TreeSnapshot>>,
}

impl Watched {
    pub(super) fn status(&self) -> AppStatus {
        let tree = self.tree.borrow().clone();
        self.snapshot
            .borrow()
            .to_status(&self.spec, tokio::time::Instant::now(), &tree)
    }
}

pub(super) fn watched(handle: &WorkerHandle) -> Watched {
    Watched {
        spec: handle.spec.clone(),
        snapshot: handle.snapshot.clone(),
        tree: handle.tree.clone(),
    }
}

/// Why a command found no app for `target`.
pub(super) fn no_match(target: &Target) -> String {
    if target.is_all() {
        "there are no apps".to_string()
    } else {
        format!("no app named, numbered or in a namespace '{}'", target.0)
    }
}

pub(super) fn matches_target(handle: &WorkerHandle, target: &Target) -> bool {
    target.is_all()
        || handle.spec.name == target.0
        || handle.spec.namespace.as_deref() == Some(target.0.as_str())
        || target.0.parse::<u32>().ok() == Some(handle.spec.id)
}

/// [`report_when_done`], but an app list that could not be saved (`saved`) makes the answer an
/// error as well.
pub(super) async fn report_saved_when_done(
    pending: Vec<(Watched, oneshot::Receiver<CommandResult>)>,
    saved: Saved,
    reply: oneshot::Sender<Outcome>,
) {
    let (done, answer) = oneshot::channel();
    report_when_done(pending, done).await;
    forward_saved(answer, saved, reply).await;
}

/// Passes a command's answer on; an app list that could not be saved (`saved`) makes it an error.
pub(super) async fn forward_saved(
    answer: oneshot::Receiver<Outcome>,
    saved: Saved,
    reply: oneshot::Sender<Outcome>,
) {
    let Ok(outcome) = answer.await else {
        return;
    };
    // Answered only once the change is on disk (group commit, see `Persister`).
    let saved = saved.wait().await;
    let outcome = match (outcome, saved) {
        (outcome, Ok(())) => outcome,
        (Outcome::Error { message }, Err(unsaved)) => Outcome::Error {
            message: format!("{message}; {unsaved}"),
        },
        (_, Err(unsaved)) => Outcome::Error { message: unsaved },
    };
    let _ = reply.send(outcome);
}

/// Apps stopped before they ran that an answer names one by one; more are counted.
const NAMED_CANCELLED: usize = 3;

/// Waits for every app's answer, then sends `Done` with their statuses, or an `Error` naming each
/// app whose command failed.
pub(super) async fn report_when_done(
    pending: Vec<(Watched, oneshot::Receiver<CommandResult>)>,
    reply: oneshot::Sender<Outcome>,
) {
    let mut failures = Vec::new();
    let mut apps = Vec::new();
    // Starts an operator cancelled (`stop all`, `kill` during a start storm): counted, not
    // named one by one.
    let mut cancelled = Vec::new();
    let total = pending.len();
    for (app, answer) in pending {
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(why @ CommandError::StoppedBeforeRunning)) => {
                cancelled.push(format!("{}: {why}", app.spec.name));
            }
            Ok(Err(why)) => failures.push(format!("{}: {why}", app.spec.name)),
            Err(_) => failures.push(format!("{}: the app's task ended", app.spec.name)),
        }
        apps.push(app.status());
    }
    if cancelled.len() > NAMED_CANCELLED {
        failures.push(format!(
            "{} of {total} apps were stopped before they ran (their start was cancelled)",
            cancelled.len()
        ));
    } else {
        failures.append(&mut cancelled);
    }
    let outcome = if failures.is_empty() {
        Outcome::Done { apps }
    } else {
        Outcome::Error {
            message: failures.join("; "),
        }
    };
    let _ = reply.send(outcome);
}
