#!/usr/bin/env node
'use strict';
// Real PM2 ecosystem files, started under PM2 and under nodeguard with stand-ins for their apps.
//
//   node bench/ecosystem.js DIR [--only 3,7] [--up SECONDS] [--out FILE] [--results] [--no-build]
//
//   --only LIST  only the files whose directory names start with these numbers
//   --up SECONDS how long every instance must stay up (the same processes) after all run [5]
//   --out FILE   also write the markdown there
//   --results    replace the "Real ecosystem files" section of bench/RESULTS.md with this run
//                (bench/run.js keeps that section when it rewrites the file)
//   --no-build   use target/release/nodeguard as it is instead of running scripts/build.js
//
// DIR holds one directory per file (kept outside the repository: they are other projects' files),
// each with the ecosystem file itself and a SOURCE file (`repo: owner/name`, `path: …`,
// `commit: …`). For each one the runner:
//
// 1. copies the file into a fresh project at the path it has in its repository, with absolute
//    paths under /Users, /home, /opt, /var, /srv, /mnt, /www moved under the project's temp dir
//    (both supervisors get the same copy);
// 2. evaluates it as PM2 does (JS: require or import; JSON, or JS if it is not strict JSON; YAML)
//    to learn its apps, and creates a stand-in for everything they run: a small HTTP server for
//    a Node or Bun script (listening on $PORT, else on a fixed port of its own, as a server with its
//    port in code does) that records its runtime, argv,
//    cwd and environment; a package.json with the scripts an `npm`/`yarn` command runs; a
//    node_modules/.bin entry for `npx X`; a Python server for a Python interpreter; a shell
//    script for `sh`/`bash`; an executable for `interpreter: 'none'`; a stand-in program on PATH
//    for a bare command (`ts-node`); `dotenv` for a file that requires it;
// 3. runs `pm2 start FILE` (PM2 installed fresh from npm into the run's temp dir, PM2_HOME there)
//    and then `nodeguard start FILE` (a private NODEGUARD_HOME), from the file's directory, with
//    `--env production` when the file has an `env_production` block;
// 4. classifies each: "starts fully" (every app and instance running, the same processes still
//    up after --up seconds, each run with the runtime, script or command, arguments, cwd and
//    environment the file asks for, as the stand-ins recorded them), "refused" (the message),
//    "wrong" (runs, but with the wrong runtime, command, cwd or environment: what differs) or
//    "not up" (accepted, but not every instance runs and stays up: why).
//
// It is a measurement, not a test: the output is a markdown table per file and totals (to stdout,
// and to --out FILE). Every process started carries NODEGUARD_BENCH_TAG; whatever is left at the
// end of each file is killed.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const u = require('./lib/util');

const REPO = path.resolve(__dirname, '..');
const USAGE = 'usage: node bench/ecosystem.js DIR [--only 3,7] [--up SECONDS] [--out FILE] [--results] [--no-build]';

// ---------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const opts = { dir: null, only: null, up: 5, out: null, results: false, build: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--only') opts.only = new Set(value().split(',').map(Number));
    else if (a === '--up') opts.up = Number(value());
    else if (a === '--out') opts.out = path.resolve(value());
    else if (a === '--no-build') opts.build = false;
    else if (a === '--results') opts.results = true;
    else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (opts.dir) usage(`one directory only (got ${opts.dir} and ${a})`);
    else opts.dir = path.resolve(a);
  }
  if (!opts.dir) usage('the directory of ecosystem files is required');
  if (!fs.existsSync(opts.dir) || !fs.statSync(opts.dir).isDirectory()) usage(`not a directory: ${opts.dir}`);
  if (!(opts.up >= 1 && opts.up <= 120)) usage('--up takes 1 to 120 seconds');
  return opts;
}

function usage(message) {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Stand-ins

/** The stand-in's body, shared by every Node/Bun/Deno stand-in of a run (CommonJS). */
const CORE = `'use strict';
const fs = require('node:fs');
const http = require('node:http');
exports.run = (meta) => {
  const runtime = process.versions.bun ? 'bun' : process.versions.deno ? 'deno' : 'node';
  const report = {
    pid: process.pid, ppid: process.ppid, runtime, via: process.env.STANDIN_VIA || null,
    execPath: process.execPath, execArgv: process.execArgv, script: process.argv[1],
    args: process.argv.slice(2), cwd: process.cwd(), env: { ...process.env }, meta,
  };
  fs.writeFileSync(meta.reports + '/' + process.pid + '.json', JSON.stringify(report));
  const server = http.createServer((req, res) => res.end(JSON.stringify({ pid: process.pid })));
  server.on('error', (err) => {
    fs.writeFileSync(meta.reports + '/' + process.pid + '.error', String(err && err.message));
    console.error('stand-in: ' + err.message);
    process.exit(1);
  });
  // A real server has its port in code when the environment names none: a fixed port per app.
  const port = Number(process.env.PORT) || meta.fixedPort || 0;
  server.listen(port, () => {
    console.log('stand-in ' + meta.key + ' listening on ' + server.address().port);
    if (typeof process.send === 'function') process.send('ready');
  });
  const stop = () => { server.close(); process.exit(0); };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('message', (m) => { if (m === 'shutdown') stop(); });
};
`;

const PYTHON = `import http.server, json, os, signal, sys
meta = json.loads(__META__)
report = {"pid": os.getpid(), "ppid": os.getppid(), "runtime": "python", "via": None,
          "execPath": sys.executable, "execArgv": [], "script": os.path.abspath(sys.argv[0]),
          "args": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "meta": meta}
with open(os.path.join(meta["reports"], "%d.json" % os.getpid()), "w") as f:
    json.dump(report, f)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
server = http.server.HTTPServer(("127.0.0.1", int(os.environ.get("PORT") or 0)), H)
print("stand-in %s listening on %d" % (meta["key"], server.server_address[1]), flush=True)
server.serve_forever()
`;

const NPM_LIKE = new Set(['npm', 'yarn', 'pnpm']);

function writeFile(file, text, mode) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  if (mode) fs.chmodSync(file, mode);
}

/** Splits an `args` value as PM2 does: a string on whitespace, an array as it is. */
function argList(args) {
  if (args == null) return [];
  if (Array.isArray(args)) return args.map(String);
  return String(args).trim().split(/\s+/).filter(Boolean);
}

/** The instance count PM2 runs for `instances` (0, 'max' and -1 as PM2 reads them). */
function instanceCount(value) {
  const cpus = os.availableParallelism ? os.availableParallelism() : os.cpus().length;
  if (value == null) return 1;
  if (typeof value === 'string' && value.toLowerCase() === 'max') return cpus;
  const n = Number.parseInt(value, 10);
  if (Number.isNaN(n)) return 1;
  if (n === 0) return cpus;
  if (n < 0) return Math.max(1, cpus + n);
  return n;
}

/**
 * Plans the stand-ins for one app and writes them. Returns what the app must look like when it
 * runs: { key, name, instances, cwd, runtime, script (file the stand-in runs as), args, lifecycle,
 * env, command }.
 */
function standIn(ctx, app, index, envName) {
  const configDir = path.dirname(ctx.config);
  const cwd = app.cwd ? path.resolve(configDir, String(app.cwd)) : configDir;
  fs.mkdirSync(cwd, { recursive: true });
  const script = String(app.script ?? '');
  const interp = app.interpreter ?? app.exec_interpreter ?? null;
  const key = `app${index}`;
  const meta = { key, name: app.name ?? null, reports: ctx.reports, fixedPort: ctx.basePort + index };
  const expect = {
    key,
    name: app.name ?? path.basename(script.split(/\s+/)[0]).replace(/\.[^.]+$/, ''),
    instances: instanceCount(app.instances),
    cwd,
    runtime: 'node',
    via: null,
    script: null,
    args: argList(app.args),
    lifecycle: null,
    env: { ...(app.env || {}), ...((envName && app[`env_${envName}`]) || {}) },
    command: null,
    // Options for node itself, checked where node runs the script directly.
    nodeArgs: [...argList(app.node_args), ...argList(app.interpreter_args ?? app.interpreterArgs)],
  };
  const nodeStandIn = (file, { esm = false, shebang = false } = {}) => {
    const core = ctx.core;
    const body = esm
      ? `import { createRequire } from 'node:module';\ncreateRequire(import.meta.url)(${JSON.stringify(core)}).run(${JSON.stringify(meta)});\n`
      : `require(${JSON.stringify(core)}).run(${JSON.stringify(meta)});\n`;
    writeFile(file, `${shebang ? '#!/usr/bin/env node\n' : ''}${body}`, shebang ? 0o755 : undefined);
    return file;
  };
  const shellStandIn = (file, shell) => {
    const target = nodeStandIn(path.join(ctx.root, 'standin', `${key}.cjs`));
    writeFile(file, `#!/bin/sh\nSTANDIN_VIA=${shell} exec node ${JSON.stringify(target)} "$@"\n`, 0o755);
    expect.via = shell;
    return file;
  };
  const pythonStandIn = (file) => {
    writeFile(file, PYTHON.replace('__META__', JSON.stringify(JSON.stringify(meta))));
    expect.runtime = 'python';
    return file;
  };

  const words = script.trim().split(/\s+/);
  const interpName = interp ? path.basename(String(interp)) : null;
  const looksLikeCommand =
    !interp && (words.length > 1 || (!script.includes('/') && !path.extname(script) && !fs.existsSync(path.resolve(cwd, script)) && /^[a-z][\w.-]*$/.test(script)));

  if (interpName && interpName !== 'node' && interpName !== 'none' && interpName !== 'env') {
    const file = path.resolve(cwd, script);
    if (/^python/.test(interpName)) {
      expect.script = pythonStandIn(file);
    } else if (['bash', 'sh', 'zsh', 'dash'].includes(interpName)) {
      expect.script = shellStandIn(file, interpName);
    } else {
      expect.runtime = interpName;
      expect.script = nodeStandIn(file, { esm: /\.(mjs|ts|mts)$/.test(file) });
    }
  } else if (interpName === 'none') {
    const file = path.resolve(cwd, script);
    expect.script = nodeStandIn(file, { shebang: true });
  } else if (looksLikeCommand) {
    const [cmd, ...rest0] = words;
    const rest = [...rest0, ...argList(app.args)];
    expect.command = cmd;
    if (NPM_LIKE.has(cmd)) {
      let name;
      let extra;
      if (rest[0] === 'run' || rest[0] === 'run-script') [name, extra] = [rest[1], rest.slice(2)];
      else [name, extra] = [rest[0] || 'start', rest.slice(1)];
      if (cmd === 'npm') extra = extra[0] === '--' ? extra.slice(1) : [];
      else if (extra[0] === '--') extra = extra.slice(1);
      const target = nodeStandIn(path.join(cwd, '.standin', `${key}.cjs`));
      const pkgFile = path.join(cwd, 'package.json');
      const pkg = fs.existsSync(pkgFile) ? JSON.parse(fs.readFileSync(pkgFile, 'utf8')) : { name: 'stand-in', private: true, scripts: {} };
      pkg.scripts[name] = `node ${path.relative(cwd, target)}`;
      writeFile(pkgFile, `${JSON.stringify(pkg, null, 2)}\n`);
      expect.script = target;
      expect.lifecycle = name;
      expect.args = extra;
    } else if (cmd === 'npx') {
      const bin = rest[0];
      const target = path.join(cwd, 'node_modules', '.bin', bin);
      nodeStandIn(target, { shebang: true });
      expect.script = target;
      expect.args = rest.slice(1);
    } else if (cmd === 'node') {
      expect.script = nodeStandIn(path.resolve(cwd, rest[0]));
      expect.args = rest.slice(1);
    } else {
      const target = path.join(ctx.fakeBin, cmd);
      nodeStandIn(target, { shebang: true });
      expect.script = target;
      expect.args = rest;
    }
  } else {
    let file = path.resolve(cwd, script);
    if (script.endsWith('/')) file = path.join(file, 'index.js');
    if (/\.py$/.test(file)) expect.script = pythonStandIn(file);
    else if (/\.sh$/.test(file)) expect.script = shellStandIn(file, 'bash');
    else expect.script = nodeStandIn(file, { esm: /\.(mjs|mts)$/.test(file) });
  }

  // What the file reads besides its scripts: env files.
  for (const envFile of [app.env_file].flat().filter(Boolean)) {
    const file = path.resolve(cwd, String(envFile));
    if (!fs.existsSync(file)) writeFile(file, 'STANDIN_FROM_ENV_FILE=1\n');
  }
  return expect;
}

/** A stand-in for the `dotenv` package (for files that require it), reading .env as dotenv does. */
function dotenvStandIn(dir) {
  const pkg = path.join(dir, 'node_modules', 'dotenv');
  const exportsMap = { '.': './main.js', './config': './config.js', './config.js': './config.js', './package.json': './package.json' };
  writeFile(path.join(pkg, 'package.json'), `${JSON.stringify({ name: 'dotenv', version: '0.0.0-stand-in', main: 'main.js', exports: exportsMap })}\n`);
  writeFile(
    path.join(pkg, 'main.js'),
    `const fs = require('fs');
exports.config = (opts = {}) => {
  const file = opts.path || require('path').resolve(process.cwd(), '.env');
  const parsed = {};
  try {
    for (const line of fs.readFileSync(file, 'utf8').split('\\n')) {
      const m = /^\\s*([\\w.-]+)\\s*=\\s*(.*)?\\s*$/.exec(line);
      if (m) parsed[m[1]] = (m[2] || '').replace(/^(['"])(.*)\\1$/, '$2');
    }
  } catch (error) {
    return { error, parsed };
  }
  for (const [k, v] of Object.entries(parsed)) if (!(k in process.env)) process.env[k] = v;
  return { parsed };
};
`,
  );
  writeFile(path.join(pkg, 'config.js'), "require('./main.js').config();\n");
}

/** Evaluates a PM2 config file as PM2 does; returns its apps (plain data). */
function loadApps(ctx, envName) {
  const loader = `
    const fs = require('fs'); const path = require('path');
    const file = process.argv[1];
    const plain = (x) => JSON.parse(JSON.stringify(x));
    (async () => {
      let conf;
      const ext = path.extname(file);
      const text = fs.readFileSync(file, 'utf8');
      if (ext === '.yml' || ext === '.yaml') conf = require(${JSON.stringify(ctx.jsYaml)}).load(text);
      else if (ext === '.json') { try { conf = JSON.parse(text); } catch { conf = eval('(' + text + ')'); } }
      else if (ext === '.mjs') { const m = await import(file); conf = m.default ?? m; }
      else conf = require(file);
      conf = plain(conf);
      let apps = conf.apps ?? conf;
      if (!Array.isArray(apps)) apps = [apps];
      process.stdout.write(JSON.stringify(apps));
    })().catch((e) => { console.error(String(e && e.message || e)); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['-e', loader, ctx.config], {
    cwd: path.dirname(ctx.config),
    env: { ...ctx.env, PATH: ctx.path },
    encoding: 'utf8',
    timeout: 20_000,
  });
  if (r.status !== 0) throw new Error(`the runner could not evaluate the file: ${(r.stderr || '').trim().split('\n').pop()}`);
  return JSON.parse(r.stdout).filter((a) => a && typeof a === 'object');
}

// ---------------------------------------------------------------------------------------------
// Checking what ran

function readReports(dir) {
  const out = [];
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.json')) continue;
    try {
      const r = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
      if (!u.isGone(r.pid)) out.push(r);
    } catch {
      // half-written: the stand-in died while writing
    }
  }
  return out;
}

function reportErrors(dir) {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.error'))
    .map((f) => fs.readFileSync(path.join(dir, f), 'utf8'))
    .filter((v, i, all) => all.indexOf(v) === i);
}

/** What differs between one stand-in's report and what the file asks for ([] when nothing). */
function differences(rep, exp) {
  const out = [];
  const runtime = rep.runtime;
  if (runtime !== exp.runtime) out.push(`runtime ${runtime}, not ${exp.runtime}`);
  if (exp.via && rep.via !== exp.via) out.push(`not run through ${exp.via}`);
  if (path.resolve(rep.cwd) !== path.resolve(exp.cwd)) out.push(`cwd ${rep.cwd}, not ${exp.cwd}`);
  if (exp.runtime === 'node' && !exp.command && !exp.via) {
    const missing = exp.nodeArgs.filter((a) => !rep.execArgv.includes(a));
    if (missing.length) out.push(`node options ${JSON.stringify(missing)} missing (node got ${JSON.stringify(rep.execArgv)})`);
  }
  if (exp.lifecycle && rep.env.npm_lifecycle_event !== exp.lifecycle) out.push(`not run by the package script '${exp.lifecycle}'`);
  const tail = rep.args.slice(rep.args.length - exp.args.length);
  if (exp.args.length && JSON.stringify(tail) !== JSON.stringify(exp.args)) out.push(`args ${JSON.stringify(rep.args)}, not ${JSON.stringify(exp.args)}`);
  for (const [k, v] of Object.entries(exp.env)) {
    const want = typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
    // nodeguard puts its monitor into NODE_OPTIONS after the app's own options (README, "Any
    // command"): the file's value must still be there, first.
    if (k === 'NODE_OPTIONS' && rep.env[k] && rep.env[k].startsWith(want)) continue;
    if (rep.env[k] !== want) out.push(`env ${k}=${rep.env[k] === undefined ? '(unset)' : JSON.stringify(rep.env[k])}, not ${JSON.stringify(want)}`);
  }
  return out;
}

/** Which planned app a report belongs to (a stand-in shared by apps: by the supervisor's name variable). */
function appOf(rep, expects) {
  const byKey = expects.filter((e) => e.key === rep.meta.key);
  if (byKey.length === 1) return byKey[0];
  return null;
}

/**
 * Waits for `total` live processes in `list()` (pid > 0, online), then --up seconds, then checks
 * they are the same processes, and compares the stand-ins' reports with the plan.
 */
async function judge(ctx, list, expects, up) {
  const total = expects.reduce((n, e) => n + e.instances, 0);
  let first = null;
  try {
    first = await u.waitUntil(
      async () => {
        const procs = await list();
        const reps = readReports(ctx.reports);
        return procs.filter((p) => p.online).length >= total && reps.length >= total ? procs : null;
      },
      { timeout: 20_000, every: 250, what: 'every instance running' },
    );
  } catch {
    const procs = await list().catch(() => []);
    const online = procs.filter((p) => p.online).length;
    const errs = reportErrors(ctx.reports);
    const down = procs.filter((p) => !p.online).map((p) => `${p.name} ${p.status}`);
    return {
      verdict: 'not up',
      why: `${online} of ${total} instance(s) running${down.length ? ` (${[...new Set(down)].join(', ')})` : ''}${errs.length ? `; app error: ${errs.join('; ')}` : ''}`,
    };
  }
  await u.sleep(up * 1000);
  const procs = await list();
  const before = new Map(first.filter((p) => p.online).map((p) => [p.pid, p.restarts]));
  const gone = [...before.keys()].filter((pid) => !procs.some((p) => p.pid === pid && p.online));
  if (gone.length || procs.filter((p) => p.online).length < total) {
    const errs = reportErrors(ctx.reports);
    return { verdict: 'not up', why: `did not stay up ${up}s (${gone.length} process(es) replaced or gone)${errs.length ? `; app error: ${errs.join('; ')}` : ''}` };
  }
  const reps = readReports(ctx.reports);
  const wrong = [];
  for (const exp of expects) {
    const mine = reps.filter((r) => appOf(r, expects) === exp);
    if (mine.length < exp.instances) {
      wrong.push(`${exp.name}: ${mine.length} of ${exp.instances} stand-in(s) reached`);
      continue;
    }
    for (const diff of new Set(mine.flatMap((r) => differences(r, exp)))) wrong.push(`${exp.name}: ${diff}`);
  }
  if (wrong.length) return { verdict: 'wrong', why: wrong.join('; ') };
  return { verdict: 'starts fully', why: '' };
}

// ---------------------------------------------------------------------------------------------
// The two supervisors

async function runPm2(ctx, envName, expects, up) {
  const env = { ...ctx.env, PATH: ctx.path, PM2_HOME: path.join(ctx.root, 'p') };
  const cli = (args, timeout = 60_000) => u.runCmd(process.execPath, [ctx.pm2Bin, ...args], { env, cwd: path.dirname(ctx.config), timeout });
  const args = ['start', ctx.config, ...(envName ? ['--env', envName] : [])];
  const r = await cli(args);
  const out = `${r.stdout}\n${r.stderr}`;
  const errors = out.split('\n').filter((l) => /\[PM2\]\[ERROR\]|\[PM2\]\[WARN\]|Error:/.test(l)).map((l) => l.replace(/\x1b\[[0-9;]*m/g, '').trim());
  const list = async () => {
    const j = await cli(['jlist'], 20_000);
    const text = j.stdout.slice(j.stdout.indexOf('['));
    return JSON.parse(text || '[]').map((a) => ({ name: a.name, pid: a.pid, online: a.pm2_env.status === 'online' && a.pid > 0, status: a.pm2_env.status, restarts: a.pm2_env.restart_time }));
  };
  let result;
  if (r.code !== 0) result = { verdict: 'refused', why: (errors[0] || out.trim().split('\n').pop() || `exit ${r.code}`).slice(0, 200) };
  else {
    result = await judge(ctx, list, expects, up);
    if (result.verdict !== 'starts fully' && errors.length) result.why += `; PM2 said: ${errors[0].slice(0, 160)}`;
  }
  await cli(['kill'], 30_000);
  return result;
}

async function runNodeguard(ctx, envName, expects, up) {
  const home = path.join(ctx.root, 'h');
  const env = { ...ctx.env, PATH: ctx.path, NODEGUARD_HOME: home };
  const cli = (args, timeout = 60_000) => u.runCmd(ctx.bin, args, { env, cwd: path.dirname(ctx.config), timeout });
  const r = await cli(['start', ctx.config, ...(envName ? ['--env', envName] : [])]);
  const warnings = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('nodeguard: warning: '))
    .map((l) => l.slice('nodeguard: warning: '.length));
  const list = async () => {
    const j = await cli(['jlist'], 20_000);
    if (j.code !== 0) return [];
    return JSON.parse(j.stdout || '[]').map((a) => ({ name: a.name, pid: a.pid, online: a.state === 'running' && a.pid > 0, status: a.state, restarts: a.restarts }));
  };
  let result;
  if (r.code !== 0) {
    const lines = r.stderr.split('\n').filter((l) => l && !l.startsWith('nodeguard: warning: '));
    result = { verdict: 'refused', why: (lines[0] || `exit ${r.code}`).replace(/^nodeguard: error: /, '').slice(0, 240) };
  } else {
    result = await judge(ctx, list, expects, up);
  }
  await cli(['kill'], 30_000);
  result.warnings = warnings;
  return result;
}

// ---------------------------------------------------------------------------------------------
// One file

const ABSOLUTE = /(['"`])\/(Users|home|opt|var|srv|mnt|www)\//g;

async function runFile(run, entry, opts) {
  const source = Object.fromEntries(
    fs
      .readFileSync(path.join(entry.dir, 'SOURCE'), 'utf8')
      .split('\n')
      .map((l) => /^(\w+):\s*(.*)$/.exec(l))
      .filter(Boolean)
      .map((m) => [m[1], m[2]]),
  );
  const file = fs.readdirSync(entry.dir).find((f) => f !== 'SOURCE');
  const root = fs.mkdtempSync(path.join(run.tmp, `f${entry.n}-`));
  const config = path.join(root, 'repo', source.path || file);
  const ctx = {
    ...run,
    root,
    config,
    reports: path.join(root, 'reports'),
    fakeBin: path.join(root, 'bin'),
    core: path.join(root, 'standin', 'core.cjs'),
    // Ports the stand-ins of this file listen on when `PORT` is not set, as a server with its
    // port in code does (so instances of one app collide unless the supervisor shares the port).
    basePort: 30000 + (entry.n % 100) * 50,
  };
  ctx.path = [ctx.fakeBin, ...run.pathDirs].join(path.delimiter);
  fs.mkdirSync(ctx.reports, { recursive: true });
  fs.mkdirSync(ctx.fakeBin, { recursive: true });
  writeFile(ctx.core, CORE);
  const text = fs.readFileSync(path.join(entry.dir, file), 'utf8').replace(ABSOLUTE, (_, q, top) => `${q}${root}/abs/${top}/`);
  writeFile(config, text);
  if (/dotenv/.test(text)) dotenvStandIn(path.join(root, 'repo'));
  const envName = /env_production/.test(text) ? 'production' : null;
  const row = { n: entry.n, repo: source.repo || entry.name, path: source.path || file, envName, apps: 0, instances: 0 };
  let expects;
  try {
    const apps = loadApps(ctx, envName);
    expects = apps.map((app, i) => standIn(ctx, app, i, envName));
  } catch (err) {
    row.pm2 = row.ng = { verdict: 'runner error', why: String(err.message).slice(0, 200) };
    return row;
  }
  row.apps = expects.length;
  row.instances = expects.reduce((n, e) => n + e.instances, 0);
  const clear = () => {
    for (const f of fs.readdirSync(ctx.reports)) fs.rmSync(path.join(ctx.reports, f));
  };
  row.pm2 = await runPm2(ctx, envName, expects, opts.up);
  await u.sweep(run.tag);
  clear();
  row.ng = await runNodeguard(ctx, envName, expects, opts.up);
  await u.sweep(run.tag);
  return row;
}

// ---------------------------------------------------------------------------------------------
// Report

function cell(r) {
  if (!r) return '';
  const text = r.why ? `${r.verdict}: ${r.why}` : r.verdict;
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** nodeguard's warnings, without the file's path, one line per message (apps that share it counted). */
function warningsCell(warnings) {
  const byText = new Map();
  for (const w of warnings) {
    const text = w.replace(/^.*?\.(js|cjs|mjs|json|ya?ml): /, '').replace(/^app '[^']*': /, '');
    byText.set(text, (byText.get(text) || 0) + 1);
  }
  return [...byText].map(([t, n]) => (n > 1 ? `${t} (×${n})` : t).replace(/\|/g, '\\|')).join('<br>');
}

function report(rows, meta) {
  const lines = [];
  const count = (who, v) => rows.filter((r) => r[who].verdict === v).length;
  lines.push(`Run: ${meta.date}; pm2 ${meta.pm2}, nodeguard ${meta.ng}, node ${process.version}, ${os.availableParallelism ? os.availableParallelism() : os.cpus().length} CPUs; stay-up window ${meta.up} s.`);
  lines.push('');
  lines.push('| | PM2 | nodeguard |');
  lines.push('|---|---|---|');
  for (const v of ['starts fully', 'refused', 'wrong', 'not up', 'runner error']) {
    lines.push(`| ${v} | ${count('pm2', v)} | ${count('ng', v)} |`);
  }
  lines.push(`| files | ${rows.length} | ${rows.length} |`);
  lines.push('');
  lines.push('| # | repository (file) | apps / instances | PM2 | nodeguard | nodeguard warnings |');
  lines.push('|---|---|---|---|---|---|');
  for (const r of rows) {
    const warn = warningsCell(r.ng.warnings || []);
    lines.push(`| ${r.n} | ${r.repo} (\`${r.path}\`${r.envName ? `, --env ${r.envName}` : ''}) | ${r.apps} / ${r.instances} | ${cell(r.pm2)} | ${cell(r.ng)} | ${warn} |`);
  }
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const entries = fs
    .readdirSync(opts.dir)
    .filter((name) => fs.existsSync(path.join(opts.dir, name, 'SOURCE')))
    .sort()
    .map((name, i) => ({ name, dir: path.join(opts.dir, name), n: Number(/^(\d+)/.exec(name)?.[1] ?? i + 1) }))
    .filter((e) => !opts.only || opts.only.has(e.n));
  if (entries.length === 0) usage(`no file directories (with a SOURCE file) in ${opts.dir}`);

  if (opts.build) {
    const b = spawnSync(process.execPath, [path.join(REPO, 'scripts', 'build.js')], { stdio: 'inherit' });
    if (b.status !== 0) throw new Error('node scripts/build.js failed');
  }
  const bin = path.join(REPO, 'target', 'release', 'nodeguard');
  if (!fs.existsSync(bin)) throw new Error(`no binary at ${bin}: run node scripts/build.js`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-eco-'));
  const tag = `eco-${process.pid}-${Date.now()}`;
  const env = { ...process.env, NODEGUARD_BENCH_TAG: tag };
  for (const k of Object.keys(env)) if (/^(PM2_|NODEGUARD_(HOME|SOCKET|TOKEN|APP|PRELOAD))/.test(k)) delete env[k];
  process.on('exit', () => u.sweepSync(tag));
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

  // PM2 and yarn (for files that run `yarn …`), fresh from npm.
  const tools = path.join(tmp, 'tools');
  fs.mkdirSync(tools);
  fs.writeFileSync(path.join(tools, 'package.json'), '{"private": true}\n');
  console.error('installing pm2@latest and yarn from npm …');
  const inst = await u.runCmd('npm', ['install', 'pm2@latest', 'yarn@1', '--no-audit', '--no-fund', '--loglevel=error', '--no-save'], { cwd: tools, env, timeout: 300_000 });
  const pm2Bin = path.join(tools, 'node_modules', 'pm2', 'bin', 'pm2');
  if (inst.code !== 0 || !fs.existsSync(pm2Bin)) throw new Error(`npm install pm2 yarn failed:\n${inst.stderr.slice(-1500)}`);
  const pm2Version = JSON.parse(fs.readFileSync(path.join(tools, 'node_modules', 'pm2', 'package.json'), 'utf8')).version;
  const jsYaml = require.resolve('js-yaml', { paths: [path.join(tools, 'node_modules', 'pm2')] });
  const ngVersion = (spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout || '').trim().replace(/^nodeguard /, '');

  const run = {
    tmp,
    tag,
    env,
    bin,
    pm2Bin,
    jsYaml,
    // Bun and Deno come from the project's devDependencies; yarn from the tools dir.
    pathDirs: [path.join(tools, 'node_modules', '.bin'), path.join(REPO, 'node_modules', '.bin'), ...(process.env.PATH || '').split(path.delimiter)],
  };

  const rows = [];
  for (const entry of entries) {
    const t0 = Date.now();
    const row = await runFile(run, entry, opts);
    rows.push(row);
    console.error(`${String(row.n).padStart(2)} ${row.repo}: PM2 ${cell(row.pm2)} | nodeguard ${cell(row.ng)} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  const text = report(rows, { date: new Date().toISOString(), pm2: pm2Version, ng: ngVersion, up: opts.up });
  process.stdout.write(text);
  if (opts.out) fs.writeFileSync(opts.out, text);
  if (opts.results) {
    const file = path.join(__dirname, 'RESULTS.md');
    const heading = '## Real ecosystem files';
    const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    const at = old.indexOf(heading);
    const before = at >= 0 ? old.slice(0, at) : old ? `${old.replace(/\n*$/, '')}\n\n` : '';
    const section = [
      heading,
      '',
      `Generated by \`node bench/ecosystem.js DIR --results\` (${rows.length} files from public projects, kept outside the repository; see the runner's header for what it does and how each file is judged). Each file is started under PM2 and under nodeguard with stand-ins for its apps; "starts fully" means every app and instance ran and stayed up ${opts.up} s with the runtime, command, arguments, cwd and environment the file asks for.`,
      '',
      text,
    ].join('\n');
    fs.writeFileSync(file, before + section);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(`bench/ecosystem.js: ${err.stack || err}`);
  process.exit(1);
});
