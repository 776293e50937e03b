'use strict';
// Failure paths of an app's lifecycle (issue 12): a listen address that cannot be bound, an
// interpreter that is briefly missing, a state file that cannot be written, a cluster app's
// socket once no instance uses it, an instance that never becomes ready, and an ES module app
// that fails while loading. Real processes, sockets and file systems throughout.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('./helpers');

const IDLE = path.join(h.FIXTURES, 'idle.js');
const CLUSTER = path.join(h.FIXTURES, 'cluster.js');

/** Holds 127.0.0.1:<port> open until closed; resolves with { port, close }. */
function occupyPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({ port: server.address().port, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

/** Connects to 127.0.0.1:port: 'connected', or the error code (e.g. 'ECONNREFUSED'). */
function connectOutcome(port, timeout = 3_000) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timeout');
    }, timeout);
    socket.on('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      resolve(error.code);
    });
  });
}

/** Whether this process can bind 127.0.0.1:port now (then releases it). */
function canBind(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.on('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function oneLine(text) {
  const lines = text.trim().split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `expected one line, got:\n${text}`);
  return lines[0];
}

// Item 10 ------------------------------------------------------------------------------------

test('foreground --listen on a taken port or an address this host lacks exits 1 with one line', async (t) => {
  const taken = await occupyPort();
  t.after(() => taken.close());
  const home = h.makeHome();
  t.after(() => fs.rmSync(home, { recursive: true, force: true }));
  const http = await h.freePort();
  const busy = await h.run(['--home', home, '--http', `127.0.0.1:${http}`, '--listen', `127.0.0.1:${taken.port}`, '-m', IDLE], {
    env: { NODEGUARD_LOG: 'error' },
  });
  assert.equal(busy.timedOut, false, 'it ran on with no app instead of exiting');
  assert.equal(busy.code, 1, busy.stderr);
  const line = oneLine(busy.stderr);
  assert.match(line, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken.port}: Address already in use`));
  assert.equal((line.match(/Address already in use/g) || []).length, 1, `the OS reason is repeated: ${line}`);

  // 192.0.2.0/24 is TEST-NET-1: no host has it.
  const absent = await h.run(['--home', home, '--listen', `192.0.2.1:${taken.port}`, '-m', IDLE], { env: { NODEGUARD_LOG: 'error' } });
  assert.equal(absent.timedOut, false, 'it ran on with no app instead of exiting');
  assert.equal(absent.code, 1, absent.stderr);
  assert.match(oneLine(absent.stderr), /cannot listen on 192\.0\.2\.1:\d+: Cannot assign requested address/);
});

test('start --listen on a taken port fails with one line naming the address and the reason', async (t) => {
  const taken = await occupyPort();
  t.after(() => taken.close());
  const home = new h.DaemonHome(t);
  const result = await home.cli(['start', IDLE, '--name', 'web', '--listen', `127.0.0.1:${taken.port}`]);
  assert.notEqual(result.code, 0, result.stdout);
  assert.match(oneLine(result.stderr), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken.port}: Address already in use`));
  assert.deepEqual((await home.status()).map((a) => a.name), [], 'an app was left behind');
});

// Item 11 ------------------------------------------------------------------------------------

test('a node binary that is briefly missing is retried within the budget, not errored at once', async (t) => {
  const home = new h.DaemonHome(t);
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-node-'));
  t.after(() => fs.rmSync(bin, { recursive: true, force: true }));
  const node = path.join(bin, 'node');
  fs.symlinkSync(process.execPath, node);
  await home.ok(['start', IDLE, '--name', 'app', '--node', node]);
  const first = (await home.byName()).app.pid;

  // An upgrade replaces node: for a moment there is none. The restart cannot spawn it.
  fs.unlinkSync(node);
  const restart = await home.cli(['restart', 'app']);
  assert.notEqual(restart.code, 0, 'a restart that could not start the app reported success');
  assert.match(oneLine(restart.stderr), /could not start \(spawn failed: cannot start .*node: No such file or directory/);
  const backingOff = await home.byName();
  assert.notEqual(backingOff.app.state, 'errored', `errored on the first failed spawn: ${JSON.stringify(backingOff.app)}`);

  fs.symlinkSync(process.execPath, node);
  const apps = await home.waitForStatus(
    (list) => list.find((a) => a.name === 'app' && a.state === 'running' && a.pid && a.pid !== first),
    { what: 'the app to come up once node is back' },
  );
  assert.ok(apps.restarts >= 1);
});

test('spawn failures that exhaust the restart budget end errored with the reason', async (t) => {
  const home = new h.DaemonHome(t);
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-node-'));
  t.after(() => fs.rmSync(bin, { recursive: true, force: true }));
  const node = path.join(bin, 'node');
  fs.symlinkSync(process.execPath, node);
  await home.ok(['start', IDLE, '--name', 'app', '--node', node, '--max-restarts', '2']);
  fs.unlinkSync(node);
  await home.cli(['restart', 'app']);
  const app = await home.waitForStatus((list) => list.find((a) => a.name === 'app' && a.state === 'errored'), {
    what: 'the app to end errored',
  });
  assert.match(app.last_exit, /restart budget|budget is 2/);
  assert.match(app.last_exit, /spawn failed: cannot start .*No such file or directory/);
});

// Item 15 ------------------------------------------------------------------------------------

test('start, stop and kill fail in one line when the state file cannot be written; the apps keep running', async (t) => {
  assert.equal(process.getuid(), 0, 'this test mounts a tmpfs: run it as root');
  // A real full disk: a tiny tmpfs as the home, filled up once the daemon runs.
  const home = new h.DaemonHome(null);
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', home.home], { encoding: 'utf8' });
  assert.equal(mount.status, 0, `cannot mount a tmpfs on ${home.home}: ${mount.stderr}`);
  t.after(async () => {
    home._killAll();
    await h.sleep(200);
    spawnSync('umount', ['-l', home.home]);
    await home.cleanup();
  });
  await home.ok(['start', IDLE, '--name', 'first']);

  const filler = path.join(home.home, 'filler');
  const fd = fs.openSync(filler, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (error) {
    assert.equal(error.code, 'ENOSPC');
  }
  // Whatever pages are left, take them a byte at a time.
  try {
    for (;;) fs.writeSync(fd, Buffer.alloc(1));
  } catch (error) {
    assert.equal(error.code, 'ENOSPC');
  }
  fs.closeSync(fd);

  const start = await home.cli(['start', IDLE, '--name', 'second']);
  assert.notEqual(start.code, 0, `start reported success with an unsaved app list:\n${start.stdout}`);
  assert.match(oneLine(start.stderr), /app list was not saved .*No space left on device/);
  let apps = await home.byName();
  assert.equal(apps.second.state, 'running', JSON.stringify(apps));

  const kill = await home.cli(['kill']);
  assert.notEqual(kill.code, 0, `kill reported success:\n${kill.stdout}`);
  assert.match(oneLine(kill.stderr), /nothing was stopped: the app list cannot be saved/);
  apps = await home.byName();
  assert.equal(apps.first.state, 'running', JSON.stringify(apps));
  assert.equal(apps.second.state, 'running', JSON.stringify(apps));

  // Other verbs that change the app list act, and say it was not saved.
  const stop = await home.cli(['stop', 'second']);
  assert.notEqual(stop.code, 0, `stop reported success:\n${stop.stdout}`);
  assert.match(oneLine(stop.stderr), /app list was not saved .*No space left on device/);
  assert.equal((await home.byName()).second.state, 'stopped');

  // Room again: kill saves both and stops them.
  fs.unlinkSync(filler);
  await home.ok(['kill']);
  const saved = JSON.parse(fs.readFileSync(path.join(home.home, 'dump.json'), 'utf8'));
  assert.deepEqual(saved.apps.map((a) => a.definition.name).sort(), ['first', 'second']);
});

// Item 19 ------------------------------------------------------------------------------------

test('a stopped or deleted cluster app closes its socket: connections are refused and the port is free', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  await home.ok(['start', CLUSTER, '--name', 'web', '-i', '2', '--listen', `127.0.0.1:${port}`, '--', String(port)]);
  assert.equal(await connectOutcome(port), 'connected');

  await home.ok(['stop', 'web']);
  assert.equal(await connectOutcome(port), 'ECONNREFUSED', 'a stopped app still holds its port open');
  assert.ok(await canBind(port), 'the port of a stopped app cannot be bound by anyone else');

  await home.ok(['restart', 'web']);
  assert.equal(await connectOutcome(port), 'connected', 'restart did not bind the port again');

  await home.ok(['delete', 'web']);
  assert.equal(await connectOutcome(port), 'ECONNREFUSED', 'a deleted app still holds its port open');
  assert.ok(await canBind(port));
});

// Item 20 ------------------------------------------------------------------------------------

test('start of a cluster instance that never listens returns the real reason at once, and it ends errored', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  const started = performance.now();
  // Timeouts slower than the budget's window: only counting them in a row can end it errored.
  const result = await home.cli(
    ['start', IDLE, '--name', 'web', '-i', '1', '--listen', `127.0.0.1:${port}`, '--listen-timeout', '1s', '--max-restarts', '2', '--restart-window', '500ms'],
    { timeout: 20_000 },
  );
  const took = performance.now() - started;
  assert.equal(result.timedOut, false, 'start blocked instead of reporting the readiness failure');
  assert.notEqual(result.code, 0, result.stdout);
  assert.match(oneLine(result.stderr), new RegExp(`web: instance 0 did not listen on 127\\.0\\.0\\.1:${port} within 1\\.0s`));
  assert.ok(took < 10_000, `start took ${Math.round(took)} ms`);

  const web = await home.waitForStatus((list) => list.find((a) => a.name === 'web' && a.state === 'errored'), {
    what: 'the never-ready instance to end errored',
    timeout: 30_000,
  });
  assert.match(web.last_exit, /not ready 3 times in a row/);
  // Errored: no instance will use the socket, so it is closed (item 19).
  assert.equal(await connectOutcome(port), 'ECONNREFUSED');
});

// Item 21 ------------------------------------------------------------------------------------

test('an ES module app that fails while loading is a failed start, like a CommonJS one', async (t) => {
  const home = new h.DaemonHome(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-esm-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'broken.mjs'), "import './missing.mjs';\nsetInterval(() => {}, 1000);\n");
  fs.mkdirSync(path.join(dir, 'typed'));
  fs.writeFileSync(path.join(dir, 'typed', 'package.json'), '{ "type": "module" }\n');
  fs.writeFileSync(path.join(dir, 'typed', 'main.js'), "import { nothing } from './nowhere.js';\nsetInterval(() => {}, 1000);\n");
  fs.writeFileSync(path.join(dir, 'good.mjs'), "await new Promise((r) => setTimeout(r, 50));\nsetInterval(() => {}, 1000);\n");
  fs.writeFileSync(path.join(dir, 'broken.cjs'), "require('./missing.cjs');\n");

  for (const [script, name] of [['broken.cjs', 'cjs'], ['broken.mjs', 'mjs'], [path.join('typed', 'main.js'), 'typed']]) {
    const result = await home.cli(['start', path.join(dir, script), '--name', name]);
    assert.notEqual(result.code, 0, `${script}: start reported success\n${result.stdout}`);
    assert.match(oneLine(result.stderr), new RegExp(`^nodeguard: error: ${name}: exited while starting \\(exit code 1`), script);
  }

  // A working ES module app still starts, and its monitor connects once it has loaded.
  await home.ok(['start', path.join(dir, 'good.mjs'), '--name', 'good']);
  await home.waitForStatus((list) => list.find((a) => a.name === 'good' && a.state === 'running' && a.monitored), {
    what: 'the ES module app to run monitored',
  });
});
