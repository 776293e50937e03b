'use strict';
// `nodeguard scale <app> N|+N|-N` (PM2's `pm2 scale`): instances added while a request loop runs
// against the shared --listen port all serve; instances removed stop gracefully (drained) with no
// failed request; the count is saved in dump.json, so `resurrect` brings back the scaled count;
// bad counts and unknown apps are one line and a non-zero exit; foreground mode scales too.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const FIXTURE = path.join(h.FIXTURES, 'cluster.js');

const { requestLoops } = h;

/** The `name` rows once exactly `count` instances run. */
function waitInstances(home, count, name = 'web') {
  return home.waitForStatus((apps) => {
    const rows = apps.filter((a) => a.name === name);
    return rows.length === count && rows.every((r) => r.state === 'running' && r.pid) ? rows : false;
  }, { what: `${count} ${name} instances running` });
}

function saved(home) {
  return JSON.parse(fs.readFileSync(path.join(home.home, 'dump.json'), 'utf8'));
}

test('scale 1 -> 3 under load: all serve; 3 -> 1: drained, no failed request; resurrect keeps 1; +2 and -1', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  await home.ok([
    'start', FIXTURE, '--name', 'web', '-i', '1', '--listen', `127.0.0.1:${port}`,
    '--kill-timeout', '5s', '--', String(port),
  ]);
  const [first] = await waitInstances(home, 1);
  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });

  const up = await home.ok(['scale', 'web', '3'], { timeout: 60_000 });
  assert.match(up.stdout, /web:2/);
  const three = await waitInstances(home, 3);
  assert.deepEqual(three.map((r) => r.instance), [0, 1, 2]);
  assert.equal(three[0].pid, first.pid, 'instance 0 was left alone');
  assert.equal(new Set(three.map((r) => r.id)).size, 3);
  for (const row of three) {
    assert.equal(h.procEnv(row.pid).NODE_APP_INSTANCE, String(row.instance));
  }
  await home.waitFor(() => three.every((r) => load.result.pids.has(r.pid)), {
    what: `every instance (${three.map((r) => r.pid)}) to answer a request`,
  });
  assert.equal(saved(home).apps[0].definition.instances, 3);
  const described = JSON.parse((await home.ok(['describe', 'web', '--json'])).stdout);
  assert.deepEqual(described.map((d) => [d.status.instance, d.definition.instances]), [[0, 3], [1, 3], [2, 3]]);

  const removed = three.slice(1).map((r) => r.pid);
  const down = await home.ok(['scale', 'web', '1'], { timeout: 60_000 });
  // `scale` answers once the removed instances have exited.
  for (const pid of removed) assert.ok(h.isGone(pid), `pid ${pid} still runs after scale returned`);
  assert.doesNotMatch(down.stdout, /web:1/);
  const okAfter = load.result.ok;
  await home.waitFor(() => load.result.ok >= okAfter + 20, { what: 'requests after scaling down' });
  const result = await load.stop();
  t.diagnostic(`${result.ok} requests, ${result.failed} failed, by pid: ${JSON.stringify([...result.pids])}`);
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  // Stopped the graceful way (the monitor's drain, exit code 0), not killed at the kill timeout.
  const log = home.daemonLog();
  for (const instance of [1, 2]) {
    assert.match(log, new RegExp(`app\\{name=web:${instance}\\}: stopped \\(exit code 0\\)`), log);
  }
  assert.doesNotMatch(log, /kill_timeout|SIGKILL/);
  const one = await waitInstances(home, 1);
  assert.equal(one[0].pid, first.pid);
  const dump = saved(home);
  assert.equal(dump.apps[0].definition.instances, 1);

  // The scaled count survives kill + resurrect.
  await home.ok(['kill']);
  await home.ok(['resurrect'], { timeout: 60_000 });
  await waitInstances(home, 1);

  await home.ok(['scale', 'web', '+2'], { timeout: 60_000 });
  const again = await waitInstances(home, 3);
  assert.deepEqual(again.map((r) => r.instance), [0, 1, 2]);
  let file = saved(home).apps[0];
  assert.equal(file.definition.instances, 3);
  assert.deepEqual(file.ids, again.map((r) => r.id));
  await home.ok(['scale', 'web', '-1'], { timeout: 60_000 });
  const two = await waitInstances(home, 2);
  assert.deepEqual(two.map((r) => r.instance), [0, 1]);
  file = saved(home).apps[0];
  assert.equal(file.definition.instances, 2);

  // A second app after a scale-up: ids stay distinct, and a resurrect gives every instance its id back.
  await home.ok(['start', path.join(h.FIXTURES, 'cluster.js'), '--name', 'other', '--', '0']);
  await home.ok(['scale', 'web', '+1'], { timeout: 60_000 });
  const before = await home.waitForStatus((apps) => apps.length === 4 && apps.every((a) => a.state === 'running') ? apps : false,
    { what: 'web x3 and other running' });
  assert.equal(new Set(before.map((a) => a.id)).size, 4, JSON.stringify(before.map((a) => [a.name, a.id])));
  await home.ok(['kill']);
  await home.ok(['resurrect'], { timeout: 60_000 });
  const after = await home.waitForStatus((apps) => apps.length === 4 && apps.every((a) => a.state === 'running') ? apps : false,
    { what: 'web x3 and other running after resurrect' });
  const ids = (apps) => apps.map((a) => `${a.name}:${a.instance}=${a.id}`).sort();
  assert.deepEqual(ids(after), ids(before));
});

test('scale refuses bad counts and unknown apps in one line, non-zero', async (t) => {
  const home = new h.DaemonHome(t);
  await home.ok(['start', FIXTURE, '--name', 'web', '--', '0']);
  await waitInstances(home, 1);
  for (const [args, code, pattern] of [
    [['scale', 'web', '0'], 2, /at least 1 instance/],
    [['scale', 'web', '100000'], 2, /too many \(at most 256\)/],
    [['scale', 'web', '+300'], 2, /too many/],
    [['scale', 'web', 'two'], 2, /not an instance count/],
    [['scale', 'web', '1.5'], 2, /not an instance count/],
    [['scale', 'web'], 2, /required/],
    [['scale', 'nope', '2'], 1, /no app named, numbered or in a namespace 'nope'/],
    [['scale', 'web', '-1'], 1, /cannot scale 'web' to 0 instances: an app runs at least 1/],
    [['scale', 'web', '+256'], 1, /cannot scale 'web' to 257 instances: at most 256/],
  ]) {
    const result = await home.cli(args);
    assert.equal(result.code, code, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, pattern, args.join(' '));
    if (code === 1) assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  }
  const rows = await waitInstances(home, 1);
  assert.equal(rows[0].instance, null);
});

test('foreground mode scales over the control socket, sharing the --listen port', async (t) => {
  const port = await h.freePort();
  const sup = h.startSupervisor(t, {
    scripts: ['cluster.js'],
    flags: ['-i', '1', '--listen', `127.0.0.1:${port}`],
    appArgs: [String(port)],
  });
  await sup.waitForStatus((apps) => apps.length === 1 && apps[0].state === 'running' ? apps : false,
    { what: 'one instance running' });
  const scaled = await h.run(['scale', 'cluster', '2', '--home', sup.home], { timeout: 60_000 });
  assert.equal(scaled.code, 0, scaled.stderr);
  const rows = await sup.waitForStatus((apps) => apps.length === 2 && apps.every((a) => a.state === 'running') ? apps : false,
    { what: 'two instances running' });
  const seen = new Set();
  await sup.waitFor(async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => h.get(port, '/')));
    for (const answer of answers) seen.add(Number(answer.body.trim()));
    return rows.every((r) => seen.has(r.pid));
  }, { what: 'both instances to answer' });
  sup.signal('SIGTERM');
  assert.equal((await sup.waitExit()).code, 0);
});
