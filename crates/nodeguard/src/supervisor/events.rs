//! The event bus: every app's state changes and reports, published once on a broadcast channel
//! for whoever listens. Today the actor listens (it rewrites the state file when counters move and
//! ends a foreground run once every app is done); the `events` stream, hooks and live views read
//! the same bus. Status and metrics read each app's latest snapshot instead (a `watch`): the bus
//! carries what happened, the snapshot what is.

use std::sync::Arc;

use nodeguard_proto::control::AppState;
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
    Report { kind: String, message: String },
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
