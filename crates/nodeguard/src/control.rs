//! The control socket's server side: one versioned request per connection from a client of the
//! same user, answered from the workers' published snapshots without touching their tasks.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use nodeguard_proto::control::{Command, Outcome, Request, Response};
use nodeguard_proto::{decode_payload, peek_version, MAX_CONTROL_FRAME, PROTOCOL_VERSION};

use crate::framed::{write_message, FrameError, FrameReader};
use crate::platform;
use crate::worker::WorkerHandle;

/// A client must send its request within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The apps the control socket reports on.
pub struct AppTable {
    pub apps: Vec<WorkerHandle>,
}

impl AppTable {
    fn status(&self) -> Outcome {
        let now = Instant::now();
        Outcome::Status {
            apps: self
                .apps
                .iter()
                .map(|app| app.snapshot.borrow().to_status(&app.spec, now))
                .collect(),
        }
    }
}

/// Serves control requests until `cancel` fires.
pub async fn serve(listener: UnixListener, table: Arc<AppTable>, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let table = table.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &table).await {
                tracing::debug!(%error, "control socket: request failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, table: &AppTable) -> Result<(), FrameError> {
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
            Ok(request) => match request.command {
                Command::Status => table.status(),
            },
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
