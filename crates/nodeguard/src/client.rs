//! The control socket's client side, used by `nodeguard status` and the other verbs.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;

use nodeguard_proto::control::{Command, Outcome, Request, Response};
use nodeguard_proto::{peek_version, MAX_CONTROL_FRAME, PROTOCOL_VERSION};

use crate::framed::{write_message, FrameError, FrameReader};
use crate::home::HomePaths;

/// How long a client waits for the supervisor's answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no nodeguard supervisor is running on {}", .0.display())]
    NotRunning(PathBuf),
    #[error("cannot connect to {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("the supervisor did not answer within {RESPONSE_TIMEOUT:?}")]
    Timeout,
    #[error("the supervisor closed the connection without answering")]
    NoAnswer,
    #[error("the supervisor speaks protocol version {theirs}, this client {PROTOCOL_VERSION}; use the nodeguard binary that started it")]
    Version { theirs: u32 },
    #[error("talking to the supervisor: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Refused(String),
}

/// Sends one command and returns the supervisor's outcome (an `Outcome::Error` becomes `Err`).
pub async fn request(paths: &HomePaths, command: Command) -> Result<Outcome, ClientError> {
    let path = &paths.control_socket;
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(paths.home.clone()))
        }
        Err(source) => {
            return Err(ClientError::Connect {
                path: path.clone(),
                source,
            })
        }
    };
    let (read_half, mut writer) = stream.into_split();
    let request = Request {
        version: PROTOCOL_VERSION,
        command,
    };
    write_message(&mut writer, &request, MAX_CONTROL_FRAME).await?;
    let mut reader = FrameReader::new(read_half, MAX_CONTROL_FRAME);
    let payload = tokio::time::timeout(RESPONSE_TIMEOUT, reader.next_payload())
        .await
        .map_err(|_| ClientError::Timeout)??
        .ok_or(ClientError::NoAnswer)?;
    if let Some(theirs) = peek_version(&payload).filter(|v| *v != PROTOCOL_VERSION) {
        return Err(ClientError::Version { theirs });
    }
    let response: Response = nodeguard_proto::decode_payload(&payload).map_err(FrameError::from)?;
    match response.outcome {
        Outcome::Error { message } => Err(ClientError::Refused(message)),
        outcome => Ok(outcome),
    }
}
