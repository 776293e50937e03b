//! The control socket's server side: one versioned request per connection from a client of the
//! same user, handed to the supervisor actor, whose answer is written back.

use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use nodeguard_proto::control::Request;
use nodeguard_proto::control::{Command, Outcome, Response};
use nodeguard_proto::{decode_payload, peek_version, MAX_CONTROL_FRAME, PROTOCOL_VERSION};

use crate::io::framed::{next_connection, write_message, FrameError, FrameReader};
use crate::io::platform;
use crate::supervisor::api::ControlRequest;

/// A client must send its request within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves control requests until `cancel` fires. Connection tasks are tracked so shutdown can let
/// the last answers (such as the one to `kill`) reach their clients.
pub async fn serve(
    listener: UnixListener,
    supervisor: mpsc::Sender<ControlRequest>,
    connections: TaskTracker,
    cancel: CancellationToken,
) {
    while let Some(stream) = next_connection(&listener, &cancel, "control socket").await {
        let supervisor = supervisor.clone();
        connections.spawn(async move {
            if let Err(error) = answer(stream, &supervisor).await {
                tracing::debug!(%error, "control socket: request failed");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    supervisor: &mpsc::Sender<ControlRequest>,
) -> Result<(), FrameError> {
    let uid = platform::peer_uid(&stream)?;
    if uid != platform::current_uid() {
        tracing::warn!(uid, "control socket: refused a client of another user");
        return Ok(());
    }
    let (read_half, mut writer) = stream.into_split();
    let mut reader = FrameReader::new(read_half, MAX_CONTROL_FRAME);
    let Ok(payload) = tokio::time::timeout(REQUEST_TIMEOUT, reader.next_payload()).await else {
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
            Ok(request) => ask(supervisor, request.command).await,
            Err(error) => Outcome::Error {
                message: format!("bad request: {error}"),
            },
        },
    };
    let response = Response {
        version: PROTOCOL_VERSION,
        outcome,
    };
    write_message(&mut writer, &response, MAX_CONTROL_FRAME).await
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
