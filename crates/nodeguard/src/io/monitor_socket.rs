//! The worker socket: accepts monitor connections, checks the peer's user and the per-spawn token,
//! and hands each proven connection to the worker task that spawned that process.
//!
//! Garbage, an oversize frame, a wrong version or token, or a silent client only cost that
//! connection: it is refused or dropped and the acceptor carries on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use nodeguard_proto::worker::{SupervisorMessage, WorkerMessage};
use nodeguard_proto::{decode_payload, peek_version, MAX_WORKER_FRAME, PROTOCOL_VERSION};

use crate::io::framed::{next_connection, write_message, FrameError, FrameReader};
use crate::platform;

/// A client must send its hello within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A proven monitor connection, delivered to its worker task.
pub struct MonitorConnection {
    /// Which spawn of the app this connection belongs to.
    pub generation: u64,
    /// The connected process, as the kernel names it (Linux), else as its hello says. Under a
    /// command (`npm start`) this is the app's Node process, a descendant of the spawned one.
    pub pid: u32,
    pub reader: FrameReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    /// The monitor captures the JS stack itself on request (its hello said so).
    pub stack_capture: bool,
}

struct Registration {
    generation: u64,
    deliver: mpsc::Sender<Box<MonitorConnection>>,
}

/// Tokens of spawned processes that have not connected yet. Each token is good for one connection.
#[derive(Default)]
pub struct TokenRegistry {
    pending: Mutex<HashMap<String, Registration>>,
}

impl TokenRegistry {
    pub fn register(
        &self,
        token: String,
        generation: u64,
        deliver: mpsc::Sender<Box<MonitorConnection>>,
    ) {
        self.lock().insert(
            token,
            Registration {
                generation,
                deliver,
            },
        );
    }

    pub fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    fn claim(&self, token: &str) -> Option<Registration> {
        self.lock().remove(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-updated.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes a fresh per-spawn secret: 128 random bits, hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Accepts worker connections from processes of user `uid` until `cancel` fires.
pub async fn serve(
    listener: UnixListener,
    registry: Arc<TokenRegistry>,
    cancel: CancellationToken,
    uid: u32,
) {
    while let Some(stream) = next_connection(&listener, &cancel, "worker socket").await {
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(reason) = handshake(stream, &registry, uid).await {
                tracing::warn!("worker socket: dropped a connection: {reason}");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("peer belongs to uid {0}, not the one this socket serves")]
    ForeignUser(u32),
    #[error("cannot read peer credentials: {0}")]
    Credentials(std::io::Error),
    #[error("no hello within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("closed before saying hello")]
    Closed,
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("first message was not a hello")]
    NotHello,
}

async fn handshake(
    stream: UnixStream,
    registry: &TokenRegistry,
    allowed_uid: u32,
) -> Result<(), HandshakeError> {
    let uid = platform::peer_uid(&stream).map_err(HandshakeError::Credentials)?;
    let peer_pid = platform::peer_pid(&stream);
    if uid != allowed_uid {
        return Err(HandshakeError::ForeignUser(uid));
    }
    let (read_half, mut writer) = stream.into_split();
    let mut reader = FrameReader::new(read_half, MAX_WORKER_FRAME);
    let payload = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next_payload())
        .await
        .map_err(|_| HandshakeError::Timeout)??
        .ok_or(HandshakeError::Closed)?;
    if let Some(version) = peek_version(&payload).filter(|v| *v != PROTOCOL_VERSION) {
        let reason = format!(
            "monitor speaks protocol version {version}, this supervisor speaks {PROTOCOL_VERSION}; \
             use matching nodeguard and nodeguard-monitor versions"
        );
        return Err(refuse(&mut writer, reason).await);
    }
    let WorkerMessage::Hello {
        token,
        pid,
        stack_capture,
        ..
    } = decode_payload(&payload).map_err(FrameError::from)?
    else {
        return Err(HandshakeError::NotHello);
    };
    let Some(registration) = registry.claim(&token) else {
        return Err(refuse(
            &mut writer,
            format!("unknown or already used token (pid {pid})"),
        )
        .await);
    };
    let welcome = SupervisorMessage::Welcome {
        version: PROTOCOL_VERSION,
    };
    write_message(&mut writer, &welcome, MAX_WORKER_FRAME).await?;
    let connection = MonitorConnection {
        generation: registration.generation,
        pid: peer_pid.unwrap_or(pid),
        reader,
        writer,
        stack_capture,
    };
    // The worker may have exited meanwhile; then the connection just closes.
    let _ = registration.deliver.send(Box::new(connection)).await;
    Ok(())
}

async fn refuse(writer: &mut OwnedWriteHalf, reason: String) -> HandshakeError {
    let refused = SupervisorMessage::Refused {
        reason: reason.clone(),
    };
    let _ = write_message(writer, &refused, MAX_WORKER_FRAME).await;
    HandshakeError::Refused(reason)
}
