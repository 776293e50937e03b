//! The supervisor actor's inbox: what the control socket, the health probe and systemd notify send
//! it. The `io` layer may use this module (and nothing else of `supervisor`).

use nodeguard_proto::control::{Command, EventRecord, Outcome, Target};
use tokio::sync::{broadcast, oneshot};

use crate::supervisor::events::{lagged, BusEvent, EventBus};

/// A control command on its way to the supervisor actor, with the channel for its answer.
pub struct ControlRequest {
    pub command: Command,
    pub reply: oneshot::Sender<Outcome>,
}

/// The event bus as the control socket streams it (`Command::Events`): a subscription yields one
/// [`EventRecord`] per event. Subscribing costs nothing until someone does.
#[derive(Debug, Clone)]
pub struct EventFeed(EventBus);

impl EventFeed {
    pub fn new(bus: EventBus) -> Self {
        Self(bus)
    }

    /// Every event published from now on, for the apps `target` names (`None` or `all`: every
    /// app, those added later too). `ids` are the ids the supervisor resolved `target` to; a
    /// named app's instances added later (by `scale`) are matched by name.
    pub fn subscribe(&self, target: Option<&Target>) -> EventStream {
        EventStream {
            receiver: self.0.subscribe(),
            filter: target
                .filter(|t| !t.is_all())
                .map(|t| (t.0.clone(), Vec::new())),
        }
    }
}

/// One subscriber's events, oldest first.
#[derive(Debug)]
pub struct EventStream {
    receiver: broadcast::Receiver<BusEvent>,
    /// The target's name, and the ids it was resolved to; `None` passes every event.
    filter: Option<(String, Vec<u32>)>,
}

impl EventStream {
    /// The ids the target was resolved to (from the supervisor's answer to `Command::Events`).
    pub fn resolved(&mut self, ids: Vec<u32>) {
        if let Some((_, resolved)) = &mut self.filter {
            *resolved = ids;
        }
    }

    /// The next event for this subscriber; a `lagged` record when it fell behind the bus (the
    /// bus never waits for anyone); `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<EventRecord> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => {
                    let wanted = match &self.filter {
                        None => true,
                        Some((name, ids)) => *event.app == **name || ids.contains(&event.id),
                    };
                    if wanted {
                        return Some(event.record());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => return Some(lagged(missed)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
