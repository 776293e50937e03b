'use strict';
// `nodeguard start <config>`: PM2-style config files (JSON, *.config.js) against a real daemon.
// An invalid file reports every problem (file, app, field) at once, exits 2 and starts nothing.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const CONFIGS = path.join(h.FIXTURES, 'configs', 'daemon');
const config = (name) => path.join(CONFIGS, name);

function byName(apps) {
  return Object.fromEntries(apps.map((a) => [a.name, a]));
}

function assertRunning(row, what) {
  assert.ok(row, `${what}: not listed`);
  assert.equal(row.state, 'running', `${what}: state ${row.state} (${JSON.stringify(row)})`);
  assert.ok(Number.isInteger(row.pid) && !h.isGone(row.pid), `${what}: pid ${row.pid} not running`);
}

test('an ecosystem.config.js with two apps starts both, with their names, args, env and cwd', async (t) => {
  const d = new h.DaemonHome(t);
  // From another directory: paths in the file are relative to the file.
  const started = await d.ok(['start', config('ecosystem.config.js')], { cwd: os.tmpdir() });
  assert.doesNotMatch(started.stderr, /field|warn/i, `a config of supported fields warns: ${started.stderr}`);

  const apps = byName(await d.status());
  assert.deepEqual(Object.keys(apps).sort(), ['alpha', 'beta']);
  assertRunning(apps.alpha, 'alpha');
  assertRunning(apps.beta, 'beta');
  const idle = path.join(h.FIXTURES, 'idle.js');
  assert.equal(apps.alpha.script, idle);
  assert.equal(apps.beta.script, idle);

  const env = h.procEnv(apps.alpha.pid);
  assert.equal(env.GREETING, 'hello', 'env from the config reaches the app');
  assert.equal(env.ANSWER, '42', 'a number in env reaches the app as a string');
  assert.deepEqual(h.procArgv(apps.alpha.pid).slice(-3), [idle, 'one', 'two words'], 'args as an array, one argument each');
  assert.equal(fs.readlinkSync(`/proc/${apps.beta.pid}/cwd`), h.FIXTURES, 'cwd relative to the config file');
  assert.equal(h.procEnv(apps.beta.pid).GREETING, undefined, 'one app\'s env does not leak into another');
});

test('an invalid config reports every problem at once, exits 2 and starts nothing', async (t) => {
  const d = new h.DaemonHome(t);
  const file = config('invalid.config.js');
  const r = await d.cli(['start', file]);
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const about = (field, app) => lines.find((l) => l.includes(field) && l.includes(app));
  for (const [field, app] of [['instances', 'lots'], ['kill_timeout', 'soon']]) {
    const line = about(field, app);
    assert.ok(line, `no line names field ${field} of app ${app}:\n${r.stderr}`);
    assert.ok(line.includes('invalid.config.js'), `the line about ${field} names no file: ${line}`);
  }
  assert.equal(r.stdout.trim(), '', `stdout: ${r.stdout}`);
  const ping = await d.cli(['ping']);
  assert.equal(ping.code, 1, 'no daemon was launched for an invalid config');
  assert.equal(d.daemonPid(), null, 'no daemon took the lock');
  assert.deepEqual(d.processes(), [], 'processes started for an invalid config');

  // With a daemon running, an invalid config adds nothing to it.
  await d.ok(['start', path.join(h.FIXTURES, 'idle.js')]);
  const again = await d.cli(['start', file]);
  assert.equal(again.code, 2, `with a daemon: exit ${again.code}; ${again.stderr}`);
  assert.deepEqual((await d.status()).map((a) => a.name), ['idle']);
});

test('an unknown field gets a warning naming it, and the app still starts', async (t) => {
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', config('unknown-field.json')]);
  const warning = r.stderr.split('\n').find((l) => l.includes('frobnicate'));
  assert.ok(warning, `no warning names the unknown field: stderr ${JSON.stringify(r.stderr)}`);
  assert.match(warning, /gamma/, `the warning names the app: ${warning}`);
  assertRunning(byName(await d.status()).gamma, 'gamma');
});

test("PM2's restart-policy fields apply: stop_exit_codes leaves an exit with that code stopped", async (t) => {
  const d = new h.DaemonHome(t);
  const port = await h.freePort();
  const r = await d.ok(['start', config('policy.config.js')], { env: { POLICY_PORT: String(port) } });
  assert.doesNotMatch(r.stderr, /not applied|warn/i, `policy fields warned: ${r.stderr}`);
  const described = JSON.parse((await d.ok(['describe', 'pol', '--json'])).stdout)[0].definition;
  assert.equal(described.autorestart, 'on-failure', 'stop_exit_codes means: restart on other exits only');
  assert.deepEqual(described.clean_exit_codes, [3]);
  assert.equal(described.min_uptime_ms, 2000);
  assert.equal(described.restart_delay_ms, 50);
  assert.equal(described.backoff_base_ms, 200);

  const pid = byName(await d.status()).pol.pid;
  assert.equal((await h.get(port, '/crash')).body, 'crashing\n');
  const row = byName(
    await d.waitForStatus((apps) => (byName(apps).pol?.state === 'stopped' ? apps : false), {
      what: 'pol to rest as stopped after exiting with code 3',
    }),
  ).pol;
  assert.equal(row.restarts, 0);
  assert.match(row.last_exit, /exit code 3/);
  await h.waitGone([pid], { what: 'the exited app' });
});
