//! Commands to one app (start, stop, restart, remove, describe …) and their replies: each reply
//! waits for a goal (running at a new generation, or at rest) and is answered once it is met or
//! can no longer be.

use super::*;

/// The answer to a command: `Err` says why the effect did not happen.
pub type CommandResult = Result<(), CommandError>;

/// Why a command's effect did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("stopped before it was running")]
    StoppedBeforeRunning,
    #[error("exited while starting ({last_exit})")]
    ExitedWhileStarting { last_exit: String },
    /// The app rests errored; `why` is the machine's reason.
    #[error("{why}")]
    Errored { why: String },
    /// The supervisor shut down or the app was removed while the command waited.
    #[error("the app was stopped")]
    AppStopped,
    /// A later command with another goal came first (e.g. a restart while a stop waited).
    #[error("a {by} came before it was done")]
    Superseded { by: &'static str },
    /// The app's task ended before it answered.
    #[error("its task ended")]
    TaskEnded,
    /// A cluster instance missed its ready timeout; it is killed and restarted.
    #[error("{why}")]
    NotReady { why: String },
    /// The process could not be started; the task retries after a backoff.
    #[error("could not start ({last_exit}); retrying after a backoff within the restart budget")]
    SpawnFailed { last_exit: String },
}

/// An operator's request to one app. Each reply is sent once the effect has happened.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Start if stopped or errored; replies once the process runs.
    Start(oneshot::Sender<CommandResult>),
    /// Stop gracefully; replies once the process has exited.
    Stop(oneshot::Sender<CommandResult>),
    /// Replace the process; replies once the new one runs.
    Restart(oneshot::Sender<CommandResult>),
    /// Stop and end the task; replies once the process has exited.
    Remove(oneshot::Sender<CommandResult>),
    /// The recent events, at once.
    Describe(oneshot::Sender<Vec<AppEvent>>),
    /// Adds an event to the history (e.g. a reload that was aborted), and logs it.
    /// Boxed: the command queue holds a block of 32 commands per app whether or not any is
    /// sent, sized by the largest variant.
    Record(Box<AppEvent>),
    /// Puts the history of the instance this one replaces before its own (reloads).
    Inherit(Vec<AppEvent>),
    /// Zeroes the restart and hang counters and the restart budget; replies at once.
    Reset(oneshot::Sender<CommandResult>),
    /// The app's definition changed (`--update-env`): the next process is spawned from this.
    Respec(Arc<AppSpec>),
    /// Take a CPU profile over `duration` or a heap snapshot; replies once it is written.
    Profile {
        kind: nodeguard_proto::worker::ProfileKind,
        duration: Duration,
        reply: oneshot::Sender<super::ProfileResult>,
    },
}

/// What a waiting reply needs to see.
#[derive(Debug, Clone, Copy)]
pub(super) enum Goal {
    /// A ready process of at least this spawn generation.
    Running { generation: u64 },
    /// Stopped or errored.
    AtRest,
}

pub(super) struct Waiter {
    pub(super) goal: Goal,
    pub(super) reply: oneshot::Sender<CommandResult>,
}

impl WorkerTask {
    /// Registers the command's reply and returns the event it means for the machine, if any.
    pub(super) fn on_command(&mut self, command: WorkerCommand) -> Option<Event> {
        let next_generation = self.generation + 1;
        let (event, goal, reply) = match command {
            WorkerCommand::Start(reply) => {
                let generation = if self.machine.is_at_rest() {
                    next_generation
                } else {
                    self.generation
                };
                (Event::Start, Goal::Running { generation }, reply)
            }
            WorkerCommand::Restart(reply) => {
                // A stop still waiting for the process to exit will not see it rest: the restart
                // starts it again. Answer it now rather than never.
                self.supersede_stops("restart");
                (
                    Event::Restart,
                    Goal::Running {
                        generation: next_generation,
                    },
                    reply,
                )
            }
            WorkerCommand::Stop(reply) => (Event::Stop, Goal::AtRest, reply),
            WorkerCommand::Remove(reply) => {
                self.ending = true;
                (Event::Stop, Goal::AtRest, reply)
            }
            WorkerCommand::Describe(reply) => {
                let _ = reply.send(self.events.iter().cloned().collect());
                return None;
            }
            WorkerCommand::Profile {
                kind,
                duration,
                reply,
            } => {
                return self.start_profile(kind, duration, super::profile::Purpose::Demand(reply));
            }
            WorkerCommand::Record(event) => {
                tracing::info!("{}: {}", event.kind, event.message);
                self.announce(Happening::Report {
                    kind: event.kind.clone(),
                    message: event.message.clone(),
                    detail: Detail::default(),
                });
                self.remember(*event);
                return None;
            }
            WorkerCommand::Reset(reply) => {
                self.machine.restarts = 0;
                self.machine.hangs = 0;
                self.machine.recent_restarts.clear();
                self.machine.not_ready_streak = 0;
                self.publish();
                let _ = reply.send(Ok(()));
                return None;
            }
            WorkerCommand::Respec(spec) => {
                self.spec = spec;
                return None;
            }
            WorkerCommand::Inherit(earlier) => {
                let mut events: VecDeque<AppEvent> = earlier.into();
                events.append(&mut self.events);
                while events.len() > EVENT_HISTORY {
                    events.pop_front();
                }
                self.events = events;
                return None;
            }
        };
        self.waiters.push(Waiter { goal, reply });
        Some(event)
    }

    /// Answers every waiter for a stop (the app at rest) with `Superseded { by }`.
    pub(super) fn supersede_stops(&mut self, by: &'static str) {
        let (stops, others): (Vec<Waiter>, Vec<Waiter>) = self
            .waiters
            .drain(..)
            .partition(|waiter| matches!(waiter.goal, Goal::AtRest));
        self.waiters = others;
        for waiter in stops {
            let _ = waiter.reply.send(Err(CommandError::Superseded { by }));
        }
    }

    /// Answers every waiter whose goal was reached or can no longer be.
    pub(super) fn resolve_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let phase = &self.machine.phase;
        let generation = self.generation;
        let last_exit = self.machine.last_exit.clone().unwrap_or_default();
        let mut still_waiting = Vec::new();
        for waiter in self.waiters.drain(..) {
            let result = match (waiter.goal, phase) {
                (Goal::AtRest, Phase::Stopped | Phase::Errored { .. }) => Some(Ok(())),
                (Goal::Running { generation: wanted }, Phase::Live { ready: true, .. })
                    if generation >= wanted =>
                {
                    Some(Ok(()))
                }
                (Goal::Running { .. }, Phase::Errored { why }) => {
                    Some(Err(CommandError::Errored { why: why.clone() }))
                }
                (Goal::Running { .. }, Phase::Stopped) => {
                    Some(Err(CommandError::StoppedBeforeRunning))
                }
                (Goal::Running { generation: wanted }, Phase::Backoff { .. })
                    if generation >= wanted && last_exit.starts_with(SPAWN_FAILED) =>
                {
                    Some(Err(CommandError::SpawnFailed {
                        last_exit: last_exit.clone(),
                    }))
                }
                (Goal::Running { generation: wanted }, Phase::Backoff { .. })
                    if generation >= wanted =>
                {
                    Some(Err(CommandError::ExitedWhileStarting {
                        last_exit: last_exit.clone(),
                    }))
                }
                _ => None,
            };
            match result {
                Some(result) => {
                    let _ = waiter.reply.send(result);
                }
                None => still_waiting.push(waiter),
            }
        }
        self.waiters = still_waiting;
    }

    /// The current process missed its ready timeout: whoever waits for it to run (`start`) hears
    /// why now, instead of waiting through restarts that may never get ready either. A reload's
    /// fail-fast replacement is answered when it rests errored.
    pub(super) fn fail_starting_waiters(&mut self, waited: Duration) {
        if self.machine.fail_fast {
            return;
        }
        let spec = &self.spec;
        let shared = self.listeners.shared_ports(spec.instance);
        let what = if spec.shares_on_request() && !shared.is_empty() {
            let ports: Vec<String> = shared.iter().map(ToString::to_string).collect();
            format!(
                "listen on port {} as its previous process did",
                ports.join(", ")
            )
        } else if spec.listen.is_empty() {
            "call ready() or process.send('ready') (wait-ready)".to_string()
        } else {
            let addresses: Vec<String> = spec.listen.iter().map(ToString::to_string).collect();
            format!("listen on {}", addresses.join(", "))
        };
        // `start` puts the app's name before it.
        let who = match spec.shown_instance() {
            Some(instance) => format!("instance {instance} "),
            None => String::new(),
        };
        let why = format!(
            "{who}did not {what} within {}; it was killed and is restarted within the restart \
             budget",
            human(waited)
        );
        let generation = self.generation;
        let mut still_waiting = Vec::new();
        for waiter in self.waiters.drain(..) {
            match waiter.goal {
                Goal::Running { generation: wanted } if generation >= wanted => {
                    let _ = waiter
                        .reply
                        .send(Err(CommandError::NotReady { why: why.clone() }));
                }
                _ => still_waiting.push(waiter),
            }
        }
        self.waiters = still_waiting;
    }
}
