'use strict';
// The monitor's graceful stop (see "Graceful stop" in index.js's header): the drain of every server
// that listened, then the app's own stop. Loaded by index.js at the first stop only, so that this
// code is not read and parsed in the start of every supervised app.

/**
 * How long a draining server leaves its idle keep-alive connections open (ms), for their clients
 * to send one more request (answered with `Connection: close`) rather than lose it to a close.
 * Shorter than the server's keepAliveTimeout if that is shorter; well inside the kill timeout.
 */
const DRAIN_IDLE_GRACE_MS = 1000;
/** After that grace, how often a draining server's idle connections are closed (ms). */
const DRAIN_SWEEP_MS = 100;

// From index.js (see `shutdown`): its SIGTERM listener, its connection tracking and the key under
// which a server's drain state is kept.
let sigtermHandler;
let trackConnections;
let DRAIN_KEY;

/** Monotonic time in ms. (`performance.now()` would load perf_hooks: about 0.8 MB RSS.) */
function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * A graceful stop. First the drain: every server stops accepting and ends its HTTP connections
 * (see drainServers). Then the app's own stop, which finds them gone: its 'shutdown' listeners, or
 * PM2's shutdown message, or its kill_signal (or the other of SIGINT and SIGTERM), as the header
 * says; with none of those, the process exits 0 once every connection has ended. A SIGTERM from
 * outside (`source` 'signal') reaches here only when the app has no SIGTERM handler of its own.
 */
function shutdown(state, source, deps) {
  ({ sigtermHandler, trackConnections, drainKey: DRAIN_KEY } = deps);
  if (state.shuttingDown) return;
  state.shuttingDown = true;
  const servers = [...state.servers].filter((server) => server.listening);
  // On a timer, not in the promise's job: the app's handlers then throw as they would from a
  // signal, and the event loop, which the closed servers may no longer keep alive, runs them.
  drainServers(servers, state.killTimeoutMs).then(() => {
    setImmediate(handOver, state, source, servers);
  });
}

/** After the drain: runs the app's own stop, or the default one. */
function handOver(state, source, servers) {
  state.handedOver = true;
  if (state.events !== undefined && state.events.listenerCount('shutdown') > 0) {
    state.events.emit('shutdown');
    return;
  }
  if (source === 'message') {
    if (state.shutdownMessage && process.listenerCount('message') > 0) {
      process.emit('message', 'shutdown');
      return;
    }
    const handled = (signal) =>
      process.listeners(signal).some((listener) => listener !== sigtermHandler);
    const other = state.killSignal === 'SIGINT' ? 'SIGTERM' : 'SIGINT';
    const signal = [state.killSignal, other].find(handled);
    if (signal !== undefined) {
      // As Node delivers a signal to its listeners; a real one could come after the event loop,
      // with its servers closed, had already ended.
      process.emit(signal, signal);
      return;
    }
  }
  if (servers.length === 0) {
    // No server: SIGTERM means what it would without the monitor.
    process.removeListener('SIGTERM', sigtermHandler);
    process.kill(process.pid, 'SIGTERM');
    return;
  }
  // The default stop: exit 0 once every connection has ended (upgraded ones too).
  let open = servers.length;
  for (const server of servers) {
    server.close(() => {
      open -= 1;
      if (open === 0) process.exit(0);
    });
  }
}

/** HTTP/1 responses on a draining server say `Connection: close`. */
function closeAfterResponse(req, res) {
  if (req.httpVersionMajor === 1 && !res.headersSent) res.setHeader('connection', 'close');
}

/**
 * Drains `servers`, then resolves: each stops accepting (the supervisor's socket stays open in the
 * other instances, so no connection is refused); a response on a kept-alive connection says
 * `Connection: close` and the connection ends after it; an idle one is closed after a grace (see
 * DRAIN_IDLE_GRACE_MS); an upgraded one (a WebSocket) is the app's to close. Resolves once no HTTP
 * connection is left, or after half the kill timeout (a stream that never ends), leaving the rest
 * to the app's own stop.
 */
function drainServers(servers, killTimeoutMs) {
  if (servers.length === 0) return Promise.resolve();
  const net = require('node:net');
  const limitMs = Math.max(killTimeoutMs / 2, DRAIN_SWEEP_MS);
  const started = nowMs();
  for (const server of servers) {
    trackConnections(server, true);
    const drain = server[DRAIN_KEY];
    server.prependListener('request', closeAfterResponse);
    // net.Server's close stops accepting and calls back once every connection has ended; the
    // http.Server close of Node 19+ would also close the idle ones at once (see above).
    net.Server.prototype.close.call(server, () => {
      drain.closed = true;
    });
    // The app's own close() later (its SIGTERM handler's `server.close(cb)`) finds the server
    // already closed: it calls back without ERR_SERVER_NOT_RUNNING once the connections have
    // ended, as it would have, and closes the idle ones as Node 19+ does.
    server.close = function close(callback) {
      if (typeof this.closeIdleConnections === 'function') this.closeIdleConnections();
      if (typeof callback === 'function') this.once('close', () => callback());
      // Closed already: 'close' again, as Node's close() of a closed server emits it, for the
      // code that waits for the event rather than the callback.
      if (drain.closed) process.nextTick(() => this.emit('close'));
      return this;
    };
  }
  return new Promise((resolve) => {
    const sweep = setInterval(() => {
      const elapsed = nowMs() - started;
      let left = 0;
      for (const server of servers) {
        const { open } = server[DRAIN_KEY];
        const keepAlive = server.keepAliveTimeout > 0 ? server.keepAliveTimeout : DRAIN_IDLE_GRACE_MS;
        const grace = Math.min(DRAIN_IDLE_GRACE_MS, keepAlive, limitMs / 2);
        if (elapsed >= grace && typeof server.closeIdleConnections === 'function') {
          server.closeIdleConnections();
        }
        for (const socket of open) {
          // Upgraded: the HTTP parser is gone, the connection is the app's.
          if (!socket.parser || socket.destroyed) open.delete(socket);
        }
        // A server not tracked from its first connection: wait for all of them to end.
        left += server[DRAIN_KEY].late && !server[DRAIN_KEY].closed ? 1 : open.size;
      }
      if (left === 0 || elapsed >= limitMs) {
        clearInterval(sweep);
        resolve();
      }
    }, DRAIN_SWEEP_MS);
  });
}

module.exports = { shutdown };
