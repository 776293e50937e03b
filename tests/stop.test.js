'use strict';
// Stopping the supervisor: SIGINT/SIGTERM/SIGQUIT stop every app gracefully (SIGTERM to the group,
// SIGKILL after --kill-timeout) and exit 0; a second signal forces the stop and exits non-zero.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const KILL_TIMEOUT_MS = 500;
/** How much longer than the kill timeout a stop may take: signal delivery, reaping, exit. */
const STOP_SLACK_MS = 2_000;
/** A forced stop must end well before a long kill timeout would. */
const FORCED_STOP_BOUND_MS = 2_000;

for (const signal of ['SIGTERM', 'SIGINT', 'SIGQUIT']) {
  test(`${signal} stops every app gracefully and exits 0`, async (t) => {
    const sup = h.startSupervisor(t, { scripts: ['server.js', 'idle.js'] });
    const server = await sup.waitListening('server');
    const idle = Number((await sup.waitForLine('idle', /^idle pid=(\d+)/))[1]);
    await sup.waitRunning(['server', 'idle']);

    sup.signal(signal);
    await sup.waitForLine('server', /^got SIGTERM$/, { what: 'server to report SIGTERM' });
    const exit = await sup.waitExit();
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    for (const pid of [server.pid, idle]) assert.ok(h.isGone(pid), `worker ${pid} outlived the supervisor`);
  });
}

test('an app ignoring SIGTERM is SIGKILLed after --kill-timeout; exit is still 0', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['stubborn.js', 'server.js'],
    flags: ['--kill-timeout', `${KILL_TIMEOUT_MS}ms`],
  });
  const stubborn = await sup.waitListening('stubborn');
  const server = await sup.waitListening('server');
  await sup.waitRunning(['stubborn', 'server']);

  const signalledAt = performance.now();
  sup.signal('SIGTERM');
  await sup.waitForLine('stubborn', /^got SIGTERM, ignoring it$/);
  await sup.waitForLine('server', /^got SIGTERM$/);
  const exit = await sup.waitExit();
  const stopMs = exit.at - signalledAt;
  t.diagnostic(`stopped ${stopMs.toFixed(0)} ms after SIGTERM (kill timeout ${KILL_TIMEOUT_MS} ms)`);
  assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
  assert.ok(stopMs >= KILL_TIMEOUT_MS * 0.9, `stopped after ${stopMs.toFixed(0)} ms, before the ${KILL_TIMEOUT_MS} ms kill timeout`);
  assert.ok(stopMs <= KILL_TIMEOUT_MS + STOP_SLACK_MS, `stop took ${stopMs.toFixed(0)} ms`);
  for (const pid of [stubborn.pid, server.pid]) assert.ok(h.isGone(pid), `worker ${pid} outlived the supervisor`);
});

test('a second signal forces the stop at once and exits non-zero', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['stubborn.js'], flags: ['--kill-timeout', '60s'] });
  const stubborn = await sup.waitListening('stubborn');
  await sup.waitRunning(['stubborn']);

  sup.signal('SIGTERM');
  await sup.waitForLine('stubborn', /^got SIGTERM, ignoring it$/);

  const forcedAt = performance.now();
  sup.signal('SIGINT');
  const exit = await sup.waitExit();
  const forcedMs = exit.at - forcedAt;
  t.diagnostic(`forced stop took ${forcedMs.toFixed(0)} ms, exit code ${exit.code}`);
  assert.ok(forcedMs <= FORCED_STOP_BOUND_MS, `forced stop took ${forcedMs.toFixed(0)} ms`);
  assert.ok(Number.isInteger(exit.code) && exit.code !== 0, `exit code ${exit.code}, signal ${exit.signal}: want a non-zero code`);
  assert.ok(h.isGone(stubborn.pid), `stubborn worker ${stubborn.pid} outlived the forced stop`);
});

test('status answers during a graceful stop and shows the app stopping', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['stubborn.js'], flags: ['--kill-timeout', '60s'] });
  const stubborn = await sup.waitListening('stubborn');
  await sup.waitRunning(['stubborn']);

  sup.signal('SIGTERM');
  await sup.waitForLine('stubborn', /^got SIGTERM, ignoring it$/);
  const row = await sup.waitForStatus((apps) => (apps[0].state === 'stopping' ? apps[0] : false), {
    what: 'status to show stubborn stopping',
  });
  assert.equal(row.pid, stubborn.pid);
  assert.equal(row.restarts, 0);
  // The test's cleanup SIGKILLs what is left.
});

test('with its stdout and stderr readers gone, the supervisor still supervises and stops on SIGTERM', async (t) => {
  // A pipe into `head`, or a log collector that went away: every write of nodeguard's own log
  // lines and of the apps' output fails with EPIPE from then on. None of that may stop supervision.
  const sup = h.startSupervisor(t, { scripts: ['server.js', 'idle.js'], flags: ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms'] });
  const server = await sup.waitListening('server');
  const before = (await sup.waitRunning(['server', 'idle'])).server;
  sup.child.stdout.destroy();
  sup.child.stderr.destroy();

  // It logs (and copies app output) into the broken pipes: a crash and its restart.
  await h.get(server.port, '/crash').catch(() => {});
  const after = await sup.waitForStatus(
    (apps) => apps.find((a) => a.name === 'server' && a.state === 'running' && a.pid !== before.pid && a.restarts === 1),
    { what: 'the crashed server restarted' },
  );
  const idle = (await sup.status()).find((a) => a.name === 'idle');

  sup.signal('SIGTERM');
  const exit = await sup.waitExit();
  assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
  for (const pid of [after.pid, idle.pid]) assert.ok(h.isGone(pid), `worker ${pid} outlived the supervisor`);
});
