'use strict';
// What nodeguard runs apps with: `node --require <package>/preload.js app.js`. Connects before the
// app's own code runs. If that fails, says so in one line on stderr and lets the app run anyway
// (unsupervised by heartbeats: the supervisor sees no monitor and treats the app accordingly).
//
// An ES module entry (`.mjs`, a `"type": "module"` package, ESM syntax in a `.js` file) is loaded
// asynchronously, after this preload: the event loop turns while its imports are resolved, so a
// monitor connected now would answer the supervisor's first ping, and the app would count as
// started, before a missing import ends the process. For such an entry the monitor connects once
// the entry module has loaded (or after ESM_LOAD_WAIT_MS, for one whose top-level await runs on),
// so a load failure is an exit while starting, as it is for CommonJS. A CommonJS entry runs
// synchronously right after this file, so there the monitor connects at once and even a
// top-level infinite loop is caught as a hang.

/** Longest wait for an ES module entry to finish loading before the monitor connects anyway. */
const ESM_LOAD_WAIT_MS = 1000;

function startMonitor() {
  try {
    // The supervisor's answer is read by the monitor's thread; a refusal is said then, the same way.
    require('./index.js')._startEarly();
  } catch (error) {
    const message = require('./platform.js').oneLine(error);
    const prefix = 'nodeguard-monitor: ';
    process.stderr.write(`${message.startsWith(prefix) ? message : prefix + message}\n`);
  }
}

/** The entry script's path if Node will load it as an ES module (asynchronously), else null. */
function esmEntry() {
  const main = process.argv[1];
  if (!main) return null;
  const path = require('node:path');
  const fs = require('node:fs');
  let file;
  try {
    file = require.resolve(path.resolve(main));
  } catch {
    return null;
  }
  const loaderFlag = /(^|\s)--(import|loader|experimental-loader)(=|\s|$)/;
  // (The includes() first: a regular expression costs its compilation in every supervised start.)
  const mayHaveLoader = (arg) => (arg.includes('import') || arg.includes('loader')) && loaderFlag.test(arg);
  if ([...process.execArgv, process.env.NODE_OPTIONS || ''].some(mayHaveLoader)) {
    // With loader hooks Node runs every entry, CommonJS too, through the ES module loader.
    return file;
  }
  const extension = path.extname(file);
  if (extension === '.mjs' || extension === '.mts') return file;
  if (extension !== '.js' && extension !== '') return null;
  for (let dir = path.dirname(file); ; ) {
    const candidate = path.join(dir, 'package.json');
    let text;
    try {
      // existsSync first: a failed read throws, and an Error (with its stack) per directory
      // without a package.json is paid in every supervised start.
      if (!fs.existsSync(candidate)) throw null;
      text = fs.readFileSync(candidate, 'utf8');
    } catch {
      const parent = path.dirname(dir);
      if (parent === dir) break;
      dir = parent;
      continue;
    }
    let type;
    try {
      type = JSON.parse(text).type;
    } catch {
      return null;
    }
    if (type === 'module') return file;
    if (type === 'commonjs') return null;
    break;
  }
  // No "type": newer Node versions load a .js file with ESM syntax as an ES module.
  try {
    const source = fs.readFileSync(file, 'utf8');
    if (!source.includes('import') && !source.includes('export')) return null;
    return /^\s*(import\s*[\w{*'"]|export\s)/m.test(source) ? file : null;
  } catch {
    return null;
  }
}

/**
 * Under a command (`nodeguard start npm -- start`, `tsx app.ts`), NODE_OPTIONS preloads this file
 * into every Node process of the app's tree, NODEGUARD_COMMAND=1 says so, and the first process to
 * connect becomes the monitored one (its monitor takes the token out of its own environment, so
 * its children do not compete). The launchers that only start the app are skipped, so that the
 * app's own process, not npm's event loop, carries the monitor: npm, npx, yarn, pnpm, corepack,
 * and tsx's and nodemon's CLIs, which run the app in a child process.
 */
const LAUNCHERS = [
  /[\\/]npm[\\/]bin[\\/](npm|npx)-cli\.js$/,
  /[\\/]yarn[\\/]([^\\/]+[\\/])?bin[\\/]yarn(pkg)?\.c?js$/,
  /[\\/]\.yarn[\\/]releases[\\/]yarn-[^\\/]+\.c?js$/,
  /[\\/]pnpm[\\/]([^\\/]+[\\/])?(bin|dist)[\\/](pnpm|pnpx)\.c?js$/,
  /[\\/]corepack[\\/]dist[\\/][^\\/]+\.js$/,
  /[\\/]tsx[\\/]dist[\\/]cli\.c?mjs$/,
  /[\\/]nodemon[\\/]bin[\\/]nodemon\.js$/,
];

/**
 * Deno reads NODE_OPTIONS' --require too. The monitor needs env and ffi (its Node-API addon)
 * permissions there: without them (`deno app.js`, no -A) it stays out, and the app runs
 * unmonitored instead of failing on a permission error. `deno run -A` grants them.
 */
function denoWithoutPermissions() {
  if (typeof globalThis.Deno === 'undefined') return false;
  try {
    return !['env', 'ffi', 'read'].every((name) => globalThis.Deno.permissions.querySync({ name }).state === 'granted');
  } catch {
    return true;
  }
}

function isLauncher() {
  if (process.env.NODEGUARD_COMMAND !== '1') return false;
  const main = process.argv[1];
  if (!main) return false;
  let real = main;
  try {
    real = require('node:fs').realpathSync(main);
  } catch {}
  return LAUNCHERS.some((launcher) => launcher.test(main) || launcher.test(real));
}

/**
 * Source maps for hang stacks (see sourcemaps.js): hooks where modules are compiled, when this
 * process is supervised. sourcemaps.js itself is loaded only at the first compiled module that
 * carries an inline map (tsx's output), or the first module.registerHooks() (tsx on Node 22+):
 * an app without either never reads or parses it.
 */
function installSourceMaps() {
  const socket = process.env.NODEGUARD_SOCKET;
  if (!socket || !process.env.NODEGUARD_TOKEN || process.versions.bun || typeof globalThis.Deno !== 'undefined') return;
  let maps;
  const recorder = () => (maps ||= require('./sourcemaps.js').recorder(socket));
  // The CommonJS loader's Module, the very object require('node:module') returns, whose
  // registerHooks is already there on Node 22+. Requiring node:module itself would load its
  // wrapper and the ES module loader's parts with it, in every supervised process's start
  // (0.7 M instructions, callgrind, Node 20).
  const Module = module.constructor;
  const compile = Module.prototype._compile;
  if (typeof compile === 'function') {
    Module.prototype._compile = function _compile(content, filename) {
      try {
        // A string search (sourcemaps.js checks exactly): no regular expression to compile.
        if (typeof content !== 'string' || content.includes('sourceMappingURL=data:')) {
          recorder().record(filename, content);
        }
      } catch {}
      return compile.apply(this, arguments);
    };
  }
  const original = Module.registerHooks;
  if (typeof original === 'function') {
    // Hooks run last-registered first: ours goes on top again after each registration.
    Module.registerHooks = function registerHooks(hooks) {
      const handle = original.apply(this, arguments);
      try {
        recorder().hooked(original, Module);
      } catch {}
      return handle;
    };
  }
}

const entry = denoWithoutPermissions() || isLauncher() ? undefined : esmEntry();
if (entry !== undefined && entry !== null) {
  // The entry's top-level server.listen() runs before the monitor connects: the listen patch
  // (shared sockets of cluster mode) must be in place before it.
  try {
    require('./index.js')._prepare();
  } catch {}
}
// Source maps for hang stacks: inline maps of the app's modules are recorded as they load.
if (entry !== undefined) installSourceMaps();
if (entry === undefined) {
  // A launcher (the monitor belongs to the app it starts), or Deno without permissions.
} else if (entry === null) {
  startMonitor();
} else if (/\.[cm]?tsx?$/.test(entry)) {
  // TypeScript through a loader (`--import tsx`): importing the entry here would run before the
  // loader's hooks are registered (Node runs --require preloads first) and fail on `.ts`. The
  // monitor connects after the load wait instead; a load failure still ends the process first.
  setTimeout(startMonitor, ESM_LOAD_WAIT_MS).unref();
} else {
  // By the next tick Node has begun loading the entry itself: importing the same URL then joins
  // that load (the module is evaluated once) and settles when it does.
  process.nextTick(() => {
    if (process.mainModule !== undefined) {
      // It ran as CommonJS after all (and has finished).
      startMonitor();
      return;
    }
    let settled = false;
    const connect = () => {
      if (settled) return;
      settled = true;
      clearTimeout(fallback);
      startMonitor();
    };
    const fallback = setTimeout(connect, ESM_LOAD_WAIT_MS);
    fallback.unref();
    import(require('node:url').pathToFileURL(entry).href).then(connect, () => {
      // Node reports the failure itself and exits 1: the supervisor sees an exit while starting.
      settled = true;
      clearTimeout(fallback);
    });
  });
}
