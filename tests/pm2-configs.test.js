'use strict';
// PM2 config files as PM2 users have them (tests/fixtures/pm2/): YAML, JSON with comments and
// trailing commas, one bare app object, .config.cjs and an ESM .config.mjs, PM2's log aliases and
// a deploy section. Each starts on a real daemon; the apps run with the file's settings, and the
// warnings are exactly the ones expected: one per setting that is lost, none for values that
// change nothing.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const SOURCE = path.join(h.FIXTURES, 'pm2');
/** A line of a log file with nodeguard's timestamp prefix (RFC 3339, UTC, milliseconds). */
const STAMPED = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;

/** A copy of the fixtures in a fresh directory, `__PORT_N__` replaced by free ports. */
async function stage(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeguard-pm2-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.cpSync(SOURCE, dir, { recursive: true });
  const ports = {};
  for (const name of fs.readdirSync(dir)) {
    const file = path.join(dir, name);
    if (!fs.statSync(file).isFile()) continue;
    let text = fs.readFileSync(file, 'utf8');
    for (const placeholder of new Set(text.match(/__PORT_\d+__/g) || [])) {
      ports[placeholder] ??= await h.freePort();
      text = text.split(placeholder).join(String(ports[placeholder]));
    }
    fs.writeFileSync(file, text);
  }
  return { dir, port: (n) => ports[`__PORT_${n}__`] };
}

/** The warnings `start` printed, without the `nodeguard: warning: ` prefix. */
function warnings(stderr) {
  const prefix = 'nodeguard: warning: ';
  return stderr
    .split('\n')
    .filter((line) => line.startsWith(prefix))
    .map((line) => line.slice(prefix.length));
}

async function json(port) {
  const reply = await h.get(port, '/');
  assert.equal(reply.status, 200);
  return JSON.parse(reply.body);
}

/** Waits until `file` has a line matching `pattern`; returns that line. */
async function lineIn(d, file, pattern) {
  return d.waitFor(
    () => {
      let text = '';
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch {
        return null;
      }
      return text.split('\n').find((line) => pattern.test(line)) || null;
    },
    { what: `a line matching ${pattern} in ${file}` },
  );
}

async function definition(d, name) {
  return JSON.parse((await d.ok(['describe', name, '--json'])).stdout)[0].definition;
}

test('process.yml: YAML apps run with their env, args, log aliases and limits; a name with a slash gets its own log files; no warnings', async (t) => {
  const { dir, port } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', 'process.yml'], { cwd: dir });
  assert.deepEqual(warnings(r.stderr), [], `values that change nothing warned:\n${r.stderr}`);

  const apps = await d.byName();
  assert.deepEqual(Object.keys(apps).sort(), ['api', 'jobs/mailer']);
  for (const app of Object.values(apps)) assert.equal(app.state, 'running', JSON.stringify(app));

  const api = await json(port(1));
  assert.equal(api.pid, apps.api.pid);
  assert.equal(api.nodeEnv, 'production');
  assert.deepEqual(api.argv, ['--mode', 'yaml']);
  // `output` and `error` are PM2's names for out_file and error_file.
  await lineIn(d, path.join(dir, 'logs', 'api-out.log'), new RegExp(`^listening on ${port(1)}$`));
  await lineIn(d, path.join(dir, 'logs', 'api-error.log'), /^server ready \(stderr\)/);
  const def = await definition(d, 'api');
  assert.equal(def.max_memory, 256 * 1024 * 1024);
  assert.equal(def.kill_timeout_ms, 3000);
  assert.equal(def.instances, 1);

  assert.equal(h.procEnv(apps['jobs/mailer'].pid).QUEUE, 'mail');
  const logs = path.join(d.home, 'logs');
  const out = await lineIn(d, path.join(logs, 'jobs%2Fmailer-out.log'), /worker \d+ up, queue mail/);
  assert.match(out, STAMPED, '`time: true` stamps each line');
  await lineIn(d, path.join(logs, 'jobs%2Fmailer-err.log'), /stderr check/);
  assert.equal(fs.existsSync(path.join(logs, 'jobs')), false, 'the slash made a directory');
});

test('ecosystem.json with comments and trailing commas is read as PM2 reads it; `port` sets PORT', async (t) => {
  const { dir, port } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', path.join(dir, 'ecosystem.json')], { cwd: os.tmpdir() });
  assert.deepEqual(warnings(r.stderr), [], r.stderr);
  const { web } = await d.byName();
  assert.equal(web.state, 'running');
  const reply = await json(port(2));
  assert.equal(reply.pid, web.pid);
  assert.equal(reply.nodeEnv, 'staging');
  assert.equal(fs.readlinkSync(`/proc/${web.pid}/cwd`), dir, 'cwd "." is the config file\'s directory');
  assert.ok(h.procArgv(web.pid).includes('--no-deprecation'), `interpreterArgs reach node: ${h.procArgv(web.pid)}`);
  const def = await definition(d, 'web');
  assert.equal(def.min_uptime_ms, 5000);
  assert.equal(def.max_restarts, 10);
});

test('a JSON file holding one bare app object starts that app', async (t) => {
  const { dir, port } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', 'app.json'], { cwd: dir });
  assert.deepEqual(warnings(r.stderr), [], r.stderr);
  const { single } = await d.byName();
  assert.equal(single.state, 'running');
  assert.deepEqual((await json(port(3))).argv, ['--mode', 'bare']);
});

test('ecosystem.config.cjs: log aliases, log_date_format (local time), log_file and pid_file apply; each lost setting warns once, deploy once for the file', async (t) => {
  const { dir, port } = await stage(t);
  // The daemon's local time is UTC+05:30 (a POSIX TZ string: no zoneinfo needed).
  const d = new h.DaemonHome(t, { env: { TZ: 'IST-5:30' } });
  const r = await d.ok(['start', 'ecosystem.config.cjs'], { cwd: dir });
  const file = path.join(dir, 'ecosystem.config.cjs');
  assert.deepEqual(warnings(r.stderr), [
    `${file}: 'deploy' is ignored: nodeguard does no remote deployment (\`pm2 deploy\`); ship the code with your own tooling (git pull, rsync, CI), then run \`nodeguard start ecosystem.config.cjs\` or \`nodeguard reload all\` on the host`,
    `${file}: app 'audit': field 'log_type' is not supported and is ignored (log lines are written as plain text, not as JSON objects)`,
  ]);

  const apps = await d.byName();
  assert.equal(apps.gateway.state, 'running');
  assert.equal(apps.audit.state, 'running');
  assert.equal((await json(port(4))).pid, apps.gateway.pid);
  // log_date_format 'YYYY-MM-DD HH:mm:ss Z': each line starts with its local time in that format.
  const before = Date.now();
  const listening = await lineIn(d, path.join(dir, 'logs', 'gateway.out.log'), /listening on/);
  const stamp = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) \+05:30 listening on/.exec(listening);
  assert.ok(stamp, listening);
  const [, y, mo, da, hh, mi, ss] = stamp.map(Number);
  const written = Date.UTC(y, mo - 1, da, hh, mi, ss) - 5.5 * 3600_000;
  assert.ok(Math.abs(written - before) < 120_000, `${listening}: not the local time in UTC+05:30 (now ${new Date(before).toISOString()})`);
  const ready = await lineIn(d, path.join(dir, 'logs', 'gateway.err.log'), /server ready/);
  // log_file: both streams, interleaved, in one more file, each line whole and stamped alike.
  const combined = path.join(dir, 'logs', 'gateway.combined.log');
  assert.equal(await lineIn(d, combined, /listening on/), listening);
  assert.equal(await lineIn(d, combined, /server ready/), ready);
  // pid_file (run/ is created 0700): the pid, 0600; gone when the app stops.
  const pidFile = path.join(dir, 'run', 'gateway.pid');
  assert.equal(fs.readFileSync(pidFile, 'utf8'), `${apps.gateway.pid}\n`);
  assert.equal(fs.statSync(pidFile).mode & 0o777, 0o600);
  // err_file, another of PM2's names for error_file.
  const audit = await lineIn(d, path.join(dir, 'logs', 'audit.err.log'), /stderr check/);
  assert.doesNotMatch(audit, STAMPED, 'no timestamps were asked for audit');
  await d.ok(['stop', 'gateway']);
  assert.equal(fs.existsSync(pidFile), false, 'the pid file is removed when the app stops');
  await d.ok(['restart', 'gateway']);
  const restarted = (await d.byName()).gateway.pid;
  assert.equal(fs.readFileSync(pidFile, 'utf8'), `${restarted}\n`, 'written again at each start');
});

test('an ESM ecosystem.config.mjs runs; exec_mode cluster without listen says what runs instead', async (t) => {
  const { dir } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', 'ecosystem.config.mjs'], { cwd: dir });
  const file = path.join(dir, 'ecosystem.config.mjs');
  assert.deepEqual(warnings(r.stderr), [
    `${file}: app 'crunch': field 'exec_mode' is 'cluster' but the app has no 'listen': nodeguard does not share a port among the instances yet, so it runs 2 separate processes (instances: 2), each binding its own ports: if the app listens on a fixed port, the first process to bind it serves, the others exit with EADDRINUSE (so \`start\` fails) and are restarted with backoff until they end errored; add \`listen: <port>\` (the port the app listens on) and the supervisor binds it once and shares it among the 2`,
  ]);
  const rows = (await d.status()).filter((a) => a.name === 'crunch');
  assert.deepEqual(rows.map((a) => a.instance).sort(), [0, 1]);
  for (const row of rows) {
    assert.equal(row.state, 'running', JSON.stringify(row));
    assert.equal(h.procEnv(row.pid).QUEUE, 'crunch');
  }
});

test('exec_mode cluster without listen does what its warning says: one instance serves, the other fails with EADDRINUSE and `start` fails', async (t) => {
  const { dir, port } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.cli(['start', 'cluster.config.js'], { cwd: dir });
  const [warning, ...others] = warnings(r.stderr);
  assert.deepEqual(others, [], r.stderr);
  assert.match(warning, /app 'api-cluster': field 'exec_mode' is 'cluster' but the app has no 'listen': .* runs 2 separate processes/);
  assert.match(warning, /the others exit with EADDRINUSE \(so `start` fails\) and are restarted with backoff/);
  assert.equal(r.code, 1, `start should fail as the warning says: ${r.stderr}`);
  assert.match(r.stderr, /api-cluster: exited while starting/);

  const rows = await d.waitForStatus(
    (apps) => {
      const mine = apps.filter((a) => a.name === 'api-cluster');
      return mine.some((a) => a.state === 'running') && mine.some((a) => a.restarts > 0) ? mine : null;
    },
    { what: 'one instance running, the other restarting' },
  );
  const serving = rows.find((a) => a.state === 'running');
  assert.equal((await json(port(5))).pid, serving.pid, 'the instance that bound the port serves');
  await lineIn(d, path.join(d.home, 'logs', 'api-cluster-err.log'), /EADDRINUSE/);
});
