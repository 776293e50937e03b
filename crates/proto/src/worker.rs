//! Messages on the worker socket, between the supervisor and the monitor inside each app.
//!
//! The monitor opens with [`WorkerMessage::Hello`]; the supervisor answers [`SupervisorMessage::Welcome`]
//! or [`SupervisorMessage::Refused`] and closes. After that the supervisor sends pings and the
//! monitor answers each from the app's JS thread with a pong. When pongs stop, the supervisor
//! probes the monitor's native thread, which says whether a ping is stuck waiting for JS.

use serde::{Deserialize, Serialize};

/// From the monitor to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// First message of a connection: proves the worker was spawned by this supervisor.
    Hello {
        version: u32,
        /// The per-spawn secret from the `NODEGUARD_TOKEN` environment variable.
        token: String,
        pid: u32,
    },
    /// Answer to a ping, written after the app's JS thread ran.
    Pong {
        /// Sequence number of the ping being answered (pings that arrive while one is still
        /// queued into JS are coalesced, so this may be older than the latest ping).
        seq: u64,
        memory: MemoryUsage,
        loop_delay: LoopDelay,
        /// How long the ping waited for the JS thread, measured by the monitor's native thread.
        queued_ms: f64,
        /// Whether a SIGINT now would make Node print the main thread's JS stack before it dies:
        /// `--trace-sigint` is on and the app has no SIGINT listener of its own (one turns the
        /// trace off). The supervisor uses it to capture the stack of a hung loop.
        #[serde(default)]
        stack_on_sigint: bool,
    },
    /// Answer to a probe, written at once by the monitor's native thread (not the JS thread), so
    /// it arrives even while the event loop is blocked.
    ProbeReply {
        /// Sequence number of the probe being answered.
        seq: u64,
        /// The ping now waiting for the JS thread, if any.
        queued_seq: Option<u64>,
        /// How long that ping has waited, in milliseconds.
        queued_ms: Option<f64>,
        /// The latest ping the native thread received (coalesced ones included).
        last_ping_seq: Option<u64>,
    },
}

/// From the supervisor to the monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMessage {
    /// The hello was accepted.
    Welcome { version: u32 },
    /// The hello was refused; the supervisor closes the connection after this.
    Refused { reason: String },
    /// Heartbeat: answer from the JS thread.
    Ping { seq: u64 },
    /// Sent after heartbeats were missed: "is a ping stuck in your JS queue, or did mine never
    /// reach you?" Answered by the native thread with [`WorkerMessage::ProbeReply`].
    Probe { seq: u64 },
}

/// `process.memoryUsage()` in bytes, read on the JS thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryUsage {
    pub rss: u64,
    pub heap_total: u64,
    pub heap_used: u64,
    pub external: u64,
    pub array_buffers: u64,
}

/// Event-loop delay since the previous pong, from `perf_hooks.monitorEventLoopDelay()`, in
/// milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopDelay {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}
