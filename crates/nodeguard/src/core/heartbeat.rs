//! Heartbeat bookkeeping of one live process (the ping in flight, misses, the probe of the
//! monitor's native thread) and the shared ping grid.

use std::time::Duration;

use tokio::time::Instant;

/// Heartbeat bookkeeping for one live process.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub monitored: bool,
    pub next_ping_at: Instant,
    pub outstanding: Option<OutstandingPing>,
    pub misses: u32,
    pub last_pong_at: Option<Instant>,
    /// Time from the latest answered ping to its pong.
    pub last_round_trip: Option<Duration>,
    pub next_seq: u64,
    /// A probe sent after the last allowed miss, waiting for the native thread's answer.
    pub probe: Option<OutstandingProbe>,
    /// The latest pong said a SIGINT would make Node print the JS stack.
    pub stack_on_sigint: bool,
    /// The monitor captures the JS stack itself, through V8's interrupt (its hello said so).
    pub stack_by_interrupt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutstandingProbe {
    pub seq: u64,
    pub deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutstandingPing {
    pub seq: u64,
    pub sent_at: Instant,
    pub deadline: Instant,
}

/// The next ping time `at` moved onto the grid `origin + k × interval`: the latest grid point at
/// or before `at`, if it is still after `now`; else `at` itself (the grid is then reached one ping
/// later). A ping is thus never later than without the grid, and pings stay `interval` apart
/// once on it.
pub fn on_grid(origin: Instant, interval: Duration, at: Instant, now: Instant) -> Instant {
    let step = interval.as_nanos();
    if step == 0 {
        return at;
    }
    let since = at.saturating_duration_since(origin).as_nanos();
    let back = u64::try_from(since % step).map(Duration::from_nanos);
    match back {
        Ok(back) if at - back > now => at - back,
        _ => at,
    }
}
