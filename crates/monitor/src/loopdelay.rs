//! Event-loop delay without a timer: how long each turn of the app's event loop ran without going
//! back to waiting for events (the time any event arriving meanwhile waited), measured by a libuv
//! prepare handle on the JS thread and libuv's own idle-time metric.
//!
//! A prepare handle's callback runs once per loop iteration, just before the loop blocks in the
//! kernel (epoll), and never wakes the loop itself: an idle app iterates only when an event comes
//! (the heartbeat ping, once a second by default), so this costs no wakeup, where the 20 ms interval
//! timer it replaces woke the process 50 times a second. Between two prepare callbacks the loop
//! waited in the kernel for `uv_metrics_idle_time` delta and ran for the rest: I/O callbacks (an
//! HTTP handler), timers, immediates, close callbacks. That rest is one sample. A handler that
//! blocks for 300 ms is one 300 ms sample, whenever it happens between two pings.
//!
//! When a ping is answered ([`take`]), the turn in progress is counted up to now as a sample of its
//! own (a stall that ends in the same turn as the ping's callback is not left for the next
//! interval), the figures (mean, p50, p99, max over the samples since the previous ping) are
//! returned and the histogram starts afresh.
//!
//! The libuv functions are looked up with `dlsym` in the running process (Node exports libuv for
//! addons; `nm -D` checked in Node 18, 20, 22, 24 and 26). `index.js` asks for the hook only on
//! Node: Bun and Deno implement parts of libuv's API or none, and there the monitor reports the
//! ping's own queueing time instead (from the native thread receiving the ping to the JS callback).
//!
//! Percentiles come from a log-linear histogram (16 sub-buckets per power of two: within 6.25 %),
//! mean and max are exact.

use std::ffi::{c_int, c_void, CStr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use nodeguard_proto::worker::LoopDelay;

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every u64 nanosecond value.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

/// Samples (in nanoseconds) since the previous ping.
#[derive(Debug)]
pub struct Stats {
    count: u64,
    sum_ns: u128,
    max_ns: u64,
    buckets: [u32; BUCKETS],
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub const fn new() -> Self {
        Stats {
            count: 0,
            sum_ns: 0,
            max_ns: 0,
            buckets: [0; BUCKETS],
        }
    }

    pub fn record(&mut self, ns: u64) {
        self.count = self.count.saturating_add(1);
        self.sum_ns = self.sum_ns.saturating_add(u128::from(ns));
        self.max_ns = self.max_ns.max(ns);
        if let Some(slot) = self.buckets.get_mut(bucket(ns)) {
            *slot = slot.saturating_add(1);
        }
    }

    /// The figures in ms, and a fresh start. All zero without samples.
    pub fn take(&mut self) -> LoopDelay {
        let figures = if self.count == 0 {
            LoopDelay::default()
        } else {
            #[allow(clippy::cast_precision_loss)] // ms figures: f64 precision is plenty
            let mean = self.sum_ns as f64 / self.count as f64;
            LoopDelay {
                mean_ms: mean / 1e6,
                p50_ms: self.percentile(50) / 1e6,
                p99_ms: self.percentile(99) / 1e6,
                #[allow(clippy::cast_precision_loss)]
                max_ms: self.max_ns as f64 / 1e6,
            }
        };
        *self = Stats::new();
        figures
    }

    /// The value (ns) at percentile `p`: the middle of its bucket, never above the max.
    fn percentile(&self, p: u64) -> f64 {
        // The rank of the sample wanted, 1-based: ceil(p% of count).
        let rank = (u128::from(self.count) * u128::from(p))
            .div_ceil(100)
            .max(1);
        let mut seen: u128 = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += u128::from(n);
            if seen >= rank {
                let (low, width) = bucket_range(index);
                #[allow(clippy::cast_precision_loss)]
                let middle = low as f64 + (width as f64 - 1.0) / 2.0;
                #[allow(clippy::cast_precision_loss)]
                return middle.min(self.max_ns as f64);
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let max = self.max_ns as f64;
        max
    }
}

/// The bucket of a value: values below 16 exactly, then 16 per power of two.
fn bucket(ns: u64) -> usize {
    if ns < SUB {
        return usize::try_from(ns).unwrap_or(0);
    }
    let top = 63 - ns.leading_zeros(); // >= SUB_BITS
    let shift = top - SUB_BITS;
    let sub = (ns >> shift) & (SUB - 1);
    usize::try_from((u64::from(shift + 1) << SUB_BITS) + sub).unwrap_or(BUCKETS - 1)
}

/// The lowest value of a bucket and how many values it holds.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, 1);
    }
    let shift = (index >> SUB_BITS) - 1;
    ((SUB + (index & (SUB - 1))) << shift, 1 << shift)
}

/// libuv's functions, found in the running process. Only those the hook needs from the start: each
/// name looked up in Node's binary faults in pages of its symbol tables (RSS in every app), so
/// `uv_close` is looked up only when the hook is removed, and the clock is Rust's monotonic one
/// (`uv_hrtime` reads the same clock).
#[derive(Clone, Copy)]
struct Uv {
    default_loop: unsafe extern "C" fn() -> *mut c_void,
    loop_configure: unsafe extern "C" fn(*mut c_void, c_int, ...) -> c_int,
    prepare_init: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    prepare_start: unsafe extern "C" fn(*mut c_void, unsafe extern "C" fn(*mut c_void)) -> c_int,
    unref: unsafe extern "C" fn(*mut c_void),
    idle_time: unsafe extern "C" fn(*mut c_void) -> u64,
}

/// `UV_METRICS_IDLE_TIME` of `uv_loop_option`.
const UV_METRICS_IDLE_TIME: c_int = 1;

/// Room for a `uv_prepare_t` (120 bytes on 64-bit Linux and macOS): more than it needs.
#[repr(C, align(16))]
struct HandleStorage([u8; 512]);

/// The hook's state; touched only on the JS thread (the prepare callback, the ping's answer).
struct Hook {
    uv: Uv,
    event_loop: *mut c_void,
    handle: *mut HandleStorage,
    /// When the previous sample ended, and libuv's idle time then (ns).
    last: Instant,
    last_idle_ns: u64,
    stats: Stats,
}

// SAFETY: the pointers are used only on the JS thread that installed the hook (the prepare callback
// and `take` both run there); the mutex only satisfies `static`.
unsafe impl Send for Hook {}

static HOOK: Mutex<Option<Box<Hook>>> = Mutex::new(None);

#[cfg(unix)]
fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no other precondition.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

#[cfg(not(unix))]
fn lookup(_name: &CStr) -> Option<*mut c_void> {
    None
}

impl Uv {
    fn resolve() -> Option<Uv> {
        // SAFETY (every transmute): each address is the libuv function of that name, whose C
        // signature (uv.h, stable across libuv 1.x) is the one given.
        unsafe {
            Some(Uv {
                default_loop: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn() -> *mut c_void,
                >(lookup(c"uv_default_loop")?),
                loop_configure: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, c_int, ...) -> c_int,
                >(lookup(c"uv_loop_configure")?),
                prepare_init: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
                >(lookup(c"uv_prepare_init")?),
                prepare_start: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, unsafe extern "C" fn(*mut c_void)) -> c_int,
                >(lookup(c"uv_prepare_start")?),
                unref: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(
                    lookup(c"uv_unref")?,
                ),
                idle_time: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void) -> u64,
                >(lookup(c"uv_metrics_idle_time")?),
            })
        }
    }
}

fn hook() -> std::sync::MutexGuard<'static, Option<Box<Hook>>> {
    HOOK.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hook {
    /// Ends the current sample now.
    fn sample(&mut self) {
        // SAFETY: plain libuv calls on the loop this thread runs.
        let (now, idle) = unsafe { (Instant::now(), (self.uv.idle_time)(self.event_loop)) };
        let elapsed = u64::try_from(now.duration_since(self.last).as_nanos()).unwrap_or(u64::MAX);
        let busy = elapsed.saturating_sub(idle.saturating_sub(self.last_idle_ns));
        self.stats.record(busy);
        self.last = now;
        self.last_idle_ns = idle;
    }
}

unsafe extern "C" fn on_prepare(_handle: *mut c_void) {
    // No panic can cross this boundary: nothing below panics (saturating arithmetic, a poisoned
    // lock is taken over).
    if let Some(hook) = hook().as_mut() {
        hook.sample();
    }
}

/// Installs the hook on the default loop (call it on the main JS thread, once connected). False
/// when libuv's functions are not all there or the handle could not be started: then [`take`]
/// gives `None` and the caller reports the ping's queueing time.
pub fn install() -> bool {
    let mut slot = hook();
    if slot.is_some() {
        return true;
    }
    let Some(uv) = Uv::resolve() else {
        return false;
    };
    let handle = Box::into_raw(Box::new(HandleStorage([0; 512])));
    // SAFETY: libuv calls on the main thread's loop; `handle` is zeroed, large and aligned enough
    // for a uv_prepare_t, and lives until the hook is removed (leaked if the close cannot finish).
    unsafe {
        let event_loop = (uv.default_loop)();
        if event_loop.is_null() {
            drop(Box::from_raw(handle));
            return false;
        }
        // Node turns the idle-time metric on for its loops; this makes sure (it only sets a flag).
        if (uv.loop_configure)(event_loop, UV_METRICS_IDLE_TIME) != 0
            || (uv.prepare_init)(event_loop, handle.cast()) != 0
        {
            drop(Box::from_raw(handle));
            return false;
        }
        let now = Instant::now();
        let idle = (uv.idle_time)(event_loop);
        *slot = Some(Box::new(Hook {
            uv,
            event_loop,
            handle,
            last: now,
            last_idle_ns: idle,
            stats: Stats::new(),
        }));
        // Unreferenced: the hook never keeps the process alive.
        (uv.unref)(handle.cast());
        if (uv.prepare_start)(handle.cast(), on_prepare) != 0 {
            // Initialised but never started: close it; the storage is leaked (a few hundred bytes
            // once), as the close completes on a later loop turn.
            close(handle.cast());
            *slot = None;
            return false;
        }
    }
    true
}

/// Stops the hook (the environment is being torn down). The handle's storage is leaked: libuv may
/// touch it until the close completes, on a loop turn that may never come.
pub fn remove() {
    if let Some(hook) = hook().take() {
        // SAFETY: closing our own handle on its loop's thread.
        unsafe { close(hook.handle.cast()) };
    }
}

/// `uv_close(handle, NULL)`, looked up now (see [`Uv`]); without it the handle stays open.
///
/// # Safety
/// `handle` is an initialised libuv handle of the loop this thread runs.
unsafe fn close(handle: *mut c_void) {
    if let Some(address) = lookup(c"uv_close") {
        // SAFETY: the address is libuv's uv_close, whose C signature (uv.h) is the one given.
        let close = unsafe {
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, *const c_void)>(
                address,
            )
        };
        // SAFETY: as the caller promises.
        unsafe { close(handle, std::ptr::null()) };
    }
}

/// The loop delay since the previous call, counting the turn in progress up to now; `None` when
/// the hook is not installed.
pub fn take() -> Option<LoopDelay> {
    let mut slot = hook();
    let hook = slot.as_mut()?;
    hook.sample();
    Some(hook.stats.take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_and_hold_it() {
        let mut previous = 0;
        for ns in (0..5000).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 3, u64::MAX]) {
            let index = bucket(ns);
            assert!(index < BUCKETS);
            assert!(index >= previous || ns > 5000);
            previous = index;
            let (low, width) = bucket_range(index);
            assert!(
                low <= ns && ns - low < width,
                "{ns} in bucket {index} ({low}+{width})"
            );
            // 16 buckets per power of two: within 1/16 of the value.
            assert!(width == 1 || width * 16 <= low);
        }
    }

    #[test]
    fn figures_in_ms_and_a_fresh_start() {
        let mut stats = Stats::new();
        assert_eq!(stats.take(), LoopDelay::default());
        for _ in 0..98 {
            stats.record(100_000); // 0.1 ms
        }
        stats.record(20_000_000);
        stats.record(300_000_000); // one 300 ms stall
        let d = stats.take();
        assert!((d.max_ms - 300.0).abs() < 1e-9);
        assert!((d.p50_ms - 0.1).abs() < 0.1 * 0.07, "{d:?}");
        assert!((d.p99_ms - 20.0).abs() < 20.0 * 0.07, "{d:?}");
        assert!((d.mean_ms - (98.0 * 0.1 + 320.0) / 100.0).abs() < 1e-9);
        assert_eq!(stats.take(), LoopDelay::default());
        stats.record(5_000_000);
        let d = stats.take();
        assert!(
            (d.p99_ms - 5.0).abs() < 0.35 && d.p99_ms <= 5.0 && d.max_ms == 5.0,
            "{d:?}"
        );
    }

    #[test]
    fn without_libuv_the_hook_is_not_installed() {
        // The test binary has no libuv: install says so, take gives nothing.
        assert!(!install());
        assert!(take().is_none());
    }
}
