//! Starts app processes: the [`Launch`] seam the app task calls, and [`Spawner`], the real one,
//! which spawns from one long-lived thread.
//!
//! On Linux a worker's parent-death signal fires when the *thread* that forked it exits, not the
//! process (see shared/NOTES.md: spawning from `spawn_blocking` killed workers when tokio retired
//! the thread). So every spawn goes through this thread, which lives as long as the [`Spawner`].
//! The spawn itself is [`platform::spawn`]: on Linux a `clone(CLONE_VM | CLONE_VFORK)` that does
//! not copy the supervisor's memory, whose exit is then collected through a pidfd.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, PoisonError};
use std::thread;

use tokio::sync::oneshot;

use crate::io::proctree::ChildSet;
use crate::platform::{self, ChildOutput, ProcessSpec, Spawned};

type Job = (ProcessSpec, u64, u64, oneshot::Sender<io::Result<Spawned>>);

/// What a spawn dropped by [`Launch::cancel_pending`] fails with: the app comes to rest stopped.
pub const CANCELLED: &str = "the start was cancelled";

/// Whether `error` is a spawn dropped by [`Launch::cancel_pending`].
pub fn is_cancelled(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Interrupted && error.to_string() == CANCELLED
}

/// Resolves once the process has exited (and been reaped).
pub type ExitFuture = Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>;

/// A started process as the app task holds it: its pid, its output pipes, and its exit.
pub struct Launched {
    pub pid: u32,
    pub stdout: Option<ChildOutput>,
    pub stderr: Option<ChildOutput>,
    pub exit: ExitFuture,
}

/// Starts app processes. The real one is [`Spawner`]; tests give the app task a fake child whose
/// exit they control, on paused time.
pub trait Launch: Send + Sync {
    /// Starts `command`; `spawn_key` is the value of [`crate::io::proctree::ENV_SPAWN_KEY`] in its
    /// environment.
    fn launch(
        &self,
        command: ProcessSpec,
        spawn_key: u64,
    ) -> Pin<Box<dyn Future<Output = io::Result<Launched>> + Send + '_>>;

    /// Drops `pid` from the supervisor's children once its exit was collected.
    fn forget(&self, pid: u32);

    /// The supervisor's children and their spawn keys.
    fn children(&self) -> ChildSet;

    /// Drops every spawn queued so far and not yet begun (`kill`, `stop all` or shutdown during
    /// a start storm): each fails at once with [`CANCELLED`].
    fn cancel_pending(&self) {}

    /// Ends the orphans carrying `spawn_key` (see [`crate::io::proctree::end_orphans_by_key`]);
    /// the receiver answers once they were.
    fn end_orphans(&self, spawn_key: u64) -> oneshot::Receiver<()> {
        crate::io::proctree::end_orphans_by_key(spawn_key, &self.children());
        let (done, answer) = oneshot::channel();
        let _ = done.send(());
        answer
    }
}

/// Handle to the spawning thread. Keep it alive for as long as any worker runs.
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
    children: ChildSet,
    /// Jobs queued under an earlier epoch than this are dropped, not spawned.
    epoch: Arc<AtomicU64>,
    sweeper: crate::io::proctree::OrphanSweeper,
}

impl Spawner {
    /// Starts the thread, bound to the current tokio runtime (children are reaped by it). Each
    /// child's pid goes into `children` before anyone else can see it exit (the orphan reaper
    /// takes the same lock), and stays there until [`Spawner::forget`].
    pub fn start(children: ChildSet) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (jobs, queue) = mpsc::channel::<Job>();
        let recorded = children.clone();
        let sweeper = crate::io::proctree::OrphanSweeper::start(children.clone())?;
        let epoch = Arc::new(AtomicU64::new(0));
        let current = epoch.clone();
        thread::Builder::new()
            .name("nodeguard-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for (command, spawn_key, queued_in, reply) in queue {
                    if queued_in < current.load(Ordering::Acquire) {
                        let _ =
                            reply.send(Err(io::Error::new(io::ErrorKind::Interrupted, CANCELLED)));
                        continue;
                    }
                    let mut children = recorded.lock().unwrap_or_else(PoisonError::into_inner);
                    let result = platform::spawn(&command);
                    let pid = result.as_ref().ok().map(|spawned| spawned.pid);
                    if let Some(pid) = pid {
                        children.insert(pid, spawn_key);
                    }
                    drop(children);
                    // The receiver may have gone away; the child is then dropped and collected
                    // in the background, and it is ours no longer.
                    if reply.send(result).is_err() {
                        if let Some(pid) = pid {
                            recorded
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&pid);
                        }
                    }
                }
            })?;
        Ok(Self {
            jobs,
            children,
            epoch,
            sweeper,
        })
    }

    /// The thread that sweeps orphans and scans the process table.
    pub fn sweeper(&self) -> crate::io::proctree::OrphanSweeper {
        self.sweeper.clone()
    }

    /// The supervisor's children and their spawn keys.
    pub fn children(&self) -> &ChildSet {
        &self.children
    }

    /// Drops `pid` from the children once tokio has collected its exit.
    pub fn forget(&self, pid: u32) {
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
    }

    /// Spawns `command` on the spawner thread; `spawn_key` is the value of
    /// [`crate::io::proctree::ENV_SPAWN_KEY`] in its environment.
    pub async fn spawn(&self, command: ProcessSpec, spawn_key: u64) -> io::Result<Spawned> {
        let (reply, answer) = oneshot::channel();
        let epoch = self.epoch.load(Ordering::Acquire);
        self.jobs
            .send((command, spawn_key, epoch, reply))
            .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the spawner thread has stopped"))?
    }
}

impl Launch for Spawner {
    fn launch(
        &self,
        command: ProcessSpec,
        spawn_key: u64,
    ) -> Pin<Box<dyn Future<Output = io::Result<Launched>> + Send + '_>> {
        Box::pin(async move {
            let spawned = self.spawn(command, spawn_key).await?;
            Ok(Launched {
                pid: spawned.pid,
                stdout: spawned.stdout,
                stderr: spawned.stderr,
                exit: spawned.exit,
            })
        })
    }

    fn forget(&self, pid: u32) {
        Spawner::forget(self, pid);
    }

    fn children(&self) -> ChildSet {
        Spawner::children(self).clone()
    }

    fn cancel_pending(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn end_orphans(&self, spawn_key: u64) -> oneshot::Receiver<()> {
        self.sweeper.sweep(spawn_key)
    }
}
