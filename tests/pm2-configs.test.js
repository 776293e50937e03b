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
  // log_type: 'json': PM2's object per line, the time in it (RFC 3339 UTC without a format).
  const audit = JSON.parse(await lineIn(d, path.join(dir, 'logs', 'audit.err.log'), /stderr check/));
  assert.equal(audit.type, 'err');
  assert.equal(audit.app_name, 'audit');
  assert.equal(audit.process_id, apps.audit.id);
  assert.match(audit.message, /stderr check/);
  assert.match(audit.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  await d.ok(['stop', 'gateway']);
  assert.equal(fs.existsSync(pidFile), false, 'the pid file is removed when the app stops');
  await d.ok(['restart', 'gateway']);
  const restarted = (await d.byName()).gateway.pid;
  assert.equal(fs.readFileSync(pidFile, 'utf8'), `${restarted}\n`, 'written again at each start');
});

test('an ESM ecosystem.config.mjs runs; exec_mode cluster with 2 instances and no listen draws no warning', async (t) => {
  const { dir } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', 'ecosystem.config.mjs'], { cwd: dir });
  assert.deepEqual(warnings(r.stderr), []);
  const rows = (await d.status()).filter((a) => a.name === 'crunch');
  assert.deepEqual(rows.map((a) => a.instance).sort(), [0, 1]);
  for (const row of rows) {
    assert.equal(row.state, 'running', JSON.stringify(row));
    assert.equal(h.procEnv(row.pid).QUEUE, 'crunch');
  }
});

test('exec_mode cluster with instances 2 and no listen, as PM2 users write it: both instances serve the port the app listens on', async (t) => {
  const { dir, port } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', 'cluster.config.js'], { cwd: dir });
  assert.deepEqual(warnings(r.stderr), [], 'nothing is lost, nothing to warn about');
  const rows = await d.waitForStatus(
    (apps) => {
      const mine = apps.filter((a) => a.name === 'api-cluster');
      return mine.length === 2 && mine.every((a) => a.state === 'running' && a.restarts === 0) ? mine : null;
    },
    { what: 'both instances running' },
  );
  const pids = rows.map((a) => a.pid);
  const seen = new Set();
  await d.waitFor(async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => json(port(5))));
    for (const answer of answers) seen.add(answer.pid);
    return pids.every((pid) => seen.has(pid));
  }, { what: `both instances (${pids}) to answer on port ${port(5)}; seen: ${[...seen]}` });
  for (const pid of seen) assert.ok(pids.includes(pid), `answer from pid ${pid}, not an instance`);
  // Neither instance failed to bind: no EADDRINUSE, no restart.
  const err = fs.readFileSync(path.join(d.home, 'logs', 'api-cluster-err.log'), 'utf8');
  assert.doesNotMatch(err, /EADDRINUSE/);
  assert.ok((await d.status()).filter((a) => a.name === 'api-cluster').every((a) => a.restarts === 0));
});

test('log_date_format: false is taken as PM2 takes it (no date prefix, no warning); a watched app is not restarted by its own log files inside the watched directory', async (t) => {
  const { dir, port } = await stage(t);
  const d = new h.DaemonHome(t);
  const r = await d.ok(['start', 'watched.config.js'], { cwd: dir });
  assert.deepEqual(warnings(r.stderr), [], `values that change nothing warned:\n${r.stderr}`);
  const { watched } = await d.byName();
  assert.equal(watched.state, 'running');
  const def = await definition(d, 'watched');
  assert.equal(def.log_timestamps, false, 'log_date_format: false stamps nothing');

  // Each request writes to ./logs/watched-out.log and ./logs/watched-error.log, inside the
  // watched directory: PM2 restarts the app for its own output, over and over.
  for (let i = 0; i < 5; i++) assert.equal((await json(port(40))).pid, watched.pid);
  const line = await lineIn(d, path.join(dir, 'logs', 'watched-out.log'), /^GET \/$/);
  assert.doesNotMatch(line, STAMPED);
  await lineIn(d, path.join(dir, 'logs', 'watched-error.log'), /^served \/ \(stderr\)$/);
  // A restart would come watch_delay (200 ms) after the last write; give it five times that.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const after = (await d.byName()).watched;
  assert.equal(after.pid, watched.pid, 'the app was restarted by its own log output');
  assert.equal(after.restarts, 0);

  // The watch itself works: a change to the app's code restarts it.
  fs.appendFileSync(path.join(dir, 'apps', 'chatty.js'), '// edited\n');
  await d.waitFor(
    async () => {
      const row = (await d.byName()).watched;
      return row && row.state === 'running' && row.pid !== watched.pid ? row : null;
    },
    { what: 'a restart after the code changed' },
  );
});
