//! The wire contract shared by the supervisor, the CLI and the in-app monitor: message types, the
//! protocol version and a length-prefixed JSON frame codec. Sans-IO: no sockets, no runtime, so the
//! async supervisor and the addon's plain native thread frame bytes the same way.
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes of UTF-8 JSON. Every
//! connection opens with a message that carries [`PROTOCOL_VERSION`] (`Hello` on the worker socket,
//! `Request` on the control socket), and a peer that sees a different version refuses it by name.

pub mod control;
mod frame;
pub mod worker;

pub use frame::{decode_payload, encode_frame, peek_version, FrameDecoder, FRAME_HEADER_LEN};

/// Version of both wires. Bumped on any incompatible change to a message.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame accepted on the worker socket. Pongs are a few hundred bytes; anything near this
/// is garbage or hostile.
pub const MAX_WORKER_FRAME: usize = 64 * 1024;

/// Largest frame accepted on the control socket: a status reply for thousands of apps, and the
/// `start` of a config file of 10,000 apps (about 1 kB of definition each, 10.3 MB in all, which
/// the 8 MiB limit this was before refused in the client), fit.
pub const MAX_CONTROL_FRAME: usize = 32 * 1024 * 1024;

/// Environment variable naming the worker socket a spawned app connects to.
pub const ENV_SOCKET: &str = "NODEGUARD_SOCKET";
/// Environment variable holding the per-spawn secret the monitor presents in its `Hello`.
pub const ENV_TOKEN: &str = "NODEGUARD_TOKEN";
/// Environment variable holding the app's name, for the app's own information.
pub const ENV_APP_NAME: &str = "NODEGUARD_APP";
/// Environment variable holding the instance number (0-based) of a cluster-mode app.
pub const ENV_INSTANCE: &str = "NODEGUARD_INSTANCE";
/// Environment variable mapping supervisor-owned listening sockets to inherited file descriptors:
/// `port=fd` pairs separated by commas, e.g. `3000=3,3001=4`.
pub const ENV_LISTEN: &str = "NODEGUARD_LISTEN";
/// Environment variable set to `1` when the app is ready only once it calls `monitor.ready()`.
pub const ENV_WAIT_READY: &str = "NODEGUARD_WAIT_READY";
/// Environment variable naming the app's `kill_signal` (e.g. `SIGINT`) when it is not SIGTERM: the
/// monitor turns the supervisor's shutdown message into that signal.
pub const ENV_KILL_SIGNAL: &str = "NODEGUARD_KILL_SIGNAL";
/// Environment variable set to `1` for `shutdown_with_message`: the monitor turns the shutdown
/// message into `'shutdown'` on `process.on('message')`.
pub const ENV_SHUTDOWN_MESSAGE: &str = "NODEGUARD_SHUTDOWN_MESSAGE";
/// Environment variable set for an app with several instances and no `--listen`: the monitor asks
/// the supervisor for each TCP address the app listens on (`Share`) and listens on the socket it
/// is handed. Its value lists the ports this instance number shared before (`3000,3001`, or
/// empty): the new process is ready once it listens on all of them.
pub const ENV_SHARE: &str = "NODEGUARD_SHARE";
/// Environment variable holding the app's kill timeout in milliseconds when it is not the default
/// (5000): the monitor's drain hands over to the app's own stop after half of it at the latest.
pub const ENV_KILL_TIMEOUT: &str = "NODEGUARD_KILL_TIMEOUT_MS";

/// Errors from framing or decoding a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("protocol version {theirs} is not supported (this side speaks version {ours})")]
    VersionMismatch { theirs: u32, ours: u32 },
}
