'use strict';
// nodeguard-monitor: the in-app half of nodeguard.
//
// `start()` connects this process to the nodeguard supervisor that spawned it (it finds the socket
// and a per-spawn token in NODEGUARD_SOCKET / NODEGUARD_TOKEN). From then on a native thread
// answers the supervisor's heartbeat pings *through this JS thread*, so a blocked event loop stops
// answering, and it ends the process (exit code 69) the moment the supervisor's end of the socket
// closes, even if JS is stuck in a loop. Outside nodeguard `start()` does nothing, returns false.
//
// Notes on choices:
// - One connection per process, even when two copies of this package are loaded (the preloaded
//   one and the app's own): the outcome of the first `start()` is kept in a process-global object
//   under Symbol.for('nodeguard-monitor') and every later call, from any copy, returns it (or
//   rethrows its error). The object's shape, { started, supervised, error }, is a contract between
//   versions of this package: only add to it.
// - Nothing is loaded up front. The addon is required only once there is a supervisor to talk to,
//   so requiring this package costs next to nothing elsewhere and works on platforms without a
//   build. Node modules with a footprint are avoided altogether: perf_hooks (or the global
//   `performance`) and worker_threads would each add about 1 MB RSS to every supervised app.
// - Event-loop delay costs no timer and no wakeup. On Node the addon hooks a libuv prepare handle
//   (unref'd) that runs once per loop turn, just before the loop waits for events, and reads
//   libuv's idle-time metric: each turn's running time (callbacks, timers, an HTTP handler) is one
//   sample, so a handler blocking 300 ms is one 300 ms sample whenever it happens, and an idle app
//   turns only for the heartbeat ping. The 20 ms interval timer this replaces woke every supervised
//   app 50 times a second (0.8 % of a core, idle). perf_hooks.monitorEventLoopDelay() was not an
//   option: it runs a timer of its own at its resolution, perf_hooks costs about 0.8 MB RSS, and
//   on Node 20 its reset() forgets the time of its previous tick, so the first interval after each
//   reset is never recorded (a stall that ends just before a ping is answered vanishes). On Bun
//   and Deno (no libuv hook) the figure is the ping's own wait for the JS thread, measured from the
//   native thread receiving it.
// - Only the main thread connects: in a worker_thread `start()` returns false and does nothing
//   (checked natively).
//
// Cluster mode (`nodeguard start app.js -i N --listen PORT`): the supervisor binds PORT once and
// every instance inherits the socket; NODEGUARD_LISTEN says which fd is which port. `start()`
// patches net.Server.prototype.listen so the app's unchanged `server.listen(PORT)` (also
// `listen(PORT, host, cb)`, `listen({ port })`, a port given as a string) listens on the inherited
// socket (`{ fd }`) instead; the host is ignored, the supervisor chose it. `listen(server)` is the
// explicit form. Once every supervisor-owned port has a listening server the monitor tells the
// supervisor `Ready` (with NODEGUARD_WAIT_READY=1 only `ready()` does). A TCP listen on any other
// port is reported to the supervisor, which says so ("web:0 listened on 3721, not 3720").
//
// Cluster mode without --listen (`-i N`, N >= 2; NODEGUARD_SHARE is set): the patched listen asks
// the supervisor for the address (port 1-65535, and the host: an IP as given, a name looked up here
// first as Node does, none for Node's default) through the addon's `share()`; the supervisor binds
// it once for the app and sends the listening socket with its answer (SCM_RIGHTS, received by the
// native reader thread), and the server listens on it (`{ fd }`). Every instance gets the same
// socket. A failure is an 'error' event with Node's code. Port 0, paths, fds/handles and
// `exclusive`/`ipv6Only`/`reusePort` listens are left to the app. `Ready` is sent once the server
// listens on every port NODEGUARD_SHARE lists (the ports this instance number shared before).
//
// Graceful stop: the supervisor's shutdown message (stop, restart, reload, a supervisor shutting
// down), and SIGTERM from anyone when the app has no SIGTERM handler, lead to one place. The drain
// comes first, whatever the app handles: every server that listened through the patched listen()
// stops accepting (on a shared socket the other instances keep accepting, so no connection is
// refused); a kept-alive connection ends after its next response, which says `Connection: close`,
// and one still idle after DRAIN_IDLE_GRACE_MS is closed (closing an idle connection at once races
// with the client sending its next request on it, and that request is lost); in-flight requests
// finish. Only once no HTTP connection is left (or after half the kill timeout, for a stream that
// never ends; an upgraded connection such as a WebSocket is the app's to close) does the app's own
// stop run: if the app listens for 'shutdown' (`on('shutdown', fn)`), that event; otherwise, if it
// has its own SIGTERM handler, the shutdown message becomes a real SIGTERM for it (its
// `server.close(cb)` then finds the server closed and calls back, without an error, once the
// connections are gone); otherwise the process exits 0 once every connection has ended. With no
// server at all SIGTERM keeps its default meaning (the process ends by the signal, as without the
// monitor). A SIGTERM sent straight to the process of an app that handles SIGTERM reaches its
// handler at once (Node calls every listener). The supervisor SIGKILLs after its kill timeout
// regardless.
//
// Why the drain comes first: an app's own handler typically calls `server.close()`, which on
// Node 19+ destroys every idle kept-alive connection at once (a request the client is sending on
// one that moment is reset) and leaves busy ones serving request after request without ever
// saying `Connection: close`, so under constant load `close`'s callback never comes and the kill
// timeout's SIGKILL resets them all. NestJS' shutdown hooks and Next.js' `next start` close their
// servers that way too.
//
// PM2's contracts, for apps written for PM2: apps run without an IPC channel, so `start()` gives a
// process without `process.send` one that takes `process.send('ready')` as `ready()` (PM2's
// readiness call, with wait_ready) and drops any other message. The shutdown message, when the
// app has no 'shutdown' listener here: with shutdown_with_message and a `process.on('message')`
// listener, that listener gets 'shutdown' (as PM2 sends it); else, if the app handles its
// kill_signal (NODEGUARD_KILL_SIGNAL, default SIGTERM), it gets that signal; else, if it handles
// only the other of SIGINT and SIGTERM, it gets that one (an app written for PM2's SIGINT keeps its
// cleanup under nodeguard's SIGTERM, and the reverse); else the default stop above. Each comes
// after the drain.

const ENV_SOCKET = 'NODEGUARD_SOCKET';
const ENV_TOKEN = 'NODEGUARD_TOKEN';
const ENV_LISTEN = 'NODEGUARD_LISTEN';
const ENV_WAIT_READY = 'NODEGUARD_WAIT_READY';
const ENV_KILL_SIGNAL = 'NODEGUARD_KILL_SIGNAL';
const ENV_SHUTDOWN_MESSAGE = 'NODEGUARD_SHUTDOWN_MESSAGE';
const ENV_SHARE = 'NODEGUARD_SHARE';
const ENV_KILL_TIMEOUT = 'NODEGUARD_KILL_TIMEOUT_MS';
/** The kill timeout when the supervisor does not say (NODEGUARD_KILL_TIMEOUT_MS): its default. */
const DEFAULT_KILL_TIMEOUT_MS = 5000;
/** Where a server's drain state is kept (its open HTTP connections). */
const DRAIN_KEY = Symbol('nodeguard-drain');
const STATE_KEY = Symbol.for('nodeguard-monitor');
const ERROR_PREFIX = 'nodeguard-monitor: ';

function processState() {
  let state = globalThis[STATE_KEY];
  if (state === undefined) {
    state = {
      started: false,
      supervised: false,
      error: undefined,
      // Cluster mode (added fields; see the note on the shape above).
      listen: new Map(), // port -> inherited fd
      listening: new Set(), // ports with a listening server
      waitReady: false,
      readySent: false,
      servers: new Set(), // servers that listened through the patched listen()
      events: undefined, // EventEmitter for 'shutdown', made on first use
      addon: undefined,
      originalListen: undefined,
      shuttingDown: false,
      killSignal: 'SIGTERM', // the app's kill_signal (PM2 field)
      shutdownMessage: false, // PM2's shutdown_with_message
      // Cluster mode without --listen: ports this instance number shared before (undefined: not
      // sharing), and the shared ports this process listens on.
      share: undefined,
      shareListening: new Set(),
      listenPrepared: false,
      waitingListens: [], // listens made before the monitor connected, run once it has
      trackingRequests: false, // in-flight HTTP requests go to the addon (for hang reports)
      killTimeoutMs: DEFAULT_KILL_TIMEOUT_MS, // the supervisor's SIGKILL follows after this
      handedOver: false, // the drain is over and the app's own stop has begun
      answerOut: false, // the hello is sent and its answer not yet read (startEarly)
    };
    Object.defineProperty(globalThis, STATE_KEY, { value: state });
  }
  return state;
}

/** A one-line Error whose message starts with "nodeguard-monitor: ". */
function monitorError(message, cause) {
  const line = require('./platform.js').oneLine(message);
  return new Error(line.startsWith(ERROR_PREFIX) ? line : ERROR_PREFIX + line, { cause });
}

/** The dev build at the package root if there is one, else the per-platform npm package. */
function loadAddon() {
  const path = require('node:path');
  const fs = require('node:fs');
  if (process.platform === 'linux') {
    // A checkout with one dev build, or an install with one platform package beside this one (npm
    // installs only the one of this libc; pnpm links it beside too): no need to tell glibc from
    // musl (platform.js reads /usr/bin/ldd for it; every kilobyte allocated here is RSS in every
    // app), nor to resolve the package as require() would (a stat per node_modules level).
    const builds = [];
    for (const libc of ['gnu', 'musl']) {
      const triple = `linux-${process.arch}-${libc}`;
      const file = `nodeguard-monitor.${triple}.node`;
      for (const candidate of [path.join(__dirname, file), path.join(__dirname, '..', `nodeguard-monitor-${triple}`, file)]) {
        if (fs.existsSync(candidate)) builds.push(candidate);
      }
    }
    if (builds.length === 1) return require(builds[0]);
  }
  const triple = require('./platform.js').platformTriple();
  const devBuild = path.join(__dirname, `nodeguard-monitor.${triple}.node`);
  if (fs.existsSync(devBuild)) {
    return require(devBuild);
  }
  const packageName = `nodeguard-monitor-${triple}`;
  try {
    return require(packageName);
  } catch (error) {
    if (error.code !== 'MODULE_NOT_FOUND' || !String(error.message).includes(packageName)) {
      throw error;
    }
  }
  throw monitorError(
    `no native addon for ${triple}: neither ${devBuild} (build it with "npm run build") ` +
      `nor the package ${packageName} is installed`,
  );
}

/**
 * The ping callback: what the native thread calls on this JS thread for each ping it lets through.
 * It returns the memory usage and whether a SIGINT would now make Node print this thread's JS stack
 * (the supervisor then uses it to show where a hung loop is stuck). The loop delay is the addon's
 * (see the note on it above).
 */
function createPingCallback() {
  // Bun and Deno print no JS stack on SIGINT.
  const traceSigint =
    typeof globalThis.Bun === 'undefined' &&
    typeof globalThis.Deno === 'undefined' &&
    (process.execArgv.includes('--trace-sigint') ||
      /(^|\s)--trace-sigint(\s|$)/.test(process.env.NODE_OPTIONS || ''));
  // Node turns --trace-sigint off while the app has a SIGINT listener of its own.
  // In kB, whole numbers below 2^32: the addon reads them as such (see JsMemoryUsage in addon.rs).
  // Rounded up, so a figure above zero stays above zero.
  const kb = (bytes) => Math.min(Math.ceil(bytes / 1024), 0xffffffff) || 0;
  return () => {
    const memory = process.memoryUsage();
    return {
      memory: {
        rssKb: kb(memory.rss),
        heapTotalKb: kb(memory.heapTotal),
        heapUsedKb: kb(memory.heapUsed),
        externalKb: kb(memory.external),
        arrayBuffersKb: kb(memory.arrayBuffers),
      },
      stackOnSigint: traceSigint && process.listenerCount('SIGINT') === 0,
    };
  };
}

/**
 * A Node major whose V8 function names (the addon's hang-stack capture looks them up in the
 * process) were checked: the addon then looks them up at the first hang, not at connect, which
 * saves every app about 0.2 MB of RSS (node's symbol-table pages). Elsewhere they are looked up at
 * connect, so a missing one turns the capture off (and SIGINT is used) instead of failing it.
 */
function stackNamesChecked() {
  if (!isNode()) return false;
  const major = Number(String(process.versions.node).split('.')[0]);
  return major >= 18 && major <= 26;
}

/** Node itself (not Bun or Deno, which implement Node's API but not libuv's). */
function isNode() {
  return typeof globalThis.Bun === 'undefined' && typeof globalThis.Deno === 'undefined';
}

/**
 * In-flight HTTP requests, for the hang report ("hung 3.1s in parseQuery (search.js:41) while
 * handling GET /search"): each server request goes into the addon's native table, which its native
 * thread reads while JS is blocked, and leaves it when its response closes (finished or aborted). Through
 * diagnostics_channel's `http.server.request.start` (Node 18+), which sees every http and https
 * server, also one that listened before `start()`. Subscribed only once the app has loaded
 * node:http (diagnostics_channel is then loaded already; an app without a server would pay about
 * 128 KB RSS for it): at `start()` if it is loaded, else at the first `listen()`.
 */
function trackRequests(state) {
  if (state.trackingRequests || state.addon === undefined) return;
  const { requestBegin, requestEnd } = state.addon;
  if (typeof requestBegin !== 'function' || typeof requestEnd !== 'function') return;
  state.trackingRequests = true;
  let channels;
  try {
    channels = require('node:diagnostics_channel');
  } catch {
    return;
  }
  if (typeof channels.subscribe !== 'function') return;
  channels.subscribe('http.server.request.start', ({ request, response }) => {
    const id = requestBegin(String(request.method), String(request.url));
    // A response emits 'close' once, after it finished or was aborted (Node 18+, kept-alive
    // connections included).
    response.once('close', () => requestEnd(id));
  });
}

/** Whether the app has loaded node:http (or https) already. */
function httpLoaded() {
  const list = process.moduleLoadList;
  return Array.isArray(list) && (list.includes('NativeModule http') || list.includes('NativeModule https'));
}

/** `NODEGUARD_LISTEN` (`3000=3,3001=4`) as a Map of port to fd. */
function parseListen(text) {
  const map = new Map();
  for (const pair of (text || '').split(',')) {
    const match = /^(\d+)=(\d+)$/.exec(pair.trim());
    if (match) map.set(Number(match[1]), Number(match[2]));
  }
  return map;
}

/** The port a `listen(...)` call asks for, or undefined (a path, an fd, a handle, none). */
function requestedPort(args) {
  let first = args[0];
  if (first !== null && typeof first === 'object') {
    if (first.fd !== undefined || first.path !== undefined || first.handle !== undefined || first._handle !== undefined) {
      return undefined;
    }
    first = first.port;
  }
  if (typeof first === 'number' && Number.isInteger(first)) return first;
  if (typeof first === 'string' && /^\d+$/.test(first.trim())) return Number(first);
  return undefined;
}

/**
 * What a `listen(...)` call asks for, when the supervisor may share it (cluster mode without
 * --listen): `{ port, host, backlog }` for a TCP port from 1 to 65535, else undefined (a path, a
 * pipe, an fd or handle, port 0 or none, which the app binds itself; so do `exclusive`,
 * `ipv6Only` and `reusePort` listens, as under Node's cluster module for `exclusive`).
 */
function shareableListen(args) {
  const port = requestedPort(args);
  if (port === undefined || port < 1 || port > 65535) return undefined;
  const first = args[0];
  if (first !== null && typeof first === 'object') {
    if (first.exclusive || first.ipv6Only || first.reusePort) return undefined;
    const host = first.host === undefined || first.host === null || first.host === '' ? undefined : String(first.host);
    return { port, host, backlog: first.backlog };
  }
  const host = typeof args[1] === 'string' && args[1] !== '' ? args[1] : undefined;
  const backlog = typeof args[1] === 'number' ? args[1] : typeof args[2] === 'number' ? args[2] : undefined;
  return { port, host, backlog };
}

function emitter(state) {
  if (state.events === undefined) {
    const { EventEmitter } = require('node:events');
    state.events = new EventEmitter();
  }
  return state.events;
}

/** Sends `Ready` once; false when there is no connection to send it on. */
function sendReady(state) {
  if (state.readySent) return true;
  if (!state.supervised || state.addon === undefined) return false;
  state.readySent = true;
  return state.addon.ready();
}

/**
 * Registers a server for the drain: every server the app listens (a shared socket however it
 * was obtained, or its own port) goes through here before it listens, so that its connections are
 * tracked from the first.
 */
function addServer(state, server) {
  if (state.servers.has(server)) return;
  state.servers.add(server);
  server.once('close', () => state.servers.delete(server));
  trackConnections(server);
}

/** Listens `server` on the inherited socket of `port`. */
function listenShared(state, server, port, fd, callback) {
  addServer(state, server);
  server.once('listening', () => {
    state.listening.add(port);
    if (!state.waitReady && [...state.listen.keys()].every((p) => state.listening.has(p))) {
      sendReady(state);
    }
  });
  return state.originalListen.call(server, { fd }, ...(callback ? [callback] : []));
}

/** An Error like the ones Node's listen emits (`code`, `errno`, `syscall`, `address`, `port`). */
function listenError(answer, host, port) {
  const code = answer.code || 'EADDRNOTAVAIL';
  const error = new Error(`listen ${code}: ${answer.message || 'the supervisor could not share it'}`);
  error.code = code;
  error.errno = answer.errno ? -Math.abs(answer.errno) : undefined;
  error.syscall = 'listen';
  error.address = host === undefined ? '::' : host;
  error.port = port;
  return error;
}

/**
 * Cluster mode without --listen: asks the supervisor for `host:port` (a host name is looked up
 * first, as Node's listen does) and listens `server` on the socket it hands over, the same one
 * every instance of the app gets. A failure is an 'error' event on the server, as Node's is.
 */
function listenRequested(state, server, wanted, callback) {
  addServer(state, server);
  const { port, backlog } = wanted;
  const fail = (error) => process.nextTick(() => server.emit('error', error));
  const ask = (ip) => {
    const answered = (answer) => {
      if (answer.fd === undefined || answer.fd === null) {
        fail(listenError(answer, ip, port));
        return;
      }
      server.once('listening', () => {
        state.shareListening.add(port);
        if (!state.waitReady && state.share.every((p) => state.shareListening.has(p))) sendReady(state);
      });
      const options = backlog === undefined ? { fd: answer.fd } : { fd: answer.fd, backlog };
      try {
        state.originalListen.call(server, options, ...(callback ? [callback] : []));
      } catch (error) {
        require('node:fs').close(answer.fd, () => {});
        fail(error);
      }
    };
    try {
      if (state.addon.share(ip === undefined ? null : ip, port, answered)) return;
    } catch (error) {
      fail(listenError({ code: 'EADDRNOTAVAIL', message: String(error.message || error) }, ip, port));
      return;
    }
    // No connection in this copy of the addon: the app binds it itself.
    const args = ip === undefined ? [port] : [port, ip];
    if (backlog !== undefined) args.push(backlog);
    state.originalListen.apply(server, callback ? [...args, callback] : args);
  };
  const net = require('node:net');
  if (wanted.host === undefined || net.isIP(wanted.host)) {
    ask(wanted.host);
  } else {
    require('node:dns').lookup(wanted.host, (error, ip) => (error ? fail(error) : ask(ip)));
  }
  return server;
}

/**
 * Maps listens on supervisor-owned ports to the inherited sockets (--listen), or asks the
 * supervisor for the address (several instances without --listen); tracks every server. With
 * --listen, a TCP server on another port is reported ("web:0 listened on 3721, not 3720").
 */
function patchListen(state) {
  const net = require('node:net');
  const original = net.Server.prototype.listen;
  state.originalListen = original;
  net.Server.prototype.listen = function listen(...args) {
    trackRequests(state);
    const port = requestedPort(args);
    const fd = port === undefined ? undefined : state.listen.get(port);
    const last = args[args.length - 1];
    const callback = typeof last === 'function' ? last : undefined;
    if (fd !== undefined) {
      return listenShared(state, this, port, fd, callback);
    }
    if (state.share !== undefined && !this.listening) {
      const wanted = shareableListen(args);
      if (wanted !== undefined && state.addon !== undefined) return listenRequested(state, this, wanted, callback);
      if (wanted !== undefined && !state.started) {
        // Before the monitor connects (an ES module entry): the listen waits for the connection.
        addServer(state, this);
        (state.waitingListens ||= []).push(() => this.listen(...args));
        return this;
      }
    }
    addServer(state, this);
    if (state.listen.size > 0 && state.addon !== undefined) {
      this.once('listening', () => {
        const address = this.address();
        if (address !== null && typeof address === 'object') {
          try {
            state.addon.listenedElsewhere(address.port);
          } catch {}
        }
      });
    }
    return original.apply(this, args);
  };
}

const sigtermHandler = () => {
  // The app's own SIGTERM handler runs now, as Node calls every listener: it is the app's stop.
  if (process.listeners('SIGTERM').some((listener) => listener !== sigtermHandler)) return;
  const state = processState();
  if (state.handedOver) {
    // The drain is over and the app's handler re-raised the signal to end the process (NestJS
    // does): let it mean what it would without the monitor.
    process.removeListener('SIGTERM', sigtermHandler);
    process.kill(process.pid, 'SIGTERM');
    return;
  }
  shutdown(state, 'signal');
};

/**
 * `process.send` for an app without an IPC channel: 'ready' (PM2's readiness call) is `ready()`;
 * other messages have no parent to go to and are dropped. Calls back as Node's does.
 */
function installSendShim(state) {
  process.send = function send(message, ...rest) {
    if (message === 'ready') sendReady(state);
    const callback = rest.find((arg) => typeof arg === 'function');
    if (callback !== undefined) process.nextTick(callback, null);
    return true;
  };
}

/**
 * The supervisor asks for a CPU profile or heap snapshot (`nodeguard profile`): profiler.js (and
 * Node's inspector module) is loaded only now, so an app never profiled pays nothing for it.
 */
function onProfileRequest(request) {
  const { addon } = processState();
  try {
    require('./profiler.js').run(addon, request);
  } catch (error) {
    // Never the app's problem: the supervisor is told why, and the app goes on.
    try {
      addon.profileDone(request.id, `cannot take the profile: ${error && error.message}`, null);
    } catch {}
  }
}

/** The shutdown message from the supervisor, on the JS thread. */
function onShutdownMessage() {
  shutdown(processState(), 'message');
}

/**
 * A graceful stop: drain.js, loaded at the first stop only, so that its code is not read and
 * parsed in the start of every supervised app (as profiler.js is loaded at the first profile).
 * If it cannot be loaded (the package was removed under the running app), SIGTERM keeps its
 * default meaning: the process ends by the signal, as without the monitor.
 */
function shutdown(state, source) {
  let drain;
  try {
    drain = require('./drain.js');
  } catch {
    process.removeListener('SIGTERM', sigtermHandler);
    process.kill(process.pid, 'SIGTERM');
    return;
  }
  drain.shutdown(state, source, { sigtermHandler, trackConnections, drainKey: DRAIN_KEY });
}

/**
 * Tracks a server's HTTP connections (those with an HTTP parser: not raw TCP, not a TLS server's
 * underlying sockets) while they are open, for the drain to wait on. Costs a Set entry per
 * connection.
 */
function trackConnections(server, late = false) {
  if (server[DRAIN_KEY] !== undefined) return;
  const open = new Set();
  // `late`: tracked only from the drain on, so connections made before are not in `open`.
  server[DRAIN_KEY] = { open, closed: false, late };
  const track = (socket) => {
    if (!socket.parser) return;
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  };
  // http.Server parses on 'connection', https.Server on 'secureConnection'; their own listeners,
  // added when they were made, have run by then.
  server.on('connection', track);
  server.on('secureConnection', track);
}

/**
 * Connects to the nodeguard supervisor if this process was started by one. Returns true when
 * supervised, false otherwise (then it did nothing). Safe to call more than once, from any copy of
 * this package: later calls return the first call's result, or throw its error again. Throws an
 * Error with a one-line message starting with "nodeguard-monitor: " if the supervisor cannot be
 * reached or refuses this process.
 */
function start() {
  return begin(processState(), true);
}

/**
 * For the preload: `start()` without waiting for the supervisor's answer to the hello. The
 * monitor's native thread reads it, so the app's code runs while the supervisor (perhaps busy
 * starting a hundred apps) gets to it; a refusal then comes as the same one line on stderr, and
 * the app runs on unmonitored. A later `start()` or `isSupervised()` waits for the answer (see
 * `settle`). Cluster mode without --listen waits as `start()` does: a listen asked of the
 * supervisor must not wait for an answer that a refused process never gets.
 */
function startEarly() {
  return begin(processState(), false);
}

/** `start()`, or without waiting for the answer to the hello (`wait` false; see `startEarly`). */
function begin(state, wait) {
  if (state.started) {
    if (state.answerOut) awaitAnswer(state);
    if (state.error !== undefined) throw state.error;
    return state.supervised;
  }
  state.started = true;
  const socketPath = process.env[ENV_SOCKET];
  if (!socketPath) {
    return false;
  }
  const token = process.env[ENV_TOKEN];
  prepareListen(state);
  // Child processes of the app must not take the socket, token and listen fds for their own,
  // whether or not this connection succeeds; later calls use `state`, not the environment.
  delete process.env[ENV_SOCKET];
  delete process.env[ENV_TOKEN];
  state.killSignal = process.env[ENV_KILL_SIGNAL] || 'SIGTERM';
  state.shutdownMessage = process.env[ENV_SHUTDOWN_MESSAGE] === '1';
  const killTimeoutMs = Number(process.env[ENV_KILL_TIMEOUT]);
  if (Number.isFinite(killTimeoutMs) && killTimeoutMs > 0) state.killTimeoutMs = killTimeoutMs;
  delete process.env[ENV_KILL_TIMEOUT];
  delete process.env[ENV_WAIT_READY];
  delete process.env[ENV_KILL_SIGNAL];
  delete process.env[ENV_SHUTDOWN_MESSAGE];
  if (typeof process.send !== 'function') installSendShim(state);
  process.on('SIGTERM', sigtermHandler);
  try {
    if (!token) {
      throw monitorError(`${ENV_SOCKET} is set but ${ENV_TOKEN} is not`);
    }
    const addon = loadAddon();
    // (An addon from before has no awaitHandshake: it always waits.)
    const early = !wait && state.share === undefined && typeof addon.awaitHandshake === 'function';
    const outcome = addon.connect(
      socketPath,
      token,
      createPingCallback(),
      onShutdownMessage,
      onProfileRequest,
      stackNamesChecked(),
      early ? (answer) => settle(state, answer) : undefined,
    );
    // 'already-connected': another copy of the addon in this process holds the connection.
    // 'not-main-thread': this is a worker thread; the app's event loop is the main thread's.
    // 'connecting': the hello is sent, the answer comes later (`settle`).
    state.supervised = outcome !== 'not-main-thread';
    if (outcome === 'connected' || outcome === 'connecting') {
      state.addon = addon;
      state.answerOut = outcome === 'connecting';
      // The loop-delay hook (an addon from before it has none: the ping's wait is reported).
      if (isNode() && typeof addon.watchLoop === 'function') addon.watchLoop();
      if (httpLoaded()) trackRequests(state);
    }
  } catch (error) {
    state.error = monitorError(error instanceof Error ? error.message : error, error);
    throw state.error;
  } finally {
    afterConnect(state);
  }
  return state.supervised;
}

/**
 * The supervisor's answer to a hello that `startEarly` did not wait for: `''` (welcomed), or the
 * reason it failed. Then the process is not supervised, and `start()` throws the error from now on,
 * as if it had thrown it the first time; the error is said in one line on stderr, as the preload
 * says a failed `start()`. Called once the answer came, on the JS thread (by the addon), or by a
 * `start()` or `isSupervised()` that waited for it; the first call counts.
 */
function settle(state, answer) {
  if (!state.answerOut) return;
  state.answerOut = false;
  if (answer === '') return;
  state.supervised = false;
  state.addon = undefined;
  state.error = monitorError(answer);
  process.stderr.write(`${state.error.message}\n`);
}

/** Waits for the answer to the hello (see `startEarly`). */
function awaitAnswer(state) {
  settle(state, state.addon.awaitHandshake());
}

/**
 * Reads the listen environment (NODEGUARD_LISTEN, NODEGUARD_SHARE, NODEGUARD_WAIT_READY; then
 * removed, so the app's children do not take them) and patches net.Server.prototype.listen. Once
 * per process; `start()` calls it, and the preload calls it before an ES module entry loads (the
 * monitor connects only after that load, but the entry's top-level `server.listen()` runs during
 * it: a listen that needs the connection waits for it).
 */
function prepareListen(state) {
  if (state.listenPrepared) return;
  state.listenPrepared = true;
  if (!process.env[ENV_SOCKET]) return;
  state.listen = parseListen(process.env[ENV_LISTEN]);
  if (process.env[ENV_SHARE] !== undefined) {
    state.share = process.env[ENV_SHARE].split(',').filter((p) => /^\d+$/.test(p)).map(Number);
  }
  state.waitReady = process.env[ENV_WAIT_READY] === '1';
  delete process.env[ENV_LISTEN];
  delete process.env[ENV_SHARE];
  delete process.env[ENV_WAIT_READY];
  patchListen(state);
}

/** Connected or not: runs the listens that waited for it, and says `Ready` if already due. */
function afterConnect(state) {
  const waiting = state.waitingListens || [];
  state.waitingListens = [];
  for (const run of waiting) run();
  if (!state.waitReady && state.listen.size > 0 && [...state.listen.keys()].every((p) => state.listening.has(p))) {
    sendReady(state);
  }
}

/** For the preload: see `prepareListen`. */
function prepare() {
  prepareListen(processState());
}

/** Whether `start()` connected this process to a nodeguard supervisor. */
function isSupervised() {
  const state = processState();
  if (state.answerOut) awaitAnswer(state);
  return state.supervised;
}

/**
 * Tells the supervisor this instance is ready for traffic. Needed with --wait-ready; otherwise
 * listening on the shared socket says it. Returns false when not supervised (it did nothing).
 */
function ready() {
  return sendReady(processState());
}

/**
 * Listens `server` on the supervisor-owned socket of `port` (default: the only one). Outside
 * nodeguard, with a port, it is plain `server.listen(port, callback)`. Returns `server`.
 */
function listen(server, port, callback) {
  if (typeof port === 'function') {
    callback = port;
    port = undefined;
  }
  const state = processState();
  if (state.listen.size === 0) {
    if (port === undefined) {
      throw monitorError('listen(server) needs a port: no supervisor-owned listen address (start the app with --listen)');
    }
    return server.listen(Number(port), callback);
  }
  if (port === undefined) {
    if (state.listen.size > 1) {
      throw monitorError(`listen(server) needs a port: the supervisor owns ${[...state.listen.keys()].join(', ')}`);
    }
    port = [...state.listen.keys()][0];
  }
  const fd = state.listen.get(Number(port));
  if (fd === undefined) {
    throw monitorError(`port ${port} is not a supervisor-owned listen address (${[...state.listen.keys()].join(', ')})`);
  }
  listenShared(state, server, Number(port), fd, callback);
  return server;
}

/** Adds a listener for 'shutdown': the supervisor (or SIGTERM) asks this process to stop. */
function on(event, listener) {
  emitter(processState()).on(event, listener);
  return module.exports;
}

function once(event, listener) {
  emitter(processState()).once(event, listener);
  return module.exports;
}

function off(event, listener) {
  emitter(processState()).off(event, listener);
  return module.exports;
}

module.exports = { start, isSupervised, ready, listen, on, once, off, _prepare: prepare, _startEarly: startEarly };
