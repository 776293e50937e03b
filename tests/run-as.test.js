'use strict';
// `--uid` / `--gid` and the ecosystem's `uid`/`gid` (PM2's, root only): the app runs as the other
// user with that user's group and no supplementary groups, cannot read the supervisor's private
// home, and is still monitored (its monitor reaches a socket made for that user outside the home,
// so a hang is detected and the app restarted). Unknown users and groups, and a supervisor that is
// not root, are refused in one line. Runs as root (as CI does) and makes its second user itself.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const FIXTURE = path.join(h.FIXTURES, 'run-as.js');

function gidOf(user) {
  return Number(spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout.trim());
}

/** The `ids ...` lines the app printed (one per process it ran). */
function idLines(home, name) {
  try {
    return fs.readFileSync(path.join(home.home, 'logs', `${name}-out.log`), 'utf8').split('\n').filter((l) => l.startsWith('ids '));
  } catch {
    return [];
  }
}

test('--uid: the app runs as that user, cannot read the home, and a hang is still detected and restarted', async (t) => {
  const uid = h.otherUid();
  const gid = gidOf(h.OTHER_USER);
  const home = new h.DaemonHome(t);
  const dump = path.join(home.home, 'dump.json');
  await home.ok(['start', FIXTURE, '--name', 'web', '--uid', h.OTHER_USER, '--', dump, 'hang']);
  const [row] = await home.status();
  assert.equal(fs.statSync(`/proc/${row.pid}`).uid, uid, 'the process belongs to the other user');
  const status = fs.readFileSync(`/proc/${row.pid}/status`, 'utf8');
  assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
  assert.match(status, new RegExp(`^Gid:\\s+${gid}\\s+${gid}\\s+${gid}\\s+${gid}$`, 'm'));
  assert.match(status, /^Groups:\s*$/m, 'no supplementary groups');
  assert.ok(fs.existsSync(dump), 'the state file exists (the app must fail to read it, not miss it)');

  // Monitored, and a hang is found: killed, restarted, counted.
  const hung = await home.waitForStatus((apps) => {
    const app = apps.find((a) => a.name === 'web');
    return app && app.hangs >= 1 && app.restarts >= 1 && app.state === 'running' && app.pid !== row.pid ? app : false;
  }, { what: 'the hang to be detected and the app restarted', timeout: 20_000 });
  const lines = idLines(home, 'web');
  assert.ok(lines.length >= 1, 'the app printed its ids');
  // Node's getgroups() lists the primary group too when the list is empty.
  assert.match(lines[0], new RegExp(`^ids uid=${uid} gid=${gid} groups=(${gid})? dump=EACCES$`));
  // Found by the monitor (only a monitored app has heartbeats to miss), with the JS stack.
  assert.match(home.daemonLog(), /event loop silent/);
  assert.match(home.daemonLog(), /hung .*run-as\.js:\d+/);
  // The app's socket lives outside the home, owned by that user, in a directory root keeps.
  const socket = h.procEnv(hung.pid).NODEGUARD_SOCKET;
  assert.ok(socket && !socket.startsWith(home.home), `socket ${socket}`);
  const info = fs.statSync(socket);
  assert.equal(info.uid, uid);
  assert.equal(info.mode & 0o777, 0o600);
  const dir = fs.statSync(path.dirname(socket));
  assert.equal(dir.uid, 0);
  assert.equal(dir.mode & 0o777, 0o711);
  // Saved with the app: describe and dump.json carry the user.
  const saved = JSON.parse(fs.readFileSync(dump, 'utf8'));
  assert.equal(saved.apps[0].definition.uid, h.OTHER_USER);
  assert.match((await home.ok(['describe', 'web'])).stdout, new RegExp(`^\\s*user\\s+${h.OTHER_USER}$`, 'm'));
  await home.ok(['kill']);
  assert.ok(!fs.existsSync(path.dirname(socket)), 'the socket directory is removed with the daemon');
});

test('an ecosystem file with uid and gid runs the app as them', async (t) => {
  const uid = h.otherUid();
  const home = new h.DaemonHome(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-runas-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.chmodSync(dir, 0o755);
  const config = path.join(dir, 'ecosystem.config.js');
  fs.writeFileSync(config, `module.exports = { apps: [{ name: 'api', script: ${JSON.stringify(FIXTURE)}, ` +
    `args: [${JSON.stringify(path.join(home.home, 'dump.json'))}], uid: '${h.OTHER_USER}', gid: 'nogroup' }] };\n`);
  const started = await home.ok(['start', config]);
  assert.doesNotMatch(started.stderr, /uid|gid/, 'no warning for uid/gid');
  const [row] = await home.status();
  const status = fs.readFileSync(`/proc/${row.pid}/status`, 'utf8');
  const nogroup = Number(spawnSync('getent', ['group', 'nogroup'], { encoding: 'utf8' }).stdout.split(':')[2]);
  assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'));
  assert.match(status, new RegExp(`^Gid:\\s+${nogroup}\\s`, 'm'));
  // A daemon that ends on its own removes the socket directory it made.
  const socket = h.procEnv(row.pid).NODEGUARD_SOCKET;
  await home.ok(['kill']);
  assert.ok(!fs.existsSync(path.dirname(socket)));
});

test('unknown users and groups, and a supervisor that is not root, are refused in one line', async (t) => {
  const uid = h.otherUid();
  const home = new h.DaemonHome(t);
  for (const [flags, pattern] of [
    [['--uid', 'no-such-user-ng'], /uid: no user named 'no-such-user-ng'/],
    [['--gid', 'no-such-group-ng'], /gid: no group named 'no-such-group-ng'/],
    [['--uid', '4242'], /is a number: give the group too/],
  ]) {
    const result = await home.cli(['start', FIXTURE, '--name', 'x', ...flags]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, pattern);
    assert.equal(result.stderr.trim().split('\n').filter((l) => l.startsWith('nodeguard: error')).length, 1, result.stderr);
  }
  assert.deepEqual(await home.status(), []);
  await home.ok(['kill']);

  // A daemon of an ordinary user cannot run apps as anyone else.
  const own = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-runas-user-'));
  t.after(() => {
    spawnSync(h.BIN, ['kill'], { env: { ...process.env, NODEGUARD_HOME: path.join(own, 'home') }, uid, gid: gidOf(h.OTHER_USER) });
    fs.rmSync(own, { recursive: true, force: true });
  });
  fs.chownSync(own, uid, gidOf(h.OTHER_USER));
  const result = spawnSync(h.BIN, ['start', FIXTURE, '--name', 'x', '--uid', 'root'], {
    env: { ...process.env, NODEGUARD_HOME: path.join(own, 'home'), HOME: own },
    uid,
    gid: gidOf(h.OTHER_USER),
    encoding: 'utf8',
    timeout: 30_000,
    cwd: own,
  });
  assert.equal(result.status, 1, result.stderr);
  assert.match(result.stderr, /^nodeguard: error: uid\/gid: only root can run an app as another user or group/m);
});
