'use strict';
// Hostile or broken clients on the worker socket get disconnected; the supervisor carries on and
// its real workers are not disturbed.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const INTERVAL_MS = 200;
/** A healthy worker's latest pong is never older than this (a few intervals). */
const FRESH_PONG_MS = 5 * INTERVAL_MS;
const MAX_WORKER_FRAME = 64 * 1024;

function header(length) {
  const buf = Buffer.alloc(4);
  buf.writeUInt32BE(length);
  return buf;
}

test('garbage, oversize frames and a wrong token are disconnected; the supervisor carries on', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['server.js'],
    flags: ['--heartbeat-interval', `${INTERVAL_MS}ms`, '--heartbeat-timeout', `${INTERVAL_MS}ms`],
  });
  const server = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  const socketPath = h.sockets(sup.home).worker;

  async function assertUndisturbed(after) {
    const row = await sup.waitForStatus((apps) => {
      const r = apps.find((a) => a.name === 'server');
      return r && r.state === 'running' && r.last_pong_ms !== null && r.last_pong_ms < FRESH_PONG_MS ? r : false;
    }, { what: `server running with a fresh pong after ${after}` });
    assert.equal(row.pid, server.pid, `server was replaced after ${after}`);
    assert.equal(row.restarts, 0, `server restarted after ${after}`);
    assert.equal(row.hangs, 0);
    assert.equal((await h.get(server.port)).body, `ok ${server.pid}\n`);
  }

  const closedWithout = [
    ['bytes that are not a frame', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ['a frame that is not JSON', Buffer.concat([header(10), Buffer.from('not json!!')])],
    ['a JSON frame that is not a hello', h.frame({ type: 'pong', seq: 1 })],
    ['a header announcing 64 KiB + 1', header(MAX_WORKER_FRAME + 1)],
    ['a header announcing 4 GiB', header(0xffffffff)],
  ];
  for (const [what, bytes] of closedWithout) {
    await t.test(what, async () => {
      const reply = await h.exchange(socketPath, bytes);
      assert.ok(reply.closed, `the supervisor kept the connection open after ${what}`);
      assert.ok(!reply.frames.some((f) => f.type === 'welcome'), `welcomed after ${what}: ${JSON.stringify(reply.frames)}`);
      await assertUndisturbed(what);
    });
  }

  for (const [what, pid] of [['a stranger', process.pid], ['a stranger claiming the worker\'s pid', server.pid]]) {
    await t.test(`a wrong token from ${what} is refused, then closed`, async () => {
      const hello = h.frame({ type: 'hello', version: 1, token: 'not-the-token', pid });
      const reply = await h.exchange(socketPath, hello);
      assert.equal(reply.frames.length, 1, `want exactly one frame back, got ${JSON.stringify(reply.frames)}`);
      assert.equal(reply.frames[0].type, 'refused');
      assert.equal(typeof reply.frames[0].reason, 'string');
      assert.ok(reply.frames[0].reason.length > 0, 'refused without a reason');
      assert.ok(reply.closed, 'connection left open after refusing');
      await assertUndisturbed(`a wrong token from ${what}`);
    });
  }
});

test('impossible numbers from a worker holding the real token: the daemon survives and the app stays controllable', async (t) => {
  // The fake monitor (fixtures/bad-monitor.js) replaces the real one as the preload: each app
  // proves itself with its real token, then sends the message its first argument names.
  const d = new h.DaemonHome(t, { env: { NODEGUARD_PRELOAD: require('node:path').join(h.FIXTURES, 'bad-monitor.js') } });
  const variants = ['probe-1e300', 'probe-negative', 'pong-1e300', 'pong-delay-huge', 'pong-rss-max'];
  for (const variant of variants) {
    // Without a monitor an app counts as running once its start grace is over.
    await d.ok(['start', 'idle.js', '--name', variant, '--start-grace', '300ms', '--', variant]);
  }
  const daemonPid = d.daemonPid();
  const fs = require('node:fs');
  const logs = require('node:path').join(d.home, 'logs');
  const sent = (variant) => {
    try {
      return fs.readFileSync(require('node:path').join(logs, `${variant}-out.log`), 'utf8').includes(`bad-monitor sent ${variant}`);
    } catch {
      return false;
    }
  };
  await d.waitFor(() => variants.every(sent), { what: 'every fake monitor to send its message' });
  // Each message is handled (or refused) before the supervisor answers a later request.
  const ping = await d.ok(['ping']);
  assert.match(ping.stdout, new RegExp(`\\b${daemonPid}\\b`), 'the daemon was replaced');

  for (const variant of variants) {
    await d.ok(['stop', variant], { timeout: 15_000 });
    await d.ok(['restart', variant], { timeout: 15_000 });
  }
  await d.ok(['delete', variants[0]], { timeout: 15_000 });
  const stopAll = await d.cli(['stop', 'all'], { timeout: 15_000 });
  assert.equal(stopAll.code, 0, `stop all: ${stopAll.stderr}\n${d.describe()}`);
  const apps = await d.status();
  assert.deepEqual(apps.map((a) => [a.name, a.state]), variants.slice(1).map((v) => [v, 'stopped']));
  assert.doesNotMatch(d.daemonLog(), /panicked/, 'a task panicked');
});
