//! Rolling reload: a task per reload that asks the actor to add a replacement next to each
//! instance, waits for it to be ready, then retires the old one; and restart in turn. A restart
//! whose target includes a cluster app (shared listen addresses) runs here too: its cluster apps
//! roll like a reload, so that a restart loses no request either.

use crate::io::logfile::timestamp;
use crate::supervisor::worker::{CommandError, CommandResult, WorkerCommand, WorkerHandle};
use nodeguard_proto::control::{AppEvent, AppStatus, Outcome};
use tokio::sync::{mpsc, oneshot};

use super::*;

/// A request from a reload task to the actor.
pub(super) enum Internal {
    /// Add a fail-fast replacement for the instance with key `old`, right after it in the table.
    /// `None` if that instance is gone or the supervisor is shutting down.
    AddReplacement {
        old: u64,
        reply: oneshot::Sender<Option<Member>>,
    },
    /// Take the instance out of the table and stop it; the receiver answers once it has exited.
    Retire {
        key: u64,
        reply: oneshot::Sender<Option<oneshot::Receiver<CommandResult>>>,
    },
    /// The reload of these apps is over.
    ReloadDone { names: Vec<String> },
    /// The task of the instance with this key ended by a panic; its process group was killed.
    TaskFailed { key: u64, why: String },
    /// A file change or the cron schedule asks to restart (or reload) the app.
    Trigger { name: String, why: String },
    /// The state file's writer asks for the table to write (see `persist::Persister`).
    Snapshot {
        reply: oneshot::Sender<(
            u64,
            Option<Result<super::persist::StateDraft, super::persist::PersistError>>,
        )>,
    },
}

/// One instance as a reload task sees it.
pub(super) struct Member {
    pub(super) key: u64,
    pub(super) commands: mpsc::Sender<WorkerCommand>,
    pub(super) watched: Watched,
}

impl Member {
    pub(super) fn of(handle: &WorkerHandle) -> Self {
        Self {
            key: handle.key,
            commands: handle.commands.clone(),
            watched: watched(handle),
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.watched.snapshot.borrow().pid
    }

    /// Adds an event to this instance's `describe` history.
    pub(super) async fn record(&self, kind: &str, message: String) {
        let event = AppEvent {
            at: timestamp(std::time::SystemTime::now()),
            kind: kind.to_string(),
            message,
        };
        let _ = self
            .commands
            .send(WorkerCommand::Record(Box::new(event)))
            .await;
    }
}

/// The instances of one app that a reload covers.
pub(super) struct ReloadGroup {
    pub(super) name: String,
    /// Shared listen addresses: replace each instance while the others serve. Otherwise each
    /// instance binds its own port and is restarted (stopped, then started) in turn.
    pub(super) rolling: bool,
    pub(super) members: Vec<Member>,
}

/// What a reload task was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    /// `reload`: answered with `Reloaded`; apps without shared sockets restart one instance at a
    /// time.
    Reload,
    /// `restart`: answered with `Done`; apps without shared sockets restart all their instances
    /// at once, as a restart does.
    Restart,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Reload => "reload",
            Verb::Restart => "restart",
        }
    }
}

/// Reloads each group in turn and answers: `Reloaded` (`Done` for a restart), or an error at the
/// first replacement that failed (its old instance and all not yet replaced keep running).
pub(super) async fn reload_task(
    groups: Vec<ReloadGroup>,
    verb: Verb,
    actor: mpsc::UnboundedSender<Internal>,
    reply: oneshot::Sender<Outcome>,
) {
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let mut notes = Vec::new();
    let mut apps = Vec::new();
    let mut failure = None;
    for group in &groups {
        let result = if group.rolling {
            reload_rolling(group, verb, &actor, &mut apps).await
        } else if verb == Verb::Restart {
            restart_at_once(group, &mut apps).await
        } else {
            notes.push(format!(
                "{}: no --listen address, so its instances each bind their own port: restarted \
                 them one at a time (stop, then start), which is not zero-downtime",
                group.name
            ));
            restart_in_turn(group, &mut apps).await
        };
        match result {
            Ok(note) => notes.push(note),
            Err(message) => {
                failure = Some(message);
                break;
            }
        }
    }
    let _ = actor.send(Internal::ReloadDone { names });
    let outcome = match (failure, verb) {
        (Some(message), _) => Outcome::Error { message },
        (None, Verb::Reload) => Outcome::Reloaded { apps, notes },
        (None, Verb::Restart) => Outcome::Done { apps },
    };
    let _ = reply.send(outcome);
}

/// Stop-then-start for apps without shared sockets, one instance at a time.
pub(super) async fn restart_in_turn(
    group: &ReloadGroup,
    apps: &mut Vec<AppStatus>,
) -> Result<String, String> {
    for member in &group.members {
        let (done, answer) = oneshot::channel();
        if member
            .commands
            .send(WorkerCommand::Restart(done))
            .await
            .is_err()
        {
            return Err(format!(
                "{}: the app was removed during the reload",
                group.name
            ));
        }
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(format!("reload of {} failed: {why}", group.name)),
            Err(_) => return Err(format!("{}: the app's task ended", group.name)),
        }
        apps.push(member.watched.status());
    }
    Ok(format!(
        "{}: restarted {} instance(s)",
        group.name,
        group.members.len()
    ))
}

/// A restart of an app without shared sockets: every instance restarts at once.
async fn restart_at_once(group: &ReloadGroup, apps: &mut Vec<AppStatus>) -> Result<String, String> {
    let mut answers = Vec::new();
    for member in &group.members {
        let (done, answer) = oneshot::channel();
        if member
            .commands
            .send(WorkerCommand::Restart(done))
            .await
            .is_err()
        {
            return Err(format!(
                "{}: the app was removed during the restart",
                group.name
            ));
        }
        answers.push(answer);
    }
    for (member, answer) in group.members.iter().zip(answers) {
        match answer.await {
            Ok(Ok(())) => apps.push(member.watched.status()),
            Ok(Err(why)) => return Err(format!("restart of {} failed: {why}", group.name)),
            Err(_) => return Err(format!("{}: the app's task ended", group.name)),
        }
    }
    Ok(String::new())
}

/// For each instance: start a replacement, wait until it is ready, then retire (drain) the old
/// one. Never fewer ready instances than before. Returns a one-line summary.
pub(super) async fn reload_rolling(
    group: &ReloadGroup,
    verb: Verb,
    actor: &mpsc::UnboundedSender<Internal>,
    apps: &mut Vec<AppStatus>,
) -> Result<String, String> {
    let name = &group.name;
    let mut draining = Vec::new();
    let mut replaced = 0;
    let mut outcome = Ok(());
    for old in &group.members {
        let instance = old.watched.spec.instance;
        let (ask, answer) = oneshot::channel();
        let _ = actor.send(Internal::AddReplacement {
            old: old.key,
            reply: ask,
        });
        let Ok(Some(new)) = answer.await else {
            outcome = Err(format!(
                "{} of {name} stopped: instance {instance} is gone or the supervisor is \
                 shutting down",
                verb.word()
            ));
            break;
        };
        let (done, started) = oneshot::channel();
        let result = match new.commands.send(WorkerCommand::Start(done)).await {
            Ok(()) => started.await.unwrap_or(Err(CommandError::TaskEnded)),
            Err(_) => Err(CommandError::TaskEnded),
        };
        match result {
            Ok(()) => {
                let old_pid = old.pid();
                let new_pid = new.pid();
                // `describe` keeps the instance's history across the reload.
                let (ask, history) = oneshot::channel();
                if old
                    .commands
                    .send(WorkerCommand::Describe(ask))
                    .await
                    .is_ok()
                {
                    if let Ok(events) = history.await {
                        let _ = new.commands.send(WorkerCommand::Inherit(events)).await;
                    }
                }
                let (ask, answer) = oneshot::channel();
                let _ = actor.send(Internal::Retire {
                    key: old.key,
                    reply: ask,
                });
                if let Ok(Some(exited)) = answer.await {
                    draining.push(exited);
                }
                new.record(
                    "reloaded",
                    format!(
                        "replaced pid {} of instance {instance}; the old process drains",
                        old_pid.map_or_else(|| "-".to_string(), |p| p.to_string())
                    ),
                )
                .await;
                tracing::info!(app = %name, instance, ?old_pid, ?new_pid, "reload: replaced an instance");
                apps.push(new.watched.status());
                replaced += 1;
            }
            Err(why) => {
                let (ask, answer) = oneshot::channel();
                let _ = actor.send(Internal::Retire {
                    key: new.key,
                    reply: ask,
                });
                if let Ok(Some(exited)) = answer.await {
                    let _ = exited.await;
                }
                let kept = group.members.len() - replaced;
                let message = format!(
                    "{} of {name} aborted: the new instance {instance} did not become ready: \
                     {why}; the old process(es) of {kept} instance(s) keep serving{}",
                    verb.word(),
                    if replaced > 0 {
                        format!(" ({replaced} instance(s) already run the new version)")
                    } else {
                        String::new()
                    }
                );
                tracing::error!("{message}");
                for member in &group.members[replaced..] {
                    member.record("reload_aborted", message.clone()).await;
                }
                outcome = Err(message);
                break;
            }
        }
    }
    // The old processes finish their in-flight requests before the command returns.
    for exited in draining {
        let _ = exited.await;
    }
    outcome.map(|()| {
        format!(
            "{name}: reloaded {replaced} instance(s), each replacement ready before its old \
             process was drained"
        )
    })
}
