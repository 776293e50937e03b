'use strict';
// PM2's command line as PM2 users type it, against a real daemon: the flag spellings of `start`,
// the verbs jlist, prettylist, show, startOrRestart and startOrReload, `start <name>` of a known
// app, several targets in one command, namespaces, NODE_APP_INSTANCE / instance_var /
// increment_var, max_memory_restart as a bare number, "did you mean" for a mistyped verb, and bare
// `nodeguard` printing its usage.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const IDLE = path.join(h.FIXTURES, 'idle.js');

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeguard-pm2-cli-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Rows of `status --json` by name, running ones only. */
function running(apps, name) {
  return apps.filter((a) => a.name === name && a.state === 'running' && Number.isInteger(a.pid));
}

/** The one row named `name`, once it runs. */
async function waitRunning(d, name, notPid = null) {
  return d.waitForStatus((apps) => {
    const rows = running(apps, name);
    return rows.length === 1 && rows[0].pid !== notPid ? rows[0] : null;
  }, { what: `${name} running${notPid ? ` with a pid other than ${notPid}` : ''}` });
}

test('bare nodeguard prints the usage and exits 2, as PM2 does', async () => {
  const result = await h.run([]);
  assert.equal(result.code, 2, `exit ${result.code}; stderr: ${result.stderr}`);
  assert.match(result.stderr, /Usage: nodeguard/);
  assert.match(result.stderr, /startOrRestart/, 'the usage lists the verbs');
});

test('a mistyped verb is one line naming the verb it resembles, exit 2', async () => {
  for (const [typed, meant] of [['resart', 'restart'], ['jlst', 'jlist'], ['sho', 'show'], ['startorreload', 'startOrReload']]) {
    const result = await h.run([typed, 'api']);
    assert.equal(result.code, 2, `${typed}: exit ${result.code}`);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${typed}: one line, got ${JSON.stringify(result.stderr)}`);
    assert.match(lines[0], new RegExp(`unknown verb '${typed}' \\(did you mean '${meant}'\\?\\)`));
  }
  const far = await h.run(['--home', os.tmpdir(), 'zzzzzzzz']);
  assert.equal(far.code, 2);
  assert.match(far.stderr, /unknown verb 'zzzzzzzz'/);
  assert.doesNotMatch(far.stderr, /did you mean/, 'no suggestion when nothing is close');
});

test("start's PM2 spellings take effect: --cwd, -o, -e, --time, --node-args, --max-memory-restart, --no-autorestart", async (t) => {
  const d = new h.DaemonHome(t);
  const dir = tempDir(t);
  fs.copyFileSync(IDLE, path.join(dir, 'app.js'));
  await d.ok(['start', 'app.js', '--name', 'spelled', '--cwd', dir, '-o', 'out.log', '-e', 'err.log', '--time',
    '--node-args=--no-warnings', '--max-memory-restart', '300M', '--no-autorestart'], { cwd: os.tmpdir() });
  const row = await waitRunning(d, 'spelled');
  assert.equal(fs.readlinkSync(`/proc/${row.pid}/cwd`), dir, 'the app runs in --cwd');
  assert.ok(h.procArgv(row.pid).includes('--no-warnings'), `node got --node-args: ${h.procArgv(row.pid).join(' ')}`);
  // -o and -e are the app's log files, relative to its cwd, with --time's timestamps.
  const out = path.join(dir, 'out.log');
  const err = path.join(dir, 'err.log');
  await d.waitFor(() => fs.existsSync(out) && /idle pid=/.test(fs.readFileSync(out, 'utf8')), { what: 'the app\'s stdout in -o out.log' });
  await d.waitFor(() => fs.existsSync(err) && /idle stderr/.test(fs.readFileSync(err, 'utf8')), { what: 'the app\'s stderr in -e err.log' });
  assert.match(fs.readFileSync(out, 'utf8'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/m, '--time prefixes each line with its time');
  const [described] = JSON.parse((await d.ok(['show', 'spelled', '--json'])).stdout);
  assert.equal(described.definition.max_memory, 300 * 1024 * 1024);
  assert.equal(described.definition.autorestart, 'never');
  // --no-autorestart: an exit is final.
  process.kill(row.pid, 'SIGKILL');
  const after = await d.waitForStatus((apps) => {
    const r = apps.find((a) => a.name === 'spelled');
    return r && r.state !== 'running' && r.state !== 'starting' ? r : null;
  }, { what: 'spelled to come to rest after SIGKILL' });
  assert.equal(after.restarts, 0, `not restarted: ${JSON.stringify(after)}`);
});

test('max_memory_restart as a bare number is bytes as in PM2, and a limit under 1 MB is refused with a hint', async (t) => {
  const d = new h.DaemonHome(t);
  const flag = await d.cli(['start', IDLE, '--max-memory-restart', '200']);
  assert.equal(flag.code, 2, `exit ${flag.code}: ${flag.stderr}`);
  assert.match(flag.stderr, /200 bytes, under 1M.*"200M"/);
  const dir = tempDir(t);
  const file = path.join(dir, 'ecosystem.config.js');
  fs.writeFileSync(file, `module.exports = { apps: [{ name: 'tiny', script: ${JSON.stringify(IDLE)}, max_memory_restart: 200 }] };\n`);
  const config = await d.cli(['start', file]);
  assert.equal(config.code, 2, `exit ${config.code}: ${config.stderr}`);
  assert.match(config.stderr, /max_memory_restart.*200 bytes, under 1M/);
  assert.equal(d.daemonPid(), null, 'nothing was started');
  // A bare number of 1 MB or more is taken, as bytes.
  fs.writeFileSync(file, `module.exports = { apps: [{ name: 'big', script: ${JSON.stringify(IDLE)}, max_memory_restart: 300000000 }] };\n`);
  await d.ok(['start', file]);
  const [described] = JSON.parse((await d.ok(['describe', 'big', '--json'])).stdout);
  assert.equal(described.definition.max_memory, 300000000);
});

test('verbs: several targets, start <name> of a stopped app, namespaces, jlist, prettylist, show', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', IDLE, '--name', 'api', '--namespace', 'backend']);
  await d.ok(['start', IDLE, '--name', 'worker', '--namespace', 'backend']);
  await d.ok(['start', IDLE, '--name', 'other']);
  const api0 = await waitRunning(d, 'api');
  const worker0 = await waitRunning(d, 'worker');
  const other0 = await waitRunning(d, 'other');

  // Several targets in one command.
  const stopped = await d.ok(['stop', 'api', 'worker']);
  assert.match(stopped.stdout, /api/);
  assert.match(stopped.stdout, /worker/);
  let apps = await d.byName();
  assert.equal(apps.api.state, 'stopped');
  assert.equal(apps.worker.state, 'stopped');
  assert.equal(apps.other.pid, other0.pid, 'the app not named is untouched');

  // `start <name>` of a stopped app starts it (no script of that name exists in cwd).
  await d.ok(['start', 'api'], { cwd: tempDir(t) });
  const api1 = await waitRunning(d, 'api', api0.pid);
  apps = await d.byName();
  assert.equal(apps.worker.state, 'stopped', 'only the named app started');
  assert.equal(Object.keys(apps).length, 3, 'no new app was added');

  // A namespace targets every app in it.
  await d.ok(['restart', 'backend']);
  const api2 = await waitRunning(d, 'api', api1.pid);
  const worker1 = await waitRunning(d, 'worker', worker0.pid);
  assert.notEqual(api2.pid, api1.pid);
  assert.notEqual(worker1.pid, worker0.pid);
  assert.equal((await d.byName()).other.pid, other0.pid, 'an app outside the namespace is untouched');

  // jlist: one line of JSON; prettylist: the same apps, indented.
  const jlist = await d.ok(['jlist']);
  assert.equal(jlist.stdout.trim().split('\n').length, 1, 'jlist is one line');
  const listed = JSON.parse(jlist.stdout);
  assert.deepEqual(listed.map((a) => a.name).sort(), ['api', 'other', 'worker']);
  const pretty = await d.ok(['prettylist']);
  assert.ok(pretty.stdout.trim().split('\n').length > 3, 'prettylist is indented');
  assert.deepEqual(JSON.parse(pretty.stdout).map((a) => a.name).sort(), ['api', 'other', 'worker']);
  // show = describe.
  const show = await d.ok(['show', 'api']);
  assert.match(show.stdout, /namespace.*backend/);
  const [described] = JSON.parse((await d.ok(['show', 'api', '--json'])).stdout);
  assert.equal(described.definition.namespace, 'backend');

  await d.ok(['delete', 'api', 'other']);
  assert.deepEqual(Object.keys(await d.byName()), ['worker']);
  const missing = await d.cli(['restart', 'worker', 'nosuch']);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /nosuch/);
});

test('NODE_APP_INSTANCE per instance by default; instance_var renames it; increment_var counts up per instance', async (t) => {
  const d = new h.DaemonHome(t);
  const dir = tempDir(t);
  const file = path.join(dir, 'ecosystem.config.js');
  fs.writeFileSync(file, `module.exports = { apps: [
  { name: 'plain', script: ${JSON.stringify(IDLE)}, instances: 2 },
  { name: 'renamed', script: ${JSON.stringify(IDLE)}, instances: 3, instance_var: 'INSTANCE_ID', increment_var: 'PORT', env: { PORT: '4000' } },
] };\n`);
  const started = await d.ok(['start', file]);
  assert.doesNotMatch(started.stderr, /instance_var|increment_var/, `no warning: ${started.stderr}`);
  const apps = await d.waitForStatus((rows) => (running(rows, 'plain').length === 2 && running(rows, 'renamed').length === 3 ? rows : null),
    { what: 'every instance running' });
  const envOf = (name) => running(apps, name).sort((a, b) => a.instance - b.instance).map((row) => h.procEnv(row.pid));
  assert.deepEqual(envOf('plain').map((env) => env.NODE_APP_INSTANCE), ['0', '1']);
  const renamed = envOf('renamed');
  assert.deepEqual(renamed.map((env) => env.INSTANCE_ID), ['0', '1', '2']);
  assert.deepEqual(renamed.map((env) => env.NODE_APP_INSTANCE), [undefined, undefined, undefined], 'instance_var replaces NODE_APP_INSTANCE');
  assert.deepEqual(renamed.map((env) => env.PORT), ['4000', '4001', '4002']);

  const bad = await d.cli(['start', writeConfig(dir, 'bad.config.js', { name: 'bad', script: IDLE, instance_var: 'A=B' })]);
  assert.equal(bad.code, 2, `exit ${bad.code}: ${bad.stderr}`);
  assert.match(bad.stderr, /instance_var.*not an environment variable name/);
  assert.match((await d.ok(['show', 'renamed'])).stdout, /instance vars.*INSTANCE_ID, PORT \+ instance/);

  // Flags that describe one script's app are refused with a config file, not ignored.
  const cwd = await d.cli(['start', file, '--cwd', dir]);
  assert.equal(cwd.code, 2, cwd.stderr);
  assert.match(cwd.stderr, /--cwd applies to a script; with a config file .* put `cwd` in its apps instead/);
});

function writeConfig(dir, name, ...apps) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `module.exports = ${JSON.stringify({ apps })};\n`);
  return file;
}

test('startOrRestart and startOrReload start the apps not running and restart or reload the others', async (t) => {
  const d = new h.DaemonHome(t);
  const dir = tempDir(t);
  const file = writeConfig(dir, 'ecosystem.config.js', { name: 'one', script: IDLE });
  await d.ok(['startOrRestart', file]);
  const one0 = await waitRunning(d, 'one');

  writeConfig(dir, 'ecosystem.config.js', { name: 'one', script: IDLE }, { name: 'two', script: IDLE });
  await d.ok(['startOrRestart', file]);
  const one1 = await waitRunning(d, 'one', one0.pid);
  const two0 = await waitRunning(d, 'two');
  assert.equal((await d.status()).length, 2, 'no duplicate of the running app');

  await d.ok(['startOrReload', file]);
  const one2 = await waitRunning(d, 'one', one1.pid);
  const two1 = await waitRunning(d, 'two', two0.pid);
  assert.notEqual(one2.pid, one1.pid);
  assert.notEqual(two1.pid, two0.pid);
  assert.equal((await d.status()).length, 2);
});

test('reset zeroes the restart and hang counters of its targets, and leaves the processes running', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', IDLE, '--name', 'flaky']);
  await d.ok(['start', IDLE, '--name', 'steady']);
  let row = await waitRunning(d, 'flaky');
  for (let i = 1; i <= 2; i++) {
    process.kill(row.pid, 'SIGKILL');
    row = await d.waitForStatus((apps) => {
      const r = running(apps, 'flaky')[0];
      return r && r.pid !== row.pid && r.restarts === i ? r : null;
    }, { what: `flaky restarted ${i} time(s)` });
  }
  const steady = await waitRunning(d, 'steady');
  process.kill(steady.pid, 'SIGKILL');
  await d.waitForStatus((apps) => running(apps, 'steady').find((r) => r.pid !== steady.pid && r.restarts === 1), { what: 'steady restarted once' });

  const reset = await d.ok(['reset', 'flaky']);
  assert.match(reset.stdout, /flaky/);
  const apps = await d.byName();
  assert.equal(apps.flaky.restarts, 0, JSON.stringify(apps.flaky));
  assert.equal(apps.flaky.hangs, 0);
  assert.equal(apps.flaky.pid, row.pid, 'reset does not restart the app');
  assert.equal(apps.flaky.state, 'running');
  assert.equal(apps.steady.restarts, 1, 'an app not named keeps its counters');

  await d.ok(['reset', 'all']);
  assert.equal((await d.byName()).steady.restarts, 0);
  const missing = await d.cli(['reset', 'nosuch']);
  assert.equal(missing.code, 1, missing.stderr);
  assert.match(missing.stderr, /nosuch/);
});
