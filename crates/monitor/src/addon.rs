//! The `#[napi]` shims: the ping-report types JS hands back, the threadsafe function that carries
//! pings into JS, and `connect`, which starts the reader thread. Logic lives in [`crate::agent`].

use std::sync::{Condvar, Mutex, PoisonError};

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use nodeguard_proto::worker::{LoopDelay, MemoryUsage, ProfileKind};

use crate::agent::{self, Ended, PendingPing, PingSink, StackReply};
use crate::{js_millis, EXIT_SUPERVISOR_GONE};

/// What the JS ping callback returns:
/// `{ memory: { rssKb, heapTotalKb, heapUsedKb, externalKb, arrayBuffersKb }, stackOnSigint }`. `loopDelay` is measured natively
/// (see [`crate::loopdelay`]); one given by JS is used only where the native hook is off.
#[napi(object)]
pub struct PingReport {
    pub memory: JsMemoryUsage,
    pub loop_delay: Option<JsLoopDelay>,
    /// Node would print the JS stack on SIGINT (`--trace-sigint` on, no SIGINT listener).
    pub stack_on_sigint: Option<bool>,
}

/// The fields of `process.memoryUsage()`, in kB (rounded up; at most 2^32 - 1). Whole numbers
/// below 2^32 because they are read with `napi_get_value_uint32`: each Node-API function the addon
/// calls is bound (lazily) by name in node's symbol tables, and `napi_get_value_double`'s name
/// would fault in 64 kB of them in every app that another function used does not already.
#[napi(object)]
pub struct JsMemoryUsage {
    pub rss_kb: u32,
    pub heap_total_kb: u32,
    pub heap_used_kb: u32,
    pub external_kb: u32,
    pub array_buffers_kb: u32,
}

/// kB from JS as bytes for the wire.
fn kb_bytes(kb: u32) -> u64 {
    u64::from(kb) * 1024
}

/// Event-loop delay since the previous pong, in milliseconds.
#[napi(object)]
pub struct JsLoopDelay {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl From<JsMemoryUsage> for MemoryUsage {
    fn from(m: JsMemoryUsage) -> Self {
        MemoryUsage {
            rss: kb_bytes(m.rss_kb),
            heap_total: kb_bytes(m.heap_total_kb),
            heap_used: kb_bytes(m.heap_used_kb),
            external: kb_bytes(m.external_kb),
            array_buffers: kb_bytes(m.array_buffers_kb),
        }
    }
}

impl From<JsLoopDelay> for LoopDelay {
    fn from(d: JsLoopDelay) -> Self {
        LoopDelay {
            mean_ms: js_millis(d.mean_ms),
            p50_ms: js_millis(d.p50_ms),
            p99_ms: js_millis(d.p99_ms),
            max_ms: js_millis(d.max_ms),
        }
    }
}

/// The JS ping callback: no arguments, returns a [`PingReport`]. Not callee-handled (no error-first
/// argument), weak (never keeps the loop alive), queue of one (the agent keeps one in flight).
type PingCallback = ThreadsafeFunction<(), PingReport, (), Status, false, true, 1>;

/// The JS shutdown callback: no arguments. Weak like the ping callback; unbounded queue (a
/// shutdown comes at most a few times).
type ShutdownCallback = ThreadsafeFunction<(), (), (), Status, false, true, 0>;

/// A profile request as the JS profile callback gets it (see `profiler.js`).
#[napi(object)]
pub struct ProfileRequest {
    pub id: u32,
    /// `cpu` or `heap`.
    pub kind: String,
    pub duration_ms: u32,
}

/// The JS profile callback. Weak like the ping callback; unbounded queue (the supervisor asks
/// for one profile at a time).
type ProfileCallback =
    ThreadsafeFunction<ProfileRequest, (), ProfileRequest, Status, false, true, 0>;

/// Delivers pings (and the shutdown request) to JS through threadsafe functions.
struct JsSink {
    ping: PingCallback,
    shutdown: Option<ShutdownCallback>,
    profile: Option<ProfileCallback>,
    sender: agent::Sender,
    /// Pings delivered so far, to trim after the first ones (see [`crate::trim`]).
    delivered: u64,
}

impl PingSink for JsSink {
    fn deliver(&mut self, ping: PendingPing) {
        self.delivered = self.delivered.saturating_add(1);
        let count = self.delivered;
        // If the call cannot be queued (the environment is closing), napi drops the closure and
        // with it `ping`, which frees the in-flight slot.
        let _status = self.ping.call_with_return_value(
            (),
            ThreadsafeFunctionCallMode::NonBlocking,
            move |report, _env| {
                if let Ok(report) = report {
                    // The loop's turns since the previous ping (the hook, on Node); else what JS
                    // measured; else this ping's own wait for the JS thread, as one sample.
                    let loop_delay = crate::loopdelay::take()
                        .or_else(|| report.loop_delay.map(LoopDelay::from))
                        .unwrap_or_else(|| {
                            let ms = ping.queued().as_secs_f64() * 1000.0;
                            LoopDelay {
                                mean_ms: ms,
                                p50_ms: ms,
                                p99_ms: ms,
                                max_ms: ms,
                            }
                        });
                    // A failed write marks the link broken; the supervisor then sees misses.
                    let _ = ping.answer(
                        report.memory.into(),
                        loop_delay,
                        report.stack_on_sigint.unwrap_or(false),
                    );
                }
                crate::trim::trim_after_ping(count);
                // Returning Ok swallows a JS exception from the callback on purpose (no pong, a
                // miss, no crash): see the crate docs.
                Ok(())
            },
        );
    }

    fn capture_stack(&mut self, reply: StackReply) {
        // Runs on the JS thread at its next interrupt check; never if JS is blocked outside
        // JavaScript (the supervisor's bound then says so). Off: no answer at all.
        let _asked = crate::stack::request(Box::new(move |frames| {
            let _ = reply.send(frames);
        }));
    }

    fn profile(&mut self, id: u64, kind: ProfileKind, duration_ms: u64) {
        let refuse = |why: &str| {
            let _ = self.sender.profile_done(id, Some(why.to_owned()), None);
        };
        let Some(callback) = &self.profile else {
            return refuse("this monitor takes no profiles");
        };
        let Ok(js_id) = u32::try_from(id) else {
            return refuse("profile id out of range");
        };
        let request = ProfileRequest {
            id: js_id,
            kind: match kind {
                ProfileKind::Cpu => "cpu",
                ProfileKind::Heap => "heap",
            }
            .to_owned(),
            duration_ms: u32::try_from(duration_ms).unwrap_or(u32::MAX),
        };
        if callback.call(request, ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
            refuse("the app's JS environment is closing");
        }
    }

    fn shutdown(&mut self) {
        if let Some(callback) = &self.shutdown {
            // If it cannot be queued the environment is closing anyway.
            let _status = callback.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

/// The sending side of this process's connection, once connected.
static SENDER: Mutex<Option<agent::Sender>> = Mutex::new(None);

/// Tells the supervisor that the app is ready for traffic. Returns false when this copy of the
/// addon holds no connection (then nothing was sent); throws if the write failed.
#[napi]
pub fn ready() -> napi::Result<bool> {
    let sender = SENDER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(sender) = sender else {
        return Ok(false);
    };
    sender
        .ready()
        .map_err(|e| napi::Error::from_reason(format!("cannot tell the supervisor: {e}")))?;
    Ok(true)
}

/// The answer to `share()`, as the JS callback gets it: `fd` (a listening socket this process now
/// owns) or the error (`code`, `errno`, `message`), as Node's own listen errors carry them.
#[napi(object)]
pub struct ShareAnswer {
    pub fd: Option<i32>,
    pub code: Option<String>,
    pub errno: Option<i32>,
    pub message: Option<String>,
}

/// The JS callback of one `share()`: not weak (a pending listen keeps the process alive, as a
/// DNS lookup before a listen does), called once.
type ShareCallback = ThreadsafeFunction<ShareAnswer, (), ShareAnswer, Status, false, false, 0>;

/// Asks the supervisor for the app's shared listening socket on `host:port` (cluster mode
/// without --listen); `callback` gets a [`ShareAnswer`] on the JS thread. `host` is an IP address
/// or null. Returns false when this copy of the addon holds no connection (nothing was sent);
/// throws if the write failed.
#[napi]
pub fn share(host: Option<String>, port: u32, callback: ShareCallback) -> napi::Result<bool> {
    let Some(sender) = sender() else {
        return Ok(false);
    };
    let reply = Box::new(move |outcome: agent::ShareOutcome| {
        let answer = match outcome {
            #[cfg(unix)]
            Ok(fd) => ShareAnswer {
                fd: Some(std::os::fd::IntoRawFd::into_raw_fd(fd)),
                code: None,
                errno: None,
                message: None,
            },
            #[cfg(not(unix))]
            Ok(()) => ShareAnswer {
                fd: None,
                code: Some("ENOTSUP".into()),
                errno: None,
                message: Some("shared sockets need Unix".into()),
            },
            Err(error) => ShareAnswer {
                fd: None,
                code: Some(error.code),
                errno: Some(error.errno),
                message: Some(error.message),
            },
        };
        // If it cannot be queued the environment is closing (the descriptor goes with it).
        let _status = callback.call(answer, ThreadsafeFunctionCallMode::NonBlocking);
    });
    sender
        .share(host, port, reply)
        .map_err(|e| napi::Error::from_reason(format!("cannot ask the supervisor: {e}")))?;
    Ok(true)
}

/// Tells the supervisor (which owns other ports, `--listen`) that the app listened on `port`.
/// Returns false when this copy of the addon holds no connection.
#[napi]
pub fn listened_elsewhere(port: u32) -> napi::Result<bool> {
    let Some(sender) = sender() else {
        return Ok(false);
    };
    sender
        .listened_elsewhere(port)
        .map_err(|e| napi::Error::from_reason(format!("cannot tell the supervisor: {e}")))?;
    Ok(true)
}

/// Sends the next part (at most 8192 UTF-16 units) of profile `id` to the supervisor; waits while
/// the supervisor reads slowly (bounded). Returns false without a connection; throws if the write
/// failed.
#[napi]
pub fn profile_chunk(id: u32, data: String) -> napi::Result<bool> {
    let Some(sender) = sender() else {
        return Ok(false);
    };
    sender
        .profile_chunk(u64::from(id), data)
        .map_err(|e| napi::Error::from_reason(format!("cannot send the profile: {e}")))?;
    Ok(true)
}

/// Ends profile `id`: complete, or `error` says why not; `hottest` names the CPU profile's
/// function with the most self time.
#[napi]
pub fn profile_done(id: u32, error: Option<String>, hottest: Option<String>) -> napi::Result<bool> {
    let Some(sender) = sender() else {
        return Ok(false);
    };
    sender
        .profile_done(u64::from(id), error, hottest)
        .map_err(|e| napi::Error::from_reason(format!("cannot send the profile: {e}")))?;
    Ok(true)
}

fn sender() -> Option<agent::Sender> {
    SENDER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Whether this copy of the addon already holds the process's connection.
static CONNECTED: Mutex<bool> = Mutex::new(false);

/// The JS callback that gets the supervisor's answer when `connect` does not wait for it: `""`
/// when welcomed, else the one-line reason. Not weak: the process does not end while its
/// handshake is still out (a short script then still reports a refusal), as it did not when
/// `connect` waited. Called once.
type AnswerCallback = ThreadsafeFunction<String, (), String, Status, false, false, 0>;

/// A handshake whose answer is read on the monitor thread (`connect` with `onAnswer`).
enum Answer {
    /// None is out.
    Idle,
    /// The hello is sent; the answer has not come yet.
    Out,
    /// `""`: welcomed; else the reason.
    Came(String),
}

/// The handshake's answer; [`await_handshake`] waits on [`ANSWERED`] for it.
static ANSWER: Mutex<Answer> = Mutex::new(Answer::Idle);
static ANSWERED: Condvar = Condvar::new();

/// Connects to the supervisor socket at `socketPath`, presenting `token`, and waits (at most
/// [`agent::HANDSHAKE_TIMEOUT`]) for the welcome, then starts the reader thread. Returns
/// `"connected"`; `"already-connected"` (nothing done) if this addon already holds the process's
/// connection; `"not-main-thread"` (nothing done) when called from a worker thread, whose event
/// loop is not the app's. Throws with a one-line reason if the connection fails or is refused.
/// `onShutdown` (optional) is called on the JS thread when the supervisor asks for a graceful stop,
/// `onProfile` (optional) with a `ProfileRequest` when it asks for a CPU profile or heap snapshot.
/// `stackNamesChecked` (optional): this is a Node version whose V8 function names `stack` uses were
/// checked, so they may be looked up at the first hang rather than now.
/// `onAnswer` (optional): do not wait for the supervisor's answer. `connect` then returns
/// `"connecting"` once the hello is sent (a failed connect still throws at once); the reader thread
/// reads the answer, and `onAnswer` gets it on the JS thread (`""` when welcomed, else the reason:
/// the connection is then dropped and the process goes on unmonitored). [`await_handshake`] waits
/// for it. Meanwhile `ready()` and the other messages may be sent: they follow the hello.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn connect(
    env: Env,
    socket_path: String,
    token: String,
    on_ping: PingCallback,
    on_shutdown: Option<ShutdownCallback>,
    on_profile: Option<ProfileCallback>,
    stack_names_checked: Option<bool>,
    on_answer: Option<AnswerCallback>,
) -> napi::Result<&'static str> {
    if !on_process_main_thread() {
        return Ok("not-main-thread");
    }
    let mut connected = CONNECTED.lock().unwrap_or_else(PoisonError::into_inner);
    if *connected {
        return Ok("already-connected");
    }
    // V8's functions for capturing the stack (see `stack`): off when any is missing, or when
    // NODEGUARD_STACK_CAPTURE=0 (the supervisor's --trace-sigint path is then used).
    let v8 = if std::env::var_os("NODEGUARD_STACK_CAPTURE").is_some_and(|v| v == "0") {
        None
    } else {
        // Looked up at the first capture where JS says this Node's V8 names were checked (see
        // `stack::V8::resolve`): each name looked up costs RSS in every app.
        crate::stack::V8::resolve(stack_names_checked != Some(true))
    };
    let stack_capture = v8.is_some();
    if let Some(v8) = v8 {
        v8.install();
        // After teardown the isolate is gone: no interrupt may be requested on it.
        if env
            .add_env_cleanup_hook((), |()| crate::stack::forget())
            .is_err()
        {
            crate::stack::forget();
        }
    }
    let handshake = agent::hello(
        &socket_path,
        &token,
        std::process::id(),
        agent::HANDSHAKE_TIMEOUT,
        stack_capture,
    )
    .map_err(|e| napi::Error::from_reason(e.to_string()))?;
    let sender = handshake.sender();
    let mut sink = JsSink {
        ping: on_ping,
        shutdown: on_shutdown,
        profile: on_profile,
        sender: sender.clone(),
        delivered: 0,
    };
    let Some(on_answer) = on_answer else {
        let connection = handshake
            .finish()
            .map_err(|e| napi::Error::from_reason(e.to_string()))?;
        *SENDER.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
        spawn_monitor(move || exit_supervisor_gone(connection.run(&mut sink)))?;
        *connected = true;
        return Ok("connected");
    };
    *SENDER.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
    *ANSWER.lock().unwrap_or_else(PoisonError::into_inner) = Answer::Out;
    let spawned = spawn_monitor(move || {
        let outcome = handshake.finish();
        let answer = match &outcome {
            Ok(_) => String::new(),
            Err(error) => {
                // This copy holds no connection after all.
                *SENDER.lock().unwrap_or_else(PoisonError::into_inner) = None;
                *CONNECTED.lock().unwrap_or_else(PoisonError::into_inner) = false;
                error.to_string()
            }
        };
        *ANSWER.lock().unwrap_or_else(PoisonError::into_inner) = Answer::Came(answer.clone());
        ANSWERED.notify_all();
        // If it cannot be queued the environment is closing anyway.
        let _status = on_answer.call(answer, ThreadsafeFunctionCallMode::NonBlocking);
        drop(on_answer);
        if let Ok(connection) = outcome {
            exit_supervisor_gone(connection.run(&mut sink));
        }
    });
    if let Err(error) = spawned {
        *SENDER.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *ANSWER.lock().unwrap_or_else(PoisonError::into_inner) = Answer::Idle;
        return Err(error);
    }
    *connected = true;
    Ok("connecting")
}

/// Starts the monitor's native thread.
fn spawn_monitor(run: impl FnOnce() + Send + 'static) -> napi::Result<()> {
    std::thread::Builder::new()
        .name("nodeguard-monitor".into())
        .stack_size(MONITOR_THREAD_STACK)
        .spawn(run)
        .map(drop)
        .map_err(|e| napi::Error::from_reason(format!("cannot start the monitor thread: {e}")))
}

/// After a `connect` that did not wait (`onAnswer`): blocks until the supervisor's answer has
/// come (bounded by the handshake's deadline) and returns it, `""` when welcomed, else the reason.
/// Returns `""` at once when no such handshake was made.
#[napi]
pub fn await_handshake() -> String {
    let mut answer = ANSWER.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        match &*answer {
            Answer::Idle => return String::new(),
            Answer::Came(reason) => return reason.clone(),
            Answer::Out => {
                answer = ANSWERED
                    .wait(answer)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// Stack of the native reader thread: it decodes small frames and writes small answers, so 128 KiB
/// is plenty (the default, 2 MiB of address space, is only touched as used, but its guard and
/// mapping are not needed).
const MONITOR_THREAD_STACK: usize = 128 * 1024;

/// Measures the event loop's turns natively from now on (see [`crate::loopdelay`]): no timer, no
/// wakeup. Call it on the main thread, on Node only (libuv's functions are looked up in the
/// process). If the hook cannot be installed the ping's queueing time is reported as the loop
/// delay. Returns nothing: a boolean would bind `napi_get_boolean`, whose name costs every app
/// 64 kB of node's symbol-table pages (see [`JsMemoryUsage`]).
#[napi]
pub fn watch_loop(env: Env) {
    if !on_process_main_thread() || !crate::loopdelay::install() {
        return;
    }
    if env
        .add_env_cleanup_hook((), |()| crate::loopdelay::remove())
        .is_err()
    {
        crate::loopdelay::remove();
    }
}

/// Whether the caller runs on the process's main thread, where `node` runs the app's main JS
/// environment (worker_threads run elsewhere). Checked natively because asking JS
/// (`require('worker_threads').isMainThread`) costs every supervised app about 1.5 MB RSS.
fn on_process_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and getpid have no preconditions and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) == libc::c_long::from(libc::getpid()) }
    }
    #[cfg(target_os = "macos")]
    {
        // SAFETY: no preconditions.
        unsafe { libc::pthread_main_np() != 0 }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        true
    }
}

/// An HTTP request began (`method`, `target` as in `req.url`): kept in native memory so that a
/// hang's report names it. Returns the id for [`request_end`] (0: not kept, the table was full),
/// its 32 bits as a signed number: `napi_create_int32` is bound anyway, `napi_create_uint32`'s
/// name would cost 64 kB of node's symbol-table pages in every app that serves HTTP (see
/// [`JsMemoryUsage`]). [`request_end`] reads it back as unsigned (JS's ToUint32), the same bits.
#[napi]
pub fn request_begin(method: String, target: String) -> i32 {
    i32::from_ne_bytes(crate::requests::begin(&method, &target).to_ne_bytes())
}

/// The request `id` (from [`request_begin`]) finished or closed.
#[napi]
pub fn request_end(id: u32) {
    crate::requests::end(id);
}

/// The environment variable names the JS side reads, from the wire contract, so a test can check
/// that `index.js` agrees.
#[napi]
pub fn env_names() -> Vec<&'static str> {
    vec![
        nodeguard_proto::ENV_SOCKET,
        nodeguard_proto::ENV_TOKEN,
        nodeguard_proto::ENV_LISTEN,
        nodeguard_proto::ENV_WAIT_READY,
        nodeguard_proto::ENV_SHARE,
    ]
}

/// Ends the process at once: the supervisor is gone, and an orphan must not outlive it. `_exit`
/// runs no handlers and does not wait for the JS thread, which may be stuck in a loop.
fn exit_supervisor_gone(_why: Ended) -> ! {
    #[cfg(unix)]
    {
        // SAFETY: `_exit` has no preconditions; it ends the process without touching its state.
        unsafe { libc::_exit(EXIT_SUPERVISOR_GONE) }
    }
    #[cfg(not(unix))]
    {
        std::process::exit(EXIT_SUPERVISOR_GONE)
    }
}
