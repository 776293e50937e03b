'use strict';
// Daemon mode: `nodeguard start` launches a background daemon on the home (if none answers) and
// adds apps to it; stop/restart/delete/kill return once their effect has happened. Every test uses
// its own home; cleanup SIGKILLs the daemon and every app (see DaemonHome in helpers.js).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const h = require('./helpers');

/** How long a daemon's apps may outlive a SIGKILL of the daemon (the core's no-orphans bound). */
const ORPHAN_BOUND_MS = 1_000;
/** How long the daemon process may take to vanish after `kill` reported it gone. */
const DAEMON_EXIT_MS = 2_000;
const CONCURRENT_STATUS = 10;

const fixture = (name) => path.join(h.FIXTURES, name);

function byName(apps) {
  return Object.fromEntries(apps.map((a) => [a.name, a]));
}

/** "pid 1234" in `nodeguard ping` output. */
function pingPid(stdout) {
  const m = /\bpid (\d+)\b/.exec(stdout);
  return m ? Number(m[1]) : null;
}

function assertRunning(row, what) {
  assert.ok(row, `${what}: not listed`);
  assert.equal(row.state, 'running', `${what}: state ${row.state}, want running (${JSON.stringify(row)})`);
  assert.ok(Number.isInteger(row.pid), `${what}: pid ${row.pid}`);
  assert.ok(!h.isGone(row.pid), `${what}: pid ${row.pid} is listed as running but no such process runs`);
}

test('every verb against a real daemon: start, ping, stop, restart, restart all, delete, kill', async (t) => {
  const d = new h.DaemonHome(t);

  const first = await d.ok(['start', fixture('server.js'), '--name', 'web']);
  assert.match(first.stdout, /daemon started/, 'the first start says it launched the daemon');
  const daemonPid = d.daemonPid();
  assert.ok(daemonPid && !h.isGone(daemonPid), `daemon pid ${daemonPid} (lock file) is not running`);
  assert.match(h.procArgv(daemonPid).join(' '), /\bdaemon\b/, 'the lock file names the daemon process');

  const second = await d.ok(['start', fixture('idle.js')]);
  assert.doesNotMatch(second.stdout, /daemon started/, 'a second start reuses the running daemon');
  assert.equal(d.daemonPid(), daemonPid);

  let apps = byName(await d.status());
  assert.deepEqual(Object.keys(apps).sort(), ['idle', 'web']);
  assertRunning(apps.web, 'web after start');
  assertRunning(apps.idle, 'idle after start');
  assert.notEqual(apps.web.id, apps.idle.id);
  assert.equal(apps.web.script, fixture('server.js'));
  const web0 = apps.web.pid;
  const idle0 = apps.idle.pid;

  const ping = await d.ok(['ping']);
  assert.equal(pingPid(ping.stdout), daemonPid, `ping names the daemon's pid: ${ping.stdout}`);

  // stop: returns once the process has exited; the app stays listed, stopped, without a pid.
  await d.ok(['stop', 'web']);
  assert.ok(h.isGone(web0), `web's process ${web0} still runs after stop returned`);
  apps = byName(await d.status());
  assert.equal(apps.web?.state, 'stopped', `web after stop: ${JSON.stringify(apps.web)}`);
  assert.equal(apps.web.pid, null);
  assert.equal(apps.idle.pid, idle0, 'stopping web left idle alone');

  // restart of a stopped app: running with a new pid once it returns.
  await d.ok(['restart', 'web']);
  apps = byName(await d.status());
  assertRunning(apps.web, 'web after restart');
  assert.notEqual(apps.web.pid, web0, 'restart gave web a new process');
  const web1 = apps.web.pid;

  // restart all: every app gets a new process; the old ones are gone when it returns.
  await d.ok(['restart', 'all']);
  apps = byName(await d.status());
  assertRunning(apps.web, 'web after restart all');
  assertRunning(apps.idle, 'idle after restart all');
  assert.notEqual(apps.web.pid, web1, 'restart all gave web a new process');
  assert.notEqual(apps.idle.pid, idle0, 'restart all gave idle a new process');
  assert.ok(h.isGone(web1) && h.isGone(idle0), 'restart all returned while an old process still ran');

  // delete by id: stopped and forgotten.
  const idle1 = apps.idle.pid;
  const deleted = await d.ok(['delete', String(apps.idle.id)]);
  assert.equal(deleted.stdout.trim(), `deleted idle (id ${apps.idle.id})`);
  assert.ok(h.isGone(idle1), `idle's process ${idle1} still runs after delete returned`);
  apps = byName(await d.status());
  assert.deepEqual(Object.keys(apps), ['web']);
  const web2 = apps.web.pid;

  // kill: every app stopped, then the daemon; its sockets are gone.
  await d.ok(['kill']);
  assert.ok(h.isGone(web2), `web's process ${web2} still runs after kill returned`);
  await h.waitGone([daemonPid], { timeout: DAEMON_EXIT_MS, what: 'the daemon to exit after kill' });
  for (const socket of [d.paths.control, d.paths.worker]) {
    assert.ok(!fs.existsSync(socket), `${socket} left behind after kill`);
  }
  assert.deepEqual(d.processes(), [], 'processes of this home left after kill');
  const after = await d.cli(['ping']);
  assert.equal(after.code, 1, `ping after kill: exit ${after.code}, stdout ${after.stdout}`);
  assert.equal(after.stderr.trim().split('\n').length, 1, `ping after kill: one line on stderr: ${after.stderr}`);
});

test('start returns only once the app runs: the pid in status serves HTTP at once', async (t) => {
  const d = new h.DaemonHome(t);
  const port = await h.freePort();
  const started = await d.ok(['start', fixture('portserver.js'), '--name', 'api', '--', String(port)]);
  const apps = byName(await d.status());
  assertRunning(apps.api, 'api right after start returned');
  assert.match(started.stdout, new RegExp(`\\bapi\\b.*\\b${apps.api.pid}\\b.*\\brunning\\b`), 'start prints the running app');
  const reply = await h.get(port, '/pid');
  assert.equal(reply.body.trim(), String(apps.api.pid), 'the listed pid is the one serving');
});

test('a daemon SIGKILL leaves no app behind, and a later start launches a fresh daemon', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('server.js'), '--name', 'web']);
  // A hung app too: only the native layers can end it. It never answers a heartbeat, so its
  // `start` waits (start grace 60 s) while the daemon is killed under it.
  const pendingStart = d.cli(['start', fixture('busy.js'), '--start-grace', '60s']);
  const apps = await d.waitForStatus(
    (list) => {
      const by = byName(list);
      return by.web?.state === 'running' && Number.isInteger(by.busy?.pid) ? by : false;
    },
    { what: 'web running and busy spawned' },
  );
  const daemonPid = d.daemonPid();
  const appPids = [apps.web.pid, apps.busy.pid];
  for (const pid of appPids) assert.ok(!h.isGone(pid), `app ${pid} died before the test`);

  process.kill(daemonPid, 'SIGKILL');
  const elapsed = await h.waitGone(appPids, { what: 'the dead daemon\'s apps to end' });
  t.diagnostic(`apps gone ${elapsed.toFixed(0)} ms after the daemon was SIGKILLed`);
  assert.ok(elapsed <= ORPHAN_BOUND_MS, `apps outlived the daemon by ${elapsed.toFixed(0)} ms`);
  await h.waitGone([daemonPid], { what: 'the SIGKILLed daemon to be gone' });
  const orphanedClient = await pendingStart;
  assert.ok(!orphanedClient.timedOut && orphanedClient.code !== 0,
    `a start waiting on a daemon that died: exit ${orphanedClient.code}, timed out ${orphanedClient.timedOut}`);

  const dead = await d.cli(['ping']);
  assert.equal(dead.code, 1, `ping with a dead daemon (stale socket): exit ${dead.code}, ${dead.stderr}`);

  const again = await d.ok(['start', fixture('idle.js')]);
  assert.match(again.stdout, /daemon started/, 'start after the SIGKILL launches a daemon');
  const fresh = d.daemonPid();
  assert.ok(fresh && fresh !== daemonPid && !h.isGone(fresh), `fresh daemon pid ${fresh} (old ${daemonPid})`);
  const ping = await d.ok(['ping']);
  assert.equal(pingPid(ping.stdout), fresh);
  const now = byName(await d.status());
  assert.deepEqual(Object.keys(now), ['idle'], 'the fresh daemon starts empty (no resurrect asked for)');
  assertRunning(now.idle, 'idle in the fresh daemon');
});

/** Connects to the control socket and writes `bytes`; resolves with the socket, still open. */
function connectAndWrite(socketPath, bytes) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.once('error', reject);
    socket.once('connect', () => socket.write(bytes, () => resolve(socket)));
  });
}

test('concurrent clients, and clients that vanish mid-request, do no harm', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('server.js'), '--name', 'web']);
  await d.ok(['start', fixture('idle.js')]);
  const daemonPid = d.daemonPid();
  const before = byName(await d.status());

  // 10 status queries and 2 restarts (one of them overlapping the other's app) at once.
  const results = await Promise.all([
    ...Array.from({ length: CONCURRENT_STATUS }, () => d.cli(['status', '--json'])),
    d.cli(['restart', 'web']),
    d.cli(['restart', 'all']),
  ]);
  results.forEach((r, i) => {
    assert.equal(r.code, 0, `concurrent command #${i} exited ${r.code}: ${r.stderr}`);
    if (i < CONCURRENT_STATUS) {
      const list = JSON.parse(r.stdout);
      assert.deepEqual(list.map((a) => a.name).sort(), ['idle', 'web'], `status #${i}`);
    }
  });
  let apps = byName(await d.status());
  assertRunning(apps.web, 'web after concurrent restarts');
  assertRunning(apps.idle, 'idle after concurrent restarts');
  assert.notEqual(apps.web.pid, before.web.pid);
  assert.notEqual(apps.idle.pid, before.idle.pid);
  assert.ok(h.isGone(before.web.pid) && h.isGone(before.idle.pid), 'an old process survived the restarts');
  const live = d.processes().filter((pid) => pid !== daemonPid).sort();
  assert.deepEqual(live, [apps.idle.pid, apps.web.pid].sort(), 'exactly one process per app after concurrent restarts');

  const request = (command) => h.frame({ version: 1, command });
  const status = request({ type: 'status' });
  const control = d.paths.control;

  // A client stuck after half a frame must not hold up the others.
  const stuck = await connectAndWrite(control, status.subarray(0, 6));
  const meanwhile = await d.cli(['status', '--json'], { timeout: 5_000 });
  assert.equal(meanwhile.code, 0, `status while another client sits on half a frame: ${meanwhile.stderr}`);
  stuck.destroy();

  // Half a frame, a header alone, or a whole restart request, each followed by a hang-up.
  for (const bytes of [status.subarray(0, 6), status.subarray(0, 4), status.subarray(0, 2)]) {
    (await connectAndWrite(control, bytes)).destroy();
    const r = await d.cli(['status', '--json']);
    assert.equal(r.code, 0, `status after a client hung up mid-frame: ${r.stderr}`);
  }
  const webBefore = apps.web.pid;
  (await connectAndWrite(control, request({ type: 'restart', target: 'web' }))).destroy();
  apps = await d.waitForStatus(
    (list) => {
      const by = byName(list);
      return by.web?.state === 'running' && by.web.pid !== webBefore && by.idle?.state === 'running' ? by : false;
    },
    { what: 'the restart whose client hung up to complete' },
  );
  assert.ok(h.isGone(webBefore));

  // The daemon is the same process and still obeys.
  const ping = await d.ok(['ping']);
  assert.equal(pingPid(ping.stdout), daemonPid, 'the daemon survived');
  await d.ok(['restart', 'idle']);
  assertRunning(byName(await d.status()).idle, 'idle after a final restart');
});

test('bad input: a missing script starts nothing (exit 2, no daemon); an unknown target exits 1', async (t) => {
  const d = new h.DaemonHome(t);

  const missing = await d.cli(['start', fixture('no-such-script.js')]);
  assert.equal(missing.code, 2, `start of a missing script: exit ${missing.code}, stderr ${missing.stderr}`);
  assert.equal(missing.stderr.trim().split('\n').length, 1, `one line on stderr: ${missing.stderr}`);
  assert.match(missing.stderr, /no-such-script\.js/);
  const ping = await d.cli(['ping']);
  assert.equal(ping.code, 1, 'no daemon was launched for a missing script');
  assert.equal(d.daemonPid(), null, 'no daemon took the lock');

  // Verbs with no daemon at all: one line, exit 1.
  for (const verb of ['stop', 'restart', 'delete']) {
    const r = await d.cli([verb, 'web']);
    assert.equal(r.code, 1, `${verb} with no daemon: exit ${r.code}, ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${verb} with no daemon: one stderr line: ${r.stderr}`);
  }

  await d.ok(['start', fixture('idle.js')]);
  for (const args of [['stop', 'nope'], ['restart', 'nope'], ['delete', 'nope'], ['stop', '99']]) {
    const r = await d.cli(args);
    assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}, stderr ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one stderr line: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(args[1]), `${args.join(' ')}: the message names the target`);
  }
  const apps = byName(await d.status());
  assertRunning(apps.idle, 'idle after the bad commands');
});

test('--home works before the verb as well as after it', async (t) => {
  // README and --help: `nodeguard [--home DIR] start …`; --home is a global flag.
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('idle.js')]);
  const after = await h.run(['ping', '--home', d.home]);
  assert.equal(after.code, 0, `ping --home DIR: exit ${after.code}, ${after.stderr}`);
  const before = await h.run(['--home', d.home, 'ping']);
  assert.equal(before.code, 0, `--home DIR ping: exit ${before.code}, ${before.stderr.trim()}`);
});

test('a control client of another protocol version gets a clear refusal; garbage is dropped', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('idle.js')]);
  const before = byName(await d.status()).idle;

  const future = await h.exchange(d.paths.control, h.frame({ version: 99, command: { type: 'teleport' } }));
  assert.ok(future.closed, 'the supervisor closes the connection after answering');
  assert.equal(future.frames.length, 1, `one answer: ${JSON.stringify(future.frames)}`);
  const { outcome } = future.frames[0];
  assert.equal(outcome.type, 'error');
  assert.match(outcome.message, /version 99/, 'the refusal names the client version');
  assert.match(outcome.message, /supervisor speaks 1/, 'and the supervisor version');

  for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), h.frame({ version: 1, command: 'nope' })]) {
    const reply = await h.exchange(d.paths.control, bytes);
    assert.ok(reply.closed, `connection closed after ${JSON.stringify(bytes.toString())}`);
    for (const frame of reply.frames) {
      assert.equal(frame.outcome?.type, 'error', `only an error may come back: ${JSON.stringify(frame)}`);
    }
  }

  const after = byName(await d.status()).idle;
  assert.equal(after.pid, before.pid, 'the app was not disturbed');
  assert.equal(after.state, 'running');
});
