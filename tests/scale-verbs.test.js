'use strict';
// Issue 17, the verbs at scale: `status` filters and compact JSON, `stop all` / `kill` during a
// start storm cancel the starts still queued, and a start that would run the supervisor out of
// open files is refused with one clear message instead of apps errored one by one.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const { execFile, execFileSync } = require('node:child_process');
const h = require('./helpers');

const SLEEP = execFileSync('sh', ['-c', 'command -v sleep'], { encoding: 'utf8' }).trim();

/** A config file of light apps (`sleep`, run as a command): `names` or `count` of `<prefix><i>`. */
function lightConfig(t, { count = 0, prefix = 'light', names = [], extra = {} }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-scale-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const all = [...names];
  for (let i = 0; i < count; i++) all.push(`${prefix}${i}`);
  const apps = all.map((name) => ({ name, script: SLEEP, args: '100000', interpreter: 'none', start_grace: '200ms', ...extra }));
  const file = path.join(dir, 'apps.json');
  fs.writeFileSync(file, JSON.stringify({ apps }));
  return file;
}

/** Runs `nodeguard <args>` in the background with `d`'s home; resolves like helpers' run(). */
function background(d, args, { timeout = 120_000 } = {}) {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = execFile(h.BIN, args, { env: { ...process.env, ...d.env }, timeout, killSignal: 'SIGKILL', encoding: 'utf8' },
      (error, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr, timedOut: Boolean(error && error.killed), ms: performance.now() - started }));
  });
}

test('status filters by name glob and state, and --fields prints only the fields asked for', async (t) => {
  const d = new h.DaemonHome(t);
  const config = lightConfig(t, { names: ['web-1', 'web-2', 'api', 'worker-web'] });
  await d.ok(['start', config]);
  await d.ok(['stop', 'api']);

  const web = JSON.parse((await d.ok(['status', 'web*', '--json'])).stdout);
  assert.deepEqual(web.map((a) => a.name).sort(), ['web-1', 'web-2']);
  assert.ok('pid' in web[0] && 'memory' in web[0], 'without --fields every field stays');

  const stopped = JSON.parse((await d.ok(['status', '--state', 'stopped', '--json'])).stdout);
  assert.deepEqual(stopped.map((a) => a.name), ['api']);
  const running = JSON.parse((await d.ok(['status', '*web*', '--state', 'running', '--json'])).stdout);
  assert.deepEqual(running.map((a) => a.name).sort(), ['web-1', 'web-2', 'worker-web']);

  const compact = JSON.parse((await d.ok(['status', '--json', '--fields', 'name,state'])).stdout);
  assert.equal(compact.length, 4);
  for (const row of compact) assert.deepEqual(Object.keys(row), ['name', 'state']);

  const table = (await d.ok(['status', 'web-?'])).stdout;
  assert.match(table, /web-1/);
  assert.doesNotMatch(table, /api|worker-web/);

  const none = JSON.parse((await d.ok(['status', 'nothing*', '--json'])).stdout);
  assert.deepEqual(none, []);

  const badState = await d.cli(['status', '--state', 'dead']);
  assert.equal(badState.code, 2, badState.stderr);
  assert.match(badState.stderr, /unknown state 'dead'/);
  const badField = await d.cli(['status', '--json', '--fields', 'name,bogus']);
  assert.equal(badField.code, 2, badField.stderr);
  assert.match(badField.stderr, /unknown field 'bogus'/);
});

/**
 * Starts `count` apps in the background and, once the first runs, runs `verb`: returns the start's
 * and the verb's results and the pids seen running.
 */
async function storm(t, d, count, verb) {
  const config = lightConfig(t, { count });
  const starting = background(d, ['start', config]);
  const seen = await d.waitFor(async () => {
    const apps = await d.tryStatus();
    return apps && apps.some((a) => a.state === 'running') ? apps : null;
  }, { timeout: 60_000, what: 'the first app of the storm to run' });
  const spawnedBefore = seen.filter((a) => a.pid).length;
  const verbRun = await d.cli(verb, { timeout: 60_000 });
  const start = await starting;
  return { start, verbRun, spawnedBefore };
}

test('stop all during a start storm cancels the starts still queued: those apps rest stopped, not errored', { timeout: 150_000 }, async (t) => {
  const d = new h.DaemonHome(t);
  const count = 1000;
  const { start, verbRun } = await storm(t, d, count, ['stop', 'all']);
  assert.equal(verbRun.code, 0, `stop all: ${verbRun.stderr}\n${d.describe()}`);
  assert.notEqual(start.code, 0, 'the start reports that some apps did not run');
  const cancelled = /(\d+) of 1000 apps were stopped before they ran \(their start was cancelled\)/.exec(start.stderr);
  assert.ok(cancelled, `the start says how many were cancelled: ${start.stderr.slice(0, 2000)}`);
  assert.ok(Number(cancelled[1]) > 0);
  const apps = await d.status();
  assert.equal(apps.length, count);
  assert.deepEqual(apps.filter((a) => a.state !== 'stopped').map((a) => `${a.name} ${a.state}`), [], 'every app rests stopped');
  // The cancelled ones never ran: fewer processes were ever spawned than apps (each app's pid
  // file is gone with it, so count the apps whose restart counter and last exit stayed empty).
  const daemon = d.daemonPid();
  const left = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e)).filter((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === daemon;
    } catch {
      return false;
    }
  });
  assert.deepEqual(left, [], 'no app process is left');
  const spawned = (d.daemonLog().match(/started pid=/g) || []).length;
  assert.ok(spawned < count, `the queued starts were dropped, not run: ${spawned} of ${count} processes were spawned`);
  t.diagnostic(`start storm of ${count}: ${cancelled[1]} cancelled; stop all answered in ${Math.round(verbRun.ms)} ms`);
});

test('kill during a start storm ends the daemon at once, without running the queued starts first', { timeout: 150_000 }, async (t) => {
  const d = new h.DaemonHome(t);
  const count = 1000;
  const daemonSeen = [];
  const { start, verbRun } = await storm(t, d, count, ['kill']);
  daemonSeen.push(d.daemonPid());
  assert.equal(verbRun.code, 0, `kill: ${verbRun.stderr}\n${d.describe()}`);
  assert.notEqual(start.code, 0);
  assert.ok(h.isGone(daemonSeen[0]), 'the daemon has exited');
  assert.deepEqual(d.processes(), [], 'no process of this home is left');
  // The state file written by kill brings every app back with `resurrect`.
  const saved = JSON.parse(fs.readFileSync(path.join(d.home, 'dump.json'), 'utf8'));
  assert.equal(saved.apps.length, count);
  const spawned = (d.daemonLog().match(/started pid=/g) || []).length;
  assert.ok(spawned < count, `the queued starts were dropped, not run: ${spawned} of ${count} processes were spawned`);
  t.diagnostic(`kill during a storm of ${count} answered in ${Math.round(verbRun.ms)} ms`);
});

test('a start that would exhaust the open-file limit is refused with one clear message', async (t) => {
  const d = new h.DaemonHome(t);
  const config = lightConfig(t, { count: 100 });
  // The daemon this start launches inherits the shell's limit (soft and hard: 256).
  const result = await new Promise((resolve) => {
    execFile('bash', ['-c', 'ulimit -n 256 && exec "$0" start "$1"', h.BIN, config],
      { env: { ...process.env, ...d.env }, timeout: 60_000, encoding: 'utf8' },
      (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
  assert.notEqual(result.code, 0, 'the start is refused');
  assert.match(result.stderr, /cannot start 100 more apps: 300 more open files needed, \d+ left \(RLIMIT_NOFILE 256, \d+ open, 64 kept for the supervisor\); raise the hard limit \(ulimit -Hn/);
  // Nothing was added, nothing errored, and a start that fits still works.
  assert.deepEqual(await d.status(), []);
  const small = lightConfig(t, { count: 5, prefix: 'small' });
  await d.ok(['start', small]);
  const apps = await d.status();
  assert.equal(apps.length, 5);
  assert.ok(apps.every((a) => a.state === 'running'));
});

test('a start of 1,000 apps from a caller with a big environment sends it once: the request fits and is answered', async (t) => {
  const d = new h.DaemonHome(t);
  const config = lightConfig(t, { count: 1000 });
  // 1,000 apps each carrying this 10 kB variable made a 10 MB request, over the 8 MB frame
  // limit: the start failed in the client. Sent once, the request reaches the daemon, which
  // (under a 256 open-file limit, so no process starts) answers with its open-file refusal.
  const env = { ...process.env, ...d.env, NG_BIG_VARIABLE: 'x'.repeat(10_000) };
  const result = await new Promise((resolve) => {
    execFile('bash', ['-c', 'ulimit -n 256 && exec "$0" start "$1"', h.BIN, config],
      { env, timeout: 60_000, encoding: 'utf8' },
      (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
  assert.notEqual(result.code, 0, 'the start is refused');
  assert.doesNotMatch(result.stderr, /too large|frame/i, result.stderr);
  assert.match(result.stderr, /cannot start 1,000 more apps/, result.stderr);
});

/** Runs `nodeguard <args>` in a pseudo-terminal (Python's pty module): its output as a terminal shows it. */
function inTerminal(d, args, { timeout = 150_000 } = {}) {
  const relay = [
    'import os, pty, sys',
    'pid, fd = pty.fork()',
    'if pid == 0:',
    '    os.execv(sys.argv[1], sys.argv[1:])',
    'out = bytearray()',
    'while True:',
    '    try:',
    '        chunk = os.read(fd, 65536)',
    '    except OSError:',
    '        break',
    '    if not chunk:',
    '        break',
    '    out += chunk',
    '_, status = os.waitpid(pid, 0)',
    'sys.stdout.buffer.write(bytes(out))',
    'sys.exit(os.waitstatus_to_exitcode(status))',
  ].join('\n');
  return new Promise((resolve) => {
    const child = execFile('python3', ['-c', relay, h.BIN, ...args], { env: { ...process.env, ...d.env }, timeout, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 64 << 20 },
      (error, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr, timedOut: Boolean(error && error.killed) }));
  });
}

test('a big start on a terminal shows its progress (N of M running) and clears it; piped, it prints only the result', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', lightConfig(t, { names: ['before'] })]);
  const count = 300;
  const shown = await inTerminal(d, ['start', lightConfig(t, { count })]);
  assert.equal(shown.code, 0, shown.stdout + shown.stderr);
  const lines = [...shown.stdout.matchAll(/starting: ([\d,]+) of ([\d,]+) running/g)];
  t.diagnostic(`${lines.length} progress updates, the last: ${lines.length ? lines[lines.length - 1][0] : 'none'}`);
  assert.ok(lines.length > 0, `no progress line in:\n${shown.stdout.slice(0, 2000)}`);
  for (const line of lines) assert.equal(line[2], '300', 'counts the apps this start adds, not the one before');
  assert.ok(Number(lines[lines.length - 1][1].replace(/,/g, '')) <= count);
  assert.match(shown.stdout, /\r\x1b\[K/, 'the line is redrawn in place and cleared');
  const apps = await d.status();
  assert.equal(apps.filter((a) => a.state === 'running').length, count + 1);

  const piped = await d.ok(['start', lightConfig(t, { count: 50, prefix: 'piped' })]);
  assert.doesNotMatch(piped.stdout + piped.stderr, /starting: /, 'no progress line when not on a terminal');
});
