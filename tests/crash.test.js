'use strict';
// An app that exits without being asked is started again.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

/** The supervisor restarts at once after a run of at least this long (spec: "ran ≥ 1 s"). */
const STABLE_UPTIME_MS = 1_000;
/** Upper bound for an immediate restart: the time node needs to boot again on a slow box. */
const IMMEDIATE_RESTART_MS = 3_000;
/** The first backoff delay after a quick crash. */
const BACKOFF_BASE_MS = 100;
/** Jitter allowed on the supervisor's timestamps (a timer may fire early by the clock's grain). */
const LINE_JITTER_MS = 30;

const FAST_HEARTBEAT = ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms'];

test('a crashed app is restarted: new pid, restarts counted, serving again', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['server.js'], flags: FAST_HEARTBEAT });
  const first = await sup.waitListening('server');
  assert.equal((await h.get(first.port)).body, `ok ${first.pid}\n`);

  // Let it run long enough that its restart is immediate rather than backed off.
  await sup.waitForStatus((apps) => apps[0].state === 'running' && apps[0].uptime_ms >= STABLE_UPTIME_MS, {
    what: `server running for ${STABLE_UPTIME_MS} ms`,
  });

  const crashedAt = performance.now();
  assert.equal((await h.get(first.port, '/crash')).body, 'crashing\n');
  const second = await sup.waitListening('server', { notPids: [first.pid] });
  const restartMs = performance.now() - crashedAt;
  t.diagnostic(`serving again ${restartMs.toFixed(0)} ms after /crash`);

  assert.notEqual(second.pid, first.pid);
  assert.ok(h.isGone(first.pid), `crashed pid ${first.pid} is still alive`);
  assert.ok(restartMs < IMMEDIATE_RESTART_MS, `restart took ${restartMs.toFixed(0)} ms after a stable run`);
  assert.equal((await h.get(second.port)).body, `ok ${second.pid}\n`);

  const row = (await sup.waitRunning(['server'])).server;
  assert.equal(row.pid, second.pid);
  assert.equal(row.restarts, 1);
  assert.equal(row.hangs, 0);
  assert.match(row.last_exit, /\b3\b/, 'last_exit should name exit code 3');

  // An uncaught exception (exit code 1) is a crash too.
  await sup.waitForStatus((apps) => apps[0].state === 'running' && apps[0].uptime_ms >= STABLE_UPTIME_MS, {
    what: `second server running for ${STABLE_UPTIME_MS} ms`,
  });
  assert.equal((await h.get(second.port, '/throw')).body, 'throwing\n');
  const third = await sup.waitListening('server', { notPids: [first.pid, second.pid] });
  assert.equal((await h.get(third.port)).body, `ok ${third.pid}\n`);
  const row3 = (await sup.waitRunning(['server'])).server;
  assert.equal(row3.pid, third.pid);
  assert.equal(row3.restarts, 2);
  assert.equal(row3.hangs, 0);
  assert.match(row3.last_exit, /\b1\b/, 'last_exit should name exit code 1');
});

test('a crash loop is restarted with a growing backoff, starting at 100 ms', async (t) => {
  // --min-uptime 10s: on a loaded machine node alone can take over the default 1 s to boot, and
  // each crash would then count as a healthy run that resets the backoff.
  const sup = h.startSupervisor(t, { scripts: ['crashloop.js'], flags: ['--min-uptime', '10s'] });
  const CRASHES = 5;

  const row = await sup.waitForStatus(
    (apps) => (apps[0].state === 'backoff' && apps[0].restarts >= CRASHES - 1 ? apps[0] : false),
    { what: `crashloop in backoff after ${CRASHES - 1} restarts` },
  );
  assert.equal(row.pid, null, 'no pid while backing off');
  assert.match(row.last_exit, /\b3\b/);

  // The waits themselves, from the supervisor's own timestamps: each exit line ("exit code 3 after
  // …; restart in …") to the next "started pid=" line. The app's boot time is not in them, so a
  // loaded machine, where node takes a second to boot, cannot hide the growth.
  const stamp = (l) => Date.parse(l.text.slice(0, l.text.indexOf(' ')));
  const backoffGaps = () => {
    const gaps = [];
    let exitAt = null;
    for (const l of sup.lines) {
      if (!l.text.includes('app{name=crashloop}')) continue;
      if (/exit code 3 after .*restart in/.test(l.text)) exitAt = stamp(l);
      else if (/: started pid=/.test(l.text) && exitAt !== null) {
        gaps.push(stamp(l) - exitAt);
        exitAt = null;
      }
    }
    return gaps;
  };
  const gaps = await sup.waitFor(() => (backoffGaps().length >= CRASHES - 1 ? backoffGaps().slice(0, CRASHES - 1) : false), {
    what: `${CRASHES - 1} restarts of crashloop in the supervisor's log`,
  });
  const shown = gaps.map((g) => g.toFixed(0)).join(', ');
  t.diagnostic(`exit → next start: ${shown} ms`);
  for (const gap of gaps) {
    assert.ok(Number.isFinite(gap), `restart gaps ${shown} ms: a log line without a timestamp`);
    assert.ok(gap >= BACKOFF_BASE_MS - LINE_JITTER_MS, `restart gaps ${shown} ms: one is under the ${BACKOFF_BASE_MS} ms base`);
  }
  // Doubling gives 100, 200, 400, 800 ms; a constant delay would not grow.
  assert.ok(gaps[gaps.length - 1] >= 2 * gaps[0], `restart gaps ${shown} ms do not grow`);
});

test('any exit not asked for is restarted: a clean exit 0, and a SIGKILL from outside', async (t) => {
  await t.test('exit code 0', async (t) => {
    const sup = h.startSupervisor(t, { scripts: ['crashloop.js'], env: { EXIT_CODE: '0' } });
    const row = await sup.waitForStatus((apps) => (apps[0].restarts >= 2 ? apps[0] : false), {
      what: 'an app exiting 0 to be restarted twice',
    });
    assert.match(row.last_exit, /\b0\b/);
    assert.notEqual(row.state, 'stopped');
  });

  await t.test('SIGKILL from outside', async (t) => {
    const sup = h.startSupervisor(t, { scripts: ['server.js'] });
    const first = await sup.waitListening('server');
    await sup.waitRunning(['server']);
    process.kill(first.pid, 'SIGKILL');
    const second = await sup.waitListening('server', { notPids: [first.pid] });
    assert.equal((await h.get(second.port)).body, `ok ${second.pid}\n`);
    const row = (await sup.waitRunning(['server'])).server;
    assert.equal(row.pid, second.pid);
    assert.equal(row.restarts, 1);
    assert.equal(row.hangs, 0);
    assert.match(row.last_exit, /SIGKILL|signal 9/);
  });
});

test("a crash ends the app's escaped, orphaned grandchild too, whether or not a tree scan saw it", async (t) => {
  // The app crashes as soon as its grandchild is orphaned, often before the 1 s tree scan has
  // seen it: the restart's sweep finds it among the supervisor's adopted children by spawn key.
  const sup = h.startSupervisor(t, { scripts: ['escape.js'], flags: FAST_HEARTBEAT, env: { ESCAPE_MB: '1', ESCAPE_EXIT: '1' } });
  const grandchildren = [];
  t.after(() => {
    for (const pid of grandchildren) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
  });
  const printed = () =>
    sup.lines.flatMap((l) => {
      const m = l.app === 'escape' && /escape app=\d+ child=\d+ grandchild=(\d+)/.exec(l.message);
      return m ? [Number(m[1])] : [];
    });
  for (let round = 0; round < 3; round++) {
    const pids = await sup.waitFor(() => (printed().length > round ? printed() : false), {
      what: `escape.js to orphan grandchild ${round + 1}`,
    });
    const grandchild = pids[round];
    grandchildren.push(grandchild);
    await h.waitGone([grandchild], { what: `the orphaned grandchild ${grandchild} of crash ${round + 1} to be ended` });
  }
});
