'use strict';
// --http ADDR: /healthz, /readyz and /metrics for Kubernetes probes and Prometheus, in foreground
// and daemon mode; counters that move when an app crashes or hangs; garbage, oversized and slow
// clients that neither crash nor stall the endpoint; bad addresses refused in one line.

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const h = require('./helpers');

const FAST_HEARTBEAT = ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms'];
/** The line the supervisor logs once it listens (the port is the kernel's choice: :0). */
const SERVING = /serving \/healthz, \/readyz and \/metrics on http:\/\/([\d.]+):(\d+)/;
/** The server's read timeout for a request head (http.rs READ_TIMEOUT, 2 s), plus ample slack. */
const SLOW_CLIENT_CLOSE_MS = 5_000 + 5_000;

/** The port the supervisor's HTTP endpoint listens on, from its log. */
async function httpPort(sup) {
  const match = await sup.waitFor(
    () => {
      for (const line of sup.lines) {
        const m = SERVING.exec(line.text);
        if (m) return m;
      }
      return false;
    },
    { what: 'the "serving /healthz" log line' },
  );
  return Number(match[2]);
}

/**
 * Parses the exposition text into { samples: Map("name{labels}" -> number), types: Map(name ->
 * type) }, checking each line's syntax.
 */
function parseMetrics(text) {
  const samples = new Map();
  const types = new Map();
  const lines = text.split('\n');
  assert.equal(lines.at(-1), '', 'the text ends with a newline');
  assert.equal(lines.at(-2), '# EOF', 'OpenMetrics text ends with # EOF');
  for (const line of lines.slice(0, -2)) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types.set(name, type);
      continue;
    }
    if (line.startsWith('# HELP ') || line.startsWith('# UNIT ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const value = Number(m[3]);
    assert.ok(!Number.isNaN(value), `not a number in ${line}`);
    samples.set(`${m[1]}${m[2] || ''}`, value);
  }
  return { samples, types };
}

async function metrics(port) {
  const res = await h.get(port, '/metrics');
  assert.equal(res.status, 200, res.body);
  return parseMetrics(res.body);
}

/** Sends raw bytes; resolves with what came back once the server closed (or after `timeout`). */
function raw(port, bytes, { timeout = 15_000, end = false } = {}) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const started = performance.now();
    const socket = net.createConnection({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false, text: Buffer.concat(chunks).toString('latin1'), ms: performance.now() - started });
    }, timeout);
    const finish = () => {
      clearTimeout(timer);
      resolve({ closed: true, text: Buffer.concat(chunks).toString('latin1'), ms: performance.now() - started });
    };
    socket.on('connect', () => {
      if (bytes.length) socket.write(bytes);
      if (end) socket.end();
    });
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('close', finish);
    socket.on('error', (err) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return;
      clearTimeout(timer);
      reject(err);
    });
  });
}

const labels = (app, id = 0) => `{app="${app}",id="${id}",app_instance="0"}`;

test('--http serves health, readiness and metrics whose counters move on a crash and a hang', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['server.js'],
    flags: ['--http', '127.0.0.1:0', ...FAST_HEARTBEAT, '--heartbeat-misses', '3'],
  });
  const port = await httpPort(sup);
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);

  assert.deepEqual(await h.get(port, '/healthz'), { status: 200, body: 'ok\n' });
  assert.deepEqual(await h.get(port, '/readyz'), { status: 200, body: 'ready\n' });

  // Wait for a heartbeat's memory figures, then check every metric family.
  const before = await sup.waitFor(
    async () => {
      const m = await metrics(port);
      return m.samples.get(`nodeguard_memory_rss_bytes${labels('server')}`) > 0 ? m : false;
    },
    { what: 'memory figures in /metrics' },
  );
  const s = before.samples;
  assert.equal(s.get('nodeguard_apps'), 1);
  assert.equal(s.get(`nodeguard_up${labels('server')}`), 1);
  assert.equal(s.get(`nodeguard_app_state{app="server",id="0",app_instance="0",state="running"}`), 1);
  assert.equal(s.get(`nodeguard_app_state{app="server",id="0",app_instance="0",state="errored"}`), 0);
  assert.equal(s.get(`nodeguard_restarts_total${labels('server')}`), 0);
  assert.equal(s.get(`nodeguard_hangs_total${labels('server')}`), 0);
  assert.ok(s.get(`nodeguard_memory_heap_used_bytes${labels('server')}`) > 0);
  assert.ok(s.get(`nodeguard_memory_heap_total_bytes${labels('server')}`) > 0);
  assert.ok(s.get(`nodeguard_event_loop_delay_p99_seconds${labels('server')}`) >= 0);
  assert.ok(s.get(`nodeguard_event_loop_delay_p50_seconds${labels('server')}`) >= 0);
  assert.ok(s.get(`nodeguard_event_loop_delay_max_seconds${labels('server')}`) >= 0);
  assert.ok(s.get(`nodeguard_uptime_seconds${labels('server')}`) >= 0);
  assert.equal(before.types.get('nodeguard_restarts'), 'counter');
  assert.equal(before.types.get('nodeguard_hangs'), 'counter');
  assert.equal(before.types.get('nodeguard_up'), 'gauge');

  // A crash: the restart counter moves.
  await h.get(first.port, '/crash');
  const second = await sup.waitListening('server', { notPids: [first.pid] });
  await sup.waitFor(async () => (await metrics(port)).samples.get(`nodeguard_restarts_total${labels('server')}`) === 1, {
    what: 'nodeguard_restarts_total to reach 1',
  });

  // A hang: the hang counter moves, and so does the restart counter again.
  await h.get(second.port, '/hang');
  await sup.waitListening('server', { notPids: [first.pid, second.pid] });
  const after = await sup.waitFor(
    async () => {
      const m = await metrics(port);
      return m.samples.get(`nodeguard_hangs_total${labels('server')}`) === 1 ? m : false;
    },
    { what: 'nodeguard_hangs_total to reach 1' },
  );
  assert.equal(after.samples.get(`nodeguard_restarts_total${labels('server')}`), 2);
  await sup.waitRunning(['server']);
  assert.equal((await h.get(port, '/readyz')).status, 200);

  // Shut down cleanly: the endpoint goes away with the supervisor.
  sup.signal('SIGTERM');
  assert.equal((await sup.waitExit()).code, 0);
  await assert.rejects(h.get(port, '/healthz'));
});

test('/readyz is 503 while an app is errored, and /metrics says so', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['idle.js', 'crashloop.js'],
    flags: ['--http', '127.0.0.1:0', '--max-restarts', '1'],
  });
  const port = await httpPort(sup);
  await sup.waitForStatus((apps) => apps.find((a) => a.name === 'crashloop')?.state === 'errored', {
    what: 'crashloop to be errored',
  });
  await sup.waitRunning(['idle']);
  const ready = await h.get(port, '/readyz');
  assert.equal(ready.status, 503);
  assert.match(ready.body, /^not ready:\ncrashloop \(id 1\): errored\n$/);
  // Still alive: the supervision loop is fine, one app is not.
  assert.equal((await h.get(port, '/healthz')).status, 200);
  const { samples } = await metrics(port);
  assert.equal(samples.get('nodeguard_apps'), 2);
  assert.equal(samples.get(`nodeguard_up${labels('idle', 0)}`), 1);
  assert.equal(samples.get(`nodeguard_up${labels('crashloop', 1)}`), 0);
  assert.equal(samples.get(`nodeguard_app_state{app="crashloop",id="1",app_instance="0",state="errored"}`), 1);
  assert.ok(samples.get(`nodeguard_restarts_total${labels('crashloop', 1)}`) >= 1);
});

test('garbage, oversized and slow requests get an error or are closed, and never stall the endpoint', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['idle.js'], flags: ['--http', '127.0.0.1:0'] });
  const port = await httpPort(sup);
  await sup.waitRunning(['idle']);

  // A slow client that never finishes its request holds one connection...
  const slow = raw(port, Buffer.from('GET /heal'), { timeout: SLOW_CLIENT_CLOSE_MS });
  // ...while others are served.
  assert.equal((await h.get(port, '/healthz')).status, 200);

  const garbage = await raw(port, Buffer.from([0, 1, 2, 0xff, 0xfe, 13, 10, 13, 10]));
  assert.ok(garbage.closed);
  assert.match(garbage.text, /^HTTP\/1\.1 400 Bad Request\r\n/);

  const noise = await raw(port, Buffer.from('\x16\x03\x01 hello tls?'), { end: true });
  assert.ok(noise.closed, 'a client that sends half a request and closes is let go');

  const oversized = await raw(port, Buffer.from(`GET /metrics HTTP/1.1\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`));
  assert.ok(oversized.closed);
  assert.match(oversized.text, /^HTTP\/1\.1 431 /);

  const post = await raw(port, Buffer.from('POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.match(post.text, /^HTTP\/1\.1 405 .*\r\n[\s\S]*Allow: GET, HEAD\r\n/);
  assert.equal((await h.get(port, '/nope')).status, 404);
  const head = await raw(port, Buffer.from('HEAD /healthz HTTP/1.0\r\n\r\n'));
  assert.match(head.text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: 3\r\n[\s\S]*\r\n\r\n$/);

  const slowResult = await slow;
  assert.ok(slowResult.closed, 'the slow client was disconnected');
  assert.match(slowResult.text, /^HTTP\/1\.1 408 /);
  t.diagnostic(`slow client closed after ${slowResult.ms.toFixed(0)} ms`);

  // Many connections at once, all served or closed, none hanging the endpoint afterwards.
  const burst = await Promise.all(Array.from({ length: 50 }, () => raw(port, Buffer.from('GET /healthz HTTP/1.1\r\n\r\n'))));
  assert.ok(burst.every((r) => r.closed));
  assert.ok(burst.some((r) => r.text.startsWith('HTTP/1.1 200 OK')));
  assert.equal((await h.get(port, '/healthz')).status, 200);
  assert.equal(sup.exit, null, 'the supervisor is still running');
});

test('a bad --http address or a port in use is refused in one line', async (t) => {
  const idle = path.join(h.FIXTURES, 'idle.js');
  const bad = await h.run(['--http', 'localhost', '-m', idle, '--home', h.makeHome()]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^nodeguard: error: .*'localhost' is not an IP address and port \(write e\.g\. 127\.0\.0\.1:9615/);
  assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);

  const taken = net.createServer();
  await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.after(() => taken.close());
  const { port } = taken.address();
  const home = h.makeHome();
  const busy = await h.run(['--http', `127.0.0.1:${port}`, '-m', idle, '--home', home]);
  assert.equal(busy.code, 1);
  assert.match(busy.stderr, new RegExp(`nodeguard: error: cannot serve HTTP on 127\\.0\\.0\\.1:${port}: .*[Aa]ddress (already )?in use`));
  assert.equal(busy.stderr.trim().split('\n').filter((l) => l.includes('error')).length, 1, busy.stderr);

  // --http belongs to the process that supervises: foreground mode or `daemon`, not a client verb.
  const client = await h.run(['--http', '127.0.0.1:0', 'status', '--home', home]);
  assert.equal(client.code, 2);
  assert.match(client.stderr, /--http is an option of foreground mode/);
  const start = await h.run(['start', idle, '--http', '127.0.0.1:0', '--home', home]);
  assert.equal(start.code, 2);
  assert.match(start.stderr, /^nodeguard: error: --http is not an option of `start`: .*nodeguard daemon --http ADDR/);
  assert.equal(start.stderr.trim().split('\n').length, 1, start.stderr);
});

test('daemon --resurrect --http brings back the saved apps and serves the endpoints', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'api']);
  await d.ok(['kill']);

  const sup = new h.Supervisor({
    home: d.home,
    args: ['daemon', '--resurrect', '--http', '127.0.0.1:0'],
    env: d.env,
  });
  t.after(() => sup.cleanup());
  const port = await httpPort(sup);
  const rows = await sup.waitRunning(['api']);
  assert.equal(rows.api.id, 0);
  assert.deepEqual(await h.get(port, '/readyz'), { status: 200, body: 'ready\n' });
  const { samples } = await metrics(port);
  assert.equal(samples.get(`nodeguard_up${labels('api')}`), 1);

  // Clients reach it as they reach any daemon.
  await d.ok(['stop', 'api']);
  const notReady = await h.get(port, '/readyz');
  assert.equal(notReady.status, 503);
  assert.match(notReady.body, /api \(id 0\): stopped/);

  sup.signal('SIGTERM');
  assert.equal((await sup.waitExit()).code, 0);
});

test('daemon --resurrect with nothing saved runs with no apps', async (t) => {
  const home = h.makeHome();
  const sup = new h.Supervisor({ home, args: ['daemon', '--resurrect'], env: {} });
  t.after(() => sup.cleanup());
  await sup.waitFor(() => sup.lines.some((l) => /nothing to resurrect/.test(l.text)), {
    what: 'the "nothing to resurrect" log line',
  });
  assert.deepEqual(await sup.status(), []);
  sup.signal('SIGTERM');
  assert.equal((await sup.waitExit()).code, 0);
});
