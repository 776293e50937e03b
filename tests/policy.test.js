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

test('a supervisor stopped for 3 s (SIGSTOP, then SIGCONT) declares no healthy app hung', async (t) => {
  const STOPPED_MS = 3_000;
  const sup = h.startSupervisor(t, { scripts: ['idle.js'], flags: FAST_HEARTBEAT });
  const before = (await sup.waitRunning(['idle'])).idle;
  process.kill(sup.pid, 'SIGSTOP');
  // The stop itself is the scenario (a frozen or starved supervisor), not a wait for an outcome.
  await h.sleep(STOPPED_MS);
  process.kill(sup.pid, 'SIGCONT');
  // Fifteen heartbeat intervals passed unobserved: a supervisor that counted them as misses would
  // now kill a healthy app. (The voiding of a check that fires late is table-tested in machine.rs.)
  // Several heartbeats after the resume: the same process, answering, never declared hung.
  const after = (
    await sup.waitForStatus(
      (apps) =>
        apps[0].uptime_ms >= before.uptime_ms + STOPPED_MS + 1_000 && apps[0].last_pong_ms !== null && apps[0].last_pong_ms < 1_000
          ? apps
          : false,
      { what: 'a second of fresh heartbeats after the resume' },
    )
  )[0];
  assert.equal(after.pid, before.pid, 'the healthy app was not restarted');
  assert.equal(after.hangs, 0);
  assert.equal(after.restarts, 0);
  assert.equal(after.state, 'running');
});
