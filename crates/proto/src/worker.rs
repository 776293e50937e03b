//! Messages on the worker socket, between the supervisor and the monitor inside each app.
//!
//! The monitor opens with [`WorkerMessage::Hello`]; the supervisor answers [`SupervisorMessage::Welcome`]
//! or [`SupervisorMessage::Refused`] and closes. After that the supervisor sends pings and the
//! monitor answers each from the app's JS thread with a pong. When pongs stop, the supervisor
//! probes the monitor's native thread, which says whether a ping is stuck waiting for JS. The
//! monitor says `Ready` once the app serves, and the supervisor asks for a graceful stop with
//! `Shutdown`.

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
        /// The monitor can capture the JS thread's stack itself on [`SupervisorMessage::Stack`]
        /// (through V8's interrupt request; Node only, when its V8 symbols resolved).
        #[serde(default)]
        stack_capture: bool,
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
        /// The HTTP requests the app is handling now (`GET /search`), oldest first, at most
        /// [`MAX_REQUESTS`]; the query string only if the probe asked for it.
        #[serde(default)]
        requests: Vec<String>,
    },
    /// Answer to [`SupervisorMessage::Stack`], written from the JS thread by V8's interrupt
    /// callback: the main thread's JS stack, innermost first, each frame as
    /// `function (file:line:col)` with the file as V8 names it (a path or a `file://` URL).
    Stack { seq: u64, frames: Vec<String> },
    /// The app is ready for traffic: its server listens on the supervisor's shared socket, or
    /// (with wait-ready) it called `monitor.ready()`.
    Ready,
    /// Cluster mode without `--listen` (the supervisor set `NODEGUARD_SHARE`): the app called
    /// `server.listen(port, host)`; the supervisor binds that address once for all the app's
    /// instances and answers [`SupervisorMessage::Shared`] with the listening socket attached
    /// (SCM_RIGHTS). `host` is an IP address (the monitor resolves names as Node would) or
    /// absent for Node's default (`::`, dual-stack, else `0.0.0.0`). `port` is checked by the
    /// supervisor (1 to 65535), so a bad one gets an error answer, not a dropped connection.
    Share {
        /// Chosen by the monitor; echoed in the answer.
        id: u64,
        #[serde(default)]
        host: Option<String>,
        port: u32,
    },
    /// With `--listen`: the app listened on a TCP port the supervisor does not own (it bound it
    /// itself, so nothing the supervisor shares reaches that server).
    ListenedElsewhere { port: u32 },
    /// Part of the profile asked for by [`SupervisorMessage::Profile`] `id`, in order: at most
    /// [`PROFILE_CHUNK_UNITS`] UTF-16 units of the profile's JSON text, so a frame stays under
    /// [`crate::MAX_WORKER_FRAME`] even when every character is escaped.
    ProfileChunk { id: u64, data: String },
    /// The profile `id` is complete (every chunk sent), or `error` says why it could not be
    /// taken. `hottest` names the CPU profile's function with the most self time, e.g.
    /// `burnCpu (/srv/app.js:3) 62%`.
    ProfileDone {
        id: u64,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        hottest: Option<String>,
    },
}

/// Most UTF-16 units of profile text in one [`WorkerMessage::ProfileChunk`]: escaped as
/// `\u001f` each takes at most 6 bytes of JSON, so a chunk's frame stays under 49 KiB.
pub const PROFILE_CHUNK_UNITS: usize = 8 * 1024;

/// What [`SupervisorMessage::Profile`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    /// A CPU profile (`.cpuprofile`, Chrome DevTools' format) over `duration_ms`.
    Cpu,
    /// A heap snapshot (`.heapsnapshot`).
    Heap,
}

impl ProfileKind {
    /// The file extension Chrome DevTools expects.
    pub fn extension(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpuprofile",
            ProfileKind::Heap => "heapsnapshot",
        }
    }
}

/// The largest millisecond figure a monitor may report (a queued ping's wait, a loop delay): a
/// year. Anything beyond, negative or not finite is not a measurement.
pub const MAX_REPORTED_MS: f64 = 365.0 * 24.0 * 3_600.0 * 1_000.0;

/// Most in-flight requests a probe reply names.
pub const MAX_REQUESTS: usize = 8;

/// Most frames a stack carries.
pub const MAX_FRAMES: usize = 10;

/// A number in a monitor message that cannot be a measurement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} is {value}, not a number of milliseconds from 0 to {MAX_REPORTED_MS}")]
pub struct InvalidNumber {
    pub field: &'static str,
    pub value: f64,
}

impl WorkerMessage {
    /// Checks every number a monitor sent before the supervisor uses it: millisecond figures
    /// are finite and within 0..=[`MAX_REPORTED_MS`]. (Integers are bounded by their types;
    /// byte counts are summed with saturating arithmetic by the supervisor.)
    pub fn check(&self) -> Result<(), InvalidNumber> {
        let milliseconds = |field: &'static str, value: f64| {
            if value.is_finite() && (0.0..=MAX_REPORTED_MS).contains(&value) {
                Ok(())
            } else {
                Err(InvalidNumber { field, value })
            }
        };
        match self {
            WorkerMessage::Pong {
                queued_ms,
                loop_delay,
                ..
            } => {
                milliseconds("queued_ms", *queued_ms)?;
                milliseconds("loop_delay.mean_ms", loop_delay.mean_ms)?;
                milliseconds("loop_delay.p50_ms", loop_delay.p50_ms)?;
                milliseconds("loop_delay.p99_ms", loop_delay.p99_ms)?;
                milliseconds("loop_delay.max_ms", loop_delay.max_ms)
            }
            WorkerMessage::ProbeReply {
                queued_ms: Some(queued_ms),
                ..
            } => milliseconds("queued_ms", *queued_ms),
            WorkerMessage::Hello { .. }
            | WorkerMessage::ProbeReply {
                queued_ms: None, ..
            }
            | WorkerMessage::Ready
            | WorkerMessage::Stack { .. }
            | WorkerMessage::Share { .. }
            | WorkerMessage::ListenedElsewhere { .. }
            | WorkerMessage::ProfileChunk { .. }
            | WorkerMessage::ProfileDone { .. } => Ok(()),
        }
    }
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
    Probe {
        seq: u64,
        /// Name in-flight requests with their query string (`hang_show_query`); by default the
        /// query is left out, as it may hold secrets.
        #[serde(default)]
        show_query: bool,
    },
    /// The hang is confirmed: capture the JS thread's stack (sent only to a monitor whose hello
    /// said `stack_capture`). Answered with [`WorkerMessage::Stack`] from the JS thread, at its
    /// next interrupt check; not at all while JS is blocked outside JavaScript.
    Stack { seq: u64 },
    /// Stop gracefully: raises `shutdown` in JS (by default the app's servers close, in-flight
    /// requests finish and the process exits). SIGKILL follows after the kill timeout.
    Shutdown,
    /// Answer to [`WorkerMessage::Share`]. On success the frame's first byte carries the
    /// listening socket as SCM_RIGHTS ancillary data (the monitor's reader takes it with
    /// `recvmsg`); on failure `error` says why, as Node's listen errors do.
    Shared {
        id: u64,
        #[serde(default)]
        error: Option<ShareError>,
    },
    /// Take a profile through Node's `inspector` module on the JS thread (loaded only now; no
    /// port is opened): a CPU profile over `duration_ms`, or a heap snapshot. Answered with
    /// [`WorkerMessage::ProfileChunk`]s, then one [`WorkerMessage::ProfileDone`]. An older
    /// monitor skips it (the supervisor's wait is bounded).
    Profile {
        id: u64,
        kind: ProfileKind,
        #[serde(default)]
        duration_ms: u64,
    },
}

/// Why the supervisor could not share an address: what the app's `listen` then fails with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareError {
    /// The errno name Node uses for `error.code` (`EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`, …).
    pub code: String,
    /// The errno value (positive), 0 when there is none.
    #[serde(default)]
    pub errno: i32,
    /// One line, as the supervisor logged it.
    pub message: String,
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

/// Event-loop delay since the previous pong, in milliseconds: over the loop's turns since then, how
/// long each ran before the loop waited for events again (the monitor's libuv hook on Node; the
/// ping's own wait for the JS thread elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopDelay {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong(queued_ms: f64, p99_ms: f64) -> WorkerMessage {
        WorkerMessage::Pong {
            seq: 1,
            memory: MemoryUsage::default(),
            loop_delay: LoopDelay {
                p99_ms,
                ..LoopDelay::default()
            },
            queued_ms,
            stack_on_sigint: false,
        }
    }

    fn probe_reply(queued_ms: f64) -> WorkerMessage {
        WorkerMessage::ProbeReply {
            seq: 1,
            queued_seq: Some(1),
            queued_ms: Some(queued_ms),
            last_ping_seq: Some(1),
            requests: Vec::new(),
        }
    }

    #[test]
    fn profile_messages_round_trip_and_their_optional_fields_default() {
        let request = SupervisorMessage::Profile {
            id: 7,
            kind: ProfileKind::Heap,
            duration_ms: 0,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"type":"profile","id":7,"kind":"heap","duration_ms":0}"#
        );
        assert_eq!(
            serde_json::from_str::<SupervisorMessage>(r#"{"type":"profile","id":7,"kind":"heap"}"#)
                .unwrap(),
            request
        );
        assert_eq!(
            serde_json::from_str::<WorkerMessage>(r#"{"type":"profile_done","id":7}"#).unwrap(),
            WorkerMessage::ProfileDone {
                id: 7,
                error: None,
                hottest: None
            }
        );
        // The largest chunk, every unit escaped, still fits a frame.
        let chunk = WorkerMessage::ProfileChunk {
            id: u64::MAX,
            data: "\u{1}".repeat(PROFILE_CHUNK_UNITS),
        };
        assert!(crate::encode_frame(&chunk, crate::MAX_WORKER_FRAME).is_ok());
    }

    #[test]
    fn measurements_pass_and_impossible_numbers_are_refused() {
        assert!(pong(0.0, 12.5).check().is_ok());
        assert!(probe_reply(MAX_REPORTED_MS).check().is_ok());
        for bad in [1e300, -1.0, f64::NAN, f64::INFINITY, MAX_REPORTED_MS * 2.0] {
            assert!(pong(bad, 0.0).check().is_err(), "queued_ms {bad}");
            assert!(pong(0.0, bad).check().is_err(), "p99_ms {bad}");
            assert!(probe_reply(bad).check().is_err(), "probe queued_ms {bad}");
        }
    }
}
