'use strict';
// Any command under the daemon (issue 14): `nodeguard start npm -- start` with real npm, a shell
// script, a Python app, a TypeScript app through the project's tsx, a Bun app (bun from this
// package's devDependencies), and PM2's `interpreter` / command-line `script` in a config file.
// Through npm the app's own Node process carries the monitor: a hang is caught with the app's
// stack, and stop reaches the app, not just npm.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('./helpers');

const REPO = path.resolve(__dirname, '..');
const BIN_DIR = path.join(REPO, 'node_modules', '.bin');
const FAST = ['--heartbeat-interval', '250ms', '--start-grace', '3s'];

/** PATH with this package's devDependency binaries (bun, tsx) first. */
const PATH_WITH_BIN = `${BIN_DIR}${path.delimiter}${process.env.PATH}`;

const project = (t, files) => h.project(t, files, 'ng-cmd-');

/** An app that writes its pid to `pid-<n>` files, and spins forever once `hang-now` exists. */
const HANGING_APP = `
const fs = require('node:fs');
let n = 0;
while (fs.existsSync('pid-' + n)) n++;
fs.writeFileSync('pid-' + n, String(process.pid));
console.log('app up', process.pid, process.argv[1]);
function spinForever() { for (;;) {} }
setInterval(() => { if (fs.existsSync('hang-now')) { fs.rmSync('hang-now'); spinForever(); } }, 50);
`;

function readPid(dir, n) {
  try {
    return Number(fs.readFileSync(path.join(dir, `pid-${n}`), 'utf8'));
  } catch {
    return null;
  }
}

async function describe(home, name) {
  const result = await home.ok(['describe', name, '--json']);
  return JSON.parse(result.stdout)[0] || JSON.parse(result.stdout);
}

function events(description) {
  const found = description.events || (description.apps && description.apps[0].events);
  return found || [];
}

function logText(home, name) {
  try {
    return fs.readFileSync(path.join(home.home, 'logs', `${name}-out.log`), 'utf8');
  } catch {
    return '';
  }
}

function requireTool(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, PATH: PATH_WITH_BIN } });
  assert.ok(!result.error && result.status === 0,
    `${command} is needed by this test (it comes from package.json's devDependencies or .ci/run): ` +
      `${result.error ? result.error.message : result.stderr}`);
}

test('npm -- start: the app behind npm carries the monitor, a hang shows its stack, stop reaches it', async (t) => {
  requireTool('npm', ['--version']);
  const dir = project(t, [
    ['package.json', JSON.stringify({ name: 'web', private: true, scripts: { start: 'node server.js' } })],
    ['server.js', HANGING_APP],
  ]);
  const home = new h.DaemonHome(t);
  await home.ok(['start', 'npm', '--name', 'web', ...FAST, '--', 'start'], { cwd: dir });
  const first = await home.waitFor(() => readPid(dir, 0), { what: 'the app behind npm to start' });
  const row = await home.waitForStatus((apps) => {
    const app = apps.find((a) => a.name === 'web');
    return app && app.monitored ? app : false;
  }, { what: 'web to be monitored' });
  assert.notEqual(row.pid, first, 'the spawned process is npm; the app is its descendant');

  fs.writeFileSync(path.join(dir, 'hang-now'), '');
  await home.waitForStatus((apps) => apps.find((a) => a.name === 'web' && a.hangs >= 1),
    { what: 'the hang behind npm to be detected' });
  const stack = await home.waitFor(async () => events(await describe(home, 'web')).find((e) => e.kind === 'stack'),
    { what: 'the stack event' });
  assert.match(stack.message, /spinForever \(.*server\.js:\d+/, stack.message);

  const second = await home.waitFor(() => readPid(dir, 1), { what: 'the app to be restarted' });
  await home.waitForStatus((apps) => apps.find((a) => a.name === 'web' && a.monitored && a.state === 'running'),
    { what: 'the restarted app to be monitored' });
  const npmPid = (await home.byName()).web.pid;
  await home.ok(['stop', 'web']);
  await h.waitGone([second, npmPid], { what: 'the app and npm to end on stop' });
  assert.equal((await home.byName()).web.state, 'stopped');
});

test('a shell script and a command line run as commands: run, log, restart, stop', async (t) => {
  const dir = project(t, [
    ['run.sh', '#!/bin/sh\necho "sh up $$"\nexec sleep 600\n', 0o755],
  ]);
  const home = new h.DaemonHome(t);
  await home.ok(['start', 'run.sh', '--start-grace', '500ms'], { cwd: dir });
  const first = await home.waitForStatus((apps) => apps.find((a) => a.name === 'run' && a.state === 'running' && a.pid),
    { what: 'run.sh to run' });
  await home.waitFor(() => logText(home, 'run').includes(`sh up ${first.pid}`), { what: "run.sh's output in its log" });
  await home.ok(['restart', 'run']);
  const second = await home.waitForStatus((apps) => apps.find((a) => a.name === 'run' && a.state === 'running' && a.pid !== first.pid && a.pid),
    { what: 'run.sh to be restarted' });
  await h.waitGone([first.pid], { what: 'the first run.sh to end' });
  // A command line with arguments, found on PATH.
  await home.ok(['start', 'sleep 600', '--name', 'sleeper', '--start-grace', '500ms'], { cwd: dir });
  const sleeper = await home.waitForStatus((apps) => apps.find((a) => a.name === 'sleeper' && a.state === 'running'),
    { what: 'the command line to run' });
  assert.deepEqual(h.procArgv(sleeper.pid).slice(-1), ['600']);
  await home.ok(['stop', 'all']);
  await h.waitGone([second.pid, sleeper.pid], { what: 'the commands to end on stop' });
});

test('python3: runs, logs, restarts and stops, and describe says why it is not monitored', async (t) => {
  requireTool('python3', ['--version']);
  const dir = project(t, [
    ['app.py', 'import os, sys, time\nprint("py up", os.getpid(), flush=True)\ntime.sleep(600)\n'],
  ]);
  const home = new h.DaemonHome(t);
  await home.ok(['start', 'app.py', '--start-grace', '500ms'], { cwd: dir });
  const row = await home.waitForStatus((apps) => apps.find((a) => a.name === 'app' && a.state === 'running' && a.pid),
    { what: 'app.py to run' });
  assert.match(h.procArgv(row.pid)[0], /python3/);
  await home.waitFor(() => logText(home, 'app').includes(`py up ${row.pid}`), { what: "app.py's output in its log" });
  const note = await home.waitFor(async () => events(await describe(home, 'app'))
    .find((e) => e.kind === 'unmonitored' && /not monitored: python3[\d.]* is not Node or Bun/.test(e.message)),
  { what: 'the reason it is not monitored' });
  assert.ok(note);
  const status = await home.ok(['status']);
  assert.match(status.stdout, /unmonitored/);
  await home.ok(['restart', 'app']);
  const second = await home.waitForStatus((apps) => apps.find((a) => a.name === 'app' && a.state === 'running' && a.pid && a.pid !== row.pid),
    { what: 'app.py to restart' });
  await home.ok(['stop', 'app']);
  await h.waitGone([row.pid, second.pid], { what: 'app.py to end' });
});

test('a config file: script as a command line, interpreter python3 and none', async (t) => {
  const dir = project(t, [
    ['package.json', JSON.stringify({ name: 'site', private: true, scripts: { serve: 'node server.js' } })],
    ['server.js', HANGING_APP],
    ['worker.py', 'import time\nprint("worker up", flush=True)\ntime.sleep(600)\n'],
    ['tool', '#!/bin/sh\necho "tool up"\nexec sleep 600\n', 0o755],
    ['ecosystem.config.js', `module.exports = { apps: [
      { name: 'site', script: 'npm run serve', heartbeat_interval: '250ms' },
      { name: 'worker', script: 'worker.py', interpreter: 'python3' },
      { name: 'tool', script: './tool', exec_interpreter: 'none' },
    ] };`],
  ]);
  const home = new h.DaemonHome(t);
  const started = await home.ok(['start', 'ecosystem.config.js'], { cwd: dir });
  assert.doesNotMatch(started.stderr, /interpreter/, 'interpreter is applied, not warned about');
  await home.waitForStatus((apps) => ['site', 'worker', 'tool'].every((n) => apps.find((a) => a.name === n && a.state === 'running')),
    { what: 'the three apps to run' });
  await home.waitForStatus((apps) => apps.find((a) => a.name === 'site' && a.monitored), { what: 'site (through npm run) to be monitored' });
  await home.waitFor(() => logText(home, 'worker').includes('worker up') && logText(home, 'tool').includes('tool up'),
    { what: 'the logs of worker and tool' });
  // The runtime is part of what is saved: after save → kill → resurrect each app runs as before.
  await home.ok(['save']);
  await home.ok(['kill']);
  await home.ok(['resurrect'], { cwd: os.tmpdir() });
  await home.waitForStatus((apps) => ['site', 'worker', 'tool'].every((n) => apps.find((a) => a.name === n && a.state === 'running')),
    { what: 'the three apps to run after resurrect' });
  await home.waitForStatus((apps) => apps.find((a) => a.name === 'site' && a.monitored), { what: 'site to be monitored after resurrect' });
  const worker = (await home.byName()).worker;
  assert.match(h.procArgv(worker.pid)[0], /python3/);
  await home.ok(['stop', 'all']);
});

test('TypeScript: a .ts app runs through the project\'s tsx, monitored; --node-arg="--import tsx" works too', async (t) => {
  requireTool('tsx', ['--version']);
  const dir = project(t, [
    ['app.ts', `const greeting: string = 'ts up';\nconsole.log(greeting, process.pid);\nsetInterval(() => {}, 1000);\n`],
  ]);
  // tsx from the project, as a user's project has it.
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(path.join(REPO, 'node_modules', 'tsx'), path.join(dir, 'node_modules', 'tsx'));
  for (const dep of ['esbuild', 'get-tsconfig', 'resolve-pkg-maps', '@esbuild']) {
    const from = path.join(REPO, 'node_modules', dep);
    if (fs.existsSync(from)) fs.symlinkSync(from, path.join(dir, 'node_modules', dep));
  }
  const home = new h.DaemonHome(t);
  await home.ok(['start', 'app.ts', ...FAST], { cwd: dir });
  const row = await home.waitForStatus((apps) => apps.find((a) => a.name === 'app' && a.monitored), { what: 'app.ts to be monitored' });
  await home.waitFor(() => logText(home, 'app').includes(`ts up ${row.pid}`), { what: "app.ts's output" });
  await home.ok(['start', 'app.ts', '--name', 'explicit', '--node-arg=--import tsx', ...FAST], { cwd: dir });
  const explicit = await home.waitForStatus((apps) => apps.find((a) => a.name === 'explicit' && a.monitored),
    { what: 'app.ts with --node-arg="--import tsx" to be monitored' });
  const argv = h.procArgv(explicit.pid);
  assert.ok(argv.includes('--import') && argv.includes('tsx'), argv.join(' '));
  // interpreter tsx: tsx's CLI is a launcher; the Node process it starts for the app carries the
  // monitor, so a hang in the app is caught.
  fs.writeFileSync(path.join(dir, 'hang.ts'), HANGING_APP);
  await home.ok(['start', 'hang.ts', '--name', 'via-tsx', '--interpreter', path.join(BIN_DIR, 'tsx'), ...FAST], { cwd: dir });
  const viaTsx = await home.waitForStatus((apps) => apps.find((a) => a.name === 'via-tsx' && a.monitored),
    { what: 'hang.ts under --interpreter tsx to be monitored' });
  const appPid = await home.waitFor(() => readPid(dir, 0), { what: 'the app under tsx to start' });
  assert.notEqual(appPid, viaTsx.pid, "the app runs in tsx's child process");
  fs.writeFileSync(path.join(dir, 'hang-now'), '');
  await home.waitForStatus((apps) => apps.find((a) => a.name === 'via-tsx' && a.hangs >= 1),
    { what: 'the hang under tsx to be detected' });
  await home.ok(['stop', 'all']);
  await h.waitGone([row.pid, explicit.pid, appPid], { what: 'the TypeScript apps to end' });
});

test('bun: --interpreter bun runs, logs, restarts and stops the app, and the preloaded monitor catches a hang', async (t) => {
  requireTool('bun', ['--version']);
  const dir = project(t, [['server.js', HANGING_APP.replace("console.log('app up'", "console.log(typeof Bun, 'app up'")]]);
  const home = new h.DaemonHome(t, { env: { PATH: PATH_WITH_BIN } });
  await home.ok(['start', 'server.js', '--interpreter', 'bun', ...FAST], { cwd: dir });
  const row = await home.waitForStatus((apps) => apps.find((a) => a.name === 'server' && a.monitored),
    { what: 'the Bun app to be monitored' });
  assert.match(fs.readlinkSync(`/proc/${row.pid}/exe`), /bun/);
  await home.waitFor(() => logText(home, 'server').includes(`object app up ${row.pid}`), { what: "the Bun app's output" });
  fs.writeFileSync(path.join(dir, 'hang-now'), '');
  await home.waitForStatus((apps) => apps.find((a) => a.name === 'server' && a.hangs >= 1 && a.state === 'running' && a.pid !== row.pid),
    { what: 'the Bun hang to be detected and the app restarted' });
  const before = (await home.byName()).server.pid;
  await home.ok(['restart', 'server']);
  const last = await home.waitForStatus((apps) => apps.find((a) => a.name === 'server' && a.monitored && a.pid !== before),
    { what: 'the Bun app to restart' });
  await home.ok(['stop', 'server']);
  await h.waitGone([last.pid], { what: 'the Bun app to end' });
});

test('deno: --interpreter deno runs, logs, restarts and stops the app; describe says why it is not monitored', async (t) => {
  requireTool('deno', ['--version']);
  const dir = project(t, [['app.js', "console.log('deno up', typeof Deno, Deno.pid);\nsetInterval(() => {}, 1000);\n"]]);
  const home = new h.DaemonHome(t, { env: { PATH: PATH_WITH_BIN } });
  await home.ok(['start', 'app.js', '--interpreter', 'deno', '--start-grace', '500ms'], { cwd: dir });
  const row = await home.waitForStatus((apps) => apps.find((a) => a.name === 'app' && a.state === 'running' && a.pid),
    { what: 'the Deno app to run' });
  await home.waitFor(() => logText(home, 'app').includes(`deno up object ${row.pid}`), { what: "the Deno app's output" });
  await home.waitFor(async () => events(await describe(home, 'app'))
    .find((e) => e.kind === 'unmonitored' && /not monitored: deno without permissions for the monitor/.test(e.message)),
  { what: 'the reason the Deno app is not monitored' });
  await home.ok(['restart', 'app']);
  const second = await home.waitForStatus((apps) => apps.find((a) => a.name === 'app' && a.state === 'running' && a.pid && a.pid !== row.pid),
    { what: 'the Deno app to restart' });
  await home.ok(['stop', 'app']);
  await h.waitGone([row.pid, second.pid], { what: 'the Deno app to end' });
  // With the permissions (`deno run -A`), the monitor loads through Node-API: a hang is caught.
  fs.writeFileSync(path.join(dir, 'hang.js'), HANGING_APP.replace("const fs = require('node:fs');", "import fs from 'node:fs';"));
  await home.ok(['start', 'hang.js', '--interpreter', 'deno', '--interpreter-args', 'run -A', ...FAST], { cwd: dir });
  const monitored = await home.waitForStatus((apps) => apps.find((a) => a.name === 'hang' && a.monitored),
    { what: 'the Deno app with -A to be monitored' });
  fs.writeFileSync(path.join(dir, 'hang-now'), '');
  await home.waitForStatus((apps) => apps.find((a) => a.name === 'hang' && a.hangs >= 1),
    { what: 'the Deno hang to be detected' });
  await home.ok(['stop', 'hang']);
  await h.waitGone([monitored.pid], { what: 'the monitored Deno app to end' });
});
