//! The monitor's side of the worker socket in plain Rust: the handshake, the reader loop that hands
//! pings to JS with at most one in flight, writing pongs, and answering probes.
//!
//! No Node-API in here, so it is unit-tested with `cargo test` against a socket in a temp dir; the
//! `#[napi]` shims in `lib.rs` plug a threadsafe function in as the [`PingSink`].
//!
//! Threads and ownership: the reader thread owns a [`Connection`] and blocks in `read`. Each ping
//! it lets through becomes a [`PendingPing`] that travels into JS; whoever answers it (the JS
//! thread) writes the pong through the same stream (`&Stream` is `Read + Write`; writes are
//! serialised by a mutex). Dropping a `PendingPing`, answered or not, clears the in-flight flag, so
//! no path (JS threw, the call could not be queued, the environment is shutting down) can leave the
//! monitor deaf to later pings.
//!
//! Probes are the exception to "answered from JS": the reader thread answers them itself, at once,
//! saying which ping (if any) is waiting for the JS thread and since when. That is the monitor's own
//! view of a silence: a ping stuck in JS means a blocked loop; no ping waiting means the pings never
//! arrived (the supervisor, not the app, was stalled).
//!
//! Shared sockets (cluster mode without `--listen`): [`Sender::share`] asks for an address and
//! registers a reply; the reader thread reads with `recvmsg`, so a listening socket the
//! supervisor attaches to its `Shared` answer (SCM_RIGHTS) is kept (close-on-exec) and handed to
//! that reply. Descriptors arrive in the order of the answers that carry them.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use interprocess::local_socket::{prelude::*, ConnectOptions, GenericFilePath, Stream};
use interprocess::ConnectWaitMode;
use nodeguard_proto::worker::{
    LoopDelay, MemoryUsage, ProfileKind, ShareError, SupervisorMessage, WorkerMessage,
};
use nodeguard_proto::{
    decode_payload, encode_frame, FrameDecoder, ProtoError, MAX_WORKER_FRAME, PROTOCOL_VERSION,
};

/// How long connecting, sending `Hello` and waiting for `Welcome`/`Refused` may take in total.
/// Generous on purpose: a supervisor that starts a hundred apps at once on two cores shares the
/// CPU with a hundred booting Node processes and was measured answering a hello 3.2 s late; a
/// monitor that gave up then would leave its app without hang detection for good. A supervisor
/// that is gone fails the connect at once, so only a live but busy one is waited for.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a pong write may block the JS thread. A pong is a few hundred bytes, so a write only
/// blocks when the supervisor has stopped reading for a long while; then the connection is marked
/// broken and no more pongs are sent (the supervisor sees misses) rather than stalling the app.
pub const PONG_SEND_TIMEOUT: Duration = Duration::from_millis(250);

/// Longest a profile's chunk write may wait for the supervisor to read (it writes each chunk
/// to a file as it comes). Past it the connection is marked broken, as for a pong.
pub const PROFILE_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;

/// Why [`connect`] failed. The messages are one line each; `start()` throws them to JS.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the supervisor socket {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("the supervisor refused this process: {reason}")]
    Refused { reason: String },
    #[error("the supervisor did not answer the hello within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the supervisor closed the connection during the handshake")]
    Closed,
    #[error("{doing} the supervisor socket: {source}")]
    Io {
        doing: &'static str,
        source: io::Error,
    },
    #[error("bad handshake from the supervisor: {0}")]
    Proto(#[from] ProtoError),
}

/// Why [`Connection::run`] returned: the connection to the supervisor is over.
#[derive(Debug)]
pub enum Ended {
    /// The supervisor closed its end (normally: it exited or was killed).
    Eof,
    /// Reading failed (e.g. connection reset).
    ReadError(io::Error),
    /// The supervisor sent a frame over the size limit; the stream cannot be resynchronised.
    Protocol(ProtoError),
}

/// Where the reader thread delivers the pings it lets through.
pub trait PingSink {
    /// Hands `ping` over to be answered from the JS thread. A sink that cannot queue it just drops
    /// it: the in-flight flag is cleared on drop and the next ping is tried afresh.
    fn deliver(&mut self, ping: PendingPing);

    /// The supervisor asked for a graceful shutdown: raise it in JS. Ignored by default.
    fn shutdown(&mut self) {}

    /// The supervisor asked for the JS thread's stack (a confirmed hang): capture it on the JS
    /// thread and answer through `reply`. Dropped (no answer) by default.
    fn capture_stack(&mut self, _reply: StackReply) {}

    /// The supervisor asked for a profile (`kind`, over `duration_ms` for a CPU profile) with
    /// this `id`: take it on the JS thread and stream it back with [`Sender::profile_chunk`] and
    /// [`Sender::profile_done`]. Ignored by default (the supervisor's wait is bounded).
    fn profile(&mut self, _id: u64, _kind: ProfileKind, _duration_ms: u64) {}
}

/// The answer to one stack request; send it from the JS thread with the frames captured there.
#[derive(Debug)]
pub struct StackReply {
    seq: u64,
    link: Arc<Link>,
}

impl StackReply {
    /// Writes the frames (innermost first) to the supervisor.
    pub fn send(self, frames: Vec<String>) -> io::Result<()> {
        self.link.send(&WorkerMessage::Stack {
            seq: self.seq,
            frames,
        })
    }
}

/// State shared between the reader thread and whoever answers pings.
#[derive(Debug)]
struct Link {
    stream: Stream,
    /// Serialises whole-frame writes.
    write_lock: Mutex<()>,
    /// A ping has been handed to JS and not yet answered or dropped.
    in_flight: AtomicBool,
    /// The ping handed to JS and when the reader received it; `None` once answered or dropped.
    queued: Mutex<Option<(u64, Instant)>>,
    /// The latest ping received (0: none yet).
    last_ping_seq: AtomicU64,
    /// A write failed or timed out, possibly mid-frame: never write again on this stream.
    broken: AtomicBool,
    /// Share requests waiting for their answer, by id.
    shares: PendingShares,
    /// The id of the next share request.
    next_share: AtomicU64,
}

/// The answer to a share request: the listening socket, or why there is none.
#[cfg(unix)]
pub type ShareOutcome = Result<OwnedFd, ShareError>;
#[cfg(not(unix))]
pub type ShareOutcome = Result<(), ShareError>;

/// Called (on the reader thread) with the answer to one share request.
pub type ShareReply = Box<dyn FnOnce(ShareOutcome) + Send>;

/// Share requests waiting for their answer, by id.
#[derive(Default)]
struct PendingShares(Mutex<HashMap<u64, ShareReply>>);

impl std::fmt::Debug for PendingShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.lock().unwrap_or_else(PoisonError::into_inner).len();
        write!(f, "PendingShares({count})")
    }
}

impl Link {
    /// Writes a whole frame, waiting up to `patience` for a supervisor that reads slowly (the
    /// socket's own timeout is [`PONG_SEND_TIMEOUT`]; a timed-out `write` wrote nothing, so the
    /// frame is resumed where it stopped).
    fn send_patiently(&self, message: &WorkerMessage, patience: Duration) -> io::Result<()> {
        let frame = encode_frame(message, MAX_WORKER_FRAME).map_err(io::Error::other)?;
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write to the supervisor failed",
            ));
        }
        let deadline = Instant::now() + patience;
        let mut rest = &frame[..];
        while !rest.is_empty() {
            match (&self.stream).write(rest) {
                Ok(0) => {
                    self.broken.store(true, Ordering::Release);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
                Err(e) => {
                    self.broken.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn send(&self, message: &WorkerMessage) -> io::Result<()> {
        let frame = encode_frame(message, MAX_WORKER_FRAME).map_err(io::Error::other)?;
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write to the supervisor failed",
            ));
        }
        let result = (&self.stream).write_all(&frame);
        if result.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        result
    }
}

/// An established, welcomed connection, ready for [`Connection::run`].
#[derive(Debug)]
pub struct Connection {
    link: Arc<Link>,
    /// Holds any bytes that arrived right behind the `Welcome`.
    decoder: FrameDecoder,
    /// Descriptors received and not yet claimed by a `Shared` answer.
    #[cfg(unix)]
    received_fds: VecDeque<OwnedFd>,
}

/// Sends messages on the connection from any thread (whole frames, serialised with the pongs).
#[derive(Debug, Clone)]
pub struct Sender {
    link: Arc<Link>,
}

impl Sender {
    /// Tells the supervisor the app is ready for traffic.
    pub fn ready(&self) -> io::Result<()> {
        self.link.send(&WorkerMessage::Ready)
    }

    /// Asks the supervisor for the app's shared listening socket on `host:port`; `reply` gets
    /// it (or the error) on the reader thread. `host` is an IP address, or `None` for Node's
    /// default. A failed write is returned and `reply` is not called.
    pub fn share(&self, host: Option<String>, port: u32, reply: ShareReply) -> io::Result<()> {
        let id = self.link.next_share.fetch_add(1, Ordering::Relaxed);
        self.link.shares().insert(id, reply);
        let sent = self.link.send(&WorkerMessage::Share { id, host, port });
        if sent.is_err() {
            self.link.shares().remove(&id);
        }
        sent
    }

    /// Tells the supervisor (which owns other ports, `--listen`) that the app listened on `port`.
    pub fn listened_elsewhere(&self, port: u32) -> io::Result<()> {
        self.link.send(&WorkerMessage::ListenedElsewhere { port })
    }

    /// Sends the next part of profile `id` (at most
    /// [`PROFILE_CHUNK_UNITS`](nodeguard_proto::worker::PROFILE_CHUNK_UNITS) UTF-16 units).
    pub fn profile_chunk(&self, id: u64, data: String) -> io::Result<()> {
        self.link.send_patiently(
            &WorkerMessage::ProfileChunk { id, data },
            PROFILE_SEND_TIMEOUT,
        )
    }

    /// Ends profile `id`: complete, or `error` says why not.
    pub fn profile_done(
        &self,
        id: u64,
        error: Option<String>,
        hottest: Option<String>,
    ) -> io::Result<()> {
        self.link.send_patiently(
            &WorkerMessage::ProfileDone { id, error, hottest },
            PROFILE_SEND_TIMEOUT,
        )
    }
}

impl Link {
    fn shares(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ShareReply>> {
        self.shares.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A ping let through to JS. Answer it with [`PendingPing::answer`]; dropping it unanswered sends
/// nothing. Either way the next ping may then be delivered.
#[derive(Debug)]
pub struct PendingPing {
    seq: u64,
    received: Instant,
    link: Arc<Link>,
    /// The in-flight slot has been given back (it must be given back exactly once: a second
    /// release could free the slot of the *next* ping).
    released: bool,
}

impl PendingPing {
    /// Sequence number of the ping this stands for (later pings were coalesced into it).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How long ago the reader thread received this ping.
    pub fn queued(&self) -> Duration {
        self.received.elapsed()
    }

    /// Writes the pong. Call it on the JS thread, after JS ran: that is what the pong certifies.
    /// `queued_ms` is the time since the reader thread received the ping.
    /// `stack_on_sigint` says whether Node would print the JS stack on SIGINT right now.
    pub fn answer(
        mut self,
        memory: MemoryUsage,
        loop_delay: LoopDelay,
        stack_on_sigint: bool,
    ) -> io::Result<()> {
        let pong = WorkerMessage::Pong {
            seq: self.seq,
            memory,
            loop_delay,
            queued_ms: self.received.elapsed().as_secs_f64() * 1000.0,
            stack_on_sigint,
        };
        // Free the slot *before* writing: the supervisor may send its next ping the instant it
        // reads this pong, and that ping must not find the slot still taken (it would be dropped
        // and counted as a miss). Pongs stay in order: the next ping's answer runs on the same JS
        // thread, after this write.
        self.release();
        self.link.send(&pong)
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            *self
                .link
                .queued
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            self.link.in_flight.store(false, Ordering::Release);
        }
    }
}

impl Drop for PendingPing {
    fn drop(&mut self) {
        self.release();
    }
}

/// Connects to the supervisor socket at `path`, says `Hello` with `token`, `pid` and whether this
/// monitor can capture the JS stack itself (`stack_capture`), and waits for `Welcome` (returns the
/// connection) or `Refused` (returns the reason), all within `timeout`.
pub fn connect(
    path: &str,
    token: &str,
    pid: u32,
    timeout: Duration,
    stack_capture: bool,
) -> Result<Connection, ConnectError> {
    hello(path, token, pid, timeout, stack_capture)?.finish()
}

/// A connection whose `Hello` is sent and whose answer is still to be read: [`Handshake::finish`]
/// waits for it. Split from [`connect`] so that the answer can be read on the monitor's own thread
/// while the app's JS thread goes on (the preload does not wait for the supervisor to be
/// scheduled); its [`Handshake::sender`] may already queue messages, which the supervisor reads
/// after the hello.
#[derive(Debug)]
pub struct Handshake {
    connection: Connection,
    deadline: Instant,
    timeout: Duration,
}

/// Connects to the supervisor socket at `path` and sends `Hello` (see [`connect`]); the connect
/// and the write count against `timeout`, and so does the wait in [`Handshake::finish`].
pub fn hello(
    path: &str,
    token: &str,
    pid: u32,
    timeout: Duration,
    stack_capture: bool,
) -> Result<Handshake, ConnectError> {
    let deadline = Instant::now() + timeout;
    let connect_error = |source| ConnectError::Connect {
        path: path.to_owned(),
        source,
    };
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(connect_error)?;
    let stream = ConnectOptions::new()
        .name(name)
        .wait_mode(ConnectWaitMode::Timeout(timeout))
        .connect_sync()
        .map_err(connect_error)?;
    let io_error = |doing| move |source| ConnectError::Io { doing, source };

    stream
        .set_send_timeout(Some(timeout))
        .map_err(io_error("configuring"))?;
    let hello = WorkerMessage::Hello {
        version: PROTOCOL_VERSION,
        token: token.to_owned(),
        pid,
        stack_capture,
    };
    let frame = encode_frame(&hello, MAX_WORKER_FRAME)?;
    (&stream).write_all(&frame).map_err(|source| {
        if is_timeout(&source) {
            ConnectError::Timeout(timeout)
        } else {
            ConnectError::Io {
                doing: "writing the hello to",
                source,
            }
        }
    })?;
    // What is written from now on (a `Ready` before the answer came) is written as a pong is.
    stream
        .set_send_timeout(Some(PONG_SEND_TIMEOUT))
        .map_err(io_error("configuring"))?;
    Ok(Handshake {
        connection: Connection {
            link: Arc::new(Link {
                stream,
                write_lock: Mutex::new(()),
                in_flight: AtomicBool::new(false),
                queued: Mutex::new(None),
                last_ping_seq: AtomicU64::new(0),
                broken: AtomicBool::new(false),
                shares: PendingShares::default(),
                next_share: AtomicU64::new(1),
            }),
            decoder: FrameDecoder::new(MAX_WORKER_FRAME),
            #[cfg(unix)]
            received_fds: VecDeque::new(),
        },
        deadline,
        timeout,
    })
}

impl Handshake {
    /// A handle for sending on the connection before the answer is read (see [`Handshake`]).
    pub fn sender(&self) -> Sender {
        self.connection.sender()
    }

    /// Waits for `Welcome` (returns the connection, ready for [`Connection::run`]) or `Refused`
    /// (returns the reason), until the deadline of [`hello`].
    pub fn finish(self) -> Result<Connection, ConnectError> {
        let Handshake {
            mut connection,
            deadline,
            timeout,
        } = self;
        let io_error = |doing| move |source| ConnectError::Io { doing, source };
        let stream = &connection.link.stream;
        let mut buffer = [0u8; READ_CHUNK];
        'handshake: loop {
            while let Some(payload) = connection.decoder.next_frame()? {
                // Before the welcome only the two handshake answers mean anything; anything else
                // (a ping that raced ahead, a message from a newer supervisor) is skipped.
                match decode_payload::<SupervisorMessage>(&payload) {
                    Ok(SupervisorMessage::Welcome { version }) if version == PROTOCOL_VERSION => {
                        break 'handshake;
                    }
                    Ok(SupervisorMessage::Welcome { version }) => {
                        return Err(ProtoError::VersionMismatch {
                            theirs: version,
                            ours: PROTOCOL_VERSION,
                        }
                        .into());
                    }
                    Ok(SupervisorMessage::Refused { reason }) => {
                        return Err(ConnectError::Refused { reason });
                    }
                    Ok(
                        SupervisorMessage::Ping { .. }
                        | SupervisorMessage::Probe { .. }
                        | SupervisorMessage::Stack { .. }
                        | SupervisorMessage::Shutdown
                        | SupervisorMessage::Shared { .. }
                        | SupervisorMessage::Profile { .. },
                    )
                    | Err(_) => {}
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ConnectError::Timeout(timeout));
            }
            stream
                .set_recv_timeout(Some(remaining))
                .map_err(io_error("configuring"))?;
            match (&*stream).read(&mut buffer) {
                Ok(0) => return Err(ConnectError::Closed),
                Ok(n) => connection.decoder.push(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(ConnectError::Timeout(timeout)),
                Err(source) => {
                    return Err(ConnectError::Io {
                        doing: "reading the answer from",
                        source,
                    })
                }
            }
        }
        stream
            .set_recv_timeout(None)
            .map_err(io_error("configuring"))?;
        Ok(connection)
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Connection {
    /// Reads the supervisor's messages until the connection ends, delivering each ping to `sink`
    /// unless one is still in flight (then the ping is dropped: a stalled loop gets one ping, not
    /// a backlog). Returns why the connection ended; meant to run on its own thread.
    pub fn run(mut self, sink: &mut impl PingSink) -> Ended {
        let mut buffer = [0u8; READ_CHUNK];
        loop {
            loop {
                let payload = match self.decoder.next_frame() {
                    Ok(Some(payload)) => payload,
                    Ok(None) => break,
                    Err(error) => return Ended::Protocol(error),
                };
                // A message that does not decode is skipped, not fatal: framing is intact, and a
                // newer supervisor may send messages this monitor does not know yet.
                match decode_payload(&payload) {
                    Ok(SupervisorMessage::Ping { seq }) => self.on_ping(seq, sink),
                    Ok(SupervisorMessage::Probe { seq, show_query }) => {
                        self.on_probe(seq, show_query)
                    }
                    Ok(SupervisorMessage::Stack { seq }) => sink.capture_stack(StackReply {
                        seq,
                        link: Arc::clone(&self.link),
                    }),
                    Ok(SupervisorMessage::Shutdown) => sink.shutdown(),
                    Ok(SupervisorMessage::Shared { id, error }) => self.on_shared(id, error),
                    Ok(SupervisorMessage::Profile {
                        id,
                        kind,
                        duration_ms,
                    }) => sink.profile(id, kind, duration_ms),
                    _ => {}
                }
            }
            match self.receive(&mut buffer) {
                Ok(0) => return Ended::Eof,
                Ok(n) => self.decoder.push(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ended::ReadError(e),
            }
        }
    }

    /// Reads what the supervisor sent, keeping any descriptors that came with it.
    ///
    /// It waits in `poll` for input first: a reader blocked in `recvmsg` on a Unix stream socket
    /// sleeps on the socket's one wait queue, which the kernel also wakes whenever the supervisor
    /// consumes a pong (write space), so every heartbeat woke this thread twice. `poll` waits for
    /// readability only.
    #[cfg(unix)]
    fn receive(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let socket = stream_fd(&self.link.stream);
        wait_readable(socket)?;
        receive_with_fds(socket, buffer, &mut self.received_fds)
    }

    #[cfg(not(unix))]
    fn receive(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        (&self.link.stream).read(buffer)
    }

    /// The answer to a share request: hands the socket that came with it (or the error) to the
    /// request's reply.
    fn on_shared(&mut self, id: u64, error: Option<ShareError>) {
        let reply = self.link.shares().remove(&id);
        let outcome = match error {
            Some(error) => Err(error),
            None => self.claim_fd(),
        };
        // An answer nobody waits for drops its descriptor here, which closes it.
        if let Some(reply) = reply {
            reply(outcome);
        }
    }

    #[cfg(unix)]
    fn claim_fd(&mut self) -> ShareOutcome {
        self.received_fds.pop_front().ok_or_else(|| ShareError {
            code: "EBADF".into(),
            errno: 0,
            message: "the supervisor's answer came without its socket".into(),
        })
    }

    #[cfg(not(unix))]
    fn claim_fd(&mut self) -> ShareOutcome {
        Ok(())
    }

    /// A handle for sending the app's own messages (`Ready`) while [`Connection::run`] reads.
    pub fn sender(&self) -> Sender {
        Sender {
            link: Arc::clone(&self.link),
        }
    }

    fn on_ping(&self, seq: u64, sink: &mut impl PingSink) {
        self.link.last_ping_seq.store(seq, Ordering::Release);
        if self.link.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let received = Instant::now();
        *self
            .link
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((seq, received));
        sink.deliver(PendingPing {
            seq,
            received,
            link: Arc::clone(&self.link),
            released: false,
        });
    }

    /// Answers a probe from this thread: which ping waits for JS, and for how long, and which
    /// HTTP requests are in flight. A failed write is left to the supervisor's probe timeout.
    fn on_probe(&self, seq: u64, show_query: bool) {
        let queued = *self
            .link
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last_ping_seq = match self.link.last_ping_seq.load(Ordering::Acquire) {
            0 => None,
            seq => Some(seq),
        };
        let reply = WorkerMessage::ProbeReply {
            seq,
            queued_seq: queued.map(|(seq, _)| seq),
            queued_ms: queued.map(|(_, at)| at.elapsed().as_secs_f64() * 1000.0),
            last_ping_seq,
            requests: crate::requests::in_flight(show_query),
        };
        let _ = self.link.send(&reply);
    }
}

/// The descriptor of the connection (a Unix domain socket on Unix).
#[cfg(unix)]
fn stream_fd(stream: &Stream) -> RawFd {
    #[allow(unreachable_patterns)] // one variant on Unix
    match stream {
        Stream::UdSocket(socket) => socket.as_fd().as_raw_fd(),
        _ => -1,
    }
}

/// Blocks until `socket` has input, an end or an error to read (all of which `recvmsg` then
/// returns without blocking).
#[cfg(unix)]
fn wait_readable(socket: RawFd) -> io::Result<()> {
    let mut entry = libc::pollfd {
        fd: socket,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut entry, 1, -1) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most descriptors taken from one read: the supervisor attaches one per answer, and Linux
/// never merges two messages that carry descriptors into one read.
#[cfg(unix)]
const MAX_FDS_PER_READ: usize = 4;

/// `read` on `socket` with room for descriptors (SCM_RIGHTS), which are kept in `fds` in the
/// order they came, close-on-exec so the app's children do not inherit them.
#[cfg(unix)]
fn receive_with_fds(
    socket: RawFd,
    buffer: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    let room = unsafe {
        libc::CMSG_SPACE(
            u32::try_from(MAX_FDS_PER_READ * std::mem::size_of::<libc::c_int>()).unwrap_or(0),
        )
    };
    debug_assert!(room as usize <= std::mem::size_of_val(&control));
    message.msg_controllen = room.try_into().unwrap_or(0);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = libc::MSG_CMSG_CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = 0;
    // SAFETY: `message` points at `iov` (into `buffer`) and `control`, which outlive the call.
    let received = unsafe { libc::recvmsg(socket, &mut message, flags) };
    let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the CMSG_* walk stays within `control` as the kernel filled it (msg_controllen).
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let offset = data as usize - header as usize;
                // cmsg_len is a size_t on Linux, a socklen_t on macOS.
                #[allow(clippy::useless_conversion)]
                let length = usize::try_from((*header).cmsg_len)
                    .unwrap_or(0)
                    .saturating_sub(offset);
                for index in 0..length / std::mem::size_of::<libc::c_int>() {
                    let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(index));
                    #[cfg(not(any(target_os = "linux", target_os = "android")))]
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    fds.push_back(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Ok(received)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test frames of known, small sizes
mod tests {
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    /// A fresh directory for one test's socket, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "ngm-{tag}-{}-{:?}",
                std::process::id(),
                Instant::now()
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
        fn socket(&self) -> PathBuf {
            self.0.join("s")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The supervisor's end, blocking, for tests.
    struct Peer {
        stream: UnixStream,
        decoder: FrameDecoder,
    }

    impl Peer {
        fn send(&mut self, message: &SupervisorMessage) {
            let frame = encode_frame(message, MAX_WORKER_FRAME).unwrap();
            self.stream.write_all(&frame).unwrap();
        }
        fn receive(&mut self) -> WorkerMessage {
            let mut buffer = [0u8; 1024];
            loop {
                if let Some(message) = self.decoder.next_message().unwrap() {
                    return message;
                }
                let n = self.stream.read(&mut buffer).unwrap();
                assert!(n > 0, "monitor closed the connection");
                self.decoder.push(&buffer[..n]);
            }
        }
    }

    /// Binds a listener and runs `script` on the first accepted connection in a thread.
    fn supervisor(
        dir: &TempDir,
        script: impl FnOnce(Peer) + Send + 'static,
    ) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(dir.socket()).unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            script(Peer {
                stream,
                decoder: FrameDecoder::new(MAX_WORKER_FRAME),
            });
        })
    }

    fn connect_to(dir: &TempDir) -> Result<Connection, ConnectError> {
        connect(
            dir.socket().to_str().unwrap(),
            "secret",
            4242,
            HANDSHAKE_TIMEOUT,
            true,
        )
    }

    /// Forwards delivered pings to the test over a channel.
    struct ChannelSink(mpsc::Sender<PendingPing>);

    impl PingSink for ChannelSink {
        fn deliver(&mut self, ping: PendingPing) {
            self.0.send(ping).unwrap();
        }
    }

    #[test]
    fn hello_carries_version_token_and_pid_then_welcome_connects() {
        let dir = TempDir::new("hello");
        let server = supervisor(&dir, |mut peer| {
            assert_eq!(
                peer.receive(),
                WorkerMessage::Hello {
                    version: PROTOCOL_VERSION,
                    token: "secret".into(),
                    pid: 4242,
                    stack_capture: true,
                }
            );
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
        });
        connect_to(&dir).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn refused_reports_the_reason() {
        let dir = TempDir::new("refused");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Refused {
                reason: "bad token".into(),
            });
        });
        let error = connect_to(&dir).unwrap_err();
        assert!(matches!(&error, ConnectError::Refused { reason } if reason == "bad token"));
        assert_eq!(
            error.to_string(),
            "the supervisor refused this process: bad token"
        );
        server.join().unwrap();
    }

    #[test]
    fn other_version_is_refused_by_name() {
        let dir = TempDir::new("version");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome { version: 99 });
        });
        let error = connect_to(&dir).unwrap_err();
        assert!(error.to_string().contains("version 99"), "{error}");
        server.join().unwrap();
    }

    #[test]
    fn silent_supervisor_times_out() {
        let dir = TempDir::new("silent");
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let server = supervisor(&dir, move |mut peer| {
            peer.receive();
            // Hold the connection open until the monitor gave up.
            let _ = done_rx.recv();
        });
        let started = Instant::now();
        let error = connect(
            dir.socket().to_str().unwrap(),
            "secret",
            1,
            Duration::from_millis(200),
            false,
        )
        .unwrap_err();
        assert!(matches!(error, ConnectError::Timeout(_)), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        done_tx.send(()).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn hello_returns_before_the_answer_and_what_is_sent_meanwhile_follows_the_hello() {
        let dir = TempDir::new("early");
        let (sent_tx, sent_rx) = mpsc::channel::<()>();
        let server = supervisor(&dir, move |mut peer| {
            assert!(matches!(peer.receive(), WorkerMessage::Hello { .. }));
            // The monitor goes on before any answer: its Ready comes right behind the hello.
            sent_rx.recv().unwrap();
            assert!(matches!(peer.receive(), WorkerMessage::Ready));
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
        });
        let handshake = hello(
            dir.socket().to_str().unwrap(),
            "secret",
            4242,
            HANDSHAKE_TIMEOUT,
            true,
        )
        .unwrap();
        handshake.sender().ready().unwrap();
        sent_tx.send(()).unwrap();
        assert!(handshake.finish().is_ok());
        server.join().unwrap();

        let dir = TempDir::new("early-refused");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Refused {
                reason: "unknown token".into(),
            });
        });
        let handshake = hello(
            dir.socket().to_str().unwrap(),
            "secret",
            4242,
            HANDSHAKE_TIMEOUT,
            true,
        )
        .unwrap();
        let error = handshake.finish().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the supervisor refused this process: unknown token"
        );
        server.join().unwrap();
    }

    #[test]
    fn closed_during_handshake_and_missing_socket_are_errors() {
        let dir = TempDir::new("closed");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
        });
        assert!(matches!(connect_to(&dir), Err(ConnectError::Closed)));
        server.join().unwrap();

        let nothing = TempDir::new("nothing");
        let error = connect_to(&nothing).unwrap_err();
        assert!(matches!(error, ConnectError::Connect { .. }), "{error}");
    }

    #[test]
    fn pings_coalesce_while_one_is_in_flight_and_pongs_carry_the_seq() {
        let dir = TempDir::new("pings");
        let (step_tx, step_rx) = mpsc::channel::<()>();
        let server = supervisor(&dir, move |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            // Three pings in one write, so the reader sees them in one read: only seq 1 reaches
            // the sink, 2 and 3 are coalesced into it.
            let mut burst = Vec::new();
            for seq in 1..=3 {
                burst.extend(
                    encode_frame(&SupervisorMessage::Ping { seq }, MAX_WORKER_FRAME).unwrap(),
                );
            }
            peer.stream.write_all(&burst).unwrap();
            step_rx.recv().unwrap();
            match peer.receive() {
                WorkerMessage::Pong {
                    seq,
                    memory,
                    queued_ms,
                    ..
                } => {
                    assert_eq!(seq, 1);
                    assert_eq!(memory.rss, 7);
                    assert!(queued_ms >= 0.0);
                }
                other => panic!("expected a pong, got {other:?}"),
            }
            // After the answer the next ping goes through again.
            peer.send(&SupervisorMessage::Ping { seq: 4 });
            match peer.receive() {
                WorkerMessage::Pong { seq, .. } => assert_eq!(seq, 4),
                other => panic!("expected a pong, got {other:?}"),
            }
            // Closing our end ends the monitor's reader loop.
        });
        let connection = connect_to(&dir).unwrap();
        let (ping_tx, ping_rx) = mpsc::channel();
        let reader = thread::spawn(move || connection.run(&mut ChannelSink(ping_tx)));

        let first = ping_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first.seq(), 1);
        // Pings 2 and 3 arrived with it, but neither is delivered while 1 is held.
        assert!(ping_rx.recv_timeout(Duration::from_millis(200)).is_err());
        step_tx.send(()).unwrap();
        let memory = MemoryUsage {
            rss: 7,
            ..MemoryUsage::default()
        };
        first.answer(memory, LoopDelay::default(), false).unwrap();
        let fourth = ping_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(fourth.seq(), 4);
        fourth.answer(memory, LoopDelay::default(), false).unwrap();

        assert!(matches!(reader.join().unwrap(), Ended::Eof));
        server.join().unwrap();
    }

    #[test]
    fn probes_are_answered_by_the_reader_with_the_ping_stuck_in_js() {
        let dir = TempDir::new("probe");
        let server = supervisor(&dir, move |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            // Before any ping: nothing queued, nothing received.
            peer.send(&SupervisorMessage::Probe {
                seq: 1,
                show_query: false,
            });
            match peer.receive() {
                WorkerMessage::ProbeReply {
                    seq,
                    queued_seq,
                    queued_ms,
                    last_ping_seq,
                    ..
                } => {
                    assert_eq!(seq, 1);
                    assert_eq!(queued_seq, None);
                    assert_eq!(queued_ms, None);
                    assert_eq!(last_ping_seq, None);
                }
                other => panic!("expected a probe reply, got {other:?}"),
            }
            // Ping 5 is handed to "JS", which never answers; ping 6 is coalesced.
            peer.send(&SupervisorMessage::Ping { seq: 5 });
            peer.send(&SupervisorMessage::Ping { seq: 6 });
            thread::sleep(Duration::from_millis(30));
            peer.send(&SupervisorMessage::Probe {
                seq: 2,
                show_query: false,
            });
            match peer.receive() {
                WorkerMessage::ProbeReply {
                    seq,
                    queued_seq,
                    queued_ms,
                    last_ping_seq,
                    ..
                } => {
                    assert_eq!(seq, 2);
                    assert_eq!(queued_seq, Some(5));
                    assert!(queued_ms.is_some_and(|ms| ms >= 20.0), "{queued_ms:?}");
                    assert_eq!(last_ping_seq, Some(6));
                }
                other => panic!("expected a probe reply, got {other:?}"),
            }
        });
        let connection = connect_to(&dir).unwrap();
        let (ping_tx, ping_rx) = mpsc::channel();
        let reader = thread::spawn(move || connection.run(&mut ChannelSink(ping_tx)));
        // Hold the ping unanswered, like a blocked event loop, until the connection ends.
        let held = ping_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(held.seq(), 5);
        assert!(matches!(reader.join().unwrap(), Ended::Eof));
        drop(held);
        server.join().unwrap();
    }

    #[test]
    fn back_to_back_pings_answered_from_another_thread_are_never_lost() {
        // The supervisor sends the next ping as soon as it has read a pong. That ping must not
        // find the slot still taken by the ping just answered.
        const ROUNDS: u64 = 30000;
        let dir = TempDir::new("rapid");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            for seq in 1..=ROUNDS {
                peer.send(&SupervisorMessage::Ping { seq });
                match peer.receive() {
                    WorkerMessage::Pong { seq: got, .. } => assert_eq!(got, seq),
                    other => panic!("expected a pong, got {other:?}"),
                }
            }
        });
        let connection = connect_to(&dir).unwrap();
        let (ping_tx, ping_rx) = mpsc::channel::<PendingPing>();
        let answerer = thread::spawn(move || {
            for ping in ping_rx {
                ping.answer(MemoryUsage::default(), LoopDelay::default(), false)
                    .unwrap();
            }
        });
        assert!(matches!(
            connection.run(&mut ChannelSink(ping_tx)),
            Ended::Eof
        ));
        server.join().unwrap();
        answerer.join().unwrap();
    }

    #[test]
    fn a_dropped_ping_sends_nothing_and_frees_the_slot() {
        let dir = TempDir::new("dropped");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            peer.send(&SupervisorMessage::Ping { seq: 1 });
            peer.send(&SupervisorMessage::Ping { seq: 2 });
            // The sink drops 1 and answers 2; the first pong must be for 2.
            match peer.receive() {
                WorkerMessage::Pong { seq, .. } => assert_eq!(seq, 2),
                other => panic!("expected a pong, got {other:?}"),
            }
        });

        /// Drops ping 1 (like a JS callback that threw), answers the others.
        struct Flaky;
        impl PingSink for Flaky {
            fn deliver(&mut self, ping: PendingPing) {
                if ping.seq() != 1 {
                    ping.answer(MemoryUsage::default(), LoopDelay::default(), false)
                        .unwrap();
                }
            }
        }
        let connection = connect_to(&dir).unwrap();
        assert!(matches!(connection.run(&mut Flaky), Ended::Eof));
        server.join().unwrap();
    }

    #[test]
    fn a_stack_request_reaches_the_sink_and_its_reply_carries_the_frames() {
        let dir = TempDir::new("stack");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            peer.send(&SupervisorMessage::Stack { seq: 3 });
            assert_eq!(
                peer.receive(),
                WorkerMessage::Stack {
                    seq: 3,
                    frames: vec!["spin (/srv/app.js:2:3)".into()],
                }
            );
        });

        /// Answers a stack request at once, as the interrupt callback would.
        struct Capture;
        impl PingSink for Capture {
            fn deliver(&mut self, _ping: PendingPing) {}
            fn capture_stack(&mut self, reply: StackReply) {
                reply.send(vec!["spin (/srv/app.js:2:3)".into()]).unwrap();
            }
        }
        let connection = connect_to(&dir).unwrap();
        assert!(matches!(connection.run(&mut Capture), Ended::Eof));
        server.join().unwrap();
    }

    #[test]
    fn shutdown_reaches_the_sink_and_ready_reaches_the_supervisor() {
        let dir = TempDir::new("shutdown");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            assert_eq!(peer.receive(), WorkerMessage::Ready);
            peer.send(&SupervisorMessage::Shutdown);
        });

        /// Counts shutdowns.
        struct Shutdowns(mpsc::Sender<()>);
        impl PingSink for Shutdowns {
            fn deliver(&mut self, _ping: PendingPing) {}
            fn shutdown(&mut self) {
                self.0.send(()).unwrap();
            }
        }
        let connection = connect_to(&dir).unwrap();
        connection.sender().ready().unwrap();
        let (tx, rx) = mpsc::channel();
        assert!(matches!(connection.run(&mut Shutdowns(tx)), Ended::Eof));
        server.join().unwrap();
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn unknown_messages_are_skipped_and_oversize_frames_end_the_connection() {
        let dir = TempDir::new("garbage");
        let server = supervisor(&dir, |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            let unknown = br#"{"type":"from_the_future"}"#;
            let mut frame = (unknown.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(unknown);
            peer.stream.write_all(&frame).unwrap();
            peer.send(&SupervisorMessage::Ping { seq: 9 });
            match peer.receive() {
                WorkerMessage::Pong { seq, .. } => assert_eq!(seq, 9),
                other => panic!("expected a pong, got {other:?}"),
            }
            let oversize = (MAX_WORKER_FRAME as u32 + 1).to_be_bytes();
            peer.stream.write_all(&oversize).unwrap();
            // Wait for the monitor to hang up before dropping our end.
            let mut rest = Vec::new();
            let _ = peer.stream.read_to_end(&mut rest);
        });

        struct Answer;
        impl PingSink for Answer {
            fn deliver(&mut self, ping: PendingPing) {
                ping.answer(MemoryUsage::default(), LoopDelay::default(), false)
                    .unwrap();
            }
        }
        let connection = connect_to(&dir).unwrap();
        let ended = connection.run(&mut Answer);
        assert!(matches!(ended, Ended::Protocol(_)), "{ended:?}");
        server.join().unwrap();
    }

    /// Sends `bytes` with `fd` attached (SCM_RIGHTS), as the supervisor does.
    fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: RawFd) {
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        unsafe {
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = &mut iov;
            message.msg_iovlen = 1;
            message.msg_control = control.as_mut_ptr().cast();
            message.msg_controllen =
                libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>(), fd);
            let sent = libc::sendmsg(stream.as_raw_fd(), &message, 0);
            assert_eq!(sent, bytes.len() as isize);
        }
    }

    #[test]
    fn a_shared_answer_hands_over_the_socket_that_came_with_it_and_errors_pass_through() {
        let dir = TempDir::new("share");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = supervisor(&dir, move |mut peer| {
            peer.receive();
            peer.send(&SupervisorMessage::Welcome {
                version: PROTOCOL_VERSION,
            });
            match peer.receive() {
                WorkerMessage::Share { id, host, port } => {
                    assert_eq!((host.as_deref(), port), (Some("127.0.0.1"), 3000));
                    let answer = SupervisorMessage::Shared { id, error: None };
                    let frame = encode_frame(&answer, MAX_WORKER_FRAME).unwrap();
                    send_with_fd(&peer.stream, &frame, listener.as_raw_fd());
                }
                other => panic!("expected a share request, got {other:?}"),
            }
            match peer.receive() {
                WorkerMessage::Share { id, host: None, .. } => {
                    peer.send(&SupervisorMessage::Shared {
                        id,
                        error: Some(ShareError {
                            code: "EADDRINUSE".into(),
                            errno: 98,
                            message: "taken".into(),
                        }),
                    });
                }
                other => panic!("expected a share request, got {other:?}"),
            }
            assert_eq!(
                peer.receive(),
                WorkerMessage::ListenedElsewhere { port: 3721 }
            );
        });

        struct Nothing;
        impl PingSink for Nothing {
            fn deliver(&mut self, _ping: PendingPing) {}
        }
        let connection = connect_to(&dir).unwrap();
        let sender = connection.sender();
        let reader = thread::spawn(move || connection.run(&mut Nothing));
        let (tx, rx) = mpsc::channel();
        let first = tx.clone();
        sender
            .share(
                Some("127.0.0.1".into()),
                3000,
                Box::new(move |outcome| first.send(outcome).unwrap()),
            )
            .unwrap();
        let fd = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        let handed = std::net::TcpListener::from(fd);
        assert_eq!(handed.local_addr().unwrap().port(), port);
        // Close-on-exec: the app's children do not inherit it.
        let flags = unsafe { libc::fcntl(handed.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);

        sender
            .share(
                None,
                3000,
                Box::new(move |outcome| tx.send(outcome).unwrap()),
            )
            .unwrap();
        let error = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err();
        assert_eq!((error.code.as_str(), error.errno), ("EADDRINUSE", 98));
        sender.listened_elsewhere(3721).unwrap();
        assert!(matches!(reader.join().unwrap(), Ended::Eof));
        server.join().unwrap();
    }
}
