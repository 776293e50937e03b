//! The state file: what the daemon saves after every change (apps, ids, counters, stopped apps),
//! and bringing the saved apps back (`resurrect`).

use crate::config::AppSpec;
use crate::io::state_file::{self, InstanceCounts, SavedApp, SavedState, STATE_VERSION};
use crate::supervisor::worker::{Origins, WorkerCommand};
use nodeguard_proto::control::Outcome;
use tokio::sync::oneshot;

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

impl Supervisor {
    /// Writes the app list to the state file, if this supervisor keeps one.
    pub(super) fn persist(&self) -> Result<(), PersistError> {
        let Some(path) = &self.state_file else {
            return Err(PersistError::NoStateFile);
        };
        // One entry per app (not per instance): its instances' ids and counters in instance
        // order, the counters summed, and stopped only if every instance was stopped. The
        // instance count saved is the number the app runs now (after any `scale`).
        let mut apps: Vec<SavedApp> = Vec::new();
        // Per app: (instance, id, counts) of each instance, once.
        let mut members: Vec<Vec<(u32, u32, InstanceCounts)>> = Vec::new();
        for handle in &self.apps {
            let snapshot = handle.snapshot.borrow();
            let stopped = self.stopped.contains(&handle.spec.id);
            let slot = match apps
                .iter()
                .position(|a| a.definition.name.as_deref() == Some(handle.spec.name.as_str()))
            {
                Some(slot) => slot,
                None => {
                    apps.push(SavedApp {
                        id: handle.spec.id,
                        definition: handle.spec.definition(),
                        restarts: 0,
                        hangs: 0,
                        stopped: true,
                        instances: Vec::new(),
                        ids: Vec::new(),
                    });
                    members.push(Vec::new());
                    apps.len() - 1
                }
            };
            // A reload's replacement shares its instance's number and id: count it once.
            if members[slot]
                .iter()
                .any(|(instance, _, _)| *instance == handle.spec.instance)
            {
                continue;
            }
            let app = &mut apps[slot];
            app.restarts = app.restarts.saturating_add(snapshot.restarts);
            app.hangs = app.hangs.saturating_add(snapshot.hangs);
            app.stopped &= stopped;
            members[slot].push((
                handle.spec.instance,
                handle.spec.id,
                InstanceCounts {
                    restarts: snapshot.restarts,
                    hangs: snapshot.hangs,
                },
            ));
        }
        for (app, mut instances) in apps.iter_mut().zip(members) {
            instances.sort_by_key(|(instance, _, _)| *instance);
            app.id = instances.first().map_or(app.id, |(_, id, _)| *id);
            let count = u32::try_from(instances.len()).unwrap_or(u32::MAX);
            app.definition.instances = count.max(1);
            if instances.len() > 1 {
                app.ids = instances.iter().map(|(_, id, _)| *id).collect();
                app.instances = instances.iter().map(|(_, _, counts)| *counts).collect();
            }
        }
        let saved = SavedState {
            version: STATE_VERSION,
            apps,
        };
        if let Some(reason) = self.home_watch.lost() {
            return Err(PersistError::HomeLost {
                path: path.clone(),
                reason,
            });
        }
        state_file::write(path, &saved)?;
        self.saved_counts.set(self.counts());
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

    /// Writes the state file when a restart or hang was counted since it was last written, so
    /// that a daemon killed without warning is resurrected with its counters.
    pub(super) fn persist_new_counts(&self) {
        if self.state_file.is_some()
            && !self.state_final
            && self.counts() != self.saved_counts.get()
        {
            self.persist_or_warn();
        }
    }

    /// Keeps the state file in step with the app table for a command that changed it: the error
    /// (also logged) is the one line that command's answer must carry, since apps that are not
    /// saved are lost at the next `resurrect`. Ok when this supervisor keeps no state file.
    pub(super) fn persist_checked(&self) -> Result<(), String> {
        if self.state_file.is_none() {
            return Ok(());
        }
        self.persist().map_err(|error| {
            let message = format!(
                "the app list was not saved ({error}): the change took effect, but `resurrect` \
                 would not see it; make room and run `nodeguard save`"
            );
            tracing::error!("{message}");
            message
        })
    }

    /// Keeps the state file in step with the app table; a failure is logged, not fatal.
    pub(super) fn persist_or_warn(&self) {
        if self.state_file.is_some() {
            if let Err(error) = self.persist() {
                tracing::warn!("{error}");
            }
        }
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
        for app in saved.apps {
            let name = app.definition.name.clone().unwrap_or_default();
            if self.apps.iter().any(|h| h.spec.name == name) {
                continue;
            }
            // Bounded before the id scan: a crafted count (u32::MAX) is refused by
            // `from_definition` below, not scanned id by id first.
            let instances = app.definition.instances.clamp(1, config::MAX_INSTANCES);
            let taken = |id: u32| self.apps.iter().any(|h| h.spec.id == id);
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
            let spec = match AppSpec::from_definition(id, name.clone(), app.definition) {
                Ok(spec) => spec,
                Err(error) => {
                    problems.push(format!("{}: {error}", config::shown_name(&name)));
                    continue;
                }
            };
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
            for index in indexes {
                let handle = &self.apps[index];
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
            let mut message = format!("could not bring back: {}", problems.join("; "));
            if let Err(unsaved) = saved {
                message = format!("{message}; {unsaved}");
            }
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        tokio::spawn(report_saved_when_done(pending, saved, reply));
    }
}
