'use strict';
// When the supervisor dies without warning, its workers must not live on as orphans, including a
// worker whose event loop is stuck and so cannot run any JS "parent is gone" handler.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const ORPHAN_BOUND_MS = 1_000;

test('after SIGKILL of the supervisor every worker is gone within 1 s, hung ones included', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['idle.js', 'server.js', 'busy.js'],
    // Nothing may be restarted for hanging while the test sets up.
    flags: ['--start-grace', '60s', '--heartbeat-misses', '1000'],
  });
  const idle = Number((await sup.waitForLine('idle', /^idle pid=(\d+)/))[1]);
  const server = await sup.waitListening('server');
  const busy = Number((await sup.waitForLine('busy', /^busy pid=(\d+)$/))[1]);
  await sup.waitForStatus((apps) => {
    const by = Object.fromEntries(apps.map((a) => [a.name, a]));
    return by.idle?.state === 'running' && by.server?.state === 'running' && by.busy?.monitored === true;
  }, { what: 'idle and server running, busy (never answering) monitored' });

  // Block the server's loop mid-life, after it has answered heartbeats.
  assert.equal((await h.get(server.port, '/hang')).body, 'hanging\n');

  const workers = [idle, server.pid, busy];
  for (const pid of workers) assert.ok(!h.isGone(pid), `worker ${pid} died before the test`);
  sup.signal('SIGKILL');
  const elapsed = await h.waitGone(workers, { what: 'orphaned workers to end' });
  t.diagnostic(`workers gone ${elapsed.toFixed(0)} ms after the supervisor was SIGKILLed`);
  assert.ok(elapsed <= ORPHAN_BOUND_MS, `workers outlived the supervisor by ${elapsed.toFixed(0)} ms`);
  const exit = await sup.waitExit();
  assert.equal(exit.signal, 'SIGKILL');
});
