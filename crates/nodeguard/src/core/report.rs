//! What the machine reports for a log line or an event: structured facts, rendered for people at
//! the edges.

use std::time::Duration;

use crate::core::exit::ExitKind;

/// What confirmed a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangEvidence {
    /// The monitor's native thread reports a ping waiting for the JS thread this long.
    StuckInJs { queued_for: Duration },
    /// Not even the native thread answered a probe: the process is frozen or gone deaf.
    NoAnswer,
}

/// Whether the hung process's JS stack is being asked for, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackPlan {
    /// SIGINT with `--trace-sigint`: Node prints the stack on stderr and dies.
    Requested,
    /// The monitor captures it through V8's interrupt and sends it over its socket.
    Interrupt,
    /// The app listens for SIGINT itself, which turns Node's `--trace-sigint` off.
    AppHandlesSigint,
    /// The process did not answer a probe; a SIGINT would wait unhandled as well.
    ProcessUnresponsive,
}

/// Things worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Started {
        pid: u32,
    },
    Ready {
        pid: u32,
        after: Duration,
    },
    NotReady {
        pid: u32,
        waited: Duration,
    },
    Exited {
        pid: u32,
        status: ExitKind,
        uptime: Duration,
        restart_in: Option<Duration>,
    },
    Hung {
        pid: u32,
        silent_for: Duration,
        misses: u32,
        evidence: HangEvidence,
        stack: StackPlan,
    },
    /// Heartbeats were missed, but the monitor had no ping waiting for JS: not a hang.
    HangDisproved {
        misses: u32,
        queued_for: Option<Duration>,
    },
    /// The hung process printed no stack within [`STACK_TIMEOUT`]; SIGKILL follows.
    StackTimeout {
        pid: u32,
    },
    /// The monitor's interrupt did not run within [`INTERRUPT_STACK_TIMEOUT`]: the JS thread is
    /// blocked outside JavaScript. SIGKILL follows.
    InterruptTimeout {
        pid: u32,
    },
    KillTimeout {
        pid: u32,
    },
    Stopped {
        pid: u32,
        status: ExitKind,
    },
    SpawnFailed {
        error: String,
    },
    MemoryExceeded {
        pid: u32,
        rss: u64,
        limit: u64,
    },
    GaveUp {
        restarts: usize,
        window: Duration,
    },
    Unmonitored,
    LateCheckVoided {
        late_by: Duration,
    },
}
