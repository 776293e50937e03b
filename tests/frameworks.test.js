'use strict';
// Real frameworks with their own shutdown handlers, in cluster mode, under real HTTP/1.1
// keep-alive load (autocannon, from npm): a reload, a restart, a stop and a SIGTERM to a
// foreground supervisor fail no request. The app is a real Express app (npm) whose SIGTERM handler
// calls `server.close(() => process.exit(0))`, as the Express docs and PM2's guide write it. The
// monitor drains each instance first (stops accepting on the shared socket, ends kept-alive
// connections with `Connection: close`, lets in-flight requests finish) and only then raises the
// app's SIGTERM, so that handler finds nothing left to cut; a response that never ends holds it
// back for half the kill timeout at most.

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const h = require('./helpers');

let autocannon;
try {
  autocannon = require('autocannon');
  require.resolve('express');
} catch (error) {
  throw new Error(`frameworks tests need the devDependencies express and autocannon: run npm install (${error.message})`);
}

const EXPRESS = path.join(h.FIXTURES, 'express-sigterm.js');
/** Kept-alive connections of the load. */
const CONNECTIONS = 16;

/** Starts `web` (2 instances of the Express app) on 127.0.0.1:<free port>; returns the port. */
async function startWeb(home, instances = 2) {
  const port = await h.freePort();
  await home.ok([
    'start', EXPRESS, '--name', 'web', '-i', String(instances), '--listen', `127.0.0.1:${port}`,
    '--kill-timeout', '8s', '--', String(port),
  ]);
  return port;
}

function waitInstances(home, count, { notPids = [], what } = {}) {
  return home.waitForStatus(
    (apps) => {
      const rows = apps.filter((a) => a.name === 'web');
      const ok = rows.length === count &&
        rows.every((r) => r.state === 'running' && Number.isInteger(r.pid) && !notPids.includes(r.pid));
      return ok ? rows : false;
    },
    { what: what || `${count} web instances running` },
  );
}

/**
 * autocannon against `port` with CONNECTIONS kept-alive connections until `stop()`. `ok` counts
 * 2xx responses as they come; `stop()` resolves with { ok, failed, errors }: failed counts
 * errors (reset, refused, timed out) and non-2xx answers.
 */
function load(port) {
  const seen = { ok: 0, errors: [] };
  const instance = autocannon({
    url: `http://127.0.0.1:${port}/`,
    connections: CONNECTIONS,
    duration: 600,
    timeout: 10,
  });
  instance.on('response', (client, status) => {
    if (status >= 200 && status < 300) seen.ok += 1;
  });
  instance.on('reqError', (error) => {
    if (seen.errors.length < 10) seen.errors.push(error.code || error.message);
  });
  const finished = new Promise((resolve, reject) => {
    instance.on('done', resolve);
    instance.on('error', reject);
  });
  return {
    seen,
    async stop() {
      instance.stop();
      const result = await finished;
      // autocannon counts a timeout in `errors` too.
      const failed = result.errors + result.non2xx;
      return { ok: seen.ok, failed, errors: seen.errors, result };
    },
  };
}

/** Waits for `more` responses beyond those seen so far. */
function waitResponses(home, running, more, what) {
  const from = running.seen.ok;
  return home.waitFor(() => running.seen.ok >= from + more, { what });
}

test('Express with its own SIGTERM handler reloads twice under keep-alive load with 0 failed requests', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home);
  const first = (await waitInstances(home, 2)).map((r) => r.pid);
  const running = load(port);
  t.after(() => running.stop());
  await waitResponses(home, running, 200, 'the load to get going');
  await home.ok(['reload', 'web'], { timeout: 60_000 });
  const second = (await waitInstances(home, 2, { notPids: first })).map((r) => r.pid);
  await waitResponses(home, running, 200, 'requests after the first reload');
  await home.ok(['reload', 'web'], { timeout: 60_000 });
  await waitInstances(home, 2, { notPids: [...first, ...second] });
  await waitResponses(home, running, 200, 'requests after the second reload');
  const result = await running.stop();

  t.diagnostic(`${result.ok} responses, ${result.failed} failed`);
  assert.equal(result.failed, 0, `failed requests: ${result.result.errors} errors (${result.result.timeouts} of them timeouts), ${result.result.non2xx} non-2xx: ${result.errors.join('; ')}`);
  for (const pid of [...first, ...second]) assert.ok(h.isGone(pid), `old pid ${pid} still runs after the reload returned`);
  // The app's own handler still ran in every old process, after the drain: its line is logged.
  const logs = await home.ok(['logs', 'web', '--lines', '200']);
  for (const pid of [...first, ...second]) assert.match(logs.stdout, new RegExp(`SIGTERM ${pid}\\b`), `no SIGTERM line from ${pid}`);
});

test('restart of an Express cluster app rolls over its instances: 0 failed requests', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home);
  const before = (await waitInstances(home, 2)).map((r) => r.pid);
  const running = load(port);
  t.after(() => running.stop());
  await waitResponses(home, running, 200, 'the load to get going');
  await home.ok(['restart', 'web'], { timeout: 60_000 });
  await waitInstances(home, 2, { notPids: before });
  await waitResponses(home, running, 200, 'requests after the restart');
  const result = await running.stop();

  t.diagnostic(`${result.ok} responses, ${result.failed} failed`);
  assert.equal(result.failed, 0, `failed requests: ${result.result.errors} errors (${result.result.timeouts} of them timeouts), ${result.result.non2xx} non-2xx: ${result.errors.join('; ')}`);
  for (const pid of before) assert.ok(h.isGone(pid), `old pid ${pid} still runs after the restart returned`);
});

test('SIGTERM to a foreground supervisor with -i 2: in-flight requests finish, then the app handlers run and it exits 0', async (t) => {
  const port = await h.freePort();
  const sup = h.startSupervisor(t, {
    scripts: [EXPRESS],
    flags: ['-i', '2', '--listen', `127.0.0.1:${port}`, '--kill-timeout', '8s'],
    appArgs: [String(port)],
  });
  const rows = await sup.waitForStatus((apps) => {
    const web = apps.filter((a) => a.name === 'express-sigterm');
    return web.length === 2 && web.every((a) => a.state === 'running' && a.pid) ? web : false;
  }, { what: 'two instances running' });
  // Slow requests in flight on both instances (the kernel spreads the connections).
  const slow = Array.from({ length: 6 }, () => h.get(port, '/slow?ms=1500', { timeout: 10_000 }));
  await sup.waitFor(() => sup.lines.filter((line) => /slow request \d+/.test(line.text)).length >= 6, {
    what: 'the 6 slow requests to reach the app',
  });
  sup.signal('SIGTERM');
  const answers = await Promise.allSettled(slow);
  for (const answer of answers) {
    assert.equal(answer.status, 'fulfilled', `an in-flight request failed: ${answer.reason && answer.reason.message}`);
    assert.equal(answer.value.status, 200);
  }
  const exit = await sup.waitExit();
  assert.equal(exit.code, 0);
  await h.waitGone(rows.map((r) => r.pid));
  for (const row of rows) {
    assert.ok(sup.lines.some((line) => line.text.includes(`SIGTERM ${row.pid}`)), `the handler of ${row.pid} did not run`);
  }
});

test('stop of a daemon cluster app (2 instances): in-flight requests finish, then the app handlers run', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home);
  const rows = await waitInstances(home, 2);
  const slow = Array.from({ length: 6 }, () => h.get(port, '/slow?ms=1500', { timeout: 10_000 }));
  await home.waitFor(async () => {
    const logs = await home.ok(['logs', 'web', '--lines', '50', '--out']);
    return (logs.stdout.match(/slow request \d+/g) || []).length >= 6;
  }, { what: 'the 6 slow requests to reach the app' });
  await home.ok(['stop', 'web'], { timeout: 30_000 });
  const answers = await Promise.allSettled(slow);
  for (const answer of answers) {
    assert.equal(answer.status, 'fulfilled', `an in-flight request failed: ${answer.reason && answer.reason.message}`);
    assert.equal(answer.value.status, 200);
  }
  await h.waitGone(rows.map((r) => r.pid));
  const logs = await home.ok(['logs', 'web', '--lines', '50', '--out']);
  for (const row of rows) assert.match(logs.stdout, new RegExp(`SIGTERM ${row.pid}\\b`), `the handler of ${row.pid} did not run`);
});

test('a response that never ends does not hold the app handler back: it runs after half the kill timeout', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  await home.ok(['start', EXPRESS, '--name', 'web', '-i', '1', '--listen', `127.0.0.1:${port}`, '--kill-timeout', '4s', '--', String(port)]);
  const [row] = await waitInstances(home, 1);
  const stream = http.get({ host: '127.0.0.1', port, path: '/stream', agent: false });
  t.after(() => stream.destroy());
  stream.on('error', () => {});
  await new Promise((resolve) => stream.on('response', resolve));
  const stopped = performance.now();
  const stop = home.ok(['stop', 'web'], { timeout: 30_000 });
  // The drain waits for the stream up to 2 s (half of --kill-timeout 4s), then hands over.
  await home.waitFor(async () => /SIGTERM \d+/.test((await home.ok(['logs', 'web', '--lines', '20', '--out'])).stdout), {
    what: 'the app handler to run',
  });
  const handedOverMs = performance.now() - stopped;
  await stop;
  await h.waitGone([row.pid]);
  t.diagnostic(`handler ran ${handedOverMs.toFixed(0)} ms after stop`);
  assert.ok(handedOverMs < 3_800, `the handler ran only after ${handedOverMs.toFixed(0)} ms, at the kill timeout`);
});
