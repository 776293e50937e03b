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
// - Event-loop delay is sampled by our own unref'd 20 ms interval timer, not by
//   perf_hooks.monitorEventLoopDelay(). On Node 20 that histogram's reset() also forgets the time
//   of its previous tick, so the first interval after each reset is never recorded: a stall that
//   begins right after a pong, or ends just before the next ping is answered (the usual case
//   after a hang), vanished from the stats. Its values are also whole timer intervals (resolution
//   + delay: about 20.1 ms on an idle loop at a 20 ms resolution); ours are the delay alone, how
//   late the timer fired (about 0.1 ms on an idle loop).
// - Only the main thread connects: in a worker_thread `start()` returns false and does nothing
//   (checked natively).

const ENV_SOCKET = 'NODEGUARD_SOCKET';
const ENV_TOKEN = 'NODEGUARD_TOKEN';
const STATE_KEY = Symbol.for('nodeguard-monitor');
const ERROR_PREFIX = 'nodeguard-monitor: ';
/** Interval of the event-loop delay sampler (ms). Lower = finer stats, more wake-ups. */
const LOOP_SAMPLE_MS = 20;
/** Most lateness samples kept between two pings (82 s worth at one sample per 20 ms). */
const MAX_SAMPLES = 4096;

function processState() {
  let state = globalThis[STATE_KEY];
  if (state === undefined) {
    state = { started: false, supervised: false, error: undefined };
    Object.defineProperty(globalThis, STATE_KEY, { value: state });
  }
  return state;
}

/** A one-line Error whose message starts with "nodeguard-monitor: ". */
function monitorError(message, cause) {
  const line = String(message).replace(/\s*\n\s*/g, ' ');
  return new Error(line.startsWith(ERROR_PREFIX) ? line : ERROR_PREFIX + line, { cause });
}

/** The dev build at the package root if there is one, else the per-platform npm package. */
function loadAddon() {
  const path = require('node:path');
  const fs = require('node:fs');
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

/** Monotonic time in ms. (`performance.now()` would load perf_hooks: about 0.8 MB RSS.) */
function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * Starts the event-loop delay sampler: an unref'd interval timer that records how late it fires.
 * `onPing` is what the native thread calls on this JS thread for each ping it lets through: it
 * returns the memory usage, the event-loop delay since the previous call (mean, p50, p99 and
 * max, in ms), and whether a SIGINT would now make Node print this thread's JS stack (the
 * supervisor then uses it to show where a hung loop is stuck). `stop` stops the sampler.
 */
function createPingCallback() {
  const traceSigint =
    process.execArgv.includes('--trace-sigint') ||
    /(^|\s)--trace-sigint(\s|$)/.test(process.env.NODE_OPTIONS || '');
  // Lateness samples since the previous ping, in ms. Past MAX_SAMPLES the oldest are overwritten:
  // the percentiles then cover the most recent ones; mean and max still cover all.
  const samples = new Float64Array(MAX_SAMPLES);
  let count = 0;
  let sum = 0;
  let max = 0;
  const record = (lateMs) => {
    const late = lateMs > 0 ? lateMs : 0;
    samples[count % MAX_SAMPLES] = late;
    count += 1;
    sum += late;
    if (late > max) max = late;
  };
  let due = nowMs() + LOOP_SAMPLE_MS;
  const sampler = setInterval(() => {
    const now = nowMs();
    record(now - due);
    due = now + LOOP_SAMPLE_MS;
  }, LOOP_SAMPLE_MS);
  sampler.unref();

  const onPing = () => {
    const now = nowMs();
    // A sample that is overdue right now (the loop just came out of a stall and the sampler has
    // not fired yet) belongs to this interval: take it now.
    if (now > due) {
      record(now - due);
      due = now + LOOP_SAMPLE_MS;
    }
    let loopDelay = { meanMs: 0, p50Ms: 0, p99Ms: 0, maxMs: 0 };
    if (count > 0) {
      const sorted = samples.slice(0, Math.min(count, MAX_SAMPLES)).sort();
      const percentile = (p) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
      loopDelay = { meanMs: sum / count, p50Ms: percentile(50), p99Ms: percentile(99), maxMs: max };
    }
    count = 0;
    sum = 0;
    max = 0;
    // Node turns --trace-sigint off while the app has a SIGINT listener of its own.
    const stackOnSigint = traceSigint && process.listenerCount('SIGINT') === 0;
    return { memory: process.memoryUsage(), loopDelay, stackOnSigint };
  };
  return { onPing, stop: () => clearInterval(sampler) };
}

/**
 * Connects to the nodeguard supervisor if this process was started by one. Returns true when
 * supervised, false otherwise (then it did nothing). Safe to call more than once, from any copy of
 * this package: later calls return the first call's result, or throw its error again. Throws an
 * Error with a one-line message starting with "nodeguard-monitor: " if the supervisor cannot be
 * reached or refuses this process.
 */
function start() {
  const state = processState();
  if (state.started) {
    if (state.error !== undefined) throw state.error;
    return state.supervised;
  }
  state.started = true;
  const socketPath = process.env[ENV_SOCKET];
  if (!socketPath) {
    return false;
  }
  const token = process.env[ENV_TOKEN];
  // Child processes of the app must not take the socket and token for their own, whether or not
  // this connection succeeds; later calls use `state`, not the environment.
  delete process.env[ENV_SOCKET];
  delete process.env[ENV_TOKEN];
  try {
    if (!token) {
      throw monitorError(`${ENV_SOCKET} is set but ${ENV_TOKEN} is not`);
    }
    const addon = loadAddon();
    const ping = createPingCallback();
    let outcome;
    try {
      outcome = addon.connect(socketPath, token, ping.onPing);
    } finally {
      if (outcome !== 'connected') ping.stop();
    }
    // 'already-connected': another copy of the addon in this process holds the connection.
    // 'not-main-thread': this is a worker thread; the app's event loop is the main thread's.
    state.supervised = outcome !== 'not-main-thread';
  } catch (error) {
    state.error = monitorError(error instanceof Error ? error.message : error, error);
    throw state.error;
  }
  return state.supervised;
}

/** Whether `start()` connected this process to a nodeguard supervisor. */
function isSupervised() {
  return processState().supervised;
}

module.exports = { start, isSupervised };
