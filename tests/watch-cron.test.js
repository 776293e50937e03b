'use strict';
// Watch and cron (issue 14), and PM2's stop and readiness contracts, in daemon mode with real
// files (inotify), a real cron schedule with a seconds field, and apps written for PM2:
// `process.send('ready')` with wait_ready, `process.on('message')` for shutdown_with_message, an
// app that handles SIGINT only.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

/** A fresh project directory holding `files` (name -> text). */
function project(t, files) {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'ng-watch-')));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

/** An app that logs `started <pid> <ms since epoch>` and stays up. */
const STARTER = `console.log('started ' + process.pid + ' ' + Date.now());
setInterval(() => {}, 1000);
`;

/**
 * Every process the supervisor started for an app, from daemon.log: [{ pid, at }]. (Not the app's
 * own output: a process restarted again before its first line, as a burst without a debounce
 * would do, never prints one.)
 */
function starts(d, name) {
  const pattern = new RegExp(`^(\\S+)\\s+INFO app\\{name=${name}(?::\\d+)?\\}: started pid=(\\d+)`, 'gm');
  return [...d.daemonLog().matchAll(pattern)].map((m) => ({ pid: Number(m[2]), at: Date.parse(m[1]) }));
}

function waitStarts(d, name, count, what) {
  return d.waitFor(() => (starts(d, name).length >= count ? starts(d, name) : false), {
    what: what || `${count} starts of ${name}`,
  });
}

/** Resolves after `ms`: only to show that something did NOT happen within a window. */
const quiet = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test('watch: true restarts once per burst of saves, in new directories too; ignore_watch, node_modules and .git change nothing', async (t) => {
  const dir = project(t, {
    'app.js': STARTER,
    'src/lib.js': 'module.exports = 1;\n',
    'node_modules/dep/index.js': '1\n',
    '.git/HEAD': 'ref: x\n',
    'logs/app.log': '',
    'ecosystem.config.js': `module.exports = { apps: [{
      name: 'watched', script: 'app.js', watch: true, ignore_watch: ['logs', '*.tmp'], watch_delay: 400,
    }] };\n`,
  });
  const d = new h.DaemonHome(t);
  const started = await d.ok(['start', 'ecosystem.config.js'], { cwd: dir });
  assert.doesNotMatch(started.stderr, /watch/, 'watch fields draw no warning');
  await waitStarts(d, 'watched', 1);

  // A burst: eight saves 150 ms apart (inside the 400 ms watch_delay, but far enough apart for
  // the app to restart between two of them) make one restart.
  for (let i = 0; i < 8; i += 1) {
    fs.writeFileSync(path.join(dir, 'src/lib.js'), `module.exports = ${i};\n`);
    await quiet(150);
  }
  await waitStarts(d, 'watched', 2, 'a restart after the burst of saves');
  await quiet(1500);
  assert.equal(starts(d, 'watched').length, 2, 'one burst of saves, one restart');

  // Ignored paths: nothing happens.
  fs.writeFileSync(path.join(dir, 'node_modules/dep/index.js'), '2\n');
  fs.writeFileSync(path.join(dir, '.git/HEAD'), 'ref: y\n');
  fs.appendFileSync(path.join(dir, 'logs/app.log'), 'a line\n');
  fs.writeFileSync(path.join(dir, 'src/scratch.tmp'), 'x');
  await quiet(1500);
  assert.equal(starts(d, 'watched').length, 2, 'changes to ignored paths restarted the app');

  // A directory made after the start is watched too.
  fs.mkdirSync(path.join(dir, 'src/routes'));
  await waitStarts(d, 'watched', 3, 'a restart for the new directory');
  await quiet(800);
  fs.writeFileSync(path.join(dir, 'src/routes/users.js'), 'module.exports = {};\n');
  await waitStarts(d, 'watched', 4, 'a restart for a file in the new directory');

  // A stopped app stays stopped whatever changes.
  await d.ok(['stop', 'watched']);
  const before = starts(d, 'watched').length;
  fs.writeFileSync(path.join(dir, 'app.js'), STARTER + '// edited\n');
  await quiet(1200);
  assert.equal(starts(d, 'watched').length, before, 'a stopped app was started by a change');
  const [row] = await d.status();
  assert.equal(row.state, 'stopped');
});

test('--watch with --listen reloads with zero downtime: every request during the reload is answered', async (t) => {
  const dir = project(t, {
    'server.js': `const http = require('node:http');
console.log('started ' + process.pid + ' ' + Date.now());
http.createServer((req, res) => res.end(String(process.pid))).listen(Number(process.argv[2]));
`,
    'public/index.html': '<p>1</p>\n',
  });
  const port = await h.freePort();
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'server.js', '--name', 'web', '--listen', `127.0.0.1:${port}`,
    '--watch', 'public', '--watch-delay', '200ms', '--', String(port)], { cwd: dir });
  const [{ pid: first }] = await waitStarts(d, 'web', 1);

  let stop = false;
  let failures = 0;
  let answered = 0;
  const loop = (async () => {
    while (!stop) {
      try {
        const response = await h.get(port);
        if (response.status === 200) answered += 1;
        else failures += 1;
      } catch {
        failures += 1;
      }
    }
  })();
  fs.writeFileSync(path.join(dir, 'public/index.html'), '<p>2</p>\n');
  await d.waitForStatus((apps) => apps.some((a) => a.name === 'web' && a.state === 'running' && a.pid !== first), {
    what: 'a new web process after the change',
  });
  await quiet(300);
  stop = true;
  await loop;
  assert.equal(failures, 0, `${failures} requests failed during the watch reload (${answered} answered)`);
  assert.ok(answered > 0);
  const describe = await d.ok(['describe', 'web']);
  assert.match(describe.stdout, /index\.html changed: reloading/);

  const missing = await d.cli(['start', 'server.js', '--name', 'other', '--watch', 'nowhere'], { cwd: dir });
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /--watch: \S*nowhere does not exist/);
});

test('cron_restart with a seconds field restarts on schedule, in local time', async (t) => {
  const dir = project(t, { 'app.js': STARTER });
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'app.js', '--name', 'cron', '--cron-restart', '*/2 * * * * *'], { cwd: dir });
  const seen = await waitStarts(d, 'cron', 4, 'three scheduled restarts');
  // Restarts 2..4 began on even seconds (plus the time a graceful restart takes), 2 s apart.
  const scheduled = seen.slice(1, 4);
  for (const { at } of scheduled) {
    assert.ok(at % 2000 < 1000, `a restart began ${at % 2000} ms after an even second: ${JSON.stringify(seen)}`);
  }
  for (let i = 1; i < scheduled.length; i += 1) {
    const gap = scheduled[i].at - scheduled[i - 1].at;
    assert.ok(gap > 1000 && gap < 3000, `restarts ${gap} ms apart: ${JSON.stringify(seen)}`);
  }
  assert.equal(new Set(seen.map((s) => s.pid)).size, seen.length, 'each restart is a new process');

  const bad = await d.cli(['start', 'app.js', '--name', 'bad', '--cron-restart', '* * *'], { cwd: dir });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /cron_restart: '\* \* \*' has 3 fields/);
});

test("wait_ready with process.send('ready') marks the app ready, as monitor.ready() does", async (t) => {
  const dir = project(t, {
    'app.js': `console.log('started ' + process.pid + ' ' + Date.now());
setTimeout(() => { if (process.send) process.send('ready'); }, 300);
setInterval(() => {}, 1000);
`,
    'ecosystem.config.js': `module.exports = { apps: [{
      name: 'pm2ready', script: 'app.js', wait_ready: true, listen_timeout: 2000,
    }] };\n`,
  });
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'ecosystem.config.js'], { cwd: dir });
  const [{ pid }] = await waitStarts(d, 'pm2ready', 1);
  // Past the listen_timeout: still the same, ready process.
  await quiet(2500);
  const rows = await d.status();
  assert.equal(rows.length, 1);
  assert.equal(rows[0].state, 'running', d.describe());
  assert.equal(rows[0].pid, pid, 'the app was killed as not ready');
  assert.equal(starts(d, 'pm2ready').length, 1);
});

/** An app that cleans up on SIGINT only (as written for PM2), writing `marker`. */
function sigintOnly(marker) {
  return `const fs = require('node:fs');
console.log('started ' + process.pid + ' ' + Date.now());
process.on('SIGINT', () => { fs.writeFileSync(${JSON.stringify(marker)}, 'SIGINT cleanup'); process.exit(0); });
setInterval(() => {}, 1000);
`;
}

test('an app that only handles SIGINT gets its cleanup, from a PM2 config (kill_signal SIGINT) and from the CLI', async (t) => {
  const dir = project(t, {});
  const fromFile = path.join(dir, 'file.marker');
  const fromCli = path.join(dir, 'cli.marker');
  fs.writeFileSync(path.join(dir, 'file.js'), sigintOnly(fromFile));
  fs.writeFileSync(path.join(dir, 'cli.js'), sigintOnly(fromCli));
  fs.writeFileSync(path.join(dir, 'ecosystem.config.js'),
    `module.exports = { apps: [{ name: 'file', script: 'file.js', kill_timeout: 20000 }] };\n`);
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'ecosystem.config.js'], { cwd: dir });
  await d.ok(['start', 'cli.js', '--name', 'cli', '--kill-timeout', '20s'], { cwd: dir });
  await waitStarts(d, 'file', 1);
  await waitStarts(d, 'cli', 1);
  const described = await d.ok(['describe', 'file']);
  assert.match(described.stdout, /SIGINT/, 'describe shows the kill signal');
  const began = Date.now();
  await d.ok(['stop', 'all']);
  assert.ok(Date.now() - began < 10_000, 'the stop waited for the kill timeout: the app never got SIGINT');
  assert.equal(fs.readFileSync(fromFile, 'utf8'), 'SIGINT cleanup');
  assert.equal(fs.readFileSync(fromCli, 'utf8'), 'SIGINT cleanup');
});

test("shutdown_with_message: the app gets 'shutdown' on process.on('message'); kill_signal chooses the signal", async (t) => {
  const dir = project(t, {});
  const messageMarker = path.join(dir, 'message.marker');
  const signalMarker = path.join(dir, 'signal.marker');
  fs.writeFileSync(path.join(dir, 'message.js'), `const fs = require('node:fs');
console.log('started ' + process.pid + ' ' + Date.now());
process.on('message', (m) => { if (m === 'shutdown') { fs.writeFileSync(${JSON.stringify(messageMarker)}, m); process.exit(0); } });
process.on('SIGINT', () => {});
setInterval(() => {}, 1000);
`);
  fs.writeFileSync(path.join(dir, 'usr2.js'), `const fs = require('node:fs');
console.log('started ' + process.pid + ' ' + Date.now());
process.on('SIGUSR2', () => { fs.writeFileSync(${JSON.stringify(signalMarker)}, 'SIGUSR2'); process.exit(0); });
process.on('SIGINT', () => {});
setInterval(() => {}, 1000);
`);
  fs.writeFileSync(path.join(dir, 'ecosystem.config.js'), `module.exports = { apps: [
    { name: 'message', script: 'message.js', shutdown_with_message: true, kill_timeout: 20000 },
    { name: 'usr2', script: 'usr2.js', kill_signal: 'SIGUSR2', kill_timeout: 20000 },
  ] };\n`);
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'ecosystem.config.js'], { cwd: dir });
  await waitStarts(d, 'message', 1);
  await waitStarts(d, 'usr2', 1);
  const began = Date.now();
  await d.ok(['stop', 'all']);
  assert.ok(Date.now() - began < 10_000, 'a stop waited for the kill timeout');
  assert.equal(fs.readFileSync(messageMarker, 'utf8'), 'shutdown');
  assert.equal(fs.readFileSync(signalMarker, 'utf8'), 'SIGUSR2');

  const bad = await d.cli(['start', 'usr2.js', '--name', 'x', '--kill-signal', 'SIGFOO'], { cwd: dir });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /unknown signal 'SIGFOO'/);
});

test('foreground mode: nodeguard -m app.js --watch DIR restarts the app on a change', async (t) => {
  const dir = project(t, { 'app.js': STARTER, 'src/lib.js': '1\n' });
  const sup = h.startSupervisor(t, {
    scripts: [path.join(dir, 'app.js')],
    flags: ['--watch', path.join(dir, 'src'), '--watch-delay', '200ms'],
  });
  const first = await sup.waitForLine('app', /^started (\d+)/);
  fs.writeFileSync(path.join(dir, 'src/lib.js'), '2\n');
  await sup.waitFor(() => sup.appLines('app').some((l) => l.startsWith('started ') && !l.startsWith(`started ${first[1]} `)), {
    what: 'a second process after the change',
  });
});
