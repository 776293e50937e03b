//! The state file: what the daemon saves after every change (apps, ids, counters, stopped apps),
//! written in groups off the actor's thread (see [`Persister`]), and bringing the saved apps back
//! (`resurrect`).

use crate::config::AppSpec;
use crate::io::state_file::{self, InstanceCounts, SavedApp, SavedState, STATE_VERSION};
use crate::supervisor::worker::{Origins, WorkerCommand};
use nodeguard_proto::control::Outcome;
use std::sync::{Mutex, PoisonError};
use tokio::sync::{oneshot, watch};

use super::*;
use crate::config;
use crate::io::state_file::StateError;

/// Why the app list was not written to the state file.
#[derive(Debug, thiserror::Error)]
pub(super) enum PersistError {
    #[error("this supervisor keeps no state file (foreground mode)")]
    NoStateFile,
    /// The home is no longer this supervisor's (deleted, or made anew by another).
    #[error("not writing {}: {reason}", path.display())]
    HomeLost { path: PathBuf, reason: String },
    #[error(transparent)]
    Write(#[from] StateError),
}

/// Why there is nothing to resurrect.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResurrectError {
    #[error("this supervisor keeps no state file (foreground mode)")]
    NoStateFile,
    #[error("nothing to resurrect: {} does not exist", .0.display())]
    NothingSaved(PathBuf),
    #[error(transparent)]
    Read(#[from] StateError),
}

/// Where the state file stands, for replies that must wait until their change is on disk.
#[derive(Debug, Clone, Default)]
pub(super) struct Durable {
    /// The latest change (see [`Persister::wanted`]) the file on disk holds, or failed to.
    seq: u64,
    /// Why the write of `seq` failed.
    error: Option<String>,
}

/// The daemon's state-file writer (group commit): a command that changes the app table asks for
/// a save ([`Supervisor::persist_checked`]) and gets a [`Saved`] ticket; the writer task takes one
/// snapshot of the table for every change asked for while it was busy, writes it once (temporary
/// file, fsync, rename, as [`state_file::write`] does) off the actor's thread, and then every
/// ticket up to that change resolves. A reply goes out only once its ticket has: no change is
/// acknowledged before it is on disk, and a storm of changes costs a few writes, not one each.
pub(super) struct Persister {
    /// Number of the latest change asked for.
    wanted: std::cell::Cell<u64>,
    /// Wakes the writer task.
    wake: Arc<tokio::sync::Notify>,
    durable: watch::Receiver<Durable>,
    /// Held while writing: the number of the latest change written, so an older snapshot never
    /// lands after a newer one (the writer task and the actor's own writes, `save` and `kill`).
    gate: Arc<Mutex<u64>>,
}

/// A change's place in the state file's writes: resolves once the file holds it.
pub(super) struct Saved(Option<(watch::Receiver<Durable>, u64)>);

impl Saved {
    /// Nothing to wait for (no state file, foreground mode).
    pub(super) fn done() -> Self {
        Saved(None)
    }

    /// Ok once the change is on disk; else the one line the command's answer must carry.
    pub(super) async fn wait(self) -> Result<(), String> {
        let Some((mut durable, seq)) = self.0 else {
            return Ok(());
        };
        let error = match durable.wait_for(|d| d.seq >= seq).await {
            Ok(durable) => durable.error.clone(),
            Err(_) => Some("the supervisor is shutting down".to_string()),
        };
        match error {
            None => Ok(()),
            Some(error) => Err(not_saved(&error)),
        }
    }
}

fn not_saved(error: &dyn std::fmt::Display) -> String {
    format!(
        "the app list was not saved ({error}): the change took effect, but `resurrect` \
         would not see it; make room and run `nodeguard save`"
    )
}

/// How long a restart or hang counted stays unsaved at most (counters only; a command's change
/// is written before it is answered).
pub(super) const COUNTS_SAVE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl Persister {
    /// Starts the writer task for the state file at `path`; it asks the actor for snapshots
    /// through `internal`.
    pub(super) fn start(path: PathBuf, internal: mpsc::UnboundedSender<Internal>) -> Self {
        let wake = Arc::new(tokio::sync::Notify::new());
        let (publish, durable) = watch::channel(Durable::default());
        let gate = Arc::new(Mutex::new(0));
        tokio::spawn(write_loop(
            path,
            internal,
            wake.clone(),
            publish,
            gate.clone(),
        ));
        Persister {
            wanted: std::cell::Cell::new(0),
            wake,
            durable,
            gate,
        }
    }
}

/// The writer task: for each round of changes, one snapshot from the actor, one write.
async fn write_loop(
    path: PathBuf,
    internal: mpsc::UnboundedSender<Internal>,
    wake: Arc<tokio::sync::Notify>,
    publish: watch::Sender<Durable>,
    gate: Arc<Mutex<u64>>,
) {
    loop {
        wake.notified().await;
        let (reply, answer) = oneshot::channel();
        if internal.send(Internal::Snapshot { reply }).is_err() {
            return;
        }
        let Ok((seq, built)) = answer.await else {
            return;
        };
        let result = match built {
            None => Ok(()),
            Some(Err(error)) => Err(error.to_string()),
            Some(Ok(draft)) => {
                let path = path.clone();
                let gate = gate.clone();
                tokio::task::spawn_blocking(move || {
                    let state = draft.finish();
                    let written = write_ordered(&gate, seq, &path, &state);
                    drop(state);
                    // Every change of many apps at once (a start, stop or resurrect of
                    // thousands) ends with a write: the pages its transient buffers left free
                    // go back to the system here.
                    crate::platform::memory::release_free_memory();
                    written
                })
                .await
                .unwrap_or_else(|error| Err(error.to_string()))
            }
        };
        if let Err(error) = &result {
            tracing::error!("{}", not_saved(error));
        }
        publish.send_modify(|durable| {
            if seq >= durable.seq {
                durable.seq = seq;
                durable.error = result.err();
            }
        });
    }
}

/// Writes `state` (change number `seq`) unless a later change was written already.
fn write_ordered(
    gate: &Mutex<u64>,
    seq: u64,
    path: &std::path::Path,
    state: &SavedState,
) -> Result<(), String> {
    let mut written = gate.lock().unwrap_or_else(PoisonError::into_inner);
    if seq <= *written {
        return Ok(());
    }
    state_file::write(path, state).map_err(|error| error.to_string())?;
    *written = seq;
    Ok(())
}

/// The app list as the state file will save it, taken on the actor's thread: the apps' specs
/// shared, not yet turned into their wire definitions. That conversion and the JSON are the
/// costly part at thousands of apps (~20 ms at 2,000), so the writer does them on its own
/// thread ([`StateDraft::finish`]) and the actor goes on with exits and commands meanwhile.
pub(super) struct StateDraft {
    apps: Vec<DraftApp>,
}

/// One app of a [`StateDraft`]: its spec (of its first instance seen) and what its instances add.
struct DraftApp {
    spec: Arc<AppSpec>,
    restarts: u64,
    hangs: u64,
    stopped: bool,
    /// (instance, id, counts) of each instance, once.
    members: Vec<(u32, u32, InstanceCounts)>,
}

impl StateDraft {
    /// The state file's contents.
    pub(super) fn finish(self) -> SavedState {
        let apps = self
            .apps
            .into_iter()
            .map(|draft| {
                let mut instances = draft.members;
                instances.sort_by_key(|(instance, _, _)| *instance);
                let mut definition = draft.spec.definition();
                let count = u32::try_from(instances.len()).unwrap_or(u32::MAX);
                definition.instances = count.max(1);
                let several = instances.len() > 1;
                SavedApp {
                    id: instances.first().map_or(draft.spec.id, |(_, id, _)| *id),
                    definition,
                    restarts: draft.restarts,
                    hangs: draft.hangs,
                    stopped: draft.stopped,
                    ids: if several {
                        instances.iter().map(|(_, id, _)| *id).collect()
                    } else {
                        Vec::new()
                    },
                    instances: if several {
                        instances.iter().map(|(_, _, counts)| *counts).collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        SavedState {
            version: STATE_VERSION,
            apps,
        }
    }
}

impl Supervisor {
    /// The app list as the state file saves it, now.
    pub(super) fn state_now(&self) -> Result<SavedState, PersistError> {
        self.draft_now().map(StateDraft::finish)
    }

    /// The app list as the state file saves it, now, before the apps' definitions are made
    /// (see [`StateDraft`]).
    fn draft_now(&self) -> Result<StateDraft, PersistError> {
        let Some(path) = &self.state_file else {
            return Err(PersistError::NoStateFile);
        };
        // One entry per app (not per instance): its instances' ids and counters in instance
        // order, the counters summed, and stopped only if every instance was stopped. The
        // instance count saved is the number the app runs now (after any `scale`).
        let mut apps: Vec<DraftApp> = Vec::new();
        let mut slots: HashMap<&str, usize> = HashMap::new();
        for handle in &self.apps {
            let snapshot = handle.snapshot.borrow();
            let stopped = self.stopped.contains(&handle.spec.id);
            let slot = match slots.get(handle.spec.name.as_str()) {
                Some(&slot) => slot,
                None => {
                    apps.push(DraftApp {
                        spec: handle.spec.clone(),
                        restarts: 0,
                        hangs: 0,
                        stopped: true,
                        members: Vec::new(),
                    });
                    slots.insert(handle.spec.name.as_str(), apps.len() - 1);
                    apps.len() - 1
                }
            };
            let Some(app) = apps.get_mut(slot) else {
                continue;
            };
            // A reload's replacement shares its instance's number and id: count it once.
            if app
                .members
                .iter()
                .any(|(instance, _, _)| *instance == handle.spec.instance)
            {
                continue;
            }
            app.restarts = app.restarts.saturating_add(snapshot.restarts);
            app.hangs = app.hangs.saturating_add(snapshot.hangs);
            app.stopped &= stopped;
            app.members.push((
                handle.spec.instance,
                handle.spec.id,
                InstanceCounts {
                    restarts: snapshot.restarts,
                    hangs: snapshot.hangs,
                },
            ));
        }
        if let Some(reason) = self.home_watch.lost() {
            return Err(PersistError::HomeLost {
                path: path.clone(),
                reason,
            });
        }
        self.saved_counts.set(self.counts());
        Ok(StateDraft { apps })
    }

    /// The writer task's request: the number of the latest change and the table now (`None`
    /// once `kill` wrote the final file).
    pub(super) fn snapshot_for_writer(&self) -> (u64, Option<Result<StateDraft, PersistError>>) {
        let seq = self.persister.as_ref().map_or(0, |p| p.wanted.get());
        if self.state_final {
            return (seq, None);
        }
        (seq, Some(self.draft_now()))
    }

    /// Writes the app list to the state file now, on the actor's thread (`save`, `kill`), if
    /// this supervisor keeps one.
    pub(super) fn persist(&self) -> Result<(), PersistError> {
        let Some(path) = &self.state_file else {
            return Err(PersistError::NoStateFile);
        };
        let state = self.state_now()?;
        match &self.persister {
            Some(persister) => {
                let seq = persister.wanted.get().saturating_add(1);
                persister.wanted.set(seq);
                let mut written = persister
                    .gate
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                state_file::write(path, &state)?;
                *written = (*written).max(seq);
            }
            None => state_file::write(path, &state)?,
        }
        Ok(())
    }

    /// Restarts plus hangs of every app now.
    pub(super) fn counts(&self) -> u64 {
        self.apps
            .iter()
            .map(|handle| {
                let snapshot = handle.snapshot.borrow();
                snapshot.restarts + snapshot.hangs
            })
            .sum()
    }

    /// Saves the state file when a restart or hang was counted since it was last written, so
    /// that a daemon killed without warning is resurrected with its counters. Called at most
    /// every [`COUNTS_SAVE_DELAY`], not per event: one pass over the table.
    pub(super) fn persist_new_counts(&self) {
        if self.state_file.is_some()
            && !self.state_final
            && self.counts() != self.saved_counts.get()
        {
            drop(self.persist_checked());
        }
    }

    /// Asks for the state file to be brought in step with the app table after a command changed
    /// it; the ticket resolves once it is (or with the one line that command's answer must
    /// carry, also logged, since apps that are not saved are lost at the next `resurrect`).
    /// Resolves at once when this supervisor keeps no state file.
    pub(super) fn persist_checked(&self) -> Saved {
        let Some(persister) = &self.persister else {
            return Saved::done();
        };
        let seq = persister.wanted.get().saturating_add(1);
        persister.wanted.set(seq);
        persister.wake.notify_one();
        Saved(Some((persister.durable.clone(), seq)))
    }

    /// What the state file holds, to resurrect from.
    pub(super) fn saved_state(&self) -> Result<SavedState, ResurrectError> {
        let path = self
            .state_file
            .as_ref()
            .ok_or(ResurrectError::NoStateFile)?;
        state_file::read(path)?.ok_or_else(|| ResurrectError::NothingSaved(path.clone()))
    }

    /// `resurrect`: brings back the saved apps, or says why there are none.
    pub(super) fn resurrect(&mut self, reply: oneshot::Sender<Outcome>) {
        match self.saved_state() {
            Ok(saved) => self.resurrect_saved(saved, reply),
            Err(error) => {
                if let ResurrectError::Read(error) = &error {
                    tracing::error!("{error}");
                }
                let _ = reply.send(Outcome::Error {
                    message: error.to_string(),
                });
            }
        }
    }

    /// Brings back the saved apps that are not in the table, with their ids and counters.
    pub(super) fn resurrect_saved(&mut self, saved: SavedState, reply: oneshot::Sender<Outcome>) {
        let mut pending = Vec::new();
        let mut problems = Vec::new();
        // Names and ids in the table, kept up to date as apps are added: one pass, not one per
        // saved app.
        let mut names: HashSet<String> = self.apps.iter().map(|h| h.spec.name.clone()).collect();
        let mut ids_taken: HashSet<u32> = self.apps.iter().map(|h| h.spec.id).collect();
        let mut shared_env: Option<Arc<[(String, String)]>> = None;
        for app in saved.apps {
            let name = app.definition.name.clone().unwrap_or_default();
            if names.contains(&name) {
                continue;
            }
            // Bounded before the id scan: a crafted count (u32::MAX) is refused by
            // `from_definition` below, not scanned id by id first.
            let instances = app.definition.instances.clamp(1, config::MAX_INSTANCES);
            let taken = |id: u32| ids_taken.contains(&id);
            // The saved ids when they are one per instance, distinct and free (a `scale`d app's
            // need not be consecutive); else consecutive ids from the saved first one, or from
            // the next free id.
            let mut ids = app.ids.clone();
            ids.sort_unstable();
            ids.dedup();
            let ids = if ids.len() == app.ids.len()
                && app.ids.len() == instances as usize
                && !app.ids.iter().any(|&id| taken(id))
            {
                app.ids.clone()
            } else {
                Vec::new()
            };
            let id = if let Some(&first) = ids.first() {
                first
            } else if (app.id..app.id.saturating_add(instances)).any(taken) {
                self.next_id
            } else {
                app.id
            };
            let mut spec = match AppSpec::from_definition(id, name.clone(), app.definition) {
                Ok(spec) => spec,
                Err(error) => {
                    problems.push(format!("{}: {error}", config::shown_name(&name)));
                    continue;
                }
            };
            // The file holds each app's copy of the caller's environment: apps started together
            // share one again (about 1.6 kB per app with a typical environment).
            if let Some(env) = &spec.caller_env {
                match &shared_env {
                    Some(shared) if **shared == **env => spec.caller_env = Some(Arc::clone(shared)),
                    _ => shared_env = Some(Arc::clone(env)),
                }
            }
            self.next_id = self.next_id.max(spec.end_id());
            if let Some(&last) = ids.iter().max() {
                self.next_id = self.next_id.max(last.saturating_add(1));
            }
            // Each instance gets its own counters back; a file with only the sums (one instance,
            // or written before instances were saved) gives them to the first.
            let origins: Vec<Origins> = if app.instances.len() == spec.instances as usize {
                app.instances
                    .iter()
                    .map(|counts| Origins {
                        restarts: counts.restarts,
                        hangs: counts.hangs,
                        stopped: app.stopped,
                        fail_fast: false,
                    })
                    .collect()
            } else {
                vec![
                    Origins {
                        restarts: app.restarts,
                        hangs: app.hangs,
                        stopped: app.stopped,
                        fail_fast: false,
                    },
                    Origins {
                        stopped: app.stopped,
                        ..Origins::default()
                    },
                ]
            };
            let indexes = match self.add_app_with_ids(spec, &origins, &ids) {
                Ok(indexes) => indexes,
                Err(error) => {
                    problems.push(format!("{}: {error}", config::shown_name(&name)));
                    continue;
                }
            };
            names.insert(name.clone());
            for index in indexes {
                let handle = &self.apps[index];
                ids_taken.insert(handle.spec.id);
                let (done, answer) = oneshot::channel();
                if app.stopped {
                    let _ = done.send(Ok(()));
                } else {
                    let _ = handle.commands.try_send(WorkerCommand::Start(done));
                }
                pending.push((watched(handle), answer));
            }
        }
        let saved = self.persist_checked();
        if !problems.is_empty() {
            let message = format!("could not bring back: {}", problems.join("; "));
            tokio::spawn(async move {
                let message = match saved.wait().await {
                    Ok(()) => message,
                    Err(unsaved) => format!("{message}; {unsaved}"),
                };
                let _ = reply.send(Outcome::Error { message });
            });
            return;
        }
        tokio::spawn(report_saved_when_done(pending, saved, reply));
    }
}
