'use strict';
// PM2, installed fresh (npm install pm2@latest) into the run's temp dir, with PM2_HOME there too.
// Every CLI call runs `node <pm2>/bin/pm2 …` with the run's environment (which carries the bench
// tag, so the God daemon and its apps are found by the final sweep whatever happens).

const fs = require('node:fs');
const path = require('node:path');
const u = require('./util');

class Pm2 {
  constructor(ctx) {
    this.ctx = ctx;
    this.dir = path.join(ctx.tmp, 'pm2');
    this.home = path.join(ctx.tmp, 'p');
    this.bin = path.join(this.dir, 'node_modules', 'pm2', 'bin', 'pm2');
    this.env = { ...ctx.env, PM2_HOME: this.home };
    this.version = null;
  }

  /** npm install pm2@latest into a fresh directory. */
  async install() {
    fs.mkdirSync(this.dir, { recursive: true });
    fs.mkdirSync(this.home, { recursive: true });
    fs.writeFileSync(path.join(this.dir, 'package.json'), '{"private": true}\n');
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const r = await u.runCmd(
      npm,
      ['install', 'pm2@latest', '--no-audit', '--no-fund', '--loglevel=error', '--no-save'],
      { cwd: this.dir, env: this.ctx.env, timeout: 180_000 },
    );
    if (r.code !== 0 || !fs.existsSync(this.bin)) {
      throw new Error(`npm install pm2@latest failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
    }
    this.version = JSON.parse(fs.readFileSync(path.join(this.dir, 'node_modules', 'pm2', 'package.json'), 'utf8')).version;
    return { ms: r.ms, version: this.version };
  }

  async cli(args, { check = true, timeout = 60_000 } = {}) {
    const r = await u.runCmd(process.execPath, [this.bin, ...args], { cwd: this.ctx.tmp, env: this.env, timeout });
    if (check && r.code !== 0) {
      throw new Error(`pm2 ${args.join(' ')} failed (exit ${r.code}, ${r.signal}):\n${(r.stdout + r.stderr).slice(-2000)}`);
    }
    return r;
  }

  /** `pm2 start <script> --name <name> -- <args>` (fork mode, the default). */
  start(script, name, appArgs = []) {
    return this.cli(['start', script, '--name', name, '--', ...appArgs, '--bench-tag', this.ctx.tag]);
  }

  /**
   * Writes `apps` ([{ name, script, args }]) to an ecosystem file ($PM2_HOME/ecosystem-<n>.config.js)
   * and runs one `pm2 start <file>` (fork mode, PM2's defaults otherwise). Returns { ms, file }.
   */
  async startEcosystem(apps, { timeout = 180_000 } = {}) {
    const file = path.join(this.home, `ecosystem-${apps.length}.config.js`);
    fs.writeFileSync(file, `module.exports = ${JSON.stringify({ apps }, null, 2)};\n`);
    const r = await this.cli(['start', file], { timeout });
    return { ms: r.ms, file };
  }

  /** Argv of `pm2 <args>` as the bench runs it (for timing whole invocations in a shell). */
  argv(args) {
    return [process.execPath, this.bin, ...args];
  }

  /**
   * PM2's own socket round trip: a node process that require()s PM2's API, connects to the running
   * God daemon once, then times `n` calls of pm2.list() (the RPC behind `pm2 jlist`, getMonitorData)
   * after `warmup` untimed ones. Returns { ms: [..], apps }.
   */
  async apiListTimes(n, { warmup = 5 } = {}) {
    const script = `
      const pm2 = require(${JSON.stringify(path.join(this.dir, 'node_modules', 'pm2'))});
      const fail = (e) => { console.error(String(e && e.stack || e)); process.exit(1); };
      pm2.connect((err) => {
        if (err) fail(err);
        const ms = [];
        let i = 0;
        let apps = 0;
        const next = () => {
          const t = performance.now();
          pm2.list((e, list) => {
            if (e) fail(e);
            if (i++ >= ${warmup}) ms.push(performance.now() - t);
            apps = list.length;
            if (i < ${warmup + n}) return next();
            pm2.disconnect(() => {
              console.log(JSON.stringify({ ms, apps }));
              process.exit(0);
            });
          });
        };
        next();
      });`;
    const r = await u.runCmd(process.execPath, ['-e', script], { cwd: this.ctx.tmp, env: this.env, timeout: 120_000 });
    if (r.code !== 0) throw new Error(`pm2 API list timing failed (exit ${r.code}): ${r.stderr.slice(-1500)}`);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  }

  /** Parsed `pm2 jlist`, by app name: { pid, status, restarts, uptimeStart }. */
  async list() {
    const r = await this.cli(['jlist']);
    const text = r.stdout.slice(r.stdout.indexOf('['));
    const apps = JSON.parse(text);
    return Object.fromEntries(
      apps.map((a) => [
        a.name,
        { pid: a.pid, status: a.pm2_env.status, restarts: a.pm2_env.restart_time, uptimeStart: a.pm2_env.pm_uptime },
      ]),
    );
  }

  async waitOnline(names, { timeout = 20_000 } = {}) {
    return u.waitUntil(
      async () => {
        const by = await this.list();
        return names.every((n) => by[n] && by[n].status === 'online' && by[n].pid > 0) ? by : null;
      },
      { timeout, every: 100, what: `pm2 apps ${names.join(', ')} online` },
    );
  }

  /** The God daemon's pid, from $PM2_HOME/pm2.pid. */
  godPid() {
    try {
      const pid = Number(fs.readFileSync(path.join(this.home, 'pm2.pid'), 'utf8').trim());
      return pid > 0 && !u.isGone(pid) ? pid : null;
    } catch {
      return null;
    }
  }

  /**
   * `pm2 kill` (stops the apps and the daemon). Never throws. Skipped when no God daemon runs:
   * `pm2 kill` would first launch one, which then races the bench's sweep as it exits.
   */
  async kill() {
    const god = this.godPid();
    if (!god) return { code: 0, skipped: 'no God daemon running' };
    let result;
    try {
      result = await this.cli(['kill'], { check: false, timeout: 30_000 });
    } catch (err) {
      result = { code: null, stderr: String(err) };
    }
    // The daemon exits a moment after it answers; give it that moment before anyone sweeps.
    if (god) await u.waitUntil(() => u.isGone(god), { timeout: 3_000, every: 20 }).catch(() => {});
    return result;
  }
}

module.exports = { Pm2 };
