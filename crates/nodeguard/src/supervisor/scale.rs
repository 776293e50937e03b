//! `scale`: changing how many instances one app runs. New instances take the next instance
//! numbers (so `NODE_APP_INSTANCE` and `increment_var` go on from the last one) and fresh ids;
//! the highest instances are stopped the normal, graceful way and leave the table.

use crate::config::{self, AppSpec};
use crate::supervisor::worker::{Origins, WorkerCommand};
use nodeguard_proto::control::{Outcome, Target};
use std::sync::Arc;
use tokio::sync::oneshot;

use super::*;

impl Supervisor {
    /// Sets the number of instances of the one app `target` names to `count` (or to the current
    /// number plus `count`, when `relative`); answers with the app's instances once the new ones
    /// run and the removed ones have exited.
    pub(super) fn scale(
        &mut self,
        target: &Target,
        count: i64,
        relative: bool,
        reply: oneshot::Sender<Outcome>,
    ) {
        match self.scale_checked(target, count, relative) {
            Ok((pending, kept)) => {
                let saved = self.persist_checked();
                tokio::spawn(async move {
                    let (done, answer) = oneshot::channel();
                    report_saved_when_done(pending, saved, done).await;
                    let outcome = match answer.await {
                        Ok(Outcome::Done { .. }) => Outcome::Done {
                            apps: kept.iter().map(Watched::status).collect(),
                        },
                        Ok(other) => other,
                        Err(_) => return,
                    };
                    let _ = reply.send(outcome);
                });
            }
            Err(message) => {
                let _ = reply.send(Outcome::Error { message });
            }
        }
    }

    /// Changes the table; returns what to wait for and the instances the app keeps.
    #[allow(clippy::type_complexity)]
    fn scale_checked(
        &mut self,
        target: &Target,
        count: i64,
        relative: bool,
    ) -> Result<
        (
            Vec<(
                Watched,
                oneshot::Receiver<crate::supervisor::worker::CommandResult>,
            )>,
            Vec<Watched>,
        ),
        String,
    > {
        let mut names: Vec<&str> = Vec::new();
        for handle in self.apps.iter().filter(|h| matches_target(h, target)) {
            if !names.contains(&handle.spec.name.as_str()) {
                names.push(&handle.spec.name);
            }
        }
        let name = match names.as_slice() {
            [] => return Err(no_match(target)),
            [name] => name.to_string(),
            several => {
                return Err(format!(
                    "'{}' names {} apps ({}): scale takes one app",
                    target.0,
                    several.len(),
                    several.join(", ")
                ))
            }
        };
        if self.reloading.contains(&name) {
            return Err(format!(
                "a reload of '{name}' is running; scale it afterwards"
            ));
        }
        // Instances are numbered 0..current (a reload's replacement shares its instance's
        // number).
        let instances: Vec<usize> = (0..self.apps.len())
            .filter(|&i| self.apps[i].spec.name == name)
            .collect();
        let current = instances
            .iter()
            .map(|&i| self.apps[i].spec.instance)
            .max()
            .map_or(0, |last| last.saturating_add(1));
        let wanted = if relative {
            i64::from(current).saturating_add(count)
        } else {
            count
        };
        if wanted < 1 {
            return Err(format!(
                "cannot scale '{name}' to {wanted} instances: an app runs at least 1 (stop it \
                 with `nodeguard stop {name}`, or remove it with `nodeguard delete {name}`)"
            ));
        }
        let wanted = match u32::try_from(wanted) {
            Ok(wanted) if wanted <= config::MAX_INSTANCES => wanted,
            _ => {
                return Err(format!(
                    "cannot scale '{name}' to {wanted} instances: at most {}",
                    config::MAX_INSTANCES
                ))
            }
        };
        let mut pending = Vec::new();
        if wanted > current {
            let Some(&first) = instances.first() else {
                return Err(no_match(target));
            };
            let template = self.apps[first].spec.clone();
            let added = wanted - current;
            let end = self
                .next_id
                .checked_add(added)
                .ok_or_else(|| format!("no ids left for {added} more instances"))?;
            // The app's state carries over: instances of an app an operator stopped begin stopped.
            let stopped = instances
                .iter()
                .all(|&i| self.stopped.contains(&self.apps[i].spec.id));
            let listeners = self.listeners.get(&name).cloned().unwrap_or_default();
            let after = instances.last().map_or(self.apps.len(), |&last| last + 1);
            let places = (current..wanted).zip(self.next_id..end);
            for (index, (instance, id)) in (after..).zip(places) {
                let spec = AppSpec {
                    id,
                    instance,
                    instances: wanted,
                    ..(*template).clone()
                };
                let origins = Origins {
                    stopped,
                    ..Origins::default()
                };
                self.insert(index, Arc::new(spec), origins, listeners.clone());
                let handle = &self.apps[index];
                let (done, answer) = oneshot::channel();
                if stopped {
                    let _ = done.send(Ok(()));
                } else {
                    // A fresh task has an empty queue.
                    let _ = handle.commands.try_send(WorkerCommand::Start(done));
                }
                pending.push((watched(handle), answer));
            }
            self.next_id = end;
        } else if wanted < current {
            let removed: Vec<usize> = instances
                .iter()
                .copied()
                .filter(|&i| self.apps[i].spec.instance >= wanted)
                .collect();
            // All or none: with no reload of the app running, only this actor sends to these
            // queues, so room now is room below.
            if let Some(&index) = removed
                .iter()
                .find(|&&i| self.apps[i].commands.capacity() == 0)
            {
                return Err(format!(
                    "app '{}' is busy: its command queue is full",
                    self.apps[index].spec.display_name()
                ));
            }
            for &index in &removed {
                let handle = &self.apps[index];
                let (done, answer) = oneshot::channel();
                let _ = handle.commands.try_send(WorkerCommand::Remove(done));
                pending.push((watched(handle), answer));
            }
            let ids: Vec<u32> = removed.iter().map(|&i| self.apps[i].spec.id).collect();
            self.stopped.retain(|id| !ids.contains(id));
            let mut index = 0;
            self.apps.retain(|_| {
                let keep = !removed.contains(&index);
                index += 1;
                keep
            });
        }
        // Every instance keeps the count in its spec: it is what status shows (`web:1`) and
        // what the state file saves.
        for handle in self.apps.iter_mut().filter(|h| h.spec.name == name) {
            if handle.spec.instances != wanted {
                let spec = Arc::new(AppSpec {
                    instances: wanted,
                    ..(*handle.spec).clone()
                });
                // A full queue means a stuck task; its next process (if any) logs the old count.
                let _ = handle
                    .commands
                    .try_send(WorkerCommand::Respec(spec.clone()));
                handle.spec = spec;
            }
        }
        let kept = self
            .apps
            .iter()
            .filter(|h| h.spec.name == name)
            .map(watched)
            .collect();
        Ok((pending, kept))
    }
}
