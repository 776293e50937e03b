'use strict';
// A worker whose event loop is stuck (the process lives, the socket stays open, but JS never runs)
// is detected by missed heartbeats, killed and restarted, without disturbing its healthy sibling.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const INTERVAL_MS = 200;
const TIMEOUT_MS = 200;
const MISSES = 3;
/**
 * Detection bound from the spec: the next ping goes out within one interval of the hang, and the
 * third consecutive miss is declared (misses - 1) intervals plus one timeout after that, so
 * interval × misses + timeout covers it. The slack covers status polling (50 ms), the status CLI
 * round trip and scheduling on a loaded 2-core machine.
 */
const SLACK_MS = 500;
const DETECTION_BOUND_MS = INTERVAL_MS * MISSES + TIMEOUT_MS + SLACK_MS;
/** Pace of the requests to the healthy sibling during the hang. */
const REQUEST_PACE_MS = 20;

test('a hung app is killed and restarted within the bound; its healthy sibling keeps serving', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['server.js', 'server.js'],
    flags: [
      '--heartbeat-interval', `${INTERVAL_MS}ms`,
      '--heartbeat-timeout', `${TIMEOUT_MS}ms`,
      '--heartbeat-misses', String(MISSES),
      '--start-grace', '5s',
    ],
  });
  const victim = await sup.waitListening('server');
  const healthy = await sup.waitListening('server-1');
  const before = await sup.waitRunning(['server', 'server-1']);
  assert.equal(before['server-1'].pid, healthy.pid);

  // Keep the sibling busy through the whole episode: every single request must succeed.
  let stop = false;
  const served = [];
  const hammer = (async () => {
    while (!stop) {
      const reply = await h.get(healthy.port, '/');
      served.push(reply);
      await new Promise((resolve) => setTimeout(resolve, REQUEST_PACE_MS));
    }
  })();
  t.after(() => {
    stop = true;
  });

  assert.equal((await h.get(victim.port, '/hang')).body, 'hanging\n');
  const hungAt = performance.now();
  const row = await sup.waitForStatus((apps) => {
    const app = apps.find((a) => a.name === 'server');
    return app && app.hangs >= 1 ? app : false;
  }, { what: 'status to show server with hangs == 1' });
  const detectionMs = performance.now() - hungAt;
  t.diagnostic(`hang detected ${detectionMs.toFixed(0)} ms after /hang (bound ${DETECTION_BOUND_MS} ms)`);
  assert.ok(
    detectionMs <= DETECTION_BOUND_MS,
    `hang detected after ${detectionMs.toFixed(0)} ms; bound is ${DETECTION_BOUND_MS} ms ` +
      `(interval ${INTERVAL_MS} × misses ${MISSES} + timeout ${TIMEOUT_MS} + slack ${SLACK_MS})`,
  );
  assert.equal(row.hangs, 1);
  assert.equal(row.restarts, 1, 'a hang restart counts in restarts too');

  const replacement = await sup.waitListening('server', { notPids: [victim.pid] });
  assert.ok(h.isGone(victim.pid), `hung pid ${victim.pid} is still alive`);
  assert.equal((await h.get(replacement.port)).body, `ok ${replacement.pid}\n`);
  const after = await sup.waitRunning(['server', 'server-1']);
  assert.equal(after.server.pid, replacement.pid);
  assert.equal(after.server.hangs, 1);
  assert.equal(after.server.restarts, 1);
  assert.equal(typeof after.server.last_exit, 'string');

  stop = true;
  await hammer;
  assert.ok(served.length >= 5, `only ${served.length} requests reached the sibling during the hang`);
  for (const reply of served) assert.deepEqual(reply, { status: 200, body: `ok ${healthy.pid}\n` });
  assert.equal(after['server-1'].pid, healthy.pid, 'the healthy sibling was replaced');
  assert.equal(after['server-1'].restarts, 0);
  assert.equal(after['server-1'].hangs, 0);
  assert.equal(after['server-1'].state, 'running');
});
