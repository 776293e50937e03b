//! Admission of connections to the HTTP endpoint and the control socket: at most a fixed number
//! are served at once, and at that cap a new connection closes the oldest one still waiting for
//! its request. So idle or slow clients, however many, can never lock out a probe or a `status`:
//! the newest connection always gets a place unless every one is busy answering a request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a new connection waits for the place of a connection it closed to end.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The places for connections of one listener.
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: Arc<Waiting>,
    /// Names the listener in log lines.
    listener: &'static str,
}

impl Admission {
    pub fn new(capacity: usize, listener: &'static str) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(capacity)),
            waiting: Arc::new(Waiting::default()),
            listener,
        }
    }

    /// A place for a new connection: a free one, or that of the oldest connection still waiting
    /// for its request, which is closed. `None` when every connection is busy answering (the new
    /// one is then closed).
    pub async fn admit(&self) -> Option<Admitted> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let Some(oldest) = self.waiting.take_oldest() else {
                    tracing::debug!(
                        "{}: every connection is busy answering; closing a new one",
                        self.listener
                    );
                    return None;
                };
                tracing::debug!(
                    "{}: too many connections; closing the oldest idle one",
                    self.listener
                );
                oldest.cancel();
                match tokio::time::timeout(EVICTION_WAIT, self.slots.clone().acquire_owned()).await
                {
                    Ok(Ok(slot)) => slot,
                    _ => return None,
                }
            }
        };
        Some(Admitted {
            registration: Registration::new(self.waiting.clone()),
            _slot: slot,
        })
    }
}

/// A connection's place; dropping it frees the place.
pub struct Admitted {
    registration: Registration,
    _slot: OwnedSemaphorePermit,
}

impl Admitted {
    /// Resolves once the connection was closed to make room for a newer one (only while it still
    /// waits for its request).
    pub async fn evicted(&self) {
        self.registration.closed.cancelled().await;
    }

    /// The request is in: from now on the connection is busy and is not closed for others.
    pub fn received(&self) {
        self.registration.remove();
    }
}

/// Connections still waiting for their request, by arrival: the first is the oldest.
#[derive(Default)]
struct Waiting {
    list: Mutex<WaitingList>,
}

#[derive(Default)]
struct WaitingList {
    next: u64,
    by_arrival: BTreeMap<u64, CancellationToken>,
}

impl Waiting {
    fn list(&self) -> MutexGuard<'_, WaitingList> {
        // The list stays consistent whatever panicked while holding it: each step is one insert
        // or remove.
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_oldest(&self) -> Option<CancellationToken> {
        self.list().by_arrival.pop_first().map(|(_, token)| token)
    }
}

/// One connection's entry in [`Waiting`], removed when its request is in or when it ends.
struct Registration {
    waiting: Arc<Waiting>,
    id: u64,
    closed: CancellationToken,
}

impl Registration {
    fn new(waiting: Arc<Waiting>) -> Self {
        let closed = CancellationToken::new();
        let id = {
            let mut list = waiting.list();
            let id = list.next;
            list.next = list.next.wrapping_add(1);
            list.by_arrival.insert(id, closed.clone());
            id
        };
        Self {
            waiting,
            id,
            closed,
        }
    }

    fn remove(&self) {
        self.waiting.list().by_arrival.remove(&self.id);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_oldest_waiting_connection_makes_room() {
        let admission = Admission::new(2, "test");
        let first = admission.admit().await.expect("a free place");
        let second = admission.admit().await.expect("a free place");
        second.received();
        // Full: the third closes the first (still waiting), not the second (busy).
        let third = tokio::spawn(async move { admission.admit().await.is_some() });
        tokio::time::timeout(Duration::from_secs(5), first.evicted())
            .await
            .expect("the oldest waiting connection was closed");
        drop(first);
        assert!(third.await.expect("join"));
        drop(second);
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_a_new_one_is_closed() {
        let admission = Admission::new(1, "test");
        let busy = admission.admit().await.expect("a free place");
        busy.received();
        assert!(admission.admit().await.is_none());
    }
}
