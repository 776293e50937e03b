//! The control socket's server side: one versioned request per connection from a client of the
//! same user, handed to the supervisor actor, whose answer is written back.
//!
//! Connections and the memory they hold are bounded: at most [`MAX_CONNECTIONS`] are served at
//! once (a new one beyond them closes the oldest still sending its request, so idle clients can
//! never lock out `status`), and the bytes of partly sent requests are bounded in all (each may
//! hold [`FREE_BYTES_PER_CONNECTION`]; beyond that they share [`BYTES_IN_FLIGHT`], and a
//! connection that would exceed it is closed).

use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use nodeguard_proto::control::Request;
use nodeguard_proto::control::{Command, Outcome, Response};
use nodeguard_proto::{decode_payload, peek_version, MAX_CONTROL_FRAME, PROTOCOL_VERSION};

use std::sync::Arc;

use crate::io::admission::{Admission, Admitted};
use crate::io::framed::{next_connection, write_message, ByteBudget, FrameError, FrameReader};
use crate::platform;
use crate::supervisor::api::{ControlRequest, EventFeed};

/// A client must send its request within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Bytes of its unfinished request every connection may hold (a `status` or `stop` is far less).
pub const FREE_BYTES_PER_CONNECTION: usize = 64 * 1024;
/// Bytes of unfinished requests, beyond each connection's free ones, held by all connections at
/// once: one of the largest requests (a `start` of 10,000 apps), or four `start`s of a thousand
/// apps with a large environment, fit.
pub const BYTES_IN_FLIGHT: usize = MAX_CONTROL_FRAME;

/// Serves control requests until `cancel` fires. Connection tasks are tracked so shutdown can let
/// the last answers (such as the one to `kill`) reach their clients.
pub async fn serve(
    listener: UnixListener,
    supervisor: mpsc::Sender<ControlRequest>,
    feed: EventFeed,
    connections: TaskTracker,
    cancel: CancellationToken,
) {
    let admission = Admission::new(MAX_CONNECTIONS, "control socket");
    let budget = Arc::new(ByteBudget::new(BYTES_IN_FLIGHT, FREE_BYTES_PER_CONNECTION));
    while let Some(stream) = next_connection(&listener, &cancel, "control socket").await {
        let Some(admitted) = admission.admit().await else {
            continue;
        };
        let supervisor = supervisor.clone();
        let budget = budget.clone();
        let (feed, cancel) = (feed.clone(), cancel.clone());
        connections.spawn(async move {
            let streams = Streams { feed, cancel };
            match answer(stream, &supervisor, &admitted, budget, &streams).await {
                Err(FrameError::OverBudget) => {
                    tracing::warn!("control socket: too many bytes of unfinished requests at once; closed a connection");
                }
                Err(error) => tracing::debug!(%error, "control socket: request failed"),
                Ok(()) => {}
            }
            drop(admitted);
        });
    }
}

async fn answer(
    stream: UnixStream,
    supervisor: &mpsc::Sender<ControlRequest>,
    admitted: &Admitted,
    budget: Arc<ByteBudget>,
    streams: &Streams,
) -> Result<(), FrameError> {
    let uid = platform::peer_uid(&stream)?;
    if uid != platform::current_uid() {
        tracing::warn!(uid, "control socket: refused a client of another user");
        return Ok(());
    }
    let (read_half, mut writer) = stream.into_split();
    let mut reader = FrameReader::with_budget(read_half, MAX_CONTROL_FRAME, budget);
    let payload = tokio::select! {
        biased;
        // Closed to make room for a newer connection.
        () = admitted.evicted() => return Ok(()),
        payload = tokio::time::timeout(REQUEST_TIMEOUT, reader.next_payload()) => payload,
    };
    // The request is in (or the client gave up): this connection is no longer idle.
    admitted.received();
    // Bytes after the request: a client that has more to say than one request is not a stream's.
    let sent_more = reader.buffered() > 0;
    let mut read_half = reader.into_inner();
    let Ok(payload) = payload else {
        return Ok(());
    };
    let Some(payload) = payload? else {
        return Ok(());
    };
    let outcome = match peek_version(&payload) {
        Some(version) if version != PROTOCOL_VERSION => Outcome::Error {
            message: format!(
                "this client speaks protocol version {version} but the supervisor speaks \
                 {PROTOCOL_VERSION}; use the nodeguard binary that started it"
            ),
        },
        _ => match decode_payload::<Request>(&payload) {
            Ok(Request {
                command: Command::Events { target },
                ..
            }) => {
                // Subscribed before asking, so nothing between the answer and the first event
                // is missed.
                let mut events = streams.feed.subscribe(target.as_ref());
                match ask(supervisor, Command::Events { target }).await {
                    Outcome::Done { .. } if sent_more => return Ok(()),
                    Outcome::Done { apps } => {
                        events.resolved(apps.iter().map(|app| app.id).collect());
                        return stream_events(events, &mut read_half, &mut writer, streams).await;
                    }
                    outcome => outcome,
                }
            }
            Ok(request) => ask(supervisor, request.command).await,
            Err(error) => Outcome::Error {
                message: format!("bad request: {error}"),
            },
        },
    };
    let many = answers_many(&outcome);
    let response = Response {
        version: PROTOCOL_VERSION,
        outcome,
    };
    let written = write_message(&mut writer, &response, MAX_CONTROL_FRAME).await;
    drop(response);
    if many {
        // The rows and the frame of an answer about thousands of apps (a listing, the end of a
        // start storm) were freed among live allocations: their pages go back to the kernel.
        platform::memory::release_free_memory();
    }
    written
}

/// An answer this many apps long frees enough at once to be worth a [`platform::memory::release_free_memory`].
const RELEASE_AFTER_APPS: usize = 256;

fn answers_many(outcome: &Outcome) -> bool {
    let apps = match outcome {
        Outcome::Status { apps } | Outcome::Done { apps } | Outcome::Reloaded { apps, .. } => {
            apps.len()
        }
        Outcome::Described { apps } => apps.len(),
        _ => 0,
    };
    apps >= RELEASE_AFTER_APPS
}

/// What a connection needs to stream events.
struct Streams {
    feed: EventFeed,
    /// Fires when the supervisor goes away: streams end (the client sees the connection close).
    cancel: CancellationToken,
}

/// Writes one `Outcome::Event` frame per event until the client closes its end (or sends
/// anything more), a write fails, or the supervisor goes away. A client that reads slowly only
/// holds up its own stream: the bus never waits, and the stream gets a `lagged` event instead of
/// what it missed.
async fn stream_events(
    mut events: crate::supervisor::api::EventStream,
    read_half: &mut tokio::net::unix::OwnedReadHalf,
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    streams: &Streams,
) -> Result<(), FrameError> {
    use tokio::io::AsyncReadExt;
    let mut scratch = [0u8; 64];
    loop {
        let event = tokio::select! {
            biased;
            () = streams.cancel.cancelled() => return Ok(()),
            // End of stream, an error, or bytes no stream expects: the client is done.
            _ = read_half.read(&mut scratch) => return Ok(()),
            event = events.next() => event,
        };
        let Some(event) = event else {
            return Ok(());
        };
        let response = Response {
            version: PROTOCOL_VERSION,
            outcome: Outcome::Event { event },
        };
        tokio::select! {
            biased;
            () = streams.cancel.cancelled() => return Ok(()),
            _ = read_half.read(&mut scratch) => return Ok(()),
            written = write_message(writer, &response, MAX_CONTROL_FRAME) => written?,
        }
    }
}

/// Hands a command to the supervisor actor and waits for its outcome.
async fn ask(supervisor: &mpsc::Sender<ControlRequest>, command: Command) -> Outcome {
    let (reply, answer) = oneshot::channel();
    if supervisor
        .send(ControlRequest { command, reply })
        .await
        .is_err()
    {
        return Outcome::Error {
            message: "the supervisor is shutting down".into(),
        };
    }
    answer.await.unwrap_or_else(|_| Outcome::Error {
        message: "the supervisor is shutting down".into(),
    })
}
