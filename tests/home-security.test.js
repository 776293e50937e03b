'use strict';
// The state directory (home) must not be usable against its owner (issue 12, items 1, 2, 5, 6 and
// 27): every entry point refuses a home another user owns or may write to, and runs nothing saved
// there; files are created 0600 and directories 0700, a 0755 home is tightened; nothing is chmodded
// through a symbolic link or on a 1777 directory; a daemon whose home is deleted exits; a
// foreground run without --home never collides with a daemon on the default home. Runs as root
// (as CI does) and makes its second user itself.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const { OTHER_USER, otherUid } = h;
/** How long a daemon whose home was deleted may take to notice, stop its app and exit. */
const HOME_LOSS_EXIT_MS = 15_000;

function mode(file) {
  return fs.lstatSync(file).mode & 0o7777;
}

function octal(value) {
  return `0${value.toString(8)}`;
}

/**
 * A dump.json with one app whose script writes `marker` (the uid it ran as) and stays up: if any
 * entry point runs it, the marker appears.
 */
function plantDump(dir, marker, uid) {
  const script = path.join(dir, 'planted.js');
  fs.writeFileSync(script, `require('fs').writeFileSync(${JSON.stringify(marker)}, String(process.getuid()));\n` +
    'setInterval(() => {}, 1 << 30);\n');
  const dump = {
    version: 1,
    apps: [{
      id: 0,
      definition: {
        name: 'planted', script, args: [], node: process.execPath, node_args: [], cwd: dir, env: [],
        heartbeat_interval_ms: 1000, heartbeat_timeout_ms: 1000, heartbeat_misses: 3,
        start_grace_ms: 5000, kill_timeout_ms: 5000,
      },
      restarts: 0, hangs: 0, stopped: false,
    }],
  };
  const file = path.join(dir, 'dump.json');
  fs.writeFileSync(file, JSON.stringify(dump));
  if (uid !== undefined) {
    fs.chownSync(script, uid, uid);
    fs.chownSync(file, uid, uid);
  }
  return file;
}

/** Every entry point that prepares or adopts a home. */
function entryPoints(home) {
  return [
    ['daemon', '--resurrect', '--home', home],
    ['daemon', '--home', home],
    ['--home', home, '-m', path.join(h.FIXTURES, 'idle.js')],
    ['start', path.join(h.FIXTURES, 'idle.js'), '--home', home],
    ['resurrect', '--home', home],
  ];
}

/** Runs `args`, which must be refused with one line matching `reason` and a non-zero exit. */
async function assertRefused(args, reason) {
  const result = await h.run(args, { env: { NODEGUARD_HOME: '' } });
  const what = `nodeguard ${args.join(' ')}`;
  assert.ok(!result.timedOut, `${what} ran on instead of refusing the home; stderr: ${result.stderr}`);
  assert.notEqual(result.code, 0, `${what} exited 0; stdout: ${result.stdout} stderr: ${result.stderr}`);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `${what}: want one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0], reason, `${what}: ${lines[0]}`);
  return result;
}

test('the planted dump.json is one a daemon would run from a home of its own (control for the refusals below)', async (t) => {
  const home = h.makeHome();
  const marker = path.join(home, 'ran');
  plantDump(home, marker);
  const daemon = new h.Supervisor({ home, args: ['daemon', '--resurrect', '--home', home], env: {} });
  t.after(() => daemon.cleanup());
  await daemon.waitFor(() => fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') !== '', {
    what: 'the planted app to run from a home we own',
  });
});

test('every entry point refuses a home another user owns, with one line, and runs nothing saved there', async (t) => {
  const uid = otherUid();
  const home = h.makeHome();
  t.after(() => fs.rmSync(home, { recursive: true, force: true }));
  const marker = path.join(os.tmpdir(), `ng-planted-${process.pid}-owned`);
  t.after(() => fs.rmSync(marker, { force: true }));
  plantDump(home, marker, uid);
  fs.chownSync(home, uid, uid);
  fs.chmodSync(home, 0o755);
  for (const args of entryPoints(home)) {
    await assertRefused(args, /belongs to another user/);
    assert.ok(!fs.existsSync(marker), `nodeguard ${args.join(' ')} ran the planted app`);
    assert.ok(!fs.existsSync(path.join(home, 'run')), `nodeguard ${args.join(' ')} made run/ in another user's home`);
    assert.equal(mode(home), 0o755, `nodeguard ${args.join(' ')} changed the mode of another user's home`);
  }
});

test('every entry point refuses a home others may write to (another user planted dump.json), and leaves its mode alone', async (t) => {
  const uid = otherUid();
  const home = h.makeHome();
  t.after(() => fs.rmSync(home, { recursive: true, force: true }));
  const marker = path.join(os.tmpdir(), `ng-planted-${process.pid}-writable`);
  t.after(() => fs.rmSync(marker, { force: true }));
  plantDump(home, marker, uid);
  for (const homeMode of [0o777, 0o1777, 0o770]) {
    fs.chmodSync(home, homeMode);
    for (const args of entryPoints(home)) {
      await assertRefused(args, /writable by other users/);
      assert.ok(!fs.existsSync(marker), `nodeguard ${args.join(' ')} ran the planted app`);
      assert.equal(mode(home), homeMode, `nodeguard ${args.join(' ')} chmodded a ${octal(homeMode)} home`);
    }
  }
});

test('a symlinked home or run/ is refused and its target keeps its mode', async (t) => {
  const base = h.makeHome();
  t.after(() => fs.rmSync(base, { recursive: true, force: true }));
  const target = path.join(base, 'target');
  fs.mkdirSync(target);
  fs.chmodSync(target, 0o755);
  const link = path.join(base, 'link');
  fs.symlinkSync(target, link);
  for (const args of entryPoints(link)) {
    await assertRefused(args, /symbolic link/);
    assert.equal(mode(target), 0o755, `nodeguard ${args.join(' ')} chmodded the target of a symlinked home`);
    assert.deepEqual(fs.readdirSync(target), [], `nodeguard ${args.join(' ')} wrote through a symlinked home`);
  }

  const home = path.join(base, 'home');
  fs.mkdirSync(home, { mode: 0o700 });
  const runTarget = path.join(base, 'run-target');
  fs.mkdirSync(runTarget);
  fs.chmodSync(runTarget, 0o755);
  fs.symlinkSync(runTarget, path.join(home, 'run'));
  for (const args of [['daemon', '--home', home], ['--home', home, '-m', path.join(h.FIXTURES, 'idle.js')]]) {
    await assertRefused(args, /run is a symbolic link/);
    assert.equal(mode(runTarget), 0o755, `nodeguard ${args.join(' ')} chmodded the target of a symlinked run/`);
    assert.deepEqual(fs.readdirSync(runTarget), [], `nodeguard ${args.join(' ')} wrote through a symlinked run/`);
  }
});

test('the daemon tightens a 0755 home to 0700 and creates every file 0600 and every directory 0700', async (t) => {
  const daemon = new h.DaemonHome(t);
  fs.chmodSync(daemon.home, 0o755);
  // The daemon itself (as systemd runs it, on a StateDirectory= home of mode 0755).
  const direct = new h.Supervisor({ home: daemon.home, args: ['daemon', '--home', daemon.home], env: daemon.env });
  t.after(() => direct.cleanup());
  await direct.waitFor(() => fs.existsSync(daemon.paths.control), { what: 'the daemon to listen' });
  assert.equal(mode(daemon.home), 0o700, 'the daemon left a 0755 home readable by others');
  await daemon.ok(['kill']);
  await direct.waitExit();

  // Then a daemon that `start` launches, with an app, its logs and its state file.
  await daemon.ok(['start', 'idle.js', '--name', 'idle']);
  await daemon.waitForStatus((apps) => apps.some((a) => a.name === 'idle' && a.state === 'running'), { what: 'idle to run' });
  const want = {
    [daemon.home]: 0o700,
    [path.join(daemon.home, 'run')]: 0o700,
    [path.join(daemon.home, 'logs')]: 0o700,
    [path.join(daemon.home, 'dump.json')]: 0o600,
    [path.join(daemon.home, 'daemon.log')]: 0o600,
    [daemon.paths.lock]: 0o600,
    [path.join(daemon.home, 'logs', 'idle-out.log')]: 0o600,
    [path.join(daemon.home, 'logs', 'idle-err.log')]: 0o600,
  };
  await daemon.waitFor(() => fs.existsSync(path.join(daemon.home, 'logs', 'idle-err.log')), { what: 'the log files' });
  const got = Object.fromEntries(Object.keys(want).map((file) => [file, mode(file)]));
  assert.deepEqual(
    Object.fromEntries(Object.entries(got).map(([f, m]) => [f, octal(m)])),
    Object.fromEntries(Object.entries(want).map(([f, m]) => [f, octal(m)])),
  );
});

test('a daemon whose home is deleted exits, and the next start owns the home alone', async (t) => {
  const daemon = new h.DaemonHome(t);
  await daemon.ok(['start', 'idle.js', '--name', 'first']);
  const first = await daemon.waitForStatus((apps) => apps.find((a) => a.name === 'first' && a.state === 'running'), { what: 'first to run' });
  const firstDaemon = daemon.daemonPid();
  assert.ok(firstDaemon, 'no daemon pid in the lock file');
  daemon.processes();

  fs.rmSync(daemon.home, { recursive: true, force: true });
  // At once, before the old daemon may have noticed: a new daemon on a new home at the same path.
  await daemon.ok(['start', 'idle.js', '--name', 'second']);
  const secondDaemon = daemon.daemonPid();
  assert.notEqual(secondDaemon, firstDaemon, 'start reached the daemon whose home was deleted');

  await h.waitGone([firstDaemon, first.pid], { timeout: HOME_LOSS_EXIT_MS, what: 'the daemon whose home was deleted (and its app) to exit' });
  const apps = await daemon.waitForStatus((list) => list.some((a) => a.name === 'second' && a.state === 'running') && list, { what: 'second to run' });
  assert.deepEqual(apps.map((a) => a.name), ['second']);
  assert.equal(daemon.daemonPid(), secondDaemon);
  assert.ok(!h.isGone(secondDaemon), 'the new daemon is gone');
  // What the old daemon wrote last never replaced the new daemon's state file.
  const saved = JSON.parse(fs.readFileSync(path.join(daemon.home, 'dump.json'), 'utf8'));
  assert.deepEqual(saved.apps.map((a) => a.definition.name), ['second']);
});

test('a foreground run without --home does not collide with a daemon on the default home, and cleans its own home', async (t) => {
  // $HOME is a fresh directory, NODEGUARD_HOME is unset: the default home is $HOME/.nodeguard.
  const daemon = new h.DaemonHome(t, { env: { NODEGUARD_HOME: '' } });
  const userHome = daemon.home;
  const env = { HOME: userHome, NODEGUARD_HOME: '' };
  const defaultHome = path.join(userHome, '.nodeguard');
  await daemon.ok(['start', 'idle.js', '--name', 'daemonapp'], { env });
  assert.ok(fs.existsSync(path.join(defaultHome, 'run', 'control.sock')), 'the daemon is not on the default home');

  const foreground = h.startSupervisor(t, { scripts: ['idle.js'], env });
  await foreground.waitForLine('idle', /^idle pid=\d+/);
  const ownHome = path.join(defaultHome, `foreground-${foreground.pid}`);
  assert.equal(mode(ownHome), 0o700);
  const status = await h.run(['status', '--json', '--home', ownHome], { env });
  assert.equal(status.code, 0, `status --home ${ownHome}: ${status.stderr}`);
  assert.deepEqual(JSON.parse(status.stdout).map((a) => a.name), ['idle']);
  const daemonStatus = await h.run(['status', '--json'], { env });
  assert.equal(daemonStatus.code, 0, daemonStatus.stderr);
  assert.deepEqual(JSON.parse(daemonStatus.stdout).map((a) => a.name), ['daemonapp']);

  foreground.signal('SIGINT');
  const exit = await foreground.waitExit();
  assert.equal(exit.code, 0, foreground.describe());
  assert.ok(!fs.existsSync(ownHome), `the foreground run left ${ownHome}: ${fs.existsSync(ownHome) && fs.readdirSync(ownHome)}`);
});

test('npm run demo runs in a home of its own beside a daemon on the default home, and status reaches it', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(h.REPO, 'package.json'), 'utf8'));
  // `node scripts/build.js && target/release/nodeguard <options> -m examples/… …`: its options,
  // with an idle fixture for the examples (they listen on fixed ports that tests/examples.test.js
  // uses at the same time).
  const command = pkg.scripts.demo.split('&&').map((part) => part.trim()).find((part) => part.startsWith('target/release/nodeguard'));
  assert.ok(command, `no nodeguard command in the demo script: ${pkg.scripts.demo}`);
  const words = command.split(/\s+/).slice(1);
  const options = words.slice(0, words.indexOf('-m'));
  const homeIndex = options.indexOf('--home');
  assert.ok(homeIndex >= 0, `the demo runs on the default home: ${command}`);
  const demoHome = path.resolve(h.REPO, options[homeIndex + 1]);
  t.after(() => fs.rmSync(demoHome, { recursive: true, force: true }));

  const daemon = new h.DaemonHome(t, { env: { NODEGUARD_HOME: '' } });
  const env = { HOME: daemon.home, NODEGUARD_HOME: '' };
  await daemon.ok(['start', 'idle.js', '--name', 'daemonapp'], { env });

  // npm runs the script in the repo: the home is relative to it.
  const demoOptions = options.map((word, i) => (i === homeIndex + 1 ? demoHome : word));
  const demo = new h.Supervisor({ home: demoHome, args: [...demoOptions, '-m', path.join(h.FIXTURES, 'idle.js')], env });
  t.after(() => demo.cleanup());
  await demo.waitForLine('idle', /^idle pid=\d+/);
  const status = await h.run(['status', '--json', ...options], { env, cwd: h.REPO });
  assert.equal(status.code, 0, `status ${options.join(' ')}: ${status.stderr}`);
  assert.deepEqual(JSON.parse(status.stdout).map((a) => a.name), ['idle']);
});
