'use strict';
// Driving the real nodeguard binary: a supervisor in its own process group with a fresh
// NODEGUARD_HOME under the run's temp dir, and `nodeguard status --json` to read its state.

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const u = require('./util');

/**
 * The supervisor's log line for each kind of restart (`what` in restartEvents): an exit reads
 * "exit code 1 after 1.2s; restarted at once" (or "signal SIGKILL after …"), a hang "event loop
 * silent for 3.0s (…); killed and restarted".
 */
const ACTED = {
  exited: /^(exit code -?\d+|signal \w+)( \([^)]*\))? after /,
  hung: /^event loop silent for /,
};

class NodeguardRun {
  /**
   * @param ctx    { bin, tmp, tag, env }
   * @param apps   absolute script paths
   * @param flags  extra supervisor flags
   * @param appArgs arguments after `--` (every app gets them)
   */
  constructor(ctx, { apps, flags = [], appArgs = [] }) {
    this.ctx = ctx;
    this.home = fs.mkdtempSync(path.join(ctx.tmp, 'h'));
    const sock = path.join(this.home, 'run', 'control.sock');
    if (Buffer.byteLength(sock) >= 100) throw new Error(`socket path too long: ${sock}`);
    // The monitor from the run's snapshot of the package (see run.js), unless --no-preload.
    const args = ctx.preload && !flags.includes('--no-preload') ? ['--preload', ctx.preload, ...flags] : [...flags];
    for (const app of apps) args.push('-m', app);
    args.push('--', ...appArgs, '--bench-tag', ctx.tag);
    this.args = args;
    this.proc = u.startDetached(ctx.bin, args, {
      cwd: ctx.tmp,
      env: { ...ctx.env, NODEGUARD_HOME: this.home },
    });
    this.pid = this.proc.pid;
  }

  /**
   * The supervisor's log lines about apps, parsed: [{ wall, app, text, pid }], wall = Unix time in
   * ms (microsecond precision) from the line's own timestamp.
   */
  events() {
    const out = [];
    for (const { text } of this.proc.lines) {
      const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z\s+\w+\s+app\{name=([^}]+)\}: (.*)$/.exec(text);
      if (!m) continue;
      const pid = /\bpid=(\d+)/.exec(m[4]);
      out.push({
        wall: Date.parse(`${m[1]}Z`) + Number(`0${m[2] || ''}`) * 1000,
        app: m[3],
        text: m[4],
        pid: pid ? Number(pid[1]) : null,
      });
    }
    return out;
  }

  /**
   * Splits one restart of `app` into phases, from the supervisor's log: when it acted on the old
   * pid (`what` = 'hung' or 'exited') and when it started the new pid. Waits up to 1 s for the
   * lines. Returns { actedWall, startedWall } or null.
   */
  async restartEvents(app, what, oldPid, newPid) {
    for (let i = 0; i < 50; i++) {
      const ev = this.events().filter((e) => e.app === app);
      const acted = ev.find((e) => e.pid === oldPid && ACTED[what].test(e.text));
      const started = ev.find((e) => e.pid === newPid && e.text.startsWith('started'));
      if (acted && started) return { actedWall: acted.wall, startedWall: started.wall, actedText: acted.text };
      await u.sleep(20);
    }
    return null;
  }

  /** Parsed `status --json`, or null if the supervisor does not answer (yet). */
  async status() {
    const r = await u.runCmd(this.ctx.bin, ['status', '--home', this.home, '--json'], {
      env: this.ctx.env,
      timeout: 5_000,
    });
    if (r.code !== 0) return null;
    try {
      return JSON.parse(r.stdout);
    } catch {
      return null;
    }
  }

  /** Status rows by app name. */
  async byName() {
    const apps = await this.status();
    return apps ? Object.fromEntries(apps.map((a) => [a.name, a])) : null;
  }

  /** Polls status until `pred(byName)` holds; returns byName. */
  async waitStatus(pred, { timeout = 15_000, what = 'a status condition', every = 30 } = {}) {
    try {
      return await u.waitUntil(
        async () => {
          if (this.proc.exit()) throw new Error(`supervisor exited ${JSON.stringify(this.proc.exit())}`);
          const by = await this.byName();
          return by && pred(by) ? by : null;
        },
        { timeout, every, what },
      );
    } catch (err) {
      err.message += `\nsupervisor output:\n${this.proc.tail()}`;
      throw err;
    }
  }

  /** SIGTERM, then SIGKILL after `grace` ms; then removes its home. */
  async stop({ grace = 3_000 } = {}) {
    if (!this.proc.exit()) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        // gone
      }
      const exited = await Promise.race([this.proc.exited, u.sleep(grace).then(() => null)]);
      if (!exited) u.killHard(this.pid);
      await Promise.race([this.proc.exited, u.sleep(1_000)]);
    }
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

/**
 * Daemon mode: `nodeguard start <config>` launches the background daemon on a fresh
 * NODEGUARD_HOME under the run's temp dir (the daemon inherits the CLI's environment, so it and its
 * apps carry the bench tag). NODEGUARD_PRELOAD points the daemon at the run's monitor snapshot.
 */
class NodeguardDaemon {
  constructor(ctx) {
    this.ctx = ctx;
    this.home = fs.mkdtempSync(path.join(ctx.tmp, 'd'));
    this.socket = path.join(this.home, 'run', 'control.sock');
    if (Buffer.byteLength(this.socket) >= 100) throw new Error(`socket path too long: ${this.socket}`);
    this.env = { ...ctx.env, NODEGUARD_HOME: this.home };
    if (ctx.preload) this.env.NODEGUARD_PRELOAD = ctx.preload;
    this.pid = null;
  }

  cli(args, { timeout = 30_000 } = {}) {
    return u.runCmd(this.ctx.bin, args, { env: this.env, cwd: this.ctx.tmp, timeout });
  }

  /**
   * Writes `apps` ([{ name, script, args }]) to a JSON config file and runs one
   * `nodeguard start <file>`, which returns once every app runs. Returns { ms, file }.
   */
  async startConfig(apps, { timeout = 120_000 } = {}) {
    const file = path.join(this.home, `apps-${apps.length}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ apps }, null, 2)}\n`);
    const r = await this.cli(['start', file], { timeout });
    if (r.code !== 0) {
      throw new Error(`nodeguard start ${path.basename(file)} failed (exit ${r.code}, ${r.signal}):\n${(r.stdout + r.stderr).slice(-1500)}\ndaemon.log:\n${this.logTail()}`);
    }
    this.pid = await this.ping();
    return { ms: r.ms, file };
  }

  /** The daemon's pid, from `nodeguard ping`. */
  async ping() {
    const r = await this.cli(['ping']);
    const m = /pid (\d+)/.exec(r.stdout);
    if (r.code !== 0 || !m) throw new Error(`nodeguard ping failed (exit ${r.code}): ${r.stdout}${r.stderr}`);
    return Number(m[1]);
  }

  /** Parsed `status --json`. */
  async status() {
    const r = await this.cli(['status', '--json'], { timeout: 10_000 });
    if (r.code !== 0) throw new Error(`nodeguard status --json failed (exit ${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  /** Polls status until every one of `names` is running with its monitor connected. */
  waitAllRunning(names, { timeout = 60_000 } = {}) {
    return u.waitUntil(
      async () => {
        const apps = await this.status();
        const by = Object.fromEntries(apps.map((a) => [a.name, a]));
        return names.every((n) => by[n] && by[n].state === 'running' && by[n].monitored && by[n].pid > 0) ? apps : null;
      },
      { timeout, every: 100, what: `${names.length} daemon app(s) running with a monitor` },
    );
  }

  /**
   * `nodeguard kill` (returns once the daemon has exited), then checks that the daemon and every
   * pid in `appPids` are gone. Returns { ms, code, left: [pids still alive] }. Never throws.
   */
  async kill(appPids = [], { timeout = 60_000 } = {}) {
    const r = await this.cli(['kill'], { timeout });
    const pids = [this.pid, ...appPids].filter(Boolean);
    // `kill` answers once the apps have exited and the daemon stopped answering; give the last
    // exits a moment to be reaped before looking.
    await u.waitUntil(() => pids.every((p) => u.isGone(p)), { timeout: 3_000, every: 20 }).catch(() => {});
    return { ms: r.ms, code: r.code, output: (r.stdout + r.stderr).trim(), left: pids.filter((p) => !u.isGone(p)) };
  }

  logTail(n = 20) {
    try {
      return fs.readFileSync(path.join(this.home, 'daemon.log'), 'utf8').trim().split('\n').slice(-n).join('\n');
    } catch {
      return '(no daemon.log)';
    }
  }
}

/**
 * One request on the control socket, as the CLI speaks it: a 4-byte big-endian length + JSON
 * `{ version: 1, command }`; the answer is one frame, then the daemon closes. Resolves
 * { ms (connect → whole answer read), connectMs, bytes, response }.
 */
function controlRequest(socketPath, command, { timeout = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify({ version: 1, command }));
    const frame = Buffer.alloc(4 + payload.length);
    frame.writeUInt32BE(payload.length, 0);
    payload.copy(frame, 4);
    const t0 = u.now();
    let connectedAt = null;
    let buf = Buffer.alloc(0);
    const sock = net.createConnection(socketPath);
    const timer = setTimeout(() => sock.destroy(new Error(`control request timed out after ${timeout} ms`)), timeout);
    sock.on('connect', () => {
      connectedAt = u.now();
      sock.write(frame);
    });
    sock.on('data', (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      if (buf.length < 4) return;
      const len = buf.readUInt32BE(0);
      if (buf.length < 4 + len) return;
      const end = u.now();
      clearTimeout(timer);
      sock.destroy();
      try {
        resolve({ ms: end - t0, connectMs: connectedAt - t0, bytes: len, response: JSON.parse(buf.subarray(4, 4 + len)) });
      } catch (err) {
        reject(err);
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      reject(new Error('control socket closed before a whole answer'));
    });
  });
}

module.exports = { NodeguardRun, NodeguardDaemon, controlRequest };
