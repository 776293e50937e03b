//! The event bus as the dashboard's streams see it (io/dashboard.rs cannot name the bus): each
//! stream subscribes when it connects and gets every event as one JSON object
//! `{app, id, instance, at, kind, ...}`, the `EventRecord` that `nodeguard events --json` prints.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::io::dashboard::{EventStream, Next, Subscribe};
use crate::supervisor::events::{BusEvent, EventBus};

/// A [`Subscribe`] for the dashboard: nothing listens until a stream connects.
pub fn subscriber(bus: EventBus) -> Subscribe {
    Arc::new(move || Box::new(BusStream(bus.subscribe())) as Box<dyn EventStream>)
}

struct BusStream(broadcast::Receiver<BusEvent>);

impl EventStream for BusStream {
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Next> + Send + '_>> {
        Box::pin(async move {
            match self.0.recv().await {
                Ok(event) => Next::Event(to_json(&event)),
                Err(RecvError::Lagged(missed)) => Next::Lagged(missed),
                Err(RecvError::Closed) => Next::Closed,
            }
        })
    }
}

/// One bus event as a JSON object: the same object `nodeguard events --json` prints.
pub fn to_json(event: &BusEvent) -> String {
    serde_json::to_string(&event.record()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::events::Happening;
    use nodeguard_proto::control::AppState;

    #[test]
    fn events_become_one_json_object() {
        let event = BusEvent {
            app: Arc::from("api"),
            id: 3,
            instance: None,
            at: "2026-11-29T23:00:00Z".to_string(),
            what: Happening::State {
                state: AppState::Running,
                pid: Some(42),
                restarts: 1,
                hangs: 0,
                finished: None,
            },
        };
        let value: serde_json::Value = serde_json::from_str(&to_json(&event)).unwrap();
        assert_eq!(value["app"], "api");
        assert_eq!(value["kind"], "state");
        assert_eq!(value["state"], "running");
        assert_eq!(value["pid"], 42);
    }
}
