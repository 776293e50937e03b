//! nodeguard: a supervisor for Node.js apps that restarts them when they exit and when their event
//! loop stops answering heartbeats. The binary (`main/`) is a thin shell over this library.
//!
//! # Theory of operation
//!
//! One current-thread tokio runtime runs one actor, the [`crate::supervisor`], which owns the table of
//! apps, and one task per app (`supervisor::worker::WorkerTask`), which owns its child process and
//! drives a pure state machine (`core::machine`). Two more threads: the spawner (children are
//! started, without a fork on Linux, from one long-lived thread so `PR_SET_PDEATHSIG` holds) and
//! the output writer.
//!
//! **A command** (`nodeguard restart api`):
//! 1. `cli` parses it; `io::control_client` writes one frame (u32 length + JSON `Request`) to
//!    `<home>/run/control.sock`.
//! 2. `io::control_server` accepts it, checks the peer's uid and the frame's size and version, and
//!    sends a `supervisor::api::ControlRequest` (command + oneshot reply) to the actor.
//! 3. The actor matches the target against its table and hands each app task a command; it never
//!    awaits an app, so one slow app cannot stall the others.
//! 4. The app task turns the command into an `Event`, runs `core::machine::Worker::step` (event +
//!    now → next phase + actions) and performs the actions: a shutdown message to the monitor or a
//!    signal to the process group, then a spawn on the spawner thread.
//! 5. The command registered a waiter with a goal ("running at generation n+1"); when a snapshot
//!    meets it the reply is sent, so `restart` returns once the app really answers again.
//! 6. The reply (`Outcome::Done { apps }`) goes back over the socket and `cli::render` prints it.
//!
//! **A heartbeat**:
//! 1. The machine arms a timer on a grid shared by all apps (one wakeup per interval, not per app).
//! 2. At the tick the app task writes `Ping{seq}` to the app's connection on
//!    `<home>/run/worker.sock` (`io::monitor_socket`, authenticated by a per-spawn token).
//! 3. In the app the monitor's native thread queues the ping to the JS thread; the JS callback
//!    returns memory and loop-delay figures and the pong is written from there, so a pong proves
//!    the event loop ran.
//! 4. The pong becomes `Event::Pong`: misses reset, the memory guard checks the tree's RSS.
//! 5. A missed deadline counts a miss unless our own timer fired late (starvation is not a hang).
//! 6. At N misses the supervisor probes the monitor's native thread, which answers at once even
//!    while JS is blocked: a ping stuck in JS for a whole timeout confirms the hang.
//! 7. Confirmed: the monitor captures the JS stack through V8's interrupt and sends it (where it
//!    cannot, SIGINT makes Node print it under `--trace-sigint` and `io::forensics` catches it from
//!    stderr); the frames are mapped through source maps by `io::sourcemap`, SIGKILL follows, and
//!    the restart policy spawns a replacement.
//!
//! # Layout
//!
//! Layers depend one way, `core → platform → config → io → supervisor → cli`: a module may use its
//! own layer and the layers before it, and `io` may use `supervisor::api` (the actor's inbox
//! types) but no other part of `supervisor`. `scripts/check-layers.js` enforces this in the lint
//! step.
//!
//! | layer | owns | a new … goes here |
//! |---|---|---|
//! | [`core`] | the per-app state machine, heartbeat and hang rules, restart policy, exit kinds, units; pure, no I/O | heartbeat or restart rule: `core::machine` (with a table test) |
//! | [`config`] | validated app specs, PM2 config files, the one mapping to the wire's `AppDefinition` | config field: `config::file` (checker) and `config::AppSpec` |
//! | [`io`] | sockets (control, worker, HTTP), home and state file, logs and output, systemd notify, process trees, file watches (inotify) | socket message: `crates/proto` + the server in `io` that reads it |
//! | [`supervisor`] | the actor and its table, the per-app task, spawning, rolling reload, persistence, watch and cron triggers | behaviour that spans apps: the actor; per app: `supervisor::worker` |
//! | [`cli`] | flags and `--help`, client verbs, rendering for people | CLI verb: `cli` (flags) and `main/verbs.rs` (what it does) |

pub mod cli;
pub mod config;
pub mod core;
pub mod io;
pub mod platform;
pub mod supervisor;
