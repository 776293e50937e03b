//! The control socket's client side, used by `nodeguard status` and the other verbs.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;

use nodeguard_proto::control::{Command, EventRecord, Outcome, Request, Response};
use nodeguard_proto::{peek_version, MAX_CONTROL_FRAME, PROTOCOL_VERSION};

use crate::io::framed::{write_message, FrameError, FrameReader};
use crate::io::home::HomePaths;

/// How long a client waits for the answer to a query.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for a command that starts or stops processes to take effect.
pub const EFFECT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `start` waits for a daemon it launched to answer.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The daemon's own log (its stderr and stdout) inside the home directory.
pub const DAEMON_LOG: &str = "daemon.log";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no nodeguard supervisor is running on {}", .0.display())]
    NotRunning(PathBuf),
    #[error("cannot connect to {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the daemon did not start: {0}")]
    DaemonFailed(String),
    #[error("the supervisor closed the connection without answering")]
    NoAnswer,
    #[error("the supervisor speaks protocol version {theirs}, this client {PROTOCOL_VERSION}; use the nodeguard binary that started it")]
    Version { theirs: u32 },
    #[error("talking to the supervisor: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Home(#[from] crate::io::home::HomeError),
}

/// Sends one command and returns the supervisor's outcome (an `Outcome::Error` becomes `Err`).
pub async fn request(paths: &HomePaths, command: Command) -> Result<Outcome, ClientError> {
    let payload = request_payload(paths, command).await?;
    match decode_response(&payload)? {
        // A stream's event where none was asked for: not this client's business.
        Outcome::Event { .. } => Err(ClientError::NoAnswer),
        outcome => Ok(outcome),
    }
}

/// Sends one command and returns the answer's payload undecoded (a `Response` in JSON), for a
/// caller that prints part of it as it is (`status --json` of thousands of apps); decode it with
/// [`decode_response`].
pub async fn request_payload(paths: &HomePaths, command: Command) -> Result<Vec<u8>, ClientError> {
    let command_kind = match command {
        Command::Status | Command::Ping => CommandKind::Query,
        // A start of thousands of apps takes as long as it takes: the client waits for its
        // answer as long as the supervisor holds the connection open, rather than give up after
        // a fixed time while the supervisor carries on.
        Command::Start { .. } | Command::Resurrect => CommandKind::Unbounded,
        _ => CommandKind::Effect,
    };
    let mut connection = send(paths, command).await?;
    let reader = &mut connection.reader;
    let timeout = match command_kind {
        CommandKind::Query => Some(RESPONSE_TIMEOUT),
        CommandKind::Effect => Some(EFFECT_TIMEOUT),
        CommandKind::Unbounded => None,
    };
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, reader.next_payload())
            .await
            .map_err(|_| ClientError::Timeout(timeout))??,
        None => reader.next_payload().await?,
    }
    .ok_or(ClientError::NoAnswer)
}

/// Sends one command whose answer may stream (`Command::Events`, or a command reporting
/// progress): `on_event` gets each `Outcome::Event` as it comes, and the final outcome is
/// returned (an `Outcome::Error` becomes `Err`). No deadline: a stream lasts as long as the
/// supervisor sends. A supervisor that closes the connection without a final outcome (it went
/// away) gives [`ClientError::NoAnswer`] (see [`cut_off`]). `on_event` returning `false` ends the
/// stream early, closing the connection, with [`ClientError::NoAnswer`].
pub async fn request_stream(
    paths: &HomePaths,
    command: Command,
    mut on_event: impl FnMut(EventRecord) -> bool,
) -> Result<Outcome, ClientError> {
    let mut connection = send(paths, command).await?;
    let reader = &mut connection.reader;
    loop {
        let payload = reader.next_payload().await?.ok_or(ClientError::NoAnswer)?;
        match decode_response(&payload)? {
            Outcome::Event { event } => {
                if !on_event(event) {
                    return Err(ClientError::NoAnswer);
                }
            }
            outcome => return Ok(outcome),
        }
    }
}

/// One response's outcome, refusing another protocol version; an `Outcome::Error` becomes `Err`.
pub fn decode_response(payload: &[u8]) -> Result<Outcome, ClientError> {
    if let Some(theirs) = peek_version(payload).filter(|v| *v != PROTOCOL_VERSION) {
        return Err(ClientError::Version { theirs });
    }
    let response: Response = nodeguard_proto::decode_payload(payload).map_err(FrameError::from)?;
    match response.outcome {
        Outcome::Error { message } => Err(ClientError::Refused(message)),
        outcome => Ok(outcome),
    }
}

/// Connects to the supervisor and sends `command`; returns the reader for its answer.
async fn send(paths: &HomePaths, command: Command) -> Result<Connection, ClientError> {
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
    Ok(Connection {
        reader: FrameReader::new(read_half, MAX_CONTROL_FRAME),
        _writer: writer,
    })
}

/// A request's connection: the reader for its answer, and the write half kept open until the
/// answer is read (dropping it shuts our side down, which a stream's server reads as the client
/// going away).
struct Connection {
    reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
    _writer: tokio::net::unix::OwnedWriteHalf,
}

enum CommandKind {
    Query,
    Effect,
    /// Answered once every app it starts runs (or failed to), however long that takes.
    Unbounded,
}

/// Makes sure a supervisor runs on `paths.home`: pings it, and if none answers, launches
/// `nodeguard daemon` detached (its output going to `daemon.log`) and waits until it answers.
/// Returns whether it launched one.
pub async fn ensure_daemon(paths: &HomePaths) -> Result<bool, ClientError> {
    // Before talking to whatever listens there: a home another user owns or may write to is
    // refused, as the daemon itself would refuse it.
    crate::io::home::ensure_private_home(&paths.home)?;
    let deadline = tokio::time::Instant::now() + DAEMON_START_TIMEOUT;
    loop {
        match request(paths, Command::Ping).await {
            Ok(_) => return Ok(false),
            Err(ClientError::NotRunning(_)) => break,
            // A supervisor that was just killed: its socket stays open until its last thread is
            // gone, and cuts our connection then. Ask again until it has gone.
            Err(error) if cut_off(&error) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(DAEMON_POLL).await;
            }
            Err(error) => return Err(error),
        }
    }
    let failed =
        |what: &str, error: io::Error| ClientError::DaemonFailed(format!("{what}: {error}"));
    let log_path = paths.home.join(DAEMON_LOG);
    let log = crate::platform::open_private_file(&log_path, true)
        .map_err(|e| ClientError::DaemonFailed(format!("cannot open the daemon log: {e}")))?;
    let log_err = log
        .try_clone()
        .map_err(|e| failed("cannot open the daemon log", e))?;
    let exe = std::env::current_exe().map_err(|e| failed("cannot find the nodeguard binary", e))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("daemon")
        .arg("--home")
        .arg(&paths.home)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
    crate::platform::detach(&mut command);
    let mut daemon = command.spawn().map_err(|e| failed("cannot launch it", e))?;
    let deadline = tokio::time::Instant::now() + DAEMON_START_TIMEOUT;
    loop {
        match request(paths, Command::Ping).await {
            Ok(_) => return Ok(true),
            Err(ClientError::NotRunning(_)) => {}
            Err(error) => return Err(error),
        }
        if let Ok(Some(status)) = daemon.try_wait() {
            // Another `start` may have launched one at the same moment and won the lock.
            if request(paths, Command::Ping).await.is_ok() {
                return Ok(false);
            }
            return Err(ClientError::DaemonFailed(format!(
                "it exited ({status}); see {}",
                log_path.display()
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClientError::DaemonFailed(format!(
                "no answer within {DAEMON_START_TIMEOUT:?}; see {}",
                log_path.display()
            )));
        }
        tokio::time::sleep(DAEMON_POLL).await;
    }
}

/// Whether the supervisor cut the connection without answering (it was dying).
pub fn cut_off(error: &ClientError) -> bool {
    match error {
        ClientError::NoAnswer => true,
        ClientError::Frame(FrameError::Io(error)) => matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// Waits until the supervisor process `pid` has exited (after `kill`): its socket going away is
/// not enough, since a supervisor stuck after closing it would still hold the home's lock.
pub async fn wait_until_exited(pid: u32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if !crate::platform::process_alive(pid) {
            return true;
        }
        tokio::time::sleep(DAEMON_POLL).await;
    }
    false
}

/// Interval between checks while a daemon starts or stops.
const DAEMON_POLL: Duration = Duration::from_millis(20);
