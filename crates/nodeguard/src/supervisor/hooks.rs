//! Event hooks' dispatcher: the app tasks hand it one job per hook and event, without waiting;
//! it runs at most [`MOST_RUNNING`] at once, keeps at most [`QUEUE`] waiting, and drops (and
//! counts in the log) what does not fit, so a flood of events never holds up supervision. Nothing
//! runs, and no task exists, until an app with hooks has an event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::io::hooks::{self, HookJob};
use crate::io::proctree::ChildSet;

/// Hooks running at once, across every app.
pub const MOST_RUNNING: usize = 4;
/// Hook runs waiting for a free slot; more are dropped.
pub const QUEUE: usize = 64;
/// How long one hook may run (then its process group is killed, or its connection dropped).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending side, shared by every app task.
#[derive(Debug)]
pub struct Hooks {
    queue: OnceLock<mpsc::Sender<HookJob>>,
    children: ChildSet,
    dropped: AtomicU64,
}

impl Hooks {
    /// `children`: the supervisor's own children, which the orphan reaper leaves to tokio.
    pub fn new(children: ChildSet) -> Self {
        Self {
            queue: OnceLock::new(),
            children,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues one hook run; never waits. The dispatcher starts with the first.
    pub fn fire(&self, job: HookJob) {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(dispatch(receiver, self.children.clone()));
            sender
        });
        if let Err(error) = queue.try_send(job) {
            let job = match error {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            let dropped = self
                .dropped
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            tracing::warn!(
                app = %job.app,
                "hook {:?} not run for a {} event: {QUEUE} hook runs already waiting ({dropped} dropped since start)",
                job.hook,
                job.kind
            );
        }
    }
}

async fn dispatch(mut queue: mpsc::Receiver<HookJob>, children: ChildSet) {
    let slots = Arc::new(Semaphore::new(MOST_RUNNING));
    while let Some(job) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let children = children.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            match hooks::run(&job, &children).await {
                Ok(()) => tracing::info!(
                    app = %job.app,
                    "hook {:?} ran for a {} event ({})",
                    job.hook,
                    job.kind,
                    crate::core::exit::human(started.elapsed())
                ),
                Err(why) => tracing::warn!(
                    app = %job.app,
                    "hook {:?} failed for a {} event: {why}",
                    job.hook,
                    job.kind
                ),
            }
            drop(slot);
        });
    }
}
