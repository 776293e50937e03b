//! Spawns worker processes from one long-lived thread.
//!
//! On Linux a worker's parent-death signal fires when the *thread* that forked it exits, not the
//! process (see shared/NOTES.md: spawning from `spawn_blocking` killed workers when tokio retired
//! the thread). So every spawn goes through this thread, which lives as long as the [`Spawner`].

use std::io;
use std::sync::mpsc;
use std::thread;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = (Command, oneshot::Sender<io::Result<Child>>);

/// Handle to the spawning thread. Keep it alive for as long as any worker runs.
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread, bound to the current tokio runtime (children are reaped by it).
    pub fn start() -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("nodeguard-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for (mut command, reply) in queue {
                    // The receiver may have gone away; the child is then dropped and reaped.
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Self { jobs })
    }

    /// Spawns `command` on the spawner thread.
    pub async fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((command, reply))
            .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the spawner thread has stopped"))?
    }
}
