//! An app task that fails anyway (a panic): its process group is killed and a fresh task takes
//! the app's place, errored with the reason, still controllable.

use super::*;

/// Waits for an app's task to end; if it ended by a panic (or was cancelled) rather than
/// returning, SIGKILLs the process group of the last pid it published, logs the failure and
/// returns why, so the supervisor can put an errored entry in its place.
pub async fn watch_task(
    task: tokio::task::JoinHandle<()>,
    snapshot: watch::Receiver<WorkerSnapshot>,
    name: String,
) -> Option<String> {
    let error = task.await.err()?;
    let why = if error.is_panic() {
        let payload = error.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        format!("the supervisor's task for this app failed ({text})")
    } else {
        "the supervisor's task for this app was cancelled".to_string()
    };
    let pid = snapshot.borrow().pid;
    if let Some(pid) = pid {
        if let Err(error) = platform::signal_group(pid, StopSignal::Kill) {
            tracing::error!(%error, pid, "cannot kill the process group of a failed app task");
        }
    }
    tracing::error!(app = %name, ?pid, "{why}; its process group was killed");
    Some(why)
}

impl WorkerTask {
    /// A task for an app whose previous task failed: it begins at rest, errored with `why`, and
    /// from there obeys start, restart, stop and delete as any other.
    pub fn begin_errored(mut self, why: String) -> Self {
        self.machine.last_exit = Some(why.clone());
        self.machine.phase = Phase::Errored { why };
        self.begin_stopped = true;
        self
    }
}
