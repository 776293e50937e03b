'use strict';
// Issue 17, 10,000 processes: PM2's `disable_logs` (and an out/error file of /dev/null) gives the
// app /dev/null for that stream in the process itself, with no pipe to the daemon, so such an app
// costs the daemon one open file (its pidfd) instead of three, and the open-file budget counts it
// so: a start that would not fit with captured output fits without.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const { execFile, execFileSync } = require('node:child_process');
const h = require('./helpers');

const SLEEP = execFileSync('sh', ['-c', 'command -v sleep'], { encoding: 'utf8' }).trim();

/** What fd `fd` of process `pid` points at (`/dev/null`, `pipe:[123]` …). */
function fdTarget(pid, fd) {
  return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
}

/** The pipes process `pid` holds open, as `pipe:[inode]`. */
function pipesOf(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`)
    .map((fd) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { return ''; } })
    .filter((target) => target.startsWith('pipe:'));
}

/** A config file of `count` light apps (`sleep`, run as a command) with `extra` fields each. */
function lightConfig(t, count, extra) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-nolog-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const apps = [];
  for (let i = 0; i < count; i++) {
    apps.push({ name: `quiet${i}`, script: SLEEP, args: '100000', interpreter: 'none', start_grace: '200ms', ...extra });
  }
  const file = path.join(dir, 'apps.json');
  fs.writeFileSync(file, JSON.stringify({ apps }));
  return file;
}

/** `nodeguard start <file>` from a shell whose open-file limit (soft and hard) is `limit`: the
 * daemon it launches inherits it. */
function startUnderLimit(d, limit, file) {
  return new Promise((resolve) => {
    execFile('bash', ['-c', `ulimit -n ${limit} && exec "$0" start "$1"`, h.BIN, file],
      { env: { ...process.env, ...d.env }, timeout: 60_000, encoding: 'utf8' },
      (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
}

test('disable_logs: the app writes to /dev/null itself, no log file appears, and the daemon holds no pipe for it', async (t) => {
  const d = new h.DaemonHome(t);
  // Each app writes a line to each stream, then says so with a marker file, then sleeps.
  const dir = h.project(t, [
    ['speak.sh', '#!/bin/sh\necho "out line"\necho "err line" >&2\n: > "$1"\nexec sleep 100000\n', 0o755],
  ], 'ng-nolog-');
  const script = path.join(dir, 'speak.sh');
  const marker = (name) => path.join(dir, `${name}.done`);
  const logs = path.join(d.home, 'logs');

  // One app with captured output first: the daemon's pipes for it, and the lines in its logs.
  await d.ok(['start', script, '--interpreter', 'none', '--start-grace', '200ms', '--name', 'loud', '--', marker('loud')]);
  await d.waitFor(() => fs.existsSync(path.join(logs, 'loud-out.log')) &&
    /out line/.test(fs.readFileSync(path.join(logs, 'loud-out.log'), 'utf8')) &&
    /err line/.test(fs.readFileSync(path.join(logs, 'loud-err.log'), 'utf8')), { what: 'the loud app\'s lines in its logs' });
  const daemon = d.daemonPid();
  const loud = (await d.byName()).loud;
  assert.match(fdTarget(loud.pid, 1), /^pipe:/);
  const withLoud = pipesOf(daemon).length;

  // Five apps with logs disabled (the CLI flag), and one with only its stdout at /dev/null.
  for (let i = 0; i < 5; i++) {
    await d.ok(['start', script, '--interpreter', 'none', '--start-grace', '200ms', '--name', `quiet${i}`, '--disable-logs', '--', marker(`quiet${i}`)]);
  }
  await d.ok(['start', script, '--interpreter', 'none', '--start-grace', '200ms', '--name', 'half', '-o', '/dev/null', '--', marker('half')]);
  await d.waitFor(() => [0, 1, 2, 3, 4].every((i) => fs.existsSync(marker(`quiet${i}`))) && fs.existsSync(marker('half')),
    { what: 'every app to have written its lines' });
  const apps = await d.byName();
  for (let i = 0; i < 5; i++) {
    const app = apps[`quiet${i}`];
    assert.equal(app.state, 'running');
    assert.equal(fdTarget(app.pid, 1), '/dev/null', 'stdout is /dev/null in the app');
    assert.equal(fdTarget(app.pid, 2), '/dev/null', 'stderr is /dev/null in the app');
  }
  assert.equal(fdTarget(apps.half.pid, 1), '/dev/null');
  const halfErr = fdTarget(apps.half.pid, 2);
  assert.match(halfErr, /^pipe:/, 'the half app\'s stderr is still captured');
  await d.waitFor(() => fs.existsSync(path.join(logs, 'half-err.log')) &&
    /err line/.test(fs.readFileSync(path.join(logs, 'half-err.log'), 'utf8')), { what: 'the half app\'s stderr line in its log' });

  // The daemon gained exactly one pipe: the half app's stderr, the one it reads.
  const pipes = pipesOf(daemon);
  assert.equal(pipes.length, withLoud + 1, `daemon pipes: ${withLoud} with the loud app, ${pipes.length} now`);
  assert.ok(pipes.includes(halfErr), 'the daemon holds the half app\'s stderr pipe');
  // No log file of the quiet apps, and none for the half app's stdout.
  const files = fs.readdirSync(logs);
  assert.deepEqual(files.filter((f) => f.startsWith('quiet') || f === 'half-out.log'), [], `log files: ${files.join(', ')}`);

  // describe says so, and the definition carries the field.
  const described = await d.ok(['describe', 'quiet0']);
  assert.match(described.stdout, /logs\s+disabled \(disable_logs\): stdout and stderr go to \/dev\/null/);
  assert.match((await d.ok(['describe', 'half'])).stdout, /logs\s+stdout goes to \/dev\/null/);
  const json = JSON.parse((await d.ok(['describe', 'quiet0', '--json'])).stdout);
  assert.equal(json[0].definition.disable_logs, true);

  // `logs` says there is nothing to show for it, and answers.
  const shown = await d.ok(['logs', 'quiet0', '--lines', '5']);
  assert.equal(shown.stdout, '');
  assert.match(shown.stderr, /quiet0 has its logs disabled \(disable_logs\)/);

  // A Node app with logs disabled still has its monitor (the one fd it costs beside its pidfd).
  await d.ok(['start', path.join(h.FIXTURES, 'idle.js'), '--name', 'quiet-node', '--disable-logs']);
  const node = await d.waitForStatus((list) => list.find((a) => a.name === 'quiet-node' && a.state === 'running' && a.monitored),
    { what: 'quiet-node running with its monitor' });
  assert.equal(fdTarget(node.pid, 1), '/dev/null');
  assert.equal(fdTarget(node.pid, 2), '/dev/null');
  assert.ok(!fs.readdirSync(logs).some((f) => f.startsWith('quiet-node')), 'no log file for the Node app');

  // A restart keeps it so (the field is part of the saved definition).
  await d.ok(['restart', 'quiet0']);
  const again = await d.waitForStatus((list) => {
    const app = list.find((a) => a.name === 'quiet0');
    return app && app.state === 'running' && app.pid !== apps.quiet0.pid && app;
  }, { what: 'quiet0 running again' });
  assert.equal(fdTarget(again.pid, 1), '/dev/null');
});

test('the open-file budget counts one file for an app with logs disabled: 300 fit under a limit of 600 where they are refused with logs', async (t) => {
  const d = new h.DaemonHome(t);
  const count = 300;
  // With captured output: 3 open files each (two pipes and a pidfd), 900, over the limit.
  const refused = await startUnderLimit(d, 600, lightConfig(t, count, {}));
  assert.notEqual(refused.code, 0, 'the start with logs is refused');
  assert.match(refused.stderr, /cannot start 300 more apps: 900 more open files needed, \d+ left \(RLIMIT_NOFILE 600, /);
  assert.equal(refused.stderr.trim().split('\n').length, 1, `one line: ${refused.stderr}`);
  // One stream at /dev/null: 2 each, 600, still over.
  const half = await startUnderLimit(d, 600, lightConfig(t, count, { out_file: '/dev/null' }));
  assert.notEqual(half.code, 0);
  assert.match(half.stderr, /cannot start 300 more apps: 600 more open files needed/);
  assert.deepEqual(await d.status(), [], 'nothing was added');

  // With disable_logs: 1 each (the pidfd), 300: every app starts and none errors.
  const daemon = d.daemonPid();
  assert.match(fs.readFileSync(`/proc/${daemon}/limits`, 'utf8'), /Max open files\s+600\s+600/);
  await d.ok(['start', lightConfig(t, count, { disable_logs: true })], { timeout: 60_000 });
  const apps = await d.status();
  assert.equal(apps.length, count);
  const notRunning = apps.filter((a) => a.state !== 'running');
  assert.deepEqual(notRunning.map((a) => `${a.name}: ${a.state}`), [], 'every app runs');
  assert.doesNotMatch(d.daemonLog(), /Too many open files/);
  // Every verb still answers with the daemon at its limit's edge.
  await d.ok(['restart', 'quiet7']);
  await d.ok(['stop', 'all'], { timeout: 60_000 });
  assert.ok((await d.status()).every((a) => a.state === 'stopped'));
});
