'use strict';
// The npm packages as users get them: `npm pack` of the root package and of this machine's
// platform package (npm/<target>/, filled by `node scripts/build.js`), both installed offline into
// fresh temp projects with the real npm, then used with the real node:
// - with install scripts (the normal case), node_modules/.bin/nodeguard is the native ELF itself
//   (postinstall put it there), `npx nodeguard --version` works, and it supervises an app with the
//   preload and the addon found in node_modules: the supervisor's own pid is the binary, not node;
// - with --ignore-scripts, .bin/nodeguard is the JS stand-in, which runs the binary and forwards
//   SIGTERM to it;
// - `require('nodeguard-monitor')` loads in the project and `start()` returns false there.
// Plus a check that npm/*/package.json and the root's optionalDependencies agree.
//
// Every wait is on an event (an output line, a process exit) under a generous deadline.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const platform = require('../platform.js');

const ROOT = path.resolve(__dirname, '..');
const ROOT_PACKAGE = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const VERSION = ROOT_PACKAGE.version;
const TRIPLE = platform.platformTriple();
const PLATFORM_DIR = path.join(ROOT, 'npm', TRIPLE);
const ADDON = `nodeguard-monitor.${TRIPLE}.node`;
/** One npm command (pack or an offline install of two local tarballs): generous for a busy CI box. */
const NPM_TIMEOUT_MS = 180_000;
/** Any other wait: a command, the app's first output line, the supervisor's exit. */
const WAIT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Helpers

let scratch;
/** Every process group a test started, killed in `after` whatever happened. */
const groups = new Set();

/**
 * The environment for npm and the installed binaries: no npm_* variables inherited from an
 * enclosing `npm test` (they carry settings such as ignore-scripts), the user's npmrc replaced by
 * an empty one, a private cache, and NODEGUARD_HOME in the scratch dir.
 */
function cleanEnv() {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(key) && !key.startsWith('NODEGUARD_')) env[key] = value;
  }
  env.npm_config_userconfig = path.join(scratch, 'npmrc');
  env.npm_config_cache = path.join(scratch, 'npm-cache');
  env.npm_config_update_notifier = 'false';
  env.NODEGUARD_HOME = path.join(scratch, 'home');
  return env;
}

/** Runs a command to completion; resolves with { stdout, stderr }, fails with both on any error. */
function run(command, args, { cwd, timeout = WAIT_MS } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    const describe = () => `${command} ${args.join(' ')} (in ${cwd})`;
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${describe()}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve({ stdout, stderr });
      const how = signal === 'SIGKILL' ? `killed after ${timeout} ms` : signal || `exit code ${code}`;
      reject(new Error(`${describe()} failed (${how})\n--- stdout\n${stdout}--- stderr\n${stderr}`));
    });
  });
}

/** `npm pack` in `dir` into the scratch dir; returns the tarball's path and its file list. */
async function pack(dir) {
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', scratch], {
    cwd: dir,
    timeout: NPM_TIMEOUT_MS,
  });
  const [info] = JSON.parse(stdout);
  return { tarball: path.join(scratch, info.filename), files: info.files.map((f) => f.path).sort() };
}

/** A fresh project in the scratch dir with both tarballs installed offline; returns its path. */
async function installProject(name, tarballs, extraArgs = []) {
  const dir = path.join(scratch, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({ name, version: '1.0.0', private: true }, null, 2),
  );
  fs.writeFileSync(
    path.join(dir, 'app.js'),
    [
      "const preload = process.execArgv[process.execArgv.indexOf('--require') + 1];",
      "console.log(`ready supervised=${require('nodeguard-monitor').isSupervised()} preload=${preload}`);",
      'setInterval(() => {}, 1000);',
      '',
    ].join('\n'),
  );
  await run(
    'npm',
    ['install', '--offline', '--no-audit', '--no-fund', ...extraArgs, ...tarballs],
    { cwd: dir, timeout: NPM_TIMEOUT_MS },
  );
  return dir;
}

function isElf(file) {
  const magic = Buffer.alloc(4);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, magic, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
}

/**
 * Starts `<project>/node_modules/.bin/nodeguard -m app.js` in its own process group, waits for
 * the app's "ready" line, checks it, sends SIGTERM to the started process and expects exit code 0.
 * `checkRunning(pid)` runs while the app is up.
 */
async function superviseApp(project, checkRunning) {
  const bin = path.join(project, 'node_modules', '.bin', 'nodeguard');
  const child = spawn(bin, ['-m', 'app.js'], {
    cwd: project,
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  groups.add(child.pid);
  let stdout = '';
  let stderr = '';
  let onOutput = () => {};
  child.stdout.setEncoding('utf8').on('data', (chunk) => {
    stdout += chunk;
    onOutput();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const describe = () => `--- stdout\n${stdout}--- stderr\n${stderr}`;

  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no "app | ready" line within ${WAIT_MS} ms\n${describe()}`)), WAIT_MS);
    const finish = (error, value) => {
      clearTimeout(timer);
      onOutput = () => {};
      if (error) reject(error);
      else resolve(value);
    };
    onOutput = () => {
      const match = /^app \| ready (.*)$/m.exec(stdout);
      if (match) finish(null, match[1]);
    };
    child.on('error', (error) => finish(new Error(`cannot run ${bin}: ${error.message}`)));
    exited.then(({ code, signal }) =>
      finish(new Error(`nodeguard exited (${signal || `exit code ${code}`}) before the app was ready\n${describe()}`)),
    );
  });
  const expectedPreload = fs.realpathSync(path.join(project, 'node_modules', 'nodeguard-monitor', 'preload.js'));
  assert.equal(
    ready,
    `supervised=true preload=${expectedPreload}`,
    `the app must run with the installed package's preload, connected to the supervisor\n${describe()}`,
  );
  checkRunning(child.pid);

  child.kill('SIGTERM');
  let timer;
  const exit = await Promise.race([
    exited,
    new Promise((resolve) => (timer = setTimeout(() => resolve(null), WAIT_MS))),
  ]);
  clearTimeout(timer);
  assert.ok(exit, `nodeguard did not exit within ${WAIT_MS} ms of SIGTERM\n${describe()}`);
  assert.deepEqual(exit, { code: 0, signal: null }, `nodeguard's exit after SIGTERM\n${describe()}`);
  groups.delete(child.pid);
  return { stdout, stderr };
}

// ---------------------------------------------------------------------------------------------
// Setup: pack both packages once

let packed;

before(async () => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-pkg-'));
  fs.writeFileSync(path.join(scratch, 'npmrc'), '');
  fs.mkdirSync(path.join(scratch, 'home'));
  for (const file of ['package.json', ADDON, platform.BINARY]) {
    if (!fs.existsSync(path.join(PLATFORM_DIR, file))) {
      throw new Error(
        `npm/${TRIPLE}/${file} is missing: this machine's platform package needs it. ` +
          (file === 'package.json'
            ? `Add npm/${TRIPLE}/ (see npm/linux-x64-gnu/).`
            : 'Build first: node scripts/build.js'),
      );
    }
  }
  const [root, native] = await Promise.all([pack(ROOT), pack(PLATFORM_DIR)]);
  packed = { root, native, tarballs: [root.tarball, native.tarball] };
});

after(() => {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Tests

test('the packed tarballs hold exactly the package files', () => {
  assert.deepEqual(packed.root.files, [
    'README.md',
    'bin/nodeguard',
    'client.d.ts',
    'client.js',
    'drain.js',
    'index.d.ts',
    'index.js',
    'install.js',
    'package.json',
    'platform.js',
    'preload.js',
    'profiler.js',
    'sourcemaps.js',
  ]);
  assert.deepEqual(packed.native.files, ['README.md', ADDON, platform.BINARY, 'package.json'].sort());
});

test('installed with scripts: .bin/nodeguard is the native binary, and it supervises an app', async () => {
  const project = await installProject('with-scripts', packed.tarballs);
  const modules = path.join(project, 'node_modules');
  const bin = fs.realpathSync(path.join(modules, '.bin', 'nodeguard'));
  assert.ok(isElf(bin), `node_modules/.bin/nodeguard resolves to ${bin}, which is not an ELF binary`);
  const nativeBinary = path.join(modules, `nodeguard-monitor-${TRIPLE}`, platform.BINARY);
  assert.equal(
    fs.readFileSync(bin).compare(fs.readFileSync(nativeBinary)),
    0,
    `${bin} is not the platform package's binary`,
  );

  const version = await run(path.join(modules, '.bin', 'nodeguard'), ['--version'], { cwd: project });
  assert.equal(version.stdout.trim(), `nodeguard ${VERSION}`);
  const npx = await run('npx', ['--offline', 'nodeguard', '--version'], { cwd: project, timeout: NPM_TIMEOUT_MS });
  assert.equal(npx.stdout.trim(), `nodeguard ${VERSION}`, 'npx nodeguard --version');

  const { stderr } = await superviseApp(project, (pid) => {
    // No Node process in front: the process we started is the supervisor binary itself.
    assert.equal(fs.realpathSync(`/proc/${pid}/exe`), fs.realpathSync(bin), 'the started process is the binary');
  });
  assert.doesNotMatch(stderr, /preload.*not found/, 'the binary finds preload.js in node_modules');

  const loaded = await run(
    process.execPath,
    ['-e', "const m = require('nodeguard-monitor'); console.log(m.start(), m.isSupervised())"],
    { cwd: project },
  );
  assert.equal(loaded.stdout.trim(), 'false false', "require('nodeguard-monitor').start() outside nodeguard");
  const addon = await run(
    process.execPath,
    ['-e', `console.log(typeof require('nodeguard-monitor-${TRIPLE}').connect)`],
    { cwd: project },
  );
  assert.equal(addon.stdout.trim(), 'function', 'the platform package loads as the native addon');
});

test('installed with --ignore-scripts: .bin/nodeguard runs the binary and forwards SIGTERM', async () => {
  const project = await installProject('without-scripts', packed.tarballs, ['--ignore-scripts']);
  const bin = path.join(project, 'node_modules', '.bin', 'nodeguard');
  assert.match(fs.readFileSync(bin, 'utf8').split('\n')[0], /^#!.*node/, 'without scripts .bin/nodeguard is the JS stand-in');
  const version = await run(bin, ['--version'], { cwd: project });
  assert.equal(version.stdout.trim(), `nodeguard ${VERSION}`);
  let children = [];
  await superviseApp(project, (pid) => {
    // The stand-in's one child is the platform binary, leading its own process group.
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    for (const child of children) groups.add(child);
    assert.equal(children.length, 1, `the stand-in (pid ${pid}) has one child: ${children}`);
    const nativeBinary = path.join(project, 'node_modules', `nodeguard-monitor-${TRIPLE}`, platform.BINARY);
    assert.equal(fs.realpathSync(`/proc/${children[0]}/exe`), fs.realpathSync(nativeBinary));
  });
  // The stand-in exits only after the binary did.
  for (const child of children) groups.delete(child);
  const loaded = await run(process.execPath, ['-e', "console.log(require('nodeguard-monitor').start())"], {
    cwd: project,
  });
  assert.equal(loaded.stdout.trim(), 'false');
});

test('npm/*/package.json and the optionalDependencies agree', () => {
  const dirs = fs.readdirSync(path.join(ROOT, 'npm')).sort();
  assert.ok(dirs.includes(TRIPLE), `no npm/${TRIPLE}/ for this machine`);
  const expected = Object.fromEntries(dirs.map((dir) => [`nodeguard-monitor-${dir}`, VERSION]));
  assert.deepEqual(ROOT_PACKAGE.optionalDependencies, expected, 'optionalDependencies: one per npm/<target>/, same version');
  for (const dir of dirs) {
    const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', dir, 'package.json'), 'utf8'));
    const [os_, cpu, libc] = dir.split('-');
    assert.equal(manifest.name, `nodeguard-monitor-${dir}`, `npm/${dir}: name`);
    assert.equal(manifest.version, VERSION, `npm/${dir}: version`);
    assert.equal(manifest.main, `nodeguard-monitor.${dir}.node`, `npm/${dir}: main`);
    assert.deepEqual(manifest.os, [os_], `npm/${dir}: os`);
    assert.deepEqual(manifest.cpu, [cpu], `npm/${dir}: cpu`);
    const libcField = { gnu: ['glibc'], musl: ['musl'] }[libc];
    assert.deepEqual(manifest.libc, libcField, `npm/${dir}: libc`);
    assert.deepEqual(manifest.files.sort(), [manifest.main, 'nodeguard'].sort(), `npm/${dir}: files`);
  }
});
