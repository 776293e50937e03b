'use strict';
// Signals and log files (issue 12): SIGHUP reopens log files (rotation by `mv` + HUP loses and
// splits no line), SIGUSR1/SIGUSR2/SIGALRM are ignored, in the daemon and in the foreground;
// a symlink planted at a log's path is refused, never written through; daemon.log is rotated
// like app logs.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const fixture = (name) => path.join(h.FIXTURES, name);
/** The size at which logs (daemon.log too) rotate: logfile.rs DEFAULT_MAX_SIZE. */
const LOG_MAX_SIZE = 10 * 1024 * 1024;

function read(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function ticks(file) {
  const text = read(file);
  return text === '' ? 0 : text.split('\n').length - 1;
}

test('daemon: mv + SIGHUP rotates app logs and daemon.log with no line lost or split; USR1, USR2, ALRM are ignored', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('ticker.js'), '--name', 'ticker']);
  const daemon = d.daemonPid();
  assert.ok(daemon, `no daemon pid\n${d.describe()}`);
  const [app] = await d.status();
  const out = path.join(d.home, 'logs', 'ticker-out.log');
  await d.waitFor(() => ticks(out) >= 20, { what: `${out} to hold 20 lines` });

  // Signals that must not end the daemon (they used to kill it with every app).
  for (const signal of ['SIGUSR1', 'SIGUSR2', 'SIGALRM']) {
    process.kill(daemon, signal);
    await d.waitFor(() => d.daemonLog().includes(`${signal} ignored`), { what: `daemon.log to say ${signal} was ignored` });
  }

  // External rotation: move both files away, then SIGHUP.
  const moved = `${out}.moved`;
  const movedDaemonLog = `${d.paths.log}.moved`;
  fs.renameSync(out, moved);
  fs.renameSync(d.paths.log, movedDaemonLog);
  process.kill(daemon, 'SIGHUP');
  await d.waitFor(() => ticks(out) >= 20, { what: `a new ${out} with 20 lines after SIGHUP` });
  await d.waitFor(() => read(d.paths.log).includes('SIGHUP: reopening log files'), {
    what: 'the new daemon.log to say SIGHUP reopened the logs',
  });

  const [still] = await d.status();
  assert.equal(still.state, 'running');
  assert.equal(still.pid, app.pid, 'the app was restarted');
  assert.equal(d.daemonPid(), daemon);
  assert.equal(process.kill(daemon, 0), true, 'the daemon survived every signal');
  await d.ok(['stop', 'ticker']);

  // The moved file and the new one hold tick 0, 1, 2, … with no gap, each line whole.
  const all = [];
  for (const file of [moved, out]) {
    const text = read(file);
    assert.ok(text.endsWith('\n'), `${file} ends mid-line`);
    assert.ok(ticks(file) > 0, `${file} is empty`);
    all.push(...text.slice(0, -1).split('\n'));
  }
  all.forEach((line, i) => assert.equal(line, `tick ${i}`, `line ${i} of ${moved} + ${out}`));
  assert.ok(!read(movedDaemonLog).includes('SIGHUP: reopening'), 'the SIGHUP line went to the old daemon.log');
});

test('foreground: SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM leave the supervisor and its app running', async (t) => {
  const s = h.startSupervisor(t, { scripts: ['idle.js'] });
  await s.waitForLine('idle', /^idle pid=(\d+)/);
  for (const signal of ['SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGALRM']) {
    s.signal(signal);
    const said = signal === 'SIGHUP' ? 'SIGHUP: reopening log files' : `${signal} ignored`;
    await s.waitFor(() => s.lines.some((l) => l.stream === 'stderr' && l.text.includes(said)), {
      what: `the supervisor to log "${said}"`,
    });
    assert.equal(s.exit, null, `the supervisor died of ${signal}`);
  }
  const ping = await h.run(['ping'], { env: { NODEGUARD_HOME: s.home } });
  assert.equal(ping.code, 0, ping.stderr);
  s.signal('SIGTERM');
  const exit = await s.waitExit();
  assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}`);
});

test('a symlink planted at an app log is refused: its target is untouched and the app runs on', async (t) => {
  const d = new h.DaemonHome(t);
  const logs = path.join(d.home, 'logs');
  fs.mkdirSync(logs, { mode: 0o700 });
  fs.chmodSync(d.home, 0o700);
  const victim = path.join(d.home, 'victim.txt');
  fs.writeFileSync(victim, 'precious\n');
  fs.symlinkSync(victim, path.join(logs, 'planted-out.log'));

  await d.ok(['start', fixture('idle.js'), '--name', 'planted']);
  await d.waitFor(() => /cannot open the log files.*app=planted.*symbolic link/.test(d.daemonLog()), {
    what: 'daemon.log to say the planted log file was refused',
  });
  assert.equal(fs.readFileSync(victim, 'utf8'), 'precious\n', 'the daemon wrote through the symlink');
  const [app] = await d.status();
  assert.equal(app.state, 'running');
  assert.ok(fs.lstatSync(path.join(logs, 'planted-out.log')).isSymbolicLink(), 'the link was replaced');

  // Once the link is gone, SIGHUP lets the app's output reach a real file again.
  fs.unlinkSync(path.join(logs, 'planted-out.log'));
  process.kill(d.daemonPid(), 'SIGHUP');
  await d.waitFor(() => d.daemonLog().includes('SIGHUP: reopening log files'), { what: 'the daemon to take the SIGHUP' });
  await d.ok(['restart', 'planted']);
  const out = path.join(logs, 'planted-out.log');
  await d.waitFor(() => read(out).includes('idle pid='), { what: `${out} to hold the restarted app's line` });
  assert.ok(fs.lstatSync(out).isFile());
  assert.equal(fs.readFileSync(victim, 'utf8'), 'precious\n');
});

test('a symlink planted at daemon.log is refused by start, its target untouched', async (t) => {
  const d = new h.DaemonHome(t);
  fs.chmodSync(d.home, 0o700);
  const victim = path.join(d.home, 'victim.txt');
  fs.writeFileSync(victim, 'precious\n');
  fs.symlinkSync(victim, d.paths.log);
  const result = await d.cli(['start', fixture('idle.js'), '--name', 'idle']);
  assert.notEqual(result.code, 0, `start succeeded: ${result.stdout}`);
  assert.match(result.stderr, /daemon log.*symbolic link/);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  assert.equal(fs.readFileSync(victim, 'utf8'), 'precious\n');
});

test('daemon.log is rotated at the app logs\' size limit', async (t) => {
  const d = new h.DaemonHome(t);
  fs.chmodSync(d.home, 0o700);
  // A daemon.log a few bytes short of the limit: the daemon's first lines take it past.
  const seedLine = 'seed line from an earlier daemon\n';
  const seed = seedLine.repeat(Math.floor((LOG_MAX_SIZE - 8) / seedLine.length));
  fs.writeFileSync(d.paths.log, seed, { mode: 0o600 });
  await d.ok(['start', fixture('idle.js'), '--name', 'idle']);
  const rotated = `${d.paths.log}.1`;
  await d.waitFor(() => fs.existsSync(rotated), { what: `${rotated} to appear` });
  const old = fs.readFileSync(rotated, 'utf8');
  assert.ok(old.startsWith(seed), `${rotated} does not hold the old log`);
  assert.ok(old.length <= LOG_MAX_SIZE, `${rotated} is ${old.length} bytes, over the limit`);
  assert.ok(old.endsWith('\n'), `${rotated} ends mid-line`);
  await d.waitFor(() => read(d.paths.log).includes('supervising'), { what: 'the new daemon.log to hold the daemon\'s lines' });
  assert.ok(fs.statSync(d.paths.log).size < LOG_MAX_SIZE);
});
