//! `nodeguard-monitor`: the Node-API addon that runs inside each supervised Node app.
//!
//! Two layers: [`agent`] holds the socket and protocol logic in plain Rust (unit-tested with
//! `cargo test`), and `addon` is a thin set of `#[napi]` shims over it. `index.js` (the npm
//! package's entry) calls the addon's `connect` once per process with a ping callback; from then
//! on a native reader thread answers the supervisor's pings *through the JS thread* and ends the
//! process with [`EXIT_SUPERVISOR_GONE`] when the supervisor's end of the socket closes.
//!
//! Choices:
//! - The ping callback runs through a weak threadsafe function: it never keeps Node alive. The
//!   pong is written in the `call_with_return_value` closure, on the JS thread, after the callback
//!   returned, so a pong proves the event loop ran.
//! - If the callback throws (or returns something that is not a ping report), the exception is
//!   swallowed and no pong is sent: the supervisor counts a miss, which is the honest signal, and
//!   the app is not crashed by its monitor.
//! - The addon never writes to stdout or stderr and installs no tracing subscriber.
//! - The `addon` module is left out of the unit-test build: its Node-API symbols exist only inside
//!   a `node` process, so a test binary that contained it could not link. Nothing is swapped in
//!   for it; the tests exercise `agent` directly, and tests/monitor.test.js the whole addon.

#[cfg(not(test))]
mod addon;
pub mod agent;
pub mod loopdelay;
pub mod requests;
pub mod stack;
pub mod trim;

/// Exit status of an app whose supervisor connection ended (EOF, read error, or a frame that breaks
/// the framing). 69 is `EX_UNAVAILABLE` from sysexits.h: "a service is unavailable". The process
/// ends with `_exit`, at once, whatever JS is doing: no `exit` handlers, no flushing of JS streams.
pub const EXIT_SUPERVISOR_GONE: i32 = 69;

/// A duration in ms from JS for the wire, which needs finite, non-negative numbers (JSON has no
/// NaN).
fn js_millis(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_numbers_are_clamped_for_the_wire() {
        assert_eq!(js_millis(f64::NAN), 0.0);
        assert_eq!(js_millis(f64::INFINITY), 0.0);
        assert_eq!(js_millis(-3.0), 0.0);
        assert_eq!(js_millis(2.5), 2.5);
    }
}
