//! The event bus: every app's state changes and reports, published once on a broadcast channel
//! for whoever listens. Today the actor listens (it rewrites the state file when counters move and
//! ends a foreground run once every app is done); the `events` stream, hooks and live views read
//! the same bus. Status and metrics read each app's latest snapshot instead (a `watch`): the bus
//! carries what happened, the snapshot what is.

use std::sync::Arc;

use nodeguard_proto::control::{AppState, EventRecord};
use tokio::sync::broadcast;

/// Events a slow listener may fall behind by before it misses some (it is told how many, and the
/// actor then looks at every app again). The ring is allocated whole at start, so it stays small:
/// 64 slots are about 10 kB of the daemon's RSS (256 were about 40 kB).
pub const BUS_CAPACITY: usize = 64;

/// One thing that happened to one app (or one cluster instance).
#[derive(Debug, Clone, PartialEq)]
pub struct BusEvent {
    pub app: Arc<str>,
    pub id: u32,
    /// The instance, for cluster-mode apps.
    pub instance: Option<u32>,
    /// When, RFC 3339 UTC.
    pub at: String,
    pub what: Happening,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// The app's state, pid, counters or finish changed.
    State {
        state: AppState,
        pid: Option<u32>,
        restarts: u64,
        hangs: u64,
        /// Came to rest on its own: cleanly or not.
        finished: Option<bool>,
    },
    /// A report or note, as `describe` keeps it (`kind` as in `AppEvent::kind`).
    Report {
        kind: String,
        message: String,
        detail: Detail,
    },
}

/// What a report says in fields, besides its line: for the `events` stream and hooks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    /// The process it is about.
    pub pid: Option<u32>,
    /// How the process ended: its exit code, or the signal that killed it.
    pub exit: Option<crate::core::exit::ExitKind>,
    /// For a hang's `stack`: the frames, innermost first.
    pub stack: Vec<String>,
}

impl BusEvent {
    /// The wire form (`nodeguard events --json`): the one mapping from the bus to the stream.
    pub fn record(&self) -> EventRecord {
        let mut record = EventRecord {
            at: self.at.clone(),
            app: self.app.to_string(),
            id: self.id,
            instance: self.instance,
            ..EventRecord::default()
        };
        match &self.what {
            Happening::State {
                state,
                pid,
                restarts,
                hangs,
                finished,
            } => {
                record.kind = "state".into();
                record.state = Some(*state);
                record.pid = *pid;
                record.restarts = Some(*restarts);
                record.hangs = Some(*hangs);
                record.message = finished.map(|clean| {
                    if clean {
                        "finished cleanly".to_string()
                    } else {
                        "finished with a failure".to_string()
                    }
                });
            }
            Happening::Report {
                kind,
                message,
                detail,
            } => {
                record.kind = kind.clone();
                record.message = Some(message.clone());
                record.pid = detail.pid;
                match detail.exit {
                    Some(crate::core::exit::ExitKind::Code(code)) => record.code = Some(code),
                    Some(crate::core::exit::ExitKind::Signal(signal)) => {
                        record.signal = Some(match crate::core::exit::signal_name(signal) {
                            Some(name) => name.to_string(),
                            None => format!("SIG{signal}"),
                        });
                    }
                    None => {}
                }
                record.stack = detail.stack.clone();
            }
        }
        record
    }
}

/// The record a stream gets in place of the `missed` events it fell too far behind to see.
pub fn lagged(missed: u64) -> EventRecord {
    EventRecord {
        at: crate::io::logfile::timestamp(std::time::SystemTime::now()),
        kind: "lagged".into(),
        message: Some(format!(
            "this stream fell behind: {missed} event(s) missed (read faster, or ask `status`)"
        )),
        missed: Some(missed),
        ..EventRecord::default()
    }
}

/// The sending side, shared by every app task; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus(broadcast::Sender<BusEvent>);

impl Default for EventBus {
    fn default() -> Self {
        Self(broadcast::Sender::new(BUS_CAPACITY))
    }
}

impl EventBus {
    /// Publishes to every current listener; with none, the event is dropped.
    pub fn publish(&self, event: BusEvent) {
        let _ = self.0.send(event);
    }

    /// A listener that sees every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::exit::ExitKind;

    fn event(what: Happening) -> BusEvent {
        BusEvent {
            app: "api".into(),
            id: 2,
            instance: Some(1),
            at: "2026-11-29T23:00:00.000Z".into(),
            what,
        }
    }

    #[test]
    fn reports_and_state_changes_become_records_with_their_fields() {
        let killed = event(Happening::Report {
            kind: "exited".into(),
            message: "pid 7: signal SIGKILL after 1.0s".into(),
            detail: Detail {
                pid: Some(7),
                exit: Some(ExitKind::Signal(9)),
                stack: Vec::new(),
            },
        })
        .record();
        assert_eq!(
            (
                killed.kind.as_str(),
                killed.pid,
                killed.code,
                killed.signal.as_deref()
            ),
            ("exited", Some(7), None, Some("SIGKILL"))
        );
        assert_eq!(killed.instance, Some(1));
        let stack = event(Happening::Report {
            kind: "stack".into(),
            message: "hung 1.0s in spin (app.js:3:1)".into(),
            detail: Detail {
                pid: Some(7),
                exit: None,
                stack: vec!["spin (app.js:3:1)".into()],
            },
        })
        .record();
        assert_eq!(stack.stack, vec!["spin (app.js:3:1)".to_string()]);
        let state = event(Happening::State {
            state: AppState::Backoff,
            pid: None,
            restarts: 3,
            hangs: 1,
            finished: None,
        })
        .record();
        assert_eq!(
            (
                state.kind.as_str(),
                state.state,
                state.restarts,
                state.hangs
            ),
            ("state", Some(AppState::Backoff), Some(3), Some(1))
        );
        assert_eq!(lagged(5).missed, Some(5));
    }
}
