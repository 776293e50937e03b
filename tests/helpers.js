'use strict';
// Shared harness for the integration tests: runs the real `nodeguard` binary with real node apps in
// a fresh temporary NODEGUARD_HOME, collects its output, and waits on events (an output line, a
// status change, a process ending) under one generous deadline instead of sleeping.
//
// Every process a test starts is killed in its `t.after` hook, failure or not: the supervisor's
// process group and the group of every worker pid ever seen (workers lead their own groups).

const { spawn, spawnSync, execFile } = require('node:child_process');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const FIXTURES = path.join(__dirname, 'fixtures');
const BIN = process.env.NODEGUARD_BIN || path.join(REPO, 'target', 'release', 'nodeguard');

/** Default deadline for one wait: generous, because a loaded 2-core CI box is slow, not broken. */
const DEFAULT_TIMEOUT_MS = Number(process.env.NODEGUARD_TEST_TIMEOUT_MS) || 15_000;
/** How often `status --json` is polled while waiting on a status condition. */
const STATUS_POLL_MS = 50;
/** How often /proc is checked while waiting for a process to end (there is no event for that). */
const PROC_POLL_MS = 10;
/** Output lines quoted in a failure message. */
const TAIL_LINES = 30;
/** How long after the supervisor's exit its output pipes may take to drain. */
const PIPE_DRAIN_MS = 1_000;
/** sun_path is 108 bytes on Linux; stay well clear of it. */
const MAX_SOCKET_PATH = 100;

// ---------------------------------------------------------------------------------------------
// Preconditions

let checked = false;

/** Fails loudly if the binary has not been built or `node` is not on PATH. */
function checkPreconditions() {
  if (checked) return;
  if (!fs.existsSync(BIN)) {
    throw new Error(
      `nodeguard binary not found at ${BIN}.\n` +
        'Build it first: node scripts/build.js  (or set NODEGUARD_BIN to a built binary)',
    );
  }
  const node = spawnSync('node', ['--version'], { encoding: 'utf8' });
  if (node.error || node.status !== 0) {
    throw new Error(
      '`node` is not on PATH: nodeguard starts apps with the `node` found on PATH, so the ' +
        `integration tests need it (${node.error ? node.error.message : node.stderr})`,
    );
  }
  checked = true;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Every process group a test started, so even an aborted run cleans up on exit. */
const liveGroups = new Set();

/** The state letter from /proc/<pid>/stat, or null if there is no such process. */
function procState(pid) {
  let stat;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name is in parentheses and may contain anything; the state follows the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

/** A process is gone when it has no /proc entry or is a zombie waiting to be reaped. */
function isGone(pid) {
  const state = procState(pid);
  return state === null || state === 'Z';
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** Only signal a pid that is still one of ours, in case it died and the number was reused. */
function isOurs(pid) {
  const cmd = cmdline(pid);
  return cmd.includes(REPO) || cmd.includes(BIN);
}

function killGroup(pid) {
  if (isGone(pid) || !isOurs(pid)) return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // ESRCH: already gone, or not a group leader.
    }
  }
}

process.on('exit', () => {
  for (const pid of liveGroups) killGroup(pid);
});

/**
 * Waits until every pid is gone (see isGone), polling /proc. Resolves with the elapsed ms, or
 * rejects naming the survivors.
 */
async function waitGone(pids, { timeout = DEFAULT_TIMEOUT_MS, what = 'processes to end' } = {}) {
  const start = performance.now();
  for (;;) {
    const alive = pids.filter((pid) => !isGone(pid));
    const elapsed = performance.now() - start;
    if (alive.length === 0) return elapsed;
    if (elapsed > timeout) {
      const detail = alive.map((pid) => `${pid} (state ${procState(pid)}: ${cmdline(pid)})`);
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; still alive: ${detail.join(', ')}`);
    }
    await sleep(PROC_POLL_MS);
  }
}

/** Pids of live processes whose command line contains `needle`. */
function processesMatching(needle) {
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || isGone(pid)) continue;
    if (cmdline(pid).includes(needle)) found.push(pid);
  }
  return found;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Homes and the CLI

/** A fresh NODEGUARD_HOME under os.tmpdir(), short enough for Unix socket paths. */
function makeHome() {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-'));
  const longest = path.join(home, 'run', 'control.sock');
  if (Buffer.byteLength(longest) >= MAX_SOCKET_PATH) {
    throw new Error(`temp dir too deep for a Unix socket path: ${longest}; set TMPDIR to a short path`);
  }
  return home;
}

/** Paths of the two sockets in a home. */
function sockets(home) {
  return {
    control: path.join(home, 'run', 'control.sock'),
    worker: path.join(home, 'run', 'worker.sock'),
  };
}

/**
 * Runs the binary to completion. Resolves with { code, signal, stdout, stderr, ms }; never rejects
 * on a non-zero exit. A run longer than `timeout` is killed and reported as such.
 */
function run(args, { env, timeout = DEFAULT_TIMEOUT_MS, cwd = os.tmpdir() } = {}) {
  checkPreconditions();
  const start = performance.now();
  return new Promise((resolve) => {
    const child = execFile(
      BIN,
      args,
      { env: { ...process.env, ...env }, cwd, timeout, killSignal: 'SIGKILL', encoding: 'utf8' },
      (error, stdout, stderr) => {
        resolve({
          code: child.exitCode,
          signal: child.signalCode,
          timedOut: Boolean(error && error.killed),
          stdout,
          stderr,
          ms: performance.now() - start,
        });
      },
    );
  });
}

/** `nodeguard status --home <home> --json`, raw: { code, stdout, stderr, ... }. */
/**
 * The apps of a finished `status --json` run, remembered on `holder.lastStatus` (each pid also
 * reported to `sawPid`, so cleanup finds it); null with `holder.lastStatusError` set if it failed.
 */
function readStatus(result, holder, sawPid) {
  if (result.code !== 0) {
    holder.lastStatusError = `exit ${result.code}: ${result.stderr.trim()}`;
    return null;
  }
  try {
    const apps = JSON.parse(result.stdout);
    holder.lastStatus = apps;
    for (const app of apps) if (Number.isInteger(app.pid)) sawPid(app.pid);
    return apps;
  } catch (err) {
    holder.lastStatusError = `invalid JSON (${err.message}): ${result.stdout}`;
    return null;
  }
}

function statusRaw(home, { env } = {}) {
  return run(['status', '--home', home, '--json'], { env });
}

/** The parsed `status --json` array; throws with the CLI's own words if it fails. */
async function status(home) {
  const result = await statusRaw(home);
  if (result.code !== 0) {
    throw new Error(`nodeguard status exited ${result.code}: ${result.stderr.trim()}`);
  }
  try {
    return JSON.parse(result.stdout);
  } catch (err) {
    throw new Error(`nodeguard status --json printed invalid JSON (${err.message}): ${result.stdout}`);
  }
}

// ---------------------------------------------------------------------------------------------
// A running supervisor

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;
/** `<name> | <message>`, the prefix nodeguard puts on every app output line. */
const APP_LINE = /^([A-Za-z0-9._-]+) \| (.*)$/;
const PID_IN_LINE = /\bpid=(\d+)\b/;
const LISTENING = /^listening (\d+) pid=(\d+)$/;

class Supervisor extends EventEmitter {
  constructor({ home, args, env, cwd = os.tmpdir() }) {
    super();
    this.home = home;
    this.args = args;
    /** { stream: 'stdout'|'stderr', raw, text, app, message, at } in arrival order. */
    this.lines = [];
    /** Every worker pid seen in output or status, for cleanup. */
    this.workerPids = new Set();
    this.exit = null;
    this.lastStatus = null;
    this.lastStatusError = null;

    this.child = spawn(BIN, args, {
      cwd,
      env: { ...process.env, NODEGUARD_HOME: home, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.pid = this.child.pid;
    liveGroups.add(this.pid);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        // 'exit' can come before the last output lines; report the exit once the pipes are drained
        // ('close'), or shortly after if something else still holds them open.
        const info = { code, signal, at: performance.now() };
        const done = () => {
          if (this.exit) return;
          clearTimeout(timer);
          this.exit = info;
          this.emit('change');
          resolve(info);
        };
        const timer = setTimeout(done, PIPE_DRAIN_MS);
        this.child.once('close', done);
      });
    });
    this.child.on('error', (err) => {
      this.exit = { code: null, signal: null, error: err, at: performance.now() };
      this.emit('change');
    });
    this._collect(this.child.stdout, 'stdout');
    this._collect(this.child.stderr, 'stderr');
  }

  _collect(stream, name) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop();
      for (const raw of parts) this._line(name, raw);
    });
    stream.on('end', () => {
      if (partial) this._line(name, partial);
      partial = '';
    });
  }

  _line(stream, raw) {
    const text = raw.replace(ANSI, '');
    const match = APP_LINE.exec(text);
    const line = {
      stream,
      raw,
      text,
      app: match ? match[1] : null,
      message: match ? match[2] : null,
      at: performance.now(),
    };
    this.lines.push(line);
    const pid = line.message && PID_IN_LINE.exec(line.message);
    if (pid) this._sawWorker(Number(pid[1]));
    this.emit('change');
  }

  _sawWorker(pid) {
    if (!this.workerPids.has(pid)) {
      this.workerPids.add(pid);
      liveGroups.add(pid);
    }
  }

  /** Lines an app printed (stdout by default), prefix removed. */
  appLines(app, stream = 'stdout') {
    return this.lines.filter((l) => l.app === app && l.stream === stream).map((l) => l.message);
  }

  /** Resolves on the next output line or exit, or after `ms`, whichever is first. */
  _nextChange(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.off('change', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.on('change', done);
    });
  }

  /** Output tail and latest status, for failure messages. */
  describe() {
    const tail = this.lines.slice(-TAIL_LINES).map((l) => `  [${l.stream}] ${l.raw}`);
    const parts = [
      `supervisor pid ${this.pid}, home ${this.home}, args: ${this.args.join(' ')}`,
      this.exit ? `supervisor exited: code ${this.exit.code}, signal ${this.exit.signal}` : 'supervisor running',
      `last ${tail.length} output lines:`,
      ...(tail.length ? tail : ['  (none)']),
      `last status: ${this.lastStatus ? JSON.stringify(this.lastStatus) : `none (${this.lastStatusError})`}`,
    ];
    return parts.join('\n');
  }

  /**
   * Re-evaluates `predicate` (may be async) on every output line and every STATUS_POLL_MS until it
   * returns a truthy value, which is returned. Fails naming `what`, with the output tail, on the
   * deadline or if the supervisor exits first (unless `exitOk`).
   */
  async waitFor(predicate, { timeout = DEFAULT_TIMEOUT_MS, what = 'a condition', exitOk = false } = {}) {
    const deadline = performance.now() + timeout;
    for (;;) {
      const exitedBefore = this.exit;
      const value = await predicate(this);
      if (value) return value;
      if (exitedBefore && !exitOk) {
        throw new Error(`supervisor exited while waiting for ${what}\n${this.describe()}`);
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(`timed out after ${timeout} ms waiting for ${what}\n${this.describe()}`);
      }
      await this._nextChange(Math.min(STATUS_POLL_MS, left));
    }
  }

  /** The parsed status, or null while the control socket does not answer. */
  async tryStatus() {
    return readStatus(await statusRaw(this.home), this, (pid) => this._sawWorker(pid));
  }

  /** The parsed status; throws if the supervisor does not answer. */
  async status() {
    const apps = await this.tryStatus();
    if (!apps) throw new Error(`status failed: ${this.lastStatusError}\n${this.describe()}`);
    return apps;
  }

  /** Polls status until `predicate(apps)` is truthy; returns its value. */
  waitForStatus(predicate, options) {
    return this.waitFor(async () => {
      const apps = await this.tryStatus();
      return apps ? predicate(apps) : false;
    }, options);
  }

  /** Status rows by name once every named app (default: all) is running. */
  async waitRunning(names, options = {}) {
    return this.waitForStatus(
      (apps) => {
        const wanted = names || apps.map((a) => a.name);
        const byName = Object.fromEntries(apps.map((a) => [a.name, a]));
        return wanted.length > 0 && wanted.every((n) => byName[n] && byName[n].state === 'running')
          ? byName
          : false;
      },
      { what: `apps ${names ? names.join(', ') : '(all)'} to be running`, ...options },
    );
  }

  /** Waits for a line from `app` matching `pattern`, at or after line index `from`. */
  waitForLine(app, pattern, { from = 0, stream = 'stdout', ...options } = {}) {
    return this.waitFor(
      () => {
        for (let i = from; i < this.lines.length; i++) {
          const l = this.lines[i];
          if (l.app === app && l.stream === stream) {
            const m = pattern.exec(l.message);
            if (m) return m;
          }
        }
        return false;
      },
      { what: `${app} to print ${pattern}`, ...options },
    );
  }

  /** { port, pid } from the app's latest `listening` line whose pid is not in `notPids`. */
  waitListening(app, { notPids = [], ...options } = {}) {
    return this.waitFor(
      () => {
        const lines = this.appLines(app);
        for (let i = lines.length - 1; i >= 0; i--) {
          const m = LISTENING.exec(lines[i]);
          if (m && !notPids.includes(Number(m[2]))) return { port: Number(m[1]), pid: Number(m[2]) };
        }
        return false;
      },
      { what: `${app} to print "listening <port> pid=<pid>"${notPids.length ? ` from a pid other than ${notPids}` : ''}`, ...options },
    );
  }

  signal(name) {
    process.kill(this.pid, name);
  }

  /** Resolves with { code, signal } once the supervisor exited, or fails after `timeout`. */
  async waitExit({ timeout = DEFAULT_TIMEOUT_MS, what = 'the supervisor to exit' } = {}) {
    await this.waitFor(() => this.exit, { timeout, what, exitOk: true });
    await this.exited;
    return this.exit;
  }

  /** Kills everything this supervisor and its workers may have left, then removes the home. */
  async cleanup() {
    for (const pid of [this.pid, ...this.workerPids]) {
      killGroup(pid);
      liveGroups.delete(pid);
    }
    if (!this.exit) await Promise.race([this.exited, sleep(2_000)]);
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

/**
 * Starts `nodeguard [flags] -m <fixture>… [-- appArgs]` in a fresh home, registered for cleanup
 * on `t`. `scripts` are fixture file names (resolved in tests/fixtures) or absolute paths.
 */
function startSupervisor(t, { scripts, flags = [], appArgs = [], env = {}, home = makeHome() }) {
  checkPreconditions();
  const args = [...flags];
  for (const script of scripts) args.push('-m', path.isAbsolute(script) ? script : path.join(FIXTURES, script));
  if (appArgs.length) args.push('--', ...appArgs);
  const supervisor = new Supervisor({ home, args, env });
  t.after(() => supervisor.cleanup());
  return supervisor;
}

// ---------------------------------------------------------------------------------------------
// HTTP and sockets

/** GET http://127.0.0.1:<port><path> on a fresh connection: { status, body }. */
function get(port, urlPath = '/', { timeout = 2_000, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent, timeout }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET :${port}${urlPath} timed out after ${timeout} ms`)));
    req.on('error', reject);
  });
}

/** A 4-byte big-endian length + JSON frame, as on both nodeguard sockets. */
function frame(message) {
  const payload = Buffer.from(JSON.stringify(message));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/**
 * Connects to a Unix socket, writes `bytes`, and collects what comes back until the peer closes
 * the connection. Resolves { closed, frames, bytes } where `closed` is false if the peer was still
 * holding the connection open after `timeout`.
 */
function exchange(socketPath, bytes, { timeout = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const socket = net.createConnection(socketPath);
    let settled = false;
    const finish = (closed) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const data = Buffer.concat(chunks);
      resolve({ closed, frames: decodeFrames(data).frames, bytes: data });
    };
    const timer = setTimeout(() => finish(false), timeout);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', (err) => {
      // A reset after the peer closed on us still means "closed"; failing to connect does not.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true);
      else if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(err);
      }
    });
  });
}

/**
 * Splits bytes into the length-prefixed JSON frames of the wire protocol. Resolves { frames, rest }:
 * a frame that is not JSON becomes { unparsable: text }; `rest` counts the bytes of a trailing,
 * incomplete frame.
 */
function decodeFrames(data) {
  const frames = [];
  let offset = 0;
  while (data.length - offset >= 4) {
    const len = data.readUInt32BE(offset);
    if (data.length - offset - 4 < len) break;
    const payload = data.subarray(offset + 4, offset + 4 + len).toString('utf8');
    try {
      frames.push(JSON.parse(payload));
    } catch {
      frames.push({ unparsable: payload });
    }
    offset += 4 + len;
  }
  return { frames, rest: data.length - offset };
}

// ---------------------------------------------------------------------------------------------
// Daemon mode: `nodeguard start|stop|…` against a background daemon in a fresh home

/** Environment variable every client, and so the daemon and its apps, carries: finds strays. */
const HOME_MARKER = 'NODEGUARD_TEST_HOME';
/** Lines of daemon.log quoted in a failure message. */
const DAEMON_LOG_TAIL = 30;

/** Every DaemonHome not cleaned up yet, so even an aborted run kills its daemon and apps. */
const liveDaemonHomes = new Set();

/** Live (non-zombie) pids whose environment holds `<name>=<value>`; unreadable ones are skipped. */
function processesWithEnv(name, value) {
  const needle = Buffer.from(`\0${name}=${value}\0`);
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || isGone(pid)) continue;
    let environ;
    try {
      environ = fs.readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue;
    }
    if (Buffer.concat([Buffer.from([0]), environ]).includes(needle)) found.push(pid);
  }
  return found;
}

/** The environment of a live process as an object ({} if it cannot be read). */
function procEnv(pid) {
  try {
    const env = {};
    for (const entry of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
      const at = entry.indexOf('=');
      if (at > 0) env[entry.slice(0, at)] = entry.slice(at + 1);
    }
    return env;
  } catch {
    return {};
  }
}

/** argv of a live process as an array ([] if gone). */
function procArgv(pid) {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').slice(0, -1);
  } catch {
    return [];
  }
}

/**
 * A fresh NODEGUARD_HOME for daemon-mode tests, registered for cleanup on `t`. Every CLI run gets
 * NODEGUARD_HOME and a marker variable in its environment; the daemon a client launches inherits
 * both, and so do its apps, so cleanup finds every process of this home (daemon from the lock
 * file, apps from status, strays by the marker) and SIGKILLs its process group, failure or not.
 */
class DaemonHome {
  constructor(t, { env = {} } = {}) {
    checkPreconditions();
    this.home = makeHome();
    this.env = { NODEGUARD_HOME: this.home, [HOME_MARKER]: this.home, ...env };
    /** Every daemon and app pid seen, for cleanup. */
    this.pids = new Set();
    this.lastStatus = null;
    this.lastStatusError = null;
    this.history = [];
    liveDaemonHomes.add(this);
    if (t) t.after(() => this.cleanup());
  }

  get paths() {
    return { ...sockets(this.home), lock: path.join(this.home, 'run', 'supervisor.lock'), log: path.join(this.home, 'daemon.log') };
  }

  /** Runs `nodeguard <args>` with this home (from the environment), cwd tests/fixtures. */
  async cli(args, { cwd = FIXTURES, timeout, env = {} } = {}) {
    const result = await run(args, { env: { ...this.env, ...env }, cwd, timeout });
    this.history.push(`$ nodeguard ${args.join(' ')} -> ${result.timedOut ? 'timed out' : `exit ${result.code}${result.signal ? ` ${result.signal}` : ''}`}` +
      `${result.stderr.trim() ? ` stderr: ${result.stderr.trim().split('\n').join(' / ')}` : ''}`);
    this.daemonPid();
    return result;
  }

  /** Like cli(), but fails (with the CLI's words) unless it exited 0. */
  async ok(args, options) {
    const result = await this.cli(args, options);
    if (result.code !== 0) {
      throw new Error(`nodeguard ${args.join(' ')} exited ${result.code} (signal ${result.signal}, timed out ${result.timedOut}):\n` +
        `stdout: ${result.stdout}\nstderr: ${result.stderr}\n${this.describe()}`);
    }
    return result;
  }

  /** The pid in the lock file (the latest daemon's, maybe no longer running), or null. */
  daemonPid() {
    let text;
    try {
      text = fs.readFileSync(this.paths.lock, 'utf8').trim();
    } catch {
      return null;
    }
    const pid = /^\d+$/.test(text) ? Number(text) : null;
    if (pid) this._saw(pid);
    return pid;
  }

  _saw(pid) {
    if (!this.pids.has(pid)) {
      this.pids.add(pid);
      liveGroups.add(pid);
    }
  }

  /** Parsed `status --json`, or null (with lastStatusError) when it fails. */
  async tryStatus() {
    const result = await run(['status', '--json'], { env: this.env, cwd: FIXTURES });
    return readStatus(result, this, (pid) => this._saw(pid));
  }

  async status() {
    const apps = await this.tryStatus();
    if (!apps) throw new Error(`status failed: ${this.lastStatusError}\n${this.describe()}`);
    return apps;
  }

  /** Status rows by name. */
  async byName() {
    return Object.fromEntries((await this.status()).map((a) => [a.name, a]));
  }

  /** Polls until `predicate()` (may be async) is truthy; returns its value. */
  async waitFor(predicate, { timeout = DEFAULT_TIMEOUT_MS, what = 'a condition' } = {}) {
    const deadline = performance.now() + timeout;
    for (;;) {
      const value = await predicate();
      if (value) return value;
      if (performance.now() > deadline) {
        throw new Error(`timed out after ${timeout} ms waiting for ${what}\n${this.describe()}`);
      }
      await sleep(STATUS_POLL_MS);
    }
  }

  /** Polls status until `predicate(apps)` is truthy. */
  waitForStatus(predicate, options) {
    return this.waitFor(async () => {
      const apps = await this.tryStatus();
      return apps ? predicate(apps) : false;
    }, options);
  }

  /** Live processes of this home (daemon and apps) by the marker in their environment. */
  processes() {
    const found = processesWithEnv(HOME_MARKER, this.home);
    for (const pid of found) this._saw(pid);
    return found;
  }

  daemonLog() {
    try {
      return fs.readFileSync(this.paths.log, 'utf8');
    } catch {
      return '';
    }
  }

  /** Commands run, latest status and the daemon log's tail, for failure messages. */
  describe() {
    const log = this.daemonLog().split('\n').filter(Boolean).slice(-DAEMON_LOG_TAIL);
    return [
      `home ${this.home}, daemon pid (lock file) ${this.daemonPid()}`,
      'commands:',
      ...this.history.slice(-20).map((l) => `  ${l}`),
      `last status: ${this.lastStatus ? JSON.stringify(this.lastStatus) : `none (${this.lastStatusError})`}`,
      `daemon.log tail:`,
      ...(log.length ? log.map((l) => `  ${l}`) : ['  (empty)']),
    ].join('\n');
  }

  _killAll() {
    const pids = new Set([...this.pids, ...processesWithEnv(HOME_MARKER, this.home)]);
    for (const pid of pids) {
      killGroup(pid);
      liveGroups.delete(pid);
    }
    return [...pids];
  }

  /** SIGKILLs the daemon's and every app's process group, waits for them, removes the home. */
  async cleanup() {
    this.daemonPid();
    const pids = this._killAll();
    try {
      await waitGone(pids, { timeout: 5_000, what: `processes of ${this.home} to end` });
    } catch {
      // Reported by the test that left them, if it cares; nothing more to do here.
    }
    liveDaemonHomes.delete(this);
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

process.on('exit', () => {
  for (const daemon of liveDaemonHomes) daemon._killAll();
});

/** A TCP port that was free a moment ago (for an app that must listen on a known port). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A second user for tests that need one (root only). */
const OTHER_USER = 'nodeguard-test';

/** The uid of OTHER_USER, created if missing (idempotent; two test files may race to create it). */
function otherUid() {
  if (process.getuid() !== 0) throw new Error('these tests need root (they make a second user); run them as root');
  for (let attempt = 0; attempt < 20; attempt++) {
    const id = spawnSync('id', ['-u', OTHER_USER], { encoding: 'utf8' });
    if (id.status === 0) return Number(id.stdout.trim());
    // Exit 9: it exists (another test file made it meanwhile); others (a locked /etc/passwd while
    // another useradd runs): try again.
    spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', OTHER_USER], { encoding: 'utf8' });
    spawnSync('sleep', ['0.1']);
  }
  throw new Error(`cannot create the user ${OTHER_USER} (useradd)`);
}

/**
 * Runs `loops` (4) sequential GET loops against 127.0.0.1:`port` until `stop()`, which resolves
 * with { ok, failed, errors, pids } (`pids`: answers counted by the pid in the body). `result`
 * holds the counts so far. `agent` for kept-alive connections, `pauseMs` between requests.
 */
function requestLoops(port, urlPath = '/', { agent = false, pauseMs = 0, loops: count = 4 } = {}) {
  let running = true;
  const result = { ok: 0, failed: 0, errors: [], pids: new Map() };
  const loop = async () => {
    while (running) {
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
      try {
        const res = await get(port, urlPath, { timeout: 10_000, agent });
        if (res.status === 200) {
          result.ok += 1;
          const pid = Number(res.body.trim());
          result.pids.set(pid, (result.pids.get(pid) || 0) + 1);
        } else {
          result.failed += 1;
          result.errors.push(`HTTP ${res.status}`);
        }
      } catch (err) {
        result.failed += 1;
        result.errors.push(err.message);
      }
    }
  };
  const loops = Array.from({ length: count }, loop);
  return {
    result,
    async stop() {
      running = false;
      await Promise.all(loops);
      return result;
    },
  };
}

/**
 * A temporary project directory, removed after test `t`, holding `files`: [name, text, mode?]
 * (subdirectories made as needed; mode 0644 unless given).
 */
function project(t, files, prefix = 'ng-project-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [name, text, mode] of files) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text, { mode: mode || 0o644 });
  }
  return dir;
}

module.exports = {
  decodeFrames,
  project,
  requestLoops,
  OTHER_USER,
  otherUid,
  BIN,
  REPO,
  FIXTURES,
  DEFAULT_TIMEOUT_MS,
  checkPreconditions,
  makeHome,
  sockets,
  run,
  status,
  statusRaw,
  startSupervisor,
  Supervisor,
  get,
  frame,
  exchange,
  isGone,
  procState,
  waitGone,
  processesMatching,
  sleep,
  DaemonHome,
  processesWithEnv,
  procEnv,
  procArgv,
  freePort,
};
