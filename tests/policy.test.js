'use strict';
// Restart policy end to end: the restart budget ends a crash loop in `errored`, autorestart modes,
// and the memory guard restarts a leaking app from its heartbeat figures.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const FAST_HEARTBEAT = ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms'];

test('a crash loop reaches errored once it exceeds its restart budget, and says why', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['crashloop.js'],
    flags: [...FAST_HEARTBEAT, '--max-restarts', '3', '--restart-window', '1m'],
  });
  const row = (
    await sup.waitForStatus((apps) => (apps[0].state === 'errored' ? apps : false), {
      what: 'the crash loop to be marked errored',
    })
  )[0];
  assert.equal(row.restarts, 3, 'exactly the budget was spent');
  assert.equal(row.pid, null);
  assert.match(row.last_exit, /failed 4 times within 1m00s/);
  assert.match(row.last_exit, /exit code 3/);
  // It stays errored: nothing respawns it behind the operator's back.
  const again = (await h.status(sup.home))[0];
  assert.equal(again.state, 'errored');
  assert.equal(again.restarts, 3);
});

test('autorestart on-failure leaves a clean exit stopped and restarts a failing one', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['crashloop.js'],
    flags: [...FAST_HEARTBEAT, '--autorestart', 'on-failure'],
    env: { EXIT_CODE: '0' },
  });
  const row = (
    await sup.waitForStatus((apps) => (apps[0].state === 'stopped' ? apps : false), {
      what: 'the cleanly exiting app to rest as stopped',
    })
  )[0];
  assert.equal(row.restarts, 0);
  assert.match(row.last_exit, /exit code 0/);
});

test('the memory guard restarts an app whose RSS passes --max-memory, at a heartbeat', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['leak.js'],
    flags: [...FAST_HEARTBEAT, '--max-memory', '150M'],
  });
  const first = await sup.waitForLine('leak', /leaking pid=(\d+)/);
  const firstPid = Number(first[1]);
  const row = (
    await sup.waitForStatus((apps) => (apps[0].restarts >= 1 && apps[0].pid !== firstPid ? apps : false), {
      what: 'the leaking app to be restarted by the memory guard',
    })
  )[0];
  assert.equal(row.hangs, 0, 'a memory restart is not a hang');
  assert.match(row.last_exit ?? '', /memory .* over the limit of 150\.0M/);
  await h.waitGone([firstPid], { what: 'the leaking process to end' });
});

test('stopping an app ends its children and grandchildren too (its process group)', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['family.js'], flags: FAST_HEARTBEAT });
  const m = await sup.waitForLine('family', /family app=(\d+) child=(\d+) grandchild=(\d+)/);
  const pids = [Number(m[1]), Number(m[2]), Number(m[3])];
  for (const pid of pids) assert.ok(!h.isGone(pid), `pid ${pid} should be running`);
  process.kill(sup.pid, 'SIGTERM');
  await h.waitGone(pids, { what: 'the app, its child and its grandchild to end' });
  const exit = await sup.waitExit();
  assert.equal(exit.code, 0);
});
