'use strict';
// Driving the real nodeguard binary: a supervisor in its own process group with a fresh
// NODEGUARD_HOME under the run's temp dir, and `nodeguard status --json` to read its state.

const fs = require('node:fs');
const path = require('node:path');
const u = require('./util');

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
      const acted = ev.find((e) => e.pid === oldPid && e.text.startsWith(`${what}`));
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

module.exports = { NodeguardRun };
