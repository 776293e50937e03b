//! The JS thread's stack, captured from the monitor's native thread while JS is blocked, with no
//! signal and no inspector: V8's `Isolate::RequestInterrupt` (what Node's `--trace-sigint` uses
//! internally) queues a callback that V8 runs on the JS thread at its next interrupt check (a loop
//! back-edge, a function entry); the callback reads `StackTrace::CurrentStackTrace` and writes the
//! frames to the supervisor.
//!
//! Node exports V8's C++ API from its binary (for node-gyp addons), so the functions are looked up
//! at run time with `dlsym` by their Itanium-mangled names, which were checked in Node 18, 20, 22,
//! 24 and 26 (`nm -D --defined-only node`). `String::Utf8Value`'s constructor gained a
//! `WriteOptions` argument in Node 24's V8 and lost it again in Node 26's: both names are tried.
//! If any function is missing (Bun, Deno, another embedder, a future Node), or the platform does
//! not use the Itanium C++ ABI, [`V8::resolve`] gives `None` and the feature is off for the
//! process: the monitor's hello then says it cannot capture, and the supervisor falls back to
//! SIGINT with `--trace-sigint`. Nothing here can crash the app by a missing symbol.
//!
//! ABI notes (x86-64 and AArch64 System V / Itanium): a member function takes `this` first; a
//! `Local<T>` is one pointer, returned in a register; `StackFrame::Location` is two `int`s,
//! returned in one register (line in the low half, column in the high half, both zero-based).
//! V8 opens a `HandleScope` around every interrupt callback (`InvokeApiInterruptCallbacks`), so
//! the handles made here are freed when the callback returns and no `HandleScope` is constructed
//! here (its constructor is inline, not exported, in Node 26). The callback runs no JS: the
//! strings converted are the frames' own script and function names, already strings.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Mutex, OnceLock, PoisonError};

use nodeguard_proto::worker::MAX_FRAMES;

/// A `v8::Local<T>`: one pointer, opaque here.
type Local = *mut c_void;
/// A `v8::Isolate*`.
type Isolate = *mut c_void;
type InterruptCallback = unsafe extern "C" fn(Isolate, *mut c_void);

/// Room for a `v8::String::Utf8Value` (a `char*` and a length: 16 bytes in every version; more
/// room and alignment than it needs, so a larger future layout would not overrun the stack).
#[repr(C, align(16))]
struct Utf8Storage([u8; 128]);

/// The two constructor signatures of `v8::String::Utf8Value` (see the module docs).
#[derive(Clone, Copy)]
enum Utf8New {
    Plain(unsafe extern "C" fn(*mut Utf8Storage, Isolate, Local)),
    WithOptions(unsafe extern "C" fn(*mut Utf8Storage, Isolate, Local, c_int)),
}

/// `v8::String::REPLACE_INVALID_UTF8`, the constructor's default where it takes options.
const REPLACE_INVALID_UTF8: c_int = 8;
/// `v8::StackTrace::kDetailed`.
const STACK_TRACE_DETAILED: c_int = 127;
/// Longest function or script name kept, in bytes.
const MAX_NAME: usize = 512;

/// What the native thread needs to ask for a stack: the main thread's isolate and
/// `Isolate::RequestInterrupt`, resolved when the monitor connects.
#[derive(Clone, Copy)]
pub struct V8 {
    isolate: Isolate,
    request_interrupt: unsafe extern "C" fn(Isolate, InterruptCallback, *mut c_void),
}

/// The functions that read the stack, used only in the interrupt callback. Each `dlsym` of a name
/// in Node's binary faults in pages of its symbol tables (about 20 kB of RSS per name, 192 kB for
/// these nine), so on the Node versions they were checked in they are looked up on the JS thread
/// at the first capture, not at connect (see [`V8::resolve`]).
#[derive(Clone, Copy)]
struct StackFns {
    current_stack_trace: unsafe extern "C" fn(Isolate, c_int, c_int) -> Local,
    frame_count: unsafe extern "C" fn(Local) -> c_int,
    frame: unsafe extern "C" fn(Local, Isolate, u32) -> Local,
    location: unsafe extern "C" fn(Local) -> u64,
    script_name: unsafe extern "C" fn(Local) -> Local,
    function_name: unsafe extern "C" fn(Local) -> Local,
    utf8_new: Utf8New,
    utf8_drop: unsafe extern "C" fn(*mut Utf8Storage),
}

/// [`StackFns`] once looked up (`None` inside: some name is missing).
static STACK_FNS: OnceLock<Option<StackFns>> = OnceLock::new();

// SAFETY: the isolate pointer is only dereferenced by V8 itself: `RequestInterrupt` is documented
// as callable from any thread, and everything else runs in the callback on the JS thread.
unsafe impl Send for V8 {}

/// Whether the process's isolate may still be interrupted (false once Node tears the environment
/// down, so a late request cannot touch a disposed isolate). Held while requesting.
static ALIVE: Mutex<Option<V8>> = Mutex::new(None);

#[cfg(all(
    any(target_os = "linux", target_os = "macos"),
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no other precondition.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

#[cfg(not(all(
    any(target_os = "linux", target_os = "macos"),
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn lookup(_name: &CStr) -> Option<*mut c_void> {
    None
}

impl V8 {
    /// Resolves `Isolate::GetCurrent` and `RequestInterrupt` and takes the current isolate. Call it
    /// on the JS thread. `None` when either is missing (Bun, Deno, another embedder): then the
    /// feature is off. With `eager` the stack-reading functions are looked up now too, and any
    /// missing one turns the feature off (the supervisor then falls back to SIGINT): the monitor
    /// asks for that on a Node version their names were not checked in. Otherwise they are looked
    /// up at the first capture, in the interrupt callback on the JS thread (never on the native
    /// thread, which must not wait on the loader's lock held by a JS thread blocked in `dlopen`).
    pub fn resolve(eager: bool) -> Option<Self> {
        let get_current = lookup(c"_ZN2v87Isolate10GetCurrentEv")?;
        let request_interrupt = lookup(c"_ZN2v87Isolate16RequestInterruptEPFvPS0_PvES2_")?;
        if eager && StackFns::get().is_none() {
            return None;
        }
        // SAFETY: each address is the named function, whose C++ signature (mangled in its name)
        // is the Rust one it is given, under the Itanium ABI.
        unsafe {
            let get_current: unsafe extern "C" fn() -> Isolate = std::mem::transmute(get_current);
            let isolate = get_current();
            if isolate.is_null() {
                return None;
            }
            Some(V8 {
                isolate,
                request_interrupt: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(Isolate, InterruptCallback, *mut c_void),
                >(request_interrupt),
            })
        }
    }

    /// Makes this the process's isolate for [`request`] until [`forget`].
    pub fn install(self) {
        *ALIVE.lock().unwrap_or_else(PoisonError::into_inner) = Some(self);
    }
}

impl StackFns {
    /// Looks the functions up once (on the JS thread: see [`V8::resolve`]).
    fn get() -> Option<Self> {
        *STACK_FNS.get_or_init(Self::lookup_all)
    }

    fn lookup_all() -> Option<Self> {
        // SAFETY (for every transmute below): each address is the named function, whose C++
        // signature (mangled in its name) is the Rust one it is given, under the Itanium ABI.
        unsafe {
            let utf8_new = match lookup(
                c"_ZN2v86String9Utf8ValueC1EPNS_7IsolateENS_5LocalINS_5ValueEEENS0_12WriteOptionsE",
            ) {
                Some(f) => Utf8New::WithOptions(std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut Utf8Storage, Isolate, Local, c_int),
                >(f)),
                None => Utf8New::Plain(std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut Utf8Storage, Isolate, Local),
                >(lookup(
                    c"_ZN2v86String9Utf8ValueC1EPNS_7IsolateENS_5LocalINS_5ValueEEE",
                )?)),
            };
            Some(StackFns {
                current_stack_trace: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(Isolate, c_int, c_int) -> Local,
                >(lookup(
                    c"_ZN2v810StackTrace17CurrentStackTraceEPNS_7IsolateEiNS0_17StackTraceOptionsE",
                )?),
                frame_count: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Local) -> c_int>(
                    lookup(c"_ZNK2v810StackTrace13GetFrameCountEv")?,
                ),
                frame: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(Local, Isolate, u32) -> Local,
                >(lookup(c"_ZNK2v810StackTrace8GetFrameEPNS_7IsolateEj")?),
                location: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Local) -> u64>(
                    lookup(c"_ZNK2v810StackFrame11GetLocationEv")?,
                ),
                script_name: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Local) -> Local>(
                    lookup(c"_ZNK2v810StackFrame13GetScriptNameEv")?,
                ),
                function_name: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(Local) -> Local,
                >(lookup(
                    c"_ZNK2v810StackFrame15GetFunctionNameEv",
                )?),
                utf8_new,
                utf8_drop: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut Utf8Storage)>(
                    lookup(c"_ZN2v86String9Utf8ValueD1Ev")?,
                ),
            })
        }
    }

    /// The frames of the current JS stack, innermost first. Only inside an interrupt callback
    /// (on the JS thread, under V8's handle scope).
    unsafe fn frames(&self, isolate: Isolate) -> Vec<String> {
        let limit = c_int::try_from(MAX_FRAMES).unwrap_or(10);
        let trace = (self.current_stack_trace)(isolate, limit, STACK_TRACE_DETAILED);
        if trace.is_null() {
            return Vec::new();
        }
        let count = u32::try_from((self.frame_count)(trace)).unwrap_or(0);
        let mut frames = Vec::new();
        for index in 0..count.min(u32::try_from(MAX_FRAMES).unwrap_or(10)) {
            let frame = (self.frame)(trace, isolate, index);
            if frame.is_null() {
                continue;
            }
            let (line, column) = line_and_column((self.location)(frame));
            let function = self.string(isolate, (self.function_name)(frame));
            let script = self.string(isolate, (self.script_name)(frame));
            let function = if function.is_empty() {
                "<anonymous>".to_string()
            } else {
                function
            };
            let script = if script.is_empty() {
                "<anonymous>".to_string()
            } else {
                script
            };
            frames.push(format!("{function} ({script}:{line}:{column})"));
        }
        frames
    }

    /// A string handle's text (empty for an empty handle), at most [`MAX_NAME`] bytes.
    unsafe fn string(&self, isolate: Isolate, value: Local) -> String {
        if value.is_null() {
            return String::new();
        }
        let mut storage = Utf8Storage([0; 128]);
        match self.utf8_new {
            Utf8New::Plain(new) => new(&mut storage, isolate, value),
            Utf8New::WithOptions(new) => new(&mut storage, isolate, value, REPLACE_INVALID_UTF8),
        }
        // The first field is the NUL-terminated `char*` (null if the conversion failed).
        let text = std::ptr::read(storage.0.as_ptr().cast::<*const c_char>());
        let mut result = if text.is_null() {
            String::new()
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        };
        (self.utf8_drop)(&mut storage);
        if result.len() > MAX_NAME {
            let mut end = MAX_NAME;
            while !result.is_char_boundary(end) {
                end -= 1;
            }
            result.truncate(end);
        }
        result
    }
}

/// `StackFrame::Location` as returned in a register: two zero-based `int`s, the line in the low
/// half, the column in the high half. One-based, as Node prints them.
fn line_and_column(location: u64) -> (i64, i64) {
    let b = location.to_le_bytes();
    let line = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let column = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (i64::from(line) + 1, i64::from(column) + 1)
}

/// The environment is going away: no more interrupt requests.
pub fn forget() {
    *ALIVE.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// What the callback does with the frames, on the JS thread.
pub type Deliver = Box<dyn FnOnce(Vec<String>) + Send>;

struct Request {
    deliver: Deliver,
}

unsafe extern "C" fn on_interrupt(isolate: Isolate, data: *mut c_void) {
    // SAFETY: `data` is the box leaked by `request`, handed to V8 once, called back once.
    let request = Box::from_raw(data.cast::<Request>());
    // A missing function (only possible where they were not looked up at connect) gives no
    // frames: the supervisor then says the stack could not be read.
    let frames = StackFns::get().map_or_else(Vec::new, |fns| fns.frames(isolate));
    (request.deliver)(frames);
}

/// Asks V8 to run `deliver` with the JS stack on the JS thread. False (nothing asked) when the
/// feature is off or the environment is gone. If JS never reaches an interrupt check the request
/// stays queued (and its few bytes leak: the process is about to be killed).
pub fn request(deliver: Deliver) -> bool {
    let alive = ALIVE.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(v8) = *alive else {
        return false;
    };
    let data = Box::into_raw(Box::new(Request { deliver }));
    // SAFETY: the isolate is alive (checked under the lock `forget` takes), `on_interrupt` has the
    // callback's signature, and `data` stays valid until the callback takes it back.
    unsafe { (v8.request_interrupt)(v8.isolate, on_interrupt, data.cast()) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_register_splits_into_one_based_line_and_column() {
        assert_eq!(line_and_column((4 << 32) | 11), (12, 5));
        assert_eq!(line_and_column(0), (1, 1));
    }

    #[test]
    fn outside_node_nothing_resolves_and_nothing_is_requested() {
        assert!(V8::resolve(true).is_none());
        assert!(V8::resolve(false).is_none());
        assert!(!request(Box::new(|_| {})));
    }
}
