'use strict';
// Figure 15 (issue 17): thousands of supervised processes, nodeguard beside PM2 and OxMgr in one
// run. Selected with `node bench/run.js --only scale [--scale N]` (default N = 2,000).
//
// Per tool, one after the other, each on a fresh daemon with a home of its own under the run's
// temp dir (NODEGUARD_HOME, PM2_HOME, OXMGR_HOME + loopback ports of its own for OxMgr):
//
//   A. N light processes (`sleep 100000`, no interpreter) from one config file:
//      - start: the tool's start command runs while the bench polls the tool's own listing
//        (`status --json`, `pm2 jlist`, `oxmgr list --json`) until every app has a live pid and
//        shows as running in the tool's own terms; each poll's own duration is recorded, so the
//        figure is bounded (it became true between the previous poll and the end of this one);
//      - the daemon's RSS (the daemon process alone) a few seconds after;
//      - `status --json` / `pm2 jlist` / `oxmgr list --json` as whole CLI runs, median of several;
//      - nodeguard only, when this build has them: `events --json` (time from SIGKILL of an app's
//        process to its exit record on the stream) and `status` filters;
//      - every other verb once (describe, logs, restart one, stop one, ping): does it answer, and
//        how long it takes;
//      - `stop all`: the CLI's own time, and the time until every pid is gone;
//      - the daemon killed (`nodeguard kill`, `pm2 kill`, `oxmgr daemon stop`), then every pid
//        the bench saw and every process carrying the run's tag is SIGKILLed, failure or not.
//   B. N processes of which 100 are Node apps (bench/apps/idle.js) with heartbeats every 1 s
//      (nodeguard's default; PM2 and OxMgr run their own defaults): the daemon's CPU over 20 s.
//
// A tool that cannot be installed, or that does not finish a step, is reported with how far it
// got and why; nothing is skipped silently.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const u = require('./util');

/** The OxMgr release the bench installs with `cargo install` when none is given (OXMGR_BIN). */
const OXMGR_VERSION = '0.5.0';
/** Node apps among the N processes of the CPU scenario. */
const CPU_NODE_APPS = 100;
const CPU_WINDOW_MS = 20_000;
/** How long a start of n processes may take at most (a tool still progressing is waited for). */
const startDeadline = (n) => Math.max(900_000, n * 300);
/**
 * How long a peer (PM2, OxMgr) is given for each long phase (a start, `stop all`, the daemon's
 * kill, a verb, the status runs) before the bench notes how far it got and moves on: PM2's
 * `stop all` of 2,000 ran past 600 s and OxMgr's start past 300 s, and a run of the three tools
 * took 44 minutes. With this bound one run at 2,000 fits in about 20. nodeguard's own phases keep
 * the full deadlines: none of its figures is cut short. NODEGUARD_BENCH_PEER_PHASE_S overrides it.
 */
const PEER_PHASE_MS = (Number(process.env.NODEGUARD_BENCH_PEER_PHASE_S) > 0 ? Number(process.env.NODEGUARD_BENCH_PEER_PHASE_S) : 150) * 1000;
/** The fds a daemon may need per app (nodeguard counts 3 per app, 4 with a monitor); 1,024 more for the rest. */
const FDS_PER_APP = 4;
/** Above this many processes the CPU scenario (a second start of them all) is left out. */
const CPU_MAX_N = 5_000;
/**
 * From this many processes the light apps run with their logs disabled (PM2's `disable_logs:
 * true`, for nodeguard and PM2): with captured output nodeguard holds 3 fds per app (two pipes
 * and a pidfd), 30,000 at 10,000, over a hard limit of 20,000 that root cannot always raise; with
 * logs disabled it holds 1. The captured-output start is still tried first, and its refusal shown.
 */
const NO_LOGS_MIN_N = 10_000;
const SETTLE_MS = 3_000;
const EVENT_KILLS = 15;
const SLEEP_BIN = ['/usr/bin/sleep', '/bin/sleep'].find((p) => fs.existsSync(p)) || 'sleep';
const IDLE_APP = path.join(__dirname, '..', 'apps', 'idle.js');

// ---------------------------------------------------------------------------------------------
// /proc helpers

// CPU time of a process, from /proc/<pid>/stat: the same reading as figures 9 and 15.
const { cpuSeconds } = require('./figures');

/** A process is alive: it has a /proc entry and is not a zombie. */
const alive = (pid) => pid > 0 && !u.isGone(pid);

/**
 * Runs argv under `ulimit -n <hard>` (as PM2's and OxMgr's docs suggest for many processes), with
 * the hard limit first raised to `raise` when given (see [`fdPlan`]): the same for every tool.
 */
function withNofile(argv, raise) {
  const up = raise ? `ulimit -Hn ${Number(raise)} 2>/dev/null; ` : '';
  return ['bash', '-c', `${up}ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"`, 'bash', ...argv];
}

/**
 * The open-file limit each daemon runs under for `n` processes: the bench's own hard limit when
 * it is enough (FDS_PER_APP per app), else, as root, a raised one (up to fs.nr_open) for the
 * daemons it starts; else the reason in one line. Returns { hard, need, raise, note }.
 */
function fdPlan(n) {
  const { hard } = nofile();
  const need = n * FDS_PER_APP + 1024;
  const hardN = hard === 'unlimited' ? Infinity : Number(hard);
  if (hardN >= need) return { hard, need, raise: null, note: null };
  let nrOpen = 1_048_576;
  try {
    nrOpen = Number(fs.readFileSync('/proc/sys/fs/nr_open', 'utf8').trim()) || nrOpen;
  } catch {
    // not Linux: the default
  }
  const target = Math.min(nrOpen, Math.max(65_536, need));
  const short = `the hard open-file limit (${hard}) is below the ~${need.toLocaleString('en-US')} fds ${n.toLocaleString('en-US')} processes need`;
  if (!(typeof process.getuid === 'function' && process.getuid() === 0)) {
    return { hard, need, raise: null, note: `${short}, and only root can raise it: run the bench as root or under \`ulimit -Hn ${target}\`` };
  }
  // Root may still lack CAP_SYS_RESOURCE (a container that drops it): try it in a shell first.
  const probe = spawnSync('bash', ['-c', `ulimit -Hn ${target} && ulimit -Hn`], { encoding: 'utf8' });
  if (probe.status === 0 && Number(probe.stdout.trim()) >= target) {
    return { hard, need, raise: target, note: `hard limit raised from ${hard} to ${target} for the daemons the bench starts (root)` };
  }
  const why = firstLine(probe.stderr, 160).replace(/^bash: (line \d+: )?/, '') || `exit ${probe.status}`;
  return { hard, need, raise: null, note: `${short}, and this root cannot raise it (no CAP_SYS_RESOURCE here? \`ulimit -Hn ${target}\`: ${why})` };
}

function firstLine(text, max = 300) {
  return String(text || '').trim().split('\n').filter(Boolean).slice(-3).join(' / ').slice(0, max);
}

/** The names and kinds of a scenario's apps: `sleep-<i>` and, for B, `node-<i>`. */
function appList(count, nodeApps = 0) {
  const apps = [];
  for (let i = 0; i < count - nodeApps; i++) apps.push({ name: `sleep-${i}`, kind: 'sleep' });
  for (let i = 0; i < nodeApps; i++) apps.push({ name: `node-${i}`, kind: 'node' });
  return apps;
}

// ---------------------------------------------------------------------------------------------
// The three tools behind one interface

class Tool {
  constructor(ctx, name) {
    this.ctx = ctx;
    this.name = name;
    this.seen = new Set();
    this.daemonPid = null;
    /** A peer's phases are bounded (PEER_PHASE_MS); nodeguard's are not. */
    this.bound = name === 'nodeguard' ? null : PEER_PHASE_MS;
  }

  /** `ms`, or the peer bound if that is shorter. */
  phase(ms) {
    return this.bound ? Math.min(ms, this.bound) : ms;
  }

  async run(argv, { timeout = 60_000 } = {}) {
    const [cmd, ...args] = argv;
    return u.runCmd(cmd, args, { env: this.env, cwd: this.home, timeout });
  }

  /** The listing, normalised: [{ name, pid, state, running, errored }], and the poll's own time. */
  async list({ timeout = 120_000 } = {}) {
    const r = await this.run(this.listArgv(), { timeout });
    if (r.code !== 0) throw new Error(`${this.listArgv().slice(-2).join(' ')} exited ${r.code}: ${firstLine(r.stderr || r.stdout)}`);
    const rows = this.parseList(r.stdout);
    for (const row of rows) if (row.pid > 0) this.seen.add(row.pid);
    return { rows, ms: r.ms, bytes: Buffer.byteLength(r.stdout) };
  }

  /** SIGKILLs every pid this tool ever listed that is still alive. */
  killSeen() {
    let n = 0;
    for (const pid of this.seen) {
      if (alive(pid)) {
        u.killHard(pid);
        n++;
      }
    }
    if (this.daemonPid && alive(this.daemonPid)) {
      u.killHard(this.daemonPid);
      n++;
    }
    return n;
  }
}

class Nodeguard extends Tool {
  constructor(ctx) {
    super(ctx, 'nodeguard');
    this.bin = ctx.bin;
    this.home = fs.mkdtempSync(path.join(ctx.tmp, 'sn'));
    this.env = { ...ctx.env, NODEGUARD_HOME: this.home };
    if (ctx.preload) this.env.NODEGUARD_PRELOAD = ctx.preload;
    this.version = firstLine(spawnSync(this.bin, ['--version'], { encoding: 'utf8' }).stdout);
    const help = spawnSync(this.bin, ['--help'], { encoding: 'utf8' }).stdout || '';
    this.hasEvents = /^\s+events\s/m.test(help);
  }

  async boot() {
    // The daemon in its own process group, started the way `start` would start it (under the
    // raised hard open-file limit when the bench raised one; the daemon raises its soft limit).
    const [cmd, ...args] = this.ctx.fds && this.ctx.fds.raise ? withNofile([this.bin, 'daemon'], this.ctx.fds.raise) : [this.bin, 'daemon'];
    this.proc = u.startDetached(cmd, args, { env: this.env, cwd: this.home });
    await u.waitUntil(async () => (await this.run([this.bin, 'ping'], { timeout: 5_000 })).code === 0, {
      timeout: 20_000,
      every: 50,
      what: 'nodeguard daemon answering ping',
    });
    this.daemonPid = this.proc.pid;
  }

  writeConfig(apps, { logs = apps.length < NO_LOGS_MIN_N } = {}) {
    const file = path.join(this.home, `apps-${apps.length}${logs ? '' : '-nologs'}.json`);
    const quiet = logs ? {} : { disable_logs: true };
    const spec = apps.map((a) =>
      a.kind === 'sleep'
        ? { name: a.name, script: SLEEP_BIN, args: ['100000'], start_grace: '200ms', ...quiet }
        : { name: a.name, script: IDLE_APP, args: ['--bench-tag', this.ctx.tag], heartbeat_interval: '1s' },
    );
    fs.writeFileSync(file, JSON.stringify({ apps: spec }));
    return file;
  }

  /**
   * At NO_LOGS_MIN_N and above: the same apps with captured output, started first on the empty
   * daemon. Its answer (the one-line refusal when the fds cannot fit) is the figure; whatever it
   * did start is stopped and deleted again before the measured start.
   */
  async capturedStart(apps) {
    const r = await this.run(this.startArgv(this.writeConfig(apps, { logs: true })), { timeout: 600_000 });
    const listed = (await this.list()).rows.length;
    if (listed) await this.run([this.bin, 'delete', 'all'], { timeout: 600_000 });
    return { code: r.code, ms: r.ms, lines: String(r.stderr || '').trim().split('\n').filter(Boolean).length, output: firstLine(r.stderr || r.stdout, 600), listed };
  }

  startArgv(file) {
    return [this.bin, 'start', file];
  }

  listArgv() {
    return [this.bin, 'status', '--json'];
  }

  parseList(stdout) {
    return JSON.parse(stdout).map((a) => ({
      name: a.name,
      pid: a.pid || 0,
      state: a.state,
      running: a.state === 'running' && a.pid > 0,
      errored: a.state === 'errored',
      monitored: a.monitored,
    }));
  }

  ready(row) {
    return row.running;
  }

  eventsArgv() {
    return this.hasEvents ? [this.bin, 'events', '--json'] : null;
  }

  stopAllArgv() {
    return [this.bin, 'stop', 'all'];
  }

  verbs(apps) {
    const a = apps[0].name;
    const b = apps[Math.min(1, apps.length - 1)].name;
    const c = apps[Math.min(2, apps.length - 1)].name;
    return [
      ['ping', [this.bin, 'ping']],
      ['jlist', [this.bin, 'jlist']],
      [`describe ${a}`, [this.bin, 'describe', a]],
      [`logs ${a} --lines 5`, [this.bin, 'logs', a, '--lines', '5']],
      [`restart ${b}`, [this.bin, 'restart', b]],
      [`stop ${c}`, [this.bin, 'stop', c]],
    ];
  }

  async kill() {
    const r = await this.run([this.bin, 'kill'], { timeout: 120_000 });
    if (this.proc) await Promise.race([this.proc.exited, u.sleep(5_000)]);
    return { code: r.code, ms: r.ms, output: firstLine(r.stdout + r.stderr) };
  }
}

class Pm2Tool extends Tool {
  constructor(ctx, pm2) {
    super(ctx, 'PM2');
    this.pm2 = pm2;
    this.home = fs.mkdtempSync(path.join(ctx.tmp, 'sp'));
    this.env = { ...pm2.env, PM2_HOME: this.home };
    this.version = pm2.version;
  }

  argv(args) {
    return [process.execPath, this.pm2.bin, ...args];
  }

  /** Why the God daemon went, when its pm2.log says (it has no output of its own to read). */
  lostWhy() {
    let text = '';
    try {
      text = fs.readFileSync(path.join(this.home, 'pm2.log'), 'utf8');
    } catch {
      return '';
    }
    const emfile = (text.match(/EMFILE/g) || []).length;
    return emfile ? ` (its pm2.log has ${emfile} EMFILE errors: too many open files)` : '';
  }

  async boot() {
    // `pm2 ping` launches the God daemon (under the raised fd limit, which its apps inherit).
    const r = await this.run(withNofile(this.argv(['ping']), this.ctx.fds && this.ctx.fds.raise), { timeout: 60_000 });
    if (r.code !== 0) throw new Error(`pm2 ping exited ${r.code}: ${firstLine(r.stderr)}`);
    const pid = Number(fs.readFileSync(path.join(this.home, 'pm2.pid'), 'utf8').trim());
    if (!alive(pid)) throw new Error('no PM2 God daemon after pm2 ping');
    this.daemonPid = pid;
  }

  writeConfig(apps) {
    const file = path.join(this.home, `ecosystem-${apps.length}.config.js`);
    const quiet = apps.length >= NO_LOGS_MIN_N ? { disable_logs: true } : {};
    const spec = apps.map((a) =>
      a.kind === 'sleep'
        ? { name: a.name, script: SLEEP_BIN, args: ['100000'], interpreter: 'none', exec_mode: 'fork', ...quiet }
        : { name: a.name, script: IDLE_APP, args: ['--bench-tag', this.ctx.tag], exec_mode: 'fork' },
    );
    fs.writeFileSync(file, `module.exports = ${JSON.stringify({ apps: spec })};\n`);
    return file;
  }

  startArgv(file) {
    return this.argv(['start', file]);
  }

  listArgv() {
    return this.argv(['jlist']);
  }

  parseList(stdout) {
    const text = stdout.slice(stdout.indexOf('['));
    return JSON.parse(text).map((a) => ({
      name: a.name,
      pid: a.pid || 0,
      state: a.pm2_env.status,
      running: a.pm2_env.status === 'online' && a.pid > 0,
      errored: a.pm2_env.status === 'errored',
    }));
  }

  ready(row) {
    return row.running;
  }

  eventsArgv() {
    return null;
  }

  stopAllArgv() {
    return this.argv(['stop', 'all']);
  }

  verbs(apps) {
    const a = apps[0].name;
    const b = apps[Math.min(1, apps.length - 1)].name;
    const c = apps[Math.min(2, apps.length - 1)].name;
    return [
      ['ping', this.argv(['ping'])],
      ['ls', this.argv(['ls'])],
      [`describe ${a}`, this.argv(['describe', a])],
      [`logs ${a} --lines 5 --nostream`, this.argv(['logs', a, '--lines', '5', '--nostream'])],
      [`restart ${b}`, this.argv(['restart', b])],
      [`stop ${c}`, this.argv(['stop', c])],
    ];
  }

  async kill() {
    if (!this.daemonPid || !alive(this.daemonPid)) return { code: 0, ms: 0, output: 'no God daemon running' };
    const r = await this.run(this.argv(['kill']), { timeout: this.phase(180_000) });
    await u.waitUntil(() => !alive(this.daemonPid), { timeout: 5_000, every: 20 }).catch(() => {});
    return { code: r.code, ms: r.ms, output: firstLine(r.stdout + r.stderr) };
  }
}

class Oxmgr extends Tool {
  constructor(ctx, bin, ports) {
    super(ctx, 'OxMgr');
    this.bin = bin;
    this.home = fs.mkdtempSync(path.join(ctx.tmp, 'so'));
    // Loopback ports of its own (OxMgr's default is a port derived from the user name).
    this.env = {
      ...ctx.env,
      OXMGR_HOME: this.home,
      OXMGR_DAEMON_ADDR: `127.0.0.1:${ports[0]}`,
      OXMGR_API_ADDR: `127.0.0.1:${ports[1]}`,
    };
    this.version = firstLine(spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout);
  }

  async boot() {
    const [cmd, ...args] = withNofile([this.bin, 'daemon', 'run'], this.ctx.fds && this.ctx.fds.raise);
    this.proc = u.startDetached(cmd, args, { env: this.env, cwd: this.home });
    await u.waitUntil(async () => (await this.run([this.bin, 'list', '--json'], { timeout: 5_000 })).code === 0, {
      timeout: 20_000,
      every: 50,
      what: 'OxMgr daemon answering list',
    });
    this.daemonPid = this.proc.pid;
  }

  writeConfig(apps) {
    const file = path.join(this.home, 'oxfile.toml');
    const lines = ['version = 1', ''];
    for (const a of apps) {
      const command = a.kind === 'sleep' ? `${SLEEP_BIN} 100000` : `${process.execPath} ${IDLE_APP} --bench-tag ${this.ctx.tag}`;
      lines.push('[[apps]]', `name = ${JSON.stringify(a.name)}`, `command = ${JSON.stringify(command)}`, 'restart_policy = "always"', '');
    }
    fs.writeFileSync(file, lines.join('\n'));
    return file;
  }

  startArgv(file) {
    return [this.bin, 'apply', file];
  }

  listArgv() {
    return [this.bin, 'list', '--json'];
  }

  parseList(stdout) {
    return JSON.parse(stdout).map((a) => {
      const state = String(a.status).toLowerCase();
      return { name: a.name, pid: a.pid || 0, state, running: state === 'running' && a.pid > 0, errored: state === 'errored' || state === 'crashed' };
    });
  }

  ready(row) {
    return row.running;
  }

  eventsArgv() {
    return [this.bin, 'events', '--json', '--filter', 'process:*'];
  }

  stopAllArgv() {
    return [this.bin, 'stop', 'all'];
  }

  verbs(apps) {
    const a = apps[0].name;
    const b = apps[Math.min(1, apps.length - 1)].name;
    const c = apps[Math.min(2, apps.length - 1)].name;
    return [
      ['list', [this.bin, 'list']],
      [`status ${a}`, [this.bin, 'status', a]],
      [`logs ${a} --lines 5`, [this.bin, 'logs', a, '--lines', '5']],
      [`restart ${b}`, [this.bin, 'restart', b]],
      [`stop ${c}`, [this.bin, 'stop', c]],
    ];
  }

  async kill() {
    const r = await this.run([this.bin, 'daemon', 'stop'], { timeout: this.phase(120_000) });
    if (this.proc) await Promise.race([this.proc.exited, u.sleep(10_000)]);
    return { code: r.code, ms: r.ms, output: firstLine(r.stdout + r.stderr) };
  }
}

// ---------------------------------------------------------------------------------------------
// Installing OxMgr

function cacheRoot() {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'nodeguard-bench', `oxmgr-${OXMGR_VERSION}`);
}

/**
 * An oxmgr binary: $OXMGR_BIN if set, else one cached by an earlier run, else
 * `cargo install oxmgr --version OXMGR_VERSION --root <cache>` (or, with $OXMGR_SRC pointing at a
 * checkout of OxMgr's source, `cargo install --path $OXMGR_SRC --locked`). Outside the repo.
 * Returns { bin, how } or throws with the reason.
 */
async function ensureOxmgr(log) {
  if (process.env.OXMGR_BIN) {
    if (!fs.existsSync(process.env.OXMGR_BIN)) throw new Error(`OXMGR_BIN=${process.env.OXMGR_BIN} does not exist`);
    return { bin: process.env.OXMGR_BIN, how: `OXMGR_BIN=${process.env.OXMGR_BIN}` };
  }
  const root = cacheRoot();
  const bin = path.join(root, 'bin', 'oxmgr');
  if (fs.existsSync(bin)) return { bin, how: `cached in ${root}` };
  const tries = [['install', 'oxmgr', '--version', OXMGR_VERSION, '--locked', '--root', root]];
  if (process.env.OXMGR_SRC) tries.push(['install', '--path', process.env.OXMGR_SRC, '--locked', '--root', root]);
  const errors = [];
  for (const args of tries) {
    log(`installing OxMgr: cargo ${args.join(' ')} (minutes)`);
    const r = await u.runCmd('nice', ['-n', '10', 'cargo', ...args], { env: process.env, timeout: 1_800_000 });
    if (r.code === 0 && fs.existsSync(bin)) return { bin, how: `cargo ${args.join(' ')}` };
    errors.push(`cargo ${args.slice(0, 4).join(' ')}: ${firstLine(r.stderr, 200)}`);
  }
  throw new Error(`OxMgr could not be installed: ${errors.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------
// Scenario A: start N, RSS, status, events, verbs, stop all

/**
 * Runs the tool's start command and polls its listing until every app is spawned (a live pid)
 * and ready (running in the tool's own terms), or nothing changed for `stallMs` after the start
 * command returned, or `deadlineMs` passed. Returns the timeline and the figures.
 */
async function startAndWatch(tool, apps, { deadlineMs, stallMs = 30_000, gapMs = 100 }) {
  const file = tool.writeConfig(apps);
  const n = apps.length;
  const out = { n, polls: [], timeline: [] };
  const t0 = u.now();
  const start = tool.run(tool.startArgv(file), { timeout: deadlineMs }).then((r) => {
    out.cli = { ms: r.ms, code: r.code, signal: r.signal, output: firstLine(r.stderr || r.stdout, 400) };
    return r;
  });
  let cliDone = false;
  start.then(() => (cliDone = true));
  let lastChange = u.now();
  let prev = '';
  let prevPollStart = t0;
  for (;;) {
    const pollStart = u.now();
    let listing;
    try {
      listing = await tool.list({ timeout: Math.max(5_000, deadlineMs - (pollStart - t0)) });
    } catch (err) {
      out.pollErrors = (out.pollErrors || 0) + 1;
      out.lastPollError = String(err.message).slice(0, 300);
      listing = null;
    }
    const pollEnd = u.now();
    if (listing) {
      out.polls.push(listing.ms);
      const rows = listing.rows;
      const spawned = rows.filter((r) => alive(r.pid)).length;
      const ready = rows.filter((r) => tool.ready(r) && alive(r.pid)).length;
      const errored = rows.filter((r) => r.errored).length;
      const point = { at: pollEnd - t0, listed: rows.length, spawned, ready, errored };
      const key = `${rows.length}/${spawned}/${ready}/${errored}`;
      if (key !== prev) {
        prev = key;
        lastChange = pollEnd;
        out.timeline.push(point);
      }
      out.last = point;
      out.lastRows = rows;
      if (spawned === n && out.spawnedMs === undefined) out.spawnedMs = { lo: prevPollStart - t0, hi: pollEnd - t0 };
      if (ready === n) {
        out.readyMs = { lo: prevPollStart - t0, hi: pollEnd - t0 };
        break;
      }
      if (cliDone && out.cli.code !== 0 && pollEnd - lastChange > 5_000) break;
    }
    if (cliDone && pollEnd - lastChange > stallMs) {
      out.stalled = `nothing changed for ${Math.round(stallMs / 1000)} s after the start command returned`;
      break;
    }
    // A tool still making progress is given time up to the hard deadline; one that stopped
    // progressing for stallMs is left there even before the start command returned.
    if (pollEnd - lastChange > stallMs * 4) {
      out.stalled = `nothing changed for ${Math.round((stallMs * 4) / 1000)} s while the start command still ran`;
      break;
    }
    if (pollEnd - t0 > deadlineMs) {
      out.stalled =
        tool.bound && deadlineMs >= tool.bound
          ? `the bench's bound of ${Math.round(deadlineMs / 1000)} s on a peer's phase passed, still starting`
          : `hard deadline of ${Math.round(deadlineMs / 1000)} s passed, still starting`;
      break;
    }
    prevPollStart = pollStart;
    await u.sleep(gapMs);
  }
  // The start command's own return (it may still be running at a deadline: it is then left to the kill).
  await Promise.race([start, u.sleep(cliDone ? 0 : 5_000)]);
  out.pollMs = u.summarize(out.polls);
  delete out.polls;
  return out;
}

/** Whole CLI runs of the tool's JSON listing, timed in one shell (util.timeInShell). */
async function statusRuns(tool, runs) {
  const shell = await u.timeInShell({ status: tool.listArgv() }, runs, { env: tool.env, cwd: tool.home, timeout: tool.phase(600_000) });
  return { ...u.summarize(shell.status.ms), failures: shell.status.failures };
}

/** nodeguard `status` filters, when this build has them (else "not available in this build"). */
async function statusFilters(tool, n) {
  const out = {};
  const probes = {
    glob: { argv: [tool.bin, 'status', 'sleep-1*', '--json'], expect: (rows) => rows.every((r) => r.name.startsWith('sleep-1')) },
    state: { argv: [tool.bin, 'status', '--state', 'errored', '--json'], expect: (rows) => rows.every((r) => r.state === 'errored') },
  };
  for (const [key, p] of Object.entries(probes)) {
    const r = await tool.run(p.argv, { timeout: 60_000 });
    if (r.code === 2 && /unexpected argument|unrecognized|wasn't expected|unknown/i.test(r.stderr)) {
      out[key] = { available: false, why: firstLine(r.stderr, 160) };
      continue;
    }
    let rows = null;
    try {
      rows = JSON.parse(r.stdout);
    } catch {
      // not JSON
    }
    if (r.code !== 0 || !Array.isArray(rows)) {
      out[key] = { available: false, why: `exit ${r.code}: ${firstLine(r.stderr || r.stdout, 160)}` };
      continue;
    }
    const timed = await u.timeInShell({ f: p.argv }, 5, { env: tool.env, cwd: tool.home });
    out[key] = { available: true, rows: rows.length, filtered: p.expect(rows) && rows.length < n, ms: u.summarize(timed.f.ms), bytes: Buffer.byteLength(r.stdout) };
  }
  return out;
}

/**
 * nodeguard `events --json`: SIGKILLs EVENT_KILLS running sleep apps one at a time and times each
 * from the kill to the first record on the stream that names the app's pid (or the app) and an
 * exit. The process dies at the SIGKILL (a sleeping process has nothing to unwind), so this is
 * death -> record seen by a client.
 */
async function eventsLatency(tool, rows) {
  const argv = tool.eventsArgv();
  if (!argv) return { available: false, why: tool instanceof Nodeguard ? 'not available in this build (no `events` verb)' : 'no event stream on the CLI' };
  const p = u.startDetached(argv[0], argv.slice(1), { env: tool.env, cwd: tool.home });
  const out = { available: true, ms: [], missed: 0, sample: null };
  try {
    await u.sleep(1_000);
    if (p.exit()) return { available: false, why: `events --json exited at once: ${p.tail(3)}` };
    const victims = rows.filter((r) => r.name.startsWith('sleep-') && r.running && alive(r.pid)).slice(-EVENT_KILLS);
    for (const v of victims) {
      const from = p.lines.length;
      const t0 = u.now();
      process.kill(v.pid, 'SIGKILL');
      const found = await waitRecord(p, from, v, 3_000);
      if (found) {
        out.ms.push(found.at - t0);
        out.sample = out.sample || found.text.slice(0, 300);
      } else out.missed++;
      await u.sleep(200);
    }
    out.summary = u.summarize(out.ms);
  } finally {
    u.killHard(p.pid);
  }
  return out;
}

async function waitRecord(p, from, victim, timeout) {
  const deadline = u.now() + timeout;
  while (u.now() < deadline) {
    for (let i = from; i < p.lines.length; i++) {
      const { text, at } = p.lines[i];
      let rec;
      try {
        rec = JSON.parse(text);
      } catch {
        continue;
      }
      const flat = JSON.stringify(rec);
      const names = flat.includes(`"${victim.name}"`) || new RegExp(`\\b${victim.pid}\\b`).test(flat);
      if (names && /exit|died|crash|killed|signal/i.test(flat)) return { at, text };
    }
    await u.sleep(1);
  }
  return null;
}

/** Each verb once: answered (exit 0) and its time. */
async function verbs(tool, apps) {
  const out = [];
  for (const [label, argv] of tool.verbs(apps)) {
    const r = await tool.run(argv, { timeout: tool.phase(120_000) });
    out.push({ label, code: r.code, ms: r.ms, bytes: Buffer.byteLength(r.stdout), error: r.code === 0 ? undefined : firstLine(r.stderr || r.stdout, 200) });
  }
  return out;
}

/**
 * `stop all`: the CLI's time and the time until every pid listed before it is gone. A peer whose
 * command is still running at its bound (PEER_PHASE_MS) is left there: how many of the processes
 * it had stopped by then is the figure.
 */
async function stopAll(tool, pids) {
  const t0 = u.now();
  const limit = tool.phase(600_000);
  const r = await tool.run(tool.stopAllArgv(), { timeout: limit });
  const cliMs = u.now() - t0;
  const bounded = Boolean(tool.bound) && r.code === null && cliMs >= limit;
  let goneMs = null;
  // Then up to 60 s for the processes to be gone (a bounded peer: what is left of its bound).
  const waitMs = bounded ? 5_000 : tool.bound ? Math.max(5_000, Math.min(60_000, limit - cliMs)) : 60_000;
  try {
    await u.waitUntil(() => pids.every((p) => !alive(p)), { timeout: waitMs, every: 20, what: 'every app process gone' });
    goneMs = u.now() - t0;
  } catch {
    // reported as left
  }
  const left = pids.filter(alive).length;
  return { cliMs, goneMs, waitedMs: u.now() - t0, bounded, code: r.code, output: firstLine(r.stderr || r.stdout, 200), left, of: pids.length };
}

async function scenarioA(tool, n, { statusRunsN, log }) {
  const apps = appList(n);
  const out = { tool: tool.name, n, steps: [] };
  const step = async (name, fn) => {
    out.steps.push(name);
    out[name] = await fn();
    return out[name];
  };
  try {
    const deadlineMs = tool.phase(startDeadline(n));
    await step('boot', async () => {
      const t0 = u.now();
      await tool.boot();
      return { ms: u.now() - t0, rss: u.memKb(tool.daemonPid) };
    });
    if (tool instanceof Nodeguard && n >= NO_LOGS_MIN_N) {
      const captured = await step('captured', () => tool.capturedStart(apps));
      log(`scale nodeguard ${n} with captured output: exit ${captured.code}: ${captured.output}`);
    }
    const start = await step('start', () => startAndWatch(tool, apps, { deadlineMs }));
    log(`scale ${tool.name} ${n}: ${start.last ? `${start.last.ready}/${n} ready, ${start.last.errored} errored` : 'no listing'}${start.readyMs ? ` in ${(start.readyMs.hi / 1000).toFixed(1)} s` : ''}`);
    await u.sleep(SETTLE_MS);
    await step('rss', async () => ({ ...(await u.sampleMem(tool.daemonPid, { count: 5 })), fds: u.fdCount(tool.daemonPid), nofile: openFileLimit(tool.daemonPid) }));
    await step('status', () => statusRuns(tool, statusRunsN));
    await step('statusBytes', async () => (await tool.list()).bytes);
    if (tool instanceof Nodeguard) await step('filters', () => statusFilters(tool, n));
    await step('events', async () => eventsLatency(tool, (await tool.list()).rows));
    await step('verbs', () => verbs(tool, apps));
    const listed = await tool.list();
    const pids = listed.rows.map((r) => r.pid).filter(alive);
    await step('stopAll', () => stopAll(tool, pids));
  } catch (err) {
    out.error = `${out.steps[out.steps.length - 1] || 'setup'}: ${String(err.message || err).split('\n').slice(0, 4).join(' / ')}`;
    if (tool.proc && tool.proc.exit()) out.error += ` (the daemon exited ${JSON.stringify(tool.proc.exit())}; its last output: ${tool.proc.tail(4).replace(/\s+/g, ' ').slice(0, 400)})`;
    if (tool.lostWhy) out.error += tool.lostWhy();
    log(`scale ${tool.name} ${n} failed at ${out.error}`);
  } finally {
    out.kill = await tool.kill().catch((err) => ({ error: String(err.message) }));
    out.killedAfter = tool.killSeen();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Scenario B: daemon CPU with N processes, 100 of them Node apps with heartbeats

async function scenarioB(tool, n, { log }) {
  const nodeApps = Math.min(CPU_NODE_APPS, n);
  const apps = appList(n, nodeApps);
  const out = { tool: tool.name, n, nodeApps, steps: [] };
  try {
    out.steps.push('boot');
    await tool.boot();
    out.steps.push('start');
    out.start = await startAndWatch(tool, apps, { deadlineMs: tool.phase(startDeadline(n)) });
    // Not all running: the CPU is still measured, with how many were running said beside it.
    if (!out.start.readyMs) {
      out.partial = `${out.start.last?.ready ?? 0} of ${n} running (${out.start.stalled || out.start.cli?.output || 'see timeline'})`;
      if (!out.start.last || !out.start.last.ready) throw new Error(`none running: ${out.partial}`);
    }
    await u.sleep(5_000);
    out.steps.push('cpu');
    const c0 = cpuSeconds(tool.daemonPid);
    const t0 = u.now();
    await u.sleep(CPU_WINDOW_MS);
    const c1 = cpuSeconds(tool.daemonPid);
    const wall = (u.now() - t0) / 1000;
    if (c0 === null || c1 === null) throw new Error('the daemon vanished while its CPU was measured');
    out.cpu = { pct: (100 * (c1 - c0)) / wall, seconds: c1 - c0, windowS: wall };
    const after = await tool.list();
    out.readyAfter = after.rows.filter((r) => tool.ready(r) && alive(r.pid)).length;
    if (tool instanceof Nodeguard) out.monitoredNode = after.rows.filter((r) => r.name.startsWith('node-') && r.monitored).length;
    log(`scale ${tool.name} cpu: ${out.cpu.pct.toFixed(2)} % of a core`);
  } catch (err) {
    out.error = `${out.steps[out.steps.length - 1]}: ${String(err.message || err).split('\n').slice(0, 4).join(' / ')}`;
    if (tool.proc && tool.proc.exit()) out.error += ` (the daemon exited ${JSON.stringify(tool.proc.exit())}; its last output: ${tool.proc.tail(4).replace(/\s+/g, ' ').slice(0, 400)})`;
    log(`scale ${tool.name} cpu failed at ${out.error}`);
  } finally {
    out.kill = await tool.kill().catch((err) => ({ error: String(err.message) }));
    out.killedAfter = tool.killSeen();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The whole figure group

/**
 * Runs scenarios A and B for nodeguard, PM2 and OxMgr at `n` processes. `pm2` is run.js's Pm2
 * (installed, or null with the reason in `pm2Why`). Never throws: every failure is in the result.
 */
async function run(ctx, { n, tools = ['nodeguard', 'pm2', 'oxmgr'], pm2, pm2Why, log, statusRunsN = 10 }) {
  const fds = fdPlan(n);
  if (fds.note) log(`scale: ${fds.note}`);
  ctx = { ...ctx, fds };
  const out = { n, tools: {}, cpuNodeApps: Math.min(CPU_NODE_APPS, n), cpuWindowMs: CPU_WINDOW_MS, settleMs: SETTLE_MS, sleep: SLEEP_BIN, nofile: nofile(), fds, peerPhaseMs: PEER_PHASE_MS };
  let ox = null;
  if (tools.includes('oxmgr')) {
    try {
      ox = await ensureOxmgr(log);
      out.oxmgrInstall = ox.how;
    } catch (err) {
      out.oxmgrInstall = String(err.message);
    }
  } else out.oxmgrInstall = 'not run (--tools)';
  const makers = {
    nodeguard: () => new Nodeguard(ctx),
    PM2: pm2 ? () => new Pm2Tool(ctx, pm2) : null,
    OxMgr: ox ? async () => new Oxmgr(ctx, ox.bin, [await u.freePort(), await u.freePort()]) : null,
  };
  for (const [name, make] of Object.entries(makers)) {
    const entry = (out.tools[name] = {});
    if (!tools.includes(name.toLowerCase())) {
      entry.unavailable = 'not run (--tools)';
      continue;
    }
    if (!make) {
      entry.unavailable = name === 'PM2' ? `not installed: ${pm2Why || 'unknown reason'}` : `not installed: ${out.oxmgrInstall}`;
      log(`scale: ${name} ${entry.unavailable}`);
      continue;
    }
    try {
      const a = await make();
      entry.version = a.version;
      if (a.hasEvents !== undefined) entry.hasEvents = a.hasEvents;
      entry.a = await scenarioA(a, n, { statusRunsN: name === 'PM2' ? Math.max(3, statusRunsN >> 1) : statusRunsN, log });
      if (n <= CPU_MAX_N) entry.b = await scenarioB(await make(), n, { log });
      else entry.b = { skipped: `the CPU scenario runs at up to ${CPU_MAX_N.toLocaleString('en-US')} processes` };
    } catch (err) {
      entry.error = String(err.message || err).split('\n').slice(0, 4).join(' / ');
    }
    const left = await u.sweep(ctx.tag);
    if (left.length) entry.swept = left.length;
  }
  return out;
}

/** The soft/hard open-file limit a process runs under, from /proc/<pid>/limits ("65536/65536"). */
function openFileLimit(pid) {
  try {
    const line = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/);
    return `${soft}/${hard}`;
  } catch {
    return null;
  }
}

function nofile() {
  const r = spawnSync('bash', ['-c', 'echo "$(ulimit -Sn) $(ulimit -Hn)"'], { encoding: 'utf8' });
  const [soft, hard] = r.stdout.trim().split(' ');
  return { soft, hard };
}

// ---------------------------------------------------------------------------------------------
// Report

/** Every scale section's heading starts so; one section per process count. */
const SCALE_HEADING = '## Scale: ';
const heading = (n) => `${SCALE_HEADING}${n.toLocaleString('en-US')} processes, nodeguard beside PM2 and OxMgr`;

const s = (ms) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s` : 'n/a');
const msf = (ms) => (Number.isFinite(ms) ? `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms` : 'n/a');
const mb = (kb) => (Number.isFinite(kb) ? `${(kb / 1000).toFixed(1)} MB` : 'n/a');

/** nodeguard ÷ peer, lower is better. */
function ratioCell(ng, peer) {
  if (!Number.isFinite(ng) || !Number.isFinite(peer) || peer === 0) return 'n/a';
  const r = ng / peer;
  return r < 1 ? `${r.toFixed(2)}× (${(1 / r).toFixed(1)}× less)` : `${r.toFixed(2)}×`;
}

/** How far a `stop all` got: "1,234 of 2,000 processes stopped". */
function stopped(x) {
  if (!Number.isFinite(x.of)) return `${x.left} still alive`;
  return `${(x.of - x.left).toLocaleString('en-US')} of ${x.of.toLocaleString('en-US')} processes stopped`;
}

/** "12 of 2,000 still alive 60 s after it began". */
function stillAlive(x) {
  const of = Number.isFinite(x.of) ? ` of ${x.of.toLocaleString('en-US')}` : '';
  const after = Number.isFinite(x.waitedMs) ? `${s(x.waitedMs)} after it began` : 'after 60 s';
  return `${x.left.toLocaleString('en-US')}${of} still alive ${after}`;
}

/** How far a tool got when a figure is missing. */
function howFar(entry, which = 'a') {
  if (!entry) return 'not run';
  if (entry.unavailable) return entry.unavailable.startsWith('not run') ? entry.unavailable : 'not installed (see Versions)';
  if (entry.error) return `failed: ${entry.error}`;
  const x = entry[which];
  if (!x) return 'not run';
  if (x.skipped) return `not run: ${x.skipped}`;
  const st = x.start;
  const got = st && st.last ? `${st.last.ready} of ${x.n} running, ${st.last.errored} errored after ${s(st.last.at)}` : 'no listing';
  return `${x.error ? `stopped at ${x.error}; ` : ''}${got}${st && st.stalled ? ` (${st.stalled})` : ''}`;
}

function figures(entry) {
  const a = entry && entry.a;
  const b = entry && entry.b;
  const st = a && a.start;
  return {
    spawned: st && st.spawnedMs ? st.spawnedMs.hi : NaN,
    ready: st && st.readyMs ? st.readyMs.hi : NaN,
    cli: st && st.cli && st.cli.code === 0 ? st.cli.ms : NaN,
    errored: st && st.last ? st.last.errored : NaN,
    rss: a && a.rss ? a.rss.median.VmRSS : NaN,
    cpu: b && b.cpu ? b.cpu.pct : NaN,
    cpuPartial: b && b.cpu && b.partial ? b.partial : null,
    status: a && a.status ? a.status.median : NaN,
    stopCli: a && a.stopAll && a.stopAll.code === 0 ? a.stopAll.cliMs : NaN,
    stopGone: a && a.stopAll && a.stopAll.goneMs !== null ? a.stopAll.goneMs : NaN,
  };
}

function scaleSection(r, env) {
  const n = r.n;
  const T = ['nodeguard', 'PM2', 'OxMgr'];
  const f = Object.fromEntries(T.map((t) => [t, figures(r.tools[t])]));
  const cell = (t, key, fmt, which = 'a') => {
    if (Number.isFinite(f[t][key])) return fmt(f[t][key]) + (key === 'cpu' && f[t].cpuPartial ? ` (with only ${f[t].cpuPartial})` : '');
    const stop = r.tools[t] && r.tools[t].a && r.tools[t].a.stopAll;
    if (key === 'stopCli' && stop && stop.bounded) return `**not done within the bench's ${s(stop.cliMs)} bound**: ${stopped(stop)}`;
    if (key === 'stopCli' && stop) return `**exit ${stop.code} after ${s(stop.cliMs)}**: ${stop.output}`;
    if (key === 'stopGone' && stop) return `**${stillAlive(stop)}**`;
    return howFar(r.tools[t], which);
  };
  const N = n.toLocaleString('en-US');
  const big = n >= 10_000;
  const rows = [
    [`start ${N} light processes: all spawned (a live pid each, from the tool's own listing)`, '', 'spawned', s],
    [`start ${N}: all running in the tool's own terms (nodeguard: \`running\`, after a 200 ms start grace; PM2: \`online\`; OxMgr: \`running\`)`, big ? 'starts completely' : '≤ 5 s', 'ready', s],
    [`start ${N}: the start command returned`, '', 'cli', s],
    [`apps errored at the end of the start`, big ? '0' : '', 'errored', (v) => String(v)],
    [`daemon RSS with ${N} processes (the daemon alone)`, `≤ ${Math.max(5, (n * 20) / 1000)} MB (≤ 20 kB/app)`, 'rss', (v) => `${mb(v)} (${((v * 1000) / n / 1000).toFixed(1)} kB/app)`],
    [`daemon CPU with ${N} processes, ${r.cpuNodeApps} of them Node apps (nodeguard: heartbeats every 1 s), over ${r.cpuWindowMs / 1000} s`, '≤ 5 % of a core', 'cpu', (v) => `${v.toFixed(2)} %`, 'b'],
    [`\`status --json\` / \`pm2 jlist\` / \`oxmgr list --json\`, whole CLI run, median`, '≤ 20 ms', 'status', msf],
    [`\`stop all\`: the command returned`, '≤ 2 s', 'stopCli', s],
    [`\`stop all\`: every process gone`, '', 'stopGone', s],
  ];
  const lines = [
    heading(n),
    '',
    `Generated by \`node bench/run.js --only scale${n === 2000 ? '' : ` --scale ${n}`}\` (issue 17); rerun it rather than editing. One run, the three tools one after the other on the same machine.`,
    '',
    `- Date: ${env.date}; machine: ${env.cpu}, ${env.cores} cores, ${(env.ramGiB || 0).toFixed(1)} GiB RAM; ${env.os}`,
    `- Versions: ${env.nodeguard} (commit ${env.commit}), PM2 ${r.tools.PM2?.version || 'not installed'}, OxMgr ${r.tools.OxMgr?.version || 'not installed'} (${r.oxmgrInstall}), node ${env.node}`,
    `- Load average (1/5/15 min) at the start of the run: ${(env.loadBefore || []).map((v) => v.toFixed(2)).join(' / ')}; at its end: ${(env.loadAfter || []).map((v) => v.toFixed(2)).join(' / ')}. The machine was shared with other builds: figures that depend on CPU time (start, stop, status) are upper bounds.`,
    `- Open-file limit of the bench (soft/hard): ${r.nofile.soft}/${r.nofile.hard}; PM2's and OxMgr's daemons are launched under \`ulimit -n <hard>\`, nodeguard raises its own soft limit.${r.fds && r.fds.note ? ` For ${N} processes (~${r.fds.need.toLocaleString('en-US')} fds): ${r.fds.note}.` : ''}`,
    ...(r.peerPhaseMs ? [`- PM2 and OxMgr get at most ${s(r.peerPhaseMs)} for each long phase (a start, \`stop all\`, the daemon's kill, a verb); where one does not finish in it, the table says how far it got. nodeguard's phases are not bounded so.`] : []),
    `- Light process: \`${r.sleep} 100000\` run directly (nodeguard: a command app, no monitor, \`start_grace: '200ms'\` as in the issue's scenario; PM2: \`interpreter: 'none'\`; OxMgr: \`command\`). Node apps: \`bench/apps/idle.js\`.`,
    ...(n >= NO_LOGS_MIN_N ? noLogsLines(r, N) : []),
    '',
    `| figure, ${N} processes | target | nodeguard | PM2 | OxMgr | nodeguard ÷ PM2 | nodeguard ÷ OxMgr |`,
    '|---|---|---|---|---|---|---|',
  ];
  for (const [label, target, key, fmt, which] of rows) {
    lines.push(`| ${label} | ${target || ''} | ${cell('nodeguard', key, fmt, which)} | ${cell('PM2', key, fmt, which)} | ${cell('OxMgr', key, fmt, which)} | ${ratioCell(f.nodeguard[key], f.PM2[key])} | ${ratioCell(f.nodeguard[key], f.OxMgr[key])} |`);
  }
  // events and filters: nodeguard only
  const ng = r.tools.nodeguard || {};
  const evCell = (t) => {
    const x = r.tools[t] && r.tools[t].a && r.tools[t].a.events;
    if (!x) return howFar(r.tools[t]);
    if (!x.available) return x.why;
    return `${msf(x.summary.median)} (max ${msf(x.summary.max)}${x.missed ? `, **${x.missed} of ${x.missed + x.ms.length} never seen within 3 s**` : ''})`;
  };
  const evMed = (t) => r.tools[t]?.a?.events?.summary?.median;
  lines.push(
    `| an exit seen on the tool's event stream (\`nodeguard events --json\`, \`oxmgr events --json\`) after SIGKILL of the process, median of ${EVENT_KILLS} | ≤ 5 ms | ${evCell('nodeguard')} | ${r.tools.PM2 && !r.tools.PM2.unavailable ? 'no event stream on the CLI (its bus is in the API)' : evCell('PM2')} | ${evCell('OxMgr')} | | ${ratioCell(evMed('nodeguard'), evMed('OxMgr'))} |`,
  );
  const fl = ng.a && ng.a.filters;
  const filterCell = (x) => (!x ? 'not run' : x.available ? `${msf(x.ms.median)}, ${x.rows} rows, ${x.bytes} bytes${x.filtered ? '' : ' (**not filtered**)'}` : `not available in this build (${x.why})`);
  if (n >= NO_LOGS_MIN_N) {
    const c = ng.a && ng.a.captured;
    const capturedCell = !c ? howFar(ng) : c.code === 0 ? `started (exit 0${c.listed ? `, ${c.listed.toLocaleString('en-US')} listed` : ''}), then deleted` : `refused in ${c.lines} line${c.lines === 1 ? '' : 's'} after ${s(c.ms)}, nothing added: \`${c.output.replace(/^nodeguard: error: /, '').replace(/\|/g, '\\|')}\``;
    lines.push(`| the same ${N} with captured output (no \`disable_logs\`), tried first | one clear line when the fds cannot fit | ${capturedCell} | not tried | not tried | | |`);
  }
  lines.push(`| \`status 'sleep-1*' --json\` (name filter) | | ${filterCell(fl && fl.glob)} | | | | |`);
  lines.push(`| \`status --state errored --json\` | | ${filterCell(fl && fl.state)} | | | | |`);
  lines.push('');

  // Verbs
  lines.push(`### Every verb at ${N} processes`, '', '| tool | verb | answered | time |', '|---|---|---|---|');
  for (const t of T) {
    const a = r.tools[t] && r.tools[t].a;
    if (!a) continue;
    for (const v of a.verbs || []) lines.push(`| ${t} | \`${v.label}\` | ${v.code === 0 ? 'yes' : `**no** (exit ${v.code}: ${v.error})`} | ${s(v.ms)} |`);
    if (a.stopAll) {
      const x = a.stopAll;
      const answered = x.code === 0 ? 'yes' : x.bounded ? `**not within the bench's bound**: ${stopped(x)}` : `**no** (exit ${x.code}: ${x.output})`;
      lines.push(`| ${t} | \`stop all\` | ${answered} | ${s(x.cliMs)}${x.left ? `, **${stillAlive(x)}**` : ''} |`);
    }
    if (a.kill) lines.push(`| ${t} | kill the daemon | ${a.kill.code === 0 ? 'yes' : `**no** (${a.kill.error || `exit ${a.kill.code}: ${a.kill.output}`})`} | ${s(a.kill.ms)}${a.killedAfter ? `; the bench then SIGKILLed ${a.killedAfter} leftover process(es)` : ''} |`);
  }
  lines.push('');

  // Details
  lines.push('### Details', '');
  for (const t of T) {
    const e = r.tools[t];
    if (!e) continue;
    if (e.unavailable || e.error) {
      lines.push(`- **${t}**: ${e.unavailable || `failed: ${e.error}`}`);
      continue;
    }
    for (const [which, x] of [['A (start, RSS, status, stop)', e.a], ['B (CPU)', e.b]]) {
      if (!x) continue;
      const st = x.start;
      const parts = [];
      if (x.boot) parts.push(`daemon boot ${msf(x.boot.ms)} (${mb(x.boot.rss && x.boot.rss.VmRSS)} RSS empty)`);
      if (st) {
        parts.push(`listing polled ${st.pollMs.n} times while starting, each poll ${msf(st.pollMs.median)} median (${msf(st.pollMs.max)} max): a figure above is the end of the first poll that saw it, the previous poll began ${st.readyMs ? msf(st.readyMs.hi - st.readyMs.lo) : 'n/a'} earlier`);
        if (st.cli) parts.push(`start command: exit ${st.cli.code}${st.cli.signal ? ` (${st.cli.signal})` : ''} after ${s(st.cli.ms)}${st.cli.code ? `: ${st.cli.output}` : ''}`);
        if (st.stalled) parts.push(`**stopped watching: ${st.stalled}**`);
        if (st.pollErrors) parts.push(`${st.pollErrors} polls failed (last: ${st.lastPollError})`);
        const tl = st.timeline;
        const pick = tl.length <= 8 ? tl : [...tl.slice(0, 3), ...tl.slice(Math.floor(tl.length / 2), Math.floor(tl.length / 2) + 1), ...tl.slice(-4)];
        parts.push(`progress (s: listed/spawned/running/errored): ${pick.map((p) => `${(p.at / 1000).toFixed(1)}: ${p.listed}/${p.spawned}/${p.ready}/${p.errored}`).join(', ')}`);
      }
      if (x.rss) parts.push(`daemon RSS ${mb(x.rss.median.VmRSS)} (anon ${mb(x.rss.median.RssAnon)}, file ${mb(x.rss.median.RssFile)}), ${x.rss.fds} fds${x.rss.nofile ? ` (limit ${x.rss.nofile})` : ''}`);
      if (x.status) parts.push(`status runs: ${x.status.n}, median ${msf(x.status.median)} (min ${msf(x.status.min)}, max ${msf(x.status.max)}), ${x.statusBytes} bytes of JSON${x.status.failures ? `, ${x.status.failures} failed` : ''}`);
      if (x.events && x.events.available && x.events.sample) parts.push(`an events record: \`${x.events.sample}\``);
      if (x.cpu) parts.push(`CPU ${x.cpu.seconds.toFixed(2)} s over ${x.cpu.windowS.toFixed(1)} s; ${x.readyAfter} of ${x.n} still running after${x.monitoredNode !== undefined ? `; ${x.monitoredNode} of ${x.nodeApps} Node apps with their monitor connected` : ''}`);
      if (x.skipped) parts.push(`not run: ${x.skipped}`);
      if (x.error) parts.push(`**failed at ${x.error}**`);
      lines.push(`- **${t}**, scenario ${which}: ${parts.join('; ')}.`);
    }
  }
  lines.push(
    '',
    '### Method',
    '',
    '- Each tool runs on a fresh daemon booted before the clock starts (nodeguard `daemon`, `pm2 ping`, `oxmgr daemon run`), with a home of its own under a temp dir; the apps come from one config file per tool (JSON apps list, ecosystem file, oxfile.toml) given to one start command (`nodeguard start`, `pm2 start`, `oxmgr apply`).',
    "- While the start command runs, the bench polls the tool's own JSON listing back to back (100 ms apart) and checks each listed pid in /proc; \"spawned\" and \"running\" are the end of the first poll that saw all N. The poll's own duration is in the details: it bounds the error, and a slow listing (PM2's) also slows down what it measures.",
    "- RSS: VmRSS of the daemon process alone (PM2: the God daemon; nodeguard and OxMgr: the daemon), median of 5 samples 200 ms apart, 3 s after all were running. CPU: utime + stime of the daemon from /proc over the window, 5 s after all were running.",
    '- `status --json`: whole invocations timed by one bash process with $EPOCHREALTIME, output to /dev/null.',
    '- `stop all`: the command as a whole, then /proc polled every 20 ms until every pid the listing had shown before is gone (or a zombie).',
    "- After each scenario, failure or not: the tool's own kill (`nodeguard kill`, `pm2 kill`, `oxmgr daemon stop`), then every pid the bench ever saw listed, the daemon, and every process carrying the run's tag are SIGKILLed.",
    '',
  );
  return lines.join('\n');
}

/** What the section says at NO_LOGS_MIN_N and above: logs disabled, and why (the fd arithmetic). */
function noLogsLines(r, N) {
  const hard = r.nofile && r.nofile.hard;
  const limit = hard === 'unlimited' ? 'unlimited' : Number(hard).toLocaleString('en-US');
  const three = (r.n * 3).toLocaleString('en-US');
  return [
    `- **At ${N} processes the light apps run with \`disable_logs: true\`** (nodeguard and PM2; PM2's field): their stdout and stderr go to /dev/null in the process itself. With captured output nodeguard holds 3 fds per light app (its stdout pipe, its stderr pipe, its pidfd): ${N} × 3 = ${three}, over this machine's hard open-file limit of ${limit}, which root cannot raise here (no CAP_SYS_RESOURCE). With logs disabled it holds 1 (the pidfd): ${N}. The bench first tries the same ${N} apps with captured output on the empty daemon: nodeguard's one-line refusal (or its start) is in the table.`,
    `- PM2 runs the same config (\`disable_logs: true\`; PM2 still pipes each app's output into its God daemon and drops it there). OxMgr runs its usual \`command\` apps: the bench sets no log option for it. Both are bounded by the per-phase bound above. A full bench run starts 2,000 processes; this ${N} section comes only from \`--scale ${r.n}\`, so the peers' phases here add nothing to a full run.`,
  ];
}

/**
 * Puts the scale section for `n` processes into `file` (bench/RESULTS.md): replaces the existing
 * one for the same `n` (from its heading to the next `## ` heading), or inserts it before "## Real
 * ecosystem files" (or at the end).
 */
function writeSection(file, section, n) {
  let old = '';
  try {
    old = fs.readFileSync(file, 'utf8');
  } catch {
    // a new file
  }
  const ECO = '## Real ecosystem files';
  const own = `${heading(n)}\n`;
  let at = old.indexOf(own);
  let end;
  if (at >= 0) {
    const next = old.indexOf('\n## ', at + own.length);
    end = next >= 0 ? next + 1 : old.length;
  } else {
    const eco = old.indexOf(ECO);
    at = eco >= 0 ? eco : old.length;
    end = at;
  }
  const before = old.slice(0, at);
  const sep = before && !before.endsWith('\n\n') ? (before.endsWith('\n') ? '\n' : '\n\n') : '';
  fs.writeFileSync(file, `${before}${sep}${section.trimEnd()}\n\n${old.slice(end)}`);
}

module.exports = { run, scaleSection, writeSection, SCALE_HEADING, OXMGR_VERSION, Nodeguard, Pm2Tool, Oxmgr, scenarioA, scenarioB, fdPlan };
