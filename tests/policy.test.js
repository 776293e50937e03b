'use strict';
// Restart policy end to end: the restart budget ends a crash loop in `errored`, autorestart modes,
// and the memory guard restarts a leaking app from its heartbeat figures.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const FAST_HEARTBEAT = ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms'];

test('a crash loop reaches errored once it exceeds its restart budget, and says why', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['crashloop.js'],
    // --keep-alive: stay up for status once the only app is errored (the default is to exit).
    flags: [...FAST_HEARTBEAT, '--max-restarts', '3', '--restart-window', '1m', '--keep-alive'],
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
    flags: [...FAST_HEARTBEAT, '--autorestart', 'on-failure', '--keep-alive'],
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

test('--clean-exit-codes: under on-failure, an exit with a listed code is a clean stop', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['crashloop.js'],
    flags: [...FAST_HEARTBEAT, '--autorestart', 'on-failure', '--clean-exit-codes', '0,3', '--keep-alive'],
    env: { EXIT_CODE: '3' },
  });
  const row = (
    await sup.waitForStatus((apps) => (apps[0].state === 'stopped' ? apps : false), {
      what: 'the app exiting with listed code 3 to rest as stopped',
    })
  )[0];
  assert.equal(row.restarts, 0);
  assert.match(row.last_exit, /exit code 3/);
});

test('once every app has finished, foreground mode exits: 0 if all ended cleanly, 3 if one failed', async (t) => {
  await t.test('clean', async (t) => {
    const sup = h.startSupervisor(t, {
      scripts: ['crashloop.js', 'crashloop.js'],
      flags: [...FAST_HEARTBEAT, '--autorestart', 'on-failure'],
      env: { EXIT_CODE: '0' },
    });
    const exit = await sup.waitExit({ what: 'nodeguard to exit once both apps finished' });
    assert.equal(exit.code, 0);
    assert.equal(sup.appLines('crashloop').length + sup.appLines('crashloop-1').length, 2, 'each app ran once');
  });
  await t.test('one given up on', async (t) => {
    const sup = h.startSupervisor(t, {
      scripts: ['crashloop.js', 'crashloop.js'],
      flags: [...FAST_HEARTBEAT, '--max-restarts', '1', '--autorestart', 'on-failure', '--clean-exit-codes', '0'],
      env: { EXIT_CODE: '3' },
    });
    const exit = await sup.waitExit({ what: 'nodeguard to exit once both apps are errored' });
    assert.equal(exit.code, 3, 'an errored app makes the exit code 3');
  });
  await t.test('an app still running keeps it up', async (t) => {
    const sup = h.startSupervisor(t, { scripts: ['idle.js', 'crashloop.js'], flags: [...FAST_HEARTBEAT, '--autorestart', 'never'], env: { EXIT_CODE: '0' } });
    await sup.waitForStatus((apps) => (apps.find((a) => a.name === 'crashloop')?.state === 'stopped' ? apps : false), {
      what: 'crashloop to finish while idle runs',
    });
    assert.equal(sup.exit, null, 'nodeguard exited while an app was still running');
    process.kill(sup.pid, 'SIGTERM');
    assert.equal((await sup.waitExit()).code, 0);
  });
});

test('a bad --clean-exit-codes is refused in one line', async () => {
  const r = await h.run(['--clean-exit-codes', '0,300', '-m', path.join(h.FIXTURES, 'idle.js')]);
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, /300 is not an exit code/);
  assert.equal(r.stderr.trim().split('\n').length, 1, `more than one line: ${r.stderr}`);
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

/** ppid from /proc/<pid>/stat. */
function parentOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

test('a grandchild that left the process group is adopted, counted in tree memory, and ended with its app', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['escape.js'], flags: FAST_HEARTBEAT });
  const m = await sup.waitForLine('escape', /escape app=(\d+) child=(\d+) grandchild=(\d+)/);
  const [app, child, grandchild] = [Number(m[1]), Number(m[2]), Number(m[3])];
  t.after(() => {
    try {
      process.kill(grandchild, 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  });
  await h.waitGone([child], { what: 'the intermediate child to exit' });
  // Its parent gone, the grandchild was re-parented to the supervisor (a child subreaper), not init.
  assert.equal(parentOf(grandchild), sup.pid, 'the orphaned grandchild was not adopted by the supervisor');
  // status counts it: two processes, and its ~60 MB on top of the app's own RSS.
  const row = (
    await sup.waitForStatus((apps) => (apps[0].processes === 2 && apps[0].tree_rss !== null ? apps : false), {
      what: 'status to count the escaped grandchild in the app tree',
    })
  )[0];
  assert.equal(row.pid, app);
  assert.ok(row.tree_rss >= row.memory.rss + 50e6, `tree_rss ${row.tree_rss} should include the grandchild's 60 MB (app rss ${row.memory.rss})`);
  process.kill(sup.pid, 'SIGTERM');
  // SIGTERM to the app's group missed the grandchild; the supervisor ends it.
  await h.waitGone([app, grandchild], { what: 'the app and its escaped grandchild to end' });
  const exit = await sup.waitExit();
  assert.equal(exit.code, 0);
});

test('the memory guard counts the whole tree: a child over the limit restarts the app', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['escape.js'], flags: [...FAST_HEARTBEAT, '--max-memory', '100M'], env: { ESCAPE_MB: '120' } });
  const m = await sup.waitForLine('escape', /escape app=(\d+) child=(\d+) grandchild=(\d+)/);
  const [app, grandchild] = [Number(m[1]), Number(m[3])];
  t.after(() => {
    try {
      process.kill(grandchild, 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  });
  const row = (
    await sup.waitForStatus((apps) => (apps[0].restarts >= 1 ? apps : false), {
      what: 'the memory guard to restart the app for its grandchild\'s memory',
    })
  )[0];
  assert.match(row.last_exit ?? '', /memory .* over the limit of 100\.0M/);
  assert.equal(row.hangs, 0);
  // The app's own process is far below 100 MB: only the tree is over.
  await h.waitGone([app, grandchild], { what: 'the old app and its grandchild to end' });
  // The grandchild, adopted by the supervisor, is also collected by it: no zombie is left behind.
  await sup.waitFor(() => h.procState(grandchild) === null, { what: `the supervisor to reap the adopted grandchild ${grandchild}` });
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
