#!/usr/bin/env node
'use strict';
// Fault soak: one app under nodeguard's daemon, under constant HTTP load on 127.0.0.1, hit by
// random faults for a fixed time; then the invariants are checked.
//
//   node bench/soak.js [--duration 5m] [--seed N] [--no-reload] [--json FILE] [--no-build]
//
//   --duration  how long faults are injected: 30s, 5m, or seconds (default 5m)
//   --seed      seed of the fault sequence (default: from the clock); printed, so a run can be
//               repeated with the same faults in the same order
//   --no-reload run without the reload fault. Without this flag a nodeguard that has no `reload`
//               verb (it comes with cluster mode) fails the soak at once, saying so
//   --json      also write the full result as JSON
//   --no-build  use target/release/nodeguard as it is (default: node scripts/build.js first)
//
// The app (bench/apps/soak-app.js) serves HTTP and writes a numbered line every 10 ms. With
// cluster mode it runs as 2 instances sharing a supervisor-owned port (--listen), else as one
// process on its own port. Faults, drawn from a seeded deck (every kind once per round, in a
// shuffled order), one at a time, each on a healthy app (every instance running, monitored, up
// for at least 1.2 s so that a restart is immediate):
//
//   kill-worker   SIGKILL one instance                 expect restarts +1 on it
//   hang-worker   GET /hang blocks one instance's loop expect hangs +1 and restarts +1
//   stop-daemon   SIGSTOP the daemon 2-3 s, SIGCONT    expect no restart, no hang, same pids
//   reload        nodeguard reload soak                expect new pids, no hang
//   kill-daemon   SIGKILL the daemon, then `nodeguard resurrect`
//                 expect every app process gone within 1 s (no orphan), the app back, and the
//                 counters as they were before the kill
//
// Invariants checked afterwards (any failure: exit code 1):
//   - no orphans: after a daemon SIGKILL every app process is gone before resurrect, and after
//     the final `nodeguard kill` no process of the run is left;
//   - every fault is accounted for: after each fault the app's restart and hang counters moved by
//     exactly what the fault explains, and a daemon SIGKILL + resurrect keeps them as they were;
//   - no app log line is lost: in the log files, each process's lines are numbered 1, 2, 3, …
//     with no gap, no repeat, none out of order, each whole. A process that exited gracefully
//     wrote its last number in an `E` line, so its lines are checked up to that one. For a process
//     killed with SIGKILL (by the soak, or by a hang kill) nothing tells where its output ended,
//     so its lines are checked up to the last one in the file. Lines of processes that were
//     running when the daemon itself was SIGKILLed may lose their tail with the daemon (what it
//     had read from their pipes but not yet written): reported, not counted as a loss, and a cut
//     line is allowed there only;
//   - the daemon's fd count and RSS are flat: sampled on a healthy app before every fault, the
//     last sample of each daemon (between daemon kills) against its first: no more fds, RSS
//     within +1 MB;
//   - requests lost per fault are reported (not an invariant: without cluster mode, a single
//     process that is killed loses the requests sent until it is back).

const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const u = require('./lib/util');

const REPO = path.resolve(__dirname, '..');
const APP = path.join(__dirname, 'apps', 'soak-app.js');
const KINDS = ['kill-worker', 'hang-worker', 'stop-daemon', 'reload', 'kill-daemon'];
/** Heartbeats of the soak's app: a hang is caught within about a second. */
const HEARTBEAT = { heartbeat_interval: 200, heartbeat_timeout: 200, heartbeat_misses: 3 };
/** Uptime before the next fault, so the restart after it is immediate (min_uptime 1 s). */
const MIN_UPTIME_MS = 1_200;
const RECOVER_TIMEOUT_MS = 20_000;
const ORPHAN_LIMIT_MS = 1_000;
/** Concurrent keep-alive request loops, and the pause after each request. */
const LOAD_LOOPS = 2;
const LOAD_PAUSE_MS = 5;
const REQUEST_TIMEOUT_MS = 1_000;
const RSS_SLACK_KB = 1024;

// ---------------------------------------------------------------------------------------------

function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|)$/.exec(String(text).trim());
  if (!m) throw new Error(`cannot read duration '${text}' (write e.g. 30s or 5m)`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1_000;
}

function parseArgs(argv) {
  const opts = { durationMs: 5 * 60_000, seed: null, reload: true, json: null, build: true, bin: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--duration') opts.durationMs = parseDuration(value());
    else if (a === '--seed') opts.seed = Number(value());
    else if (a === '--no-reload') opts.reload = false;
    else if (a === '--json') opts.json = path.resolve(value());
    else if (a === '--no-build') opts.build = false;
    else if (a === '--keep') opts.keep = true;
    else if (a === '--bin') opts.bin = path.resolve(value());
    else throw new Error(`unknown option ${a}`);
  }
  if (opts.seed === null) opts.seed = Date.now() % 1_000_000;
  if (!Number.isInteger(opts.seed)) throw new Error('--seed takes an integer');
  return opts;
}

/** mulberry32: a small seeded PRNG, so a seed replays the same faults. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled(items, random) {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The daemon

class Daemon {
  constructor(bin, tmp, tag) {
    this.bin = bin;
    this.home = path.join(tmp, 'home');
    fs.mkdirSync(this.home, { recursive: true });
    this.env = { ...process.env, NODEGUARD_HOME: this.home, NODEGUARD_BENCH_TAG: tag, NODEGUARD_PRELOAD: path.join(REPO, 'preload.js'), NO_COLOR: '1' };
    this.pid = null;
  }

  cli(args, { timeout = 60_000 } = {}) {
    return u.runCmd(this.bin, args, { env: this.env, cwd: this.home, timeout });
  }

  async must(args, opts) {
    const r = await this.cli(args, opts);
    if (r.code !== 0) throw new Error(`nodeguard ${args.join(' ')} failed (exit ${r.code}): ${(r.stdout + r.stderr).trim().slice(-1500)}`);
    return r;
  }

  async ping() {
    const r = await this.must(['ping']);
    const m = /pid (\d+)/.exec(r.stdout);
    if (!m) throw new Error(`nodeguard ping: no pid in ${JSON.stringify(r.stdout)}`);
    this.pid = Number(m[1]);
    return this.pid;
  }

  /** The soak app's rows of `status --json` (one per instance). */
  async rows() {
    const r = await this.must(['status', '--json'], { timeout: 10_000 });
    return JSON.parse(r.stdout).filter((a) => a.name === 'soak' || a.name.startsWith('soak:'));
  }

  async hasVerb(verb) {
    const r = await this.cli([verb, '--help']);
    return r.code === 0;
  }

  logFiles() {
    const dir = path.join(this.home, 'logs');
    if (!fs.existsSync(dir)) return [];
    return fs
      .readdirSync(dir)
      .filter((f) => /^soak.*-(out|err)\.log(\.\d+)?$/.test(f))
      .map((f) => path.join(dir, f));
  }
}

const totals = (rows) => ({
  restarts: rows.reduce((acc, r) => acc + (r.restarts || 0), 0),
  hangs: rows.reduce((acc, r) => acc + (r.hangs || 0), 0),
});

const healthy = (rows, instances) =>
  rows.length === instances && rows.every((r) => r.state === 'running' && r.monitored && r.pid > 0 && r.uptime_ms >= MIN_UPTIME_MS);

/**
 * The daemon's open fds and RSS, each the least of 5 readings 20 ms apart (a control connection
 * of ours may take a moment to close).
 */
async function steadySample(pid) {
  let fds = Infinity;
  let rss = Infinity;
  for (let i = 0; i < 5; i++) {
    if (i) await u.sleep(20);
    fds = Math.min(fds, u.fdCount(pid) ?? Infinity);
    rss = Math.min(rss, u.memKb(pid)?.VmRSS ?? Infinity);
  }
  return { at: u.now(), fds, rss };
}

// ---------------------------------------------------------------------------------------------
// Load

class Load {
  constructor(port) {
    this.port = port;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: LOAD_LOOPS });
    this.running = false;
    this.ok = 0;
    this.failed = 0;
    this.loops = [];
  }

  request() {
    return new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: this.port, path: '/', agent: this.agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(res.statusCode === 200 && body.startsWith('ok ')));
        res.on('error', () => resolve(false));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => resolve(false));
    });
  }

  start() {
    this.running = true;
    for (let i = 0; i < LOAD_LOOPS; i++) {
      this.loops.push(
        (async () => {
          while (this.running) {
            if (await this.request()) this.ok++;
            else this.failed++;
            await u.sleep(LOAD_PAUSE_MS);
          }
        })(),
      );
    }
  }

  async stop() {
    this.running = false;
    await Promise.all(this.loops);
    this.agent.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Log check

/**
 * Reads the app's log files and checks every process's numbered lines. `ends` maps pid → how the
 * process ended as the soak saw it ('daemon-killed' for processes alive at a daemon SIGKILL).
 */
function checkLogs(files, daemonKilledPids) {
  const byPid = new Map();
  const cut = [];
  let lines = 0;
  // Rotated files (.N) hold older lines: read the highest number first.
  const order = (f) => {
    const m = /\.log\.(\d+)$/.exec(f);
    return m ? -Number(m[1]) : 0;
  };
  for (const file of [...files].sort((a, b) => order(a) - order(b))) {
    for (const text of fs.readFileSync(file, 'utf8').split('\n')) {
      if (text === '') continue;
      let m = /^L (\d+) (\d+) x{40}$/.exec(text);
      if (m) {
        lines++;
        const pid = Number(m[1]);
        if (!byPid.has(pid)) byPid.set(pid, { seqs: [], end: null });
        byPid.get(pid).seqs.push(Number(m[2]));
        continue;
      }
      m = /^E (\d+) (\d+)$/.exec(text);
      if (m) {
        const pid = Number(m[1]);
        if (!byPid.has(pid)) byPid.set(pid, { seqs: [], end: null });
        byPid.get(pid).end = Number(m[2]);
        continue;
      }
      if (/^L \d/.test(text) || /^E \d/.test(text)) cut.push({ file: path.basename(file), text: text.slice(0, 80) });
      // Anything else (listening lines, the supervisor's [nodeguard] notes, JS stacks) is not ours.
    }
  }
  const problems = [];
  let tailLostProcesses = 0;
  for (const [pid, { seqs, end }] of byPid) {
    for (let i = 0; i < seqs.length; i++) {
      if (seqs[i] !== i + 1) {
        problems.push(`pid ${pid}: line ${i + 1} of its output is numbered ${seqs[i]} (a gap, repeat or reordering)`);
        break;
      }
    }
    if (end !== null && end !== seqs.length) problems.push(`pid ${pid}: exited after line ${end} but ${seqs.length} of its lines are in the log`);
    if (end === null && daemonKilledPids.has(pid)) tailLostProcesses++;
  }
  const allowedCuts = cut.filter((c) => {
    const pid = Number((/^[LE] (\d+)/.exec(c.text) || [])[1]);
    return daemonKilledPids.has(pid);
  });
  for (const c of cut) if (!allowedCuts.includes(c)) problems.push(`a cut line in ${c.file}: ${JSON.stringify(c.text)}`);
  return { lines, processes: byPid.size, cutAtDaemonKill: allowedCuts.length, tailLostProcesses, problems };
}

// ---------------------------------------------------------------------------------------------
// The soak

async function soak(opts, log = (m) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${m}\n`)) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ngs-'));
  const tag = path.basename(tmp);
  const bin = opts.bin || path.join(REPO, 'target', 'release', 'nodeguard');
  const random = prng(opts.seed);
  const d = new Daemon(bin, tmp, tag);
  const result = { seed: opts.seed, durationMs: opts.durationMs, faults: [], invariants: {}, failures: [] };
  const fail = (what) => {
    result.failures.push(what);
    log(`INVARIANT FAILED: ${what}`);
  };
  let load = null;
  try {
    const reload = await d.hasVerb('reload');
    if (!reload && opts.reload) {
      throw new Error(
        'nodeguard has no `reload` verb (it comes with cluster mode): the reload fault cannot run. ' +
          'Build a nodeguard with cluster mode, or pass --no-reload to soak without that fault.',
      );
    }
    const kinds = KINDS.filter((k) => k !== 'reload' || opts.reload);
    result.kinds = kinds;
    result.cluster = reload;
    const instances = reload ? 2 : 1;
    result.instances = instances;
    const port = await u.freePort();
    const app = { name: 'soak', script: APP, args: ['--port', String(port)], max_restarts: 0, kill_timeout: 3000, ...HEARTBEAT };
    if (reload) Object.assign(app, { instances, listen: String(port) });
    const config = path.join(tmp, 'soak.json');
    fs.writeFileSync(config, `${JSON.stringify({ apps: [app] }, null, 2)}\n`);
    await d.must(['start', config], { timeout: 60_000 });
    await d.ping();
    log(`seed ${opts.seed}; daemon pid ${d.pid}; ${instances} instance(s) on 127.0.0.1:${port}; faults ${kinds.join(', ')}; ${opts.durationMs / 1000} s`);

    const waitHealthy = async (what) => {
      try {
        return await u.waitUntil(async () => {
          const rows = await d.rows();
          return healthy(rows, instances) ? rows : null;
        }, { timeout: RECOVER_TIMEOUT_MS, every: 50, what });
      } catch (err) {
        throw new Error(`${err.message}; status: ${JSON.stringify(await d.rows().catch((e) => String(e)))}`);
      }
    };

    let rows = await waitHealthy('the app running');
    load = new Load(port);
    load.start();
    const samples = [];
    const epochs = [{ daemonPid: d.pid, samples }];
    const daemonKilledPids = new Set();
    const gracefulPids = new Set();
    const deadline = u.now() + opts.durationMs;
    let deck = [];
    while (u.now() < deadline) {
      if (deck.length === 0) deck = shuffled(kinds, random);
      const kind = deck.shift();
      rows = await waitHealthy(`the app healthy before ${kind}`);
      // Sample the daemon in a steady state: a healthy app, no request of ours in flight.
      epochs[epochs.length - 1].samples.push(await steadySample(d.pid));
      const before = totals(rows);
      const pidsBefore = rows.map((r) => r.pid);
      const failedBefore = load.failed;
      const okBefore = load.ok;
      const t0 = u.now();
      const fault = { kind, atS: Number(((t0 - (deadline - opts.durationMs)) / 1000).toFixed(1)) };
      let expect = { restarts: 0, hangs: 0 };
      if (kind === 'kill-worker') {
        const victim = rows[Math.floor(random() * rows.length)];
        fault.pid = victim.pid;
        process.kill(victim.pid, 'SIGKILL');
        expect = { restarts: 1, hangs: 0 };
        await u.waitUntil(async () => (await d.rows()).some((r) => r.pid && !pidsBefore.includes(r.pid)), { timeout: RECOVER_TIMEOUT_MS, every: 20, what: 'a new pid after kill-worker' });
      } else if (kind === 'hang-worker') {
        const res = await u.get(port, '/hang', { timeout: 2_000 });
        const m = /^hanging (\d+)/.exec(res.body);
        if (!m) throw new Error(`unexpected /hang reply ${JSON.stringify(res.body)}`);
        fault.pid = Number(m[1]);
        expect = { restarts: 1, hangs: 1 };
        await u.waitUntil(async () => (await d.rows()).some((r) => r.pid && !pidsBefore.includes(r.pid)), { timeout: RECOVER_TIMEOUT_MS, every: 20, what: 'a new pid after hang-worker' });
      } else if (kind === 'stop-daemon') {
        const ms = 2_000 + Math.floor(random() * 1_000);
        fault.stoppedMs = ms;
        process.kill(d.pid, 'SIGSTOP');
        await u.sleep(ms);
        process.kill(d.pid, 'SIGCONT');
      } else if (kind === 'reload') {
        const r = await d.must(['reload', 'soak'], { timeout: 60_000 });
        fault.output = r.stdout.trim().split('\n').slice(-1)[0];
        for (const pid of pidsBefore) gracefulPids.add(pid);
        expect = null; // restarts: whatever reload counts (recorded); hangs: none
      } else if (kind === 'kill-daemon') {
        const dead = d.pid;
        process.kill(dead, 'SIGKILL');
        for (const pid of pidsBefore) daemonKilledPids.add(pid);
        const gone = await u
          .waitUntil(() => pidsBefore.every((p) => u.isGone(p)) && u.isGone(dead), { timeout: ORPHAN_LIMIT_MS, every: 5 })
          .then(() => u.now() - t0)
          .catch(() => null);
        fault.orphansGoneMs = gone === null ? null : Math.round(gone);
        if (gone === null) fail(`kill-daemon at ${fault.atS} s: app process(es) ${pidsBefore.filter((p) => !u.isGone(p)).join(', ')} still alive ${ORPHAN_LIMIT_MS} ms after the daemon's SIGKILL (orphans)`);
        await d.must(['resurrect'], { timeout: 60_000 });
        await d.ping();
        epochs.push({ daemonPid: d.pid, samples: [] });
        // The daemon writes its state file whenever a restart or hang is counted, so the new
        // daemon carries on with the same counts.
        expect = { restarts: 0, hangs: 0 };
      }
      rows = await waitHealthy(`the app healthy again after ${kind}`);
      const after = totals(rows);
      fault.recoveredMs = Math.round(u.now() - t0);
      fault.delta = { restarts: after.restarts - before.restarts, hangs: after.hangs - before.hangs };
      if (kind === 'stop-daemon') {
        const same = rows.every((r) => pidsBefore.includes(r.pid));
        if (!same) fail(`stop-daemon at ${fault.atS} s: the app's pids changed (${pidsBefore} -> ${rows.map((r) => r.pid)}): a frozen supervisor killed a healthy app`);
      }
      if (kind === 'reload') {
        if (fault.delta.hangs !== 0) fail(`reload at ${fault.atS} s: hang counter moved by ${fault.delta.hangs}`);
        if (rows.some((r) => pidsBefore.includes(r.pid))) fail(`reload at ${fault.atS} s: an old pid still serves`);
      }
      if (kind === 'kill-daemon') fault.counters = { beforeKill: before, afterResurrect: after };
      if (expect && (fault.delta.restarts !== expect.restarts || fault.delta.hangs !== expect.hangs)) {
        fail(`${kind} at ${fault.atS} s: restarts ${fault.delta.restarts >= 0 ? '+' : ''}${fault.delta.restarts}, hangs ${fault.delta.hangs >= 0 ? '+' : ''}${fault.delta.hangs}; expected +${expect.restarts} and +${expect.hangs}`);
      }
      fault.failedRequests = load.failed - failedBefore;
      fault.okRequests = load.ok - okBefore;
      result.faults.push(fault);
      log(`${kind} at ${fault.atS} s: back in ${fault.recoveredMs} ms, restarts +${fault.delta.restarts}, hangs +${fault.delta.hangs}, ${fault.failedRequests} request(s) failed`);
    }
    await load.stop();
    result.requests = { ok: load.ok, failed: load.failed };
    load = null;
    epochs[epochs.length - 1].samples.push(await steadySample(d.pid));

    // fds and RSS per daemon.
    result.epochs = epochs.map((e) => ({ daemonPid: e.daemonPid, samples: e.samples.map((s) => ({ fds: s.fds, rssKb: s.rss })) }));
    for (const e of epochs) {
      if (e.samples.length < 2) continue;
      const first = e.samples[0];
      const last = e.samples[e.samples.length - 1];
      if (last.fds > first.fds) fail(`daemon ${e.daemonPid}: ${first.fds} open fds at its first healthy sample, ${last.fds} at its last`);
      if (last.rss > first.rss + RSS_SLACK_KB) fail(`daemon ${e.daemonPid}: RSS grew from ${first.rss} kB to ${last.rss} kB (more than ${RSS_SLACK_KB} kB)`);
    }

    // The final stop, then nothing may be left.
    const finalRows = await d.rows();
    for (const r of finalRows) gracefulPids.add(r.pid);
    const finalDaemon = d.pid;
    await d.must(['kill'], { timeout: 60_000 });
    await u.waitUntil(() => u.isGone(finalDaemon) && u.liveTagged(tag).length === 0, { timeout: 5_000, every: 20 }).catch(() => {});
    const left = u.liveTagged(tag);
    if (left.length) fail(`processes left after nodeguard kill: ${left.join(', ')}`);

    const logs = checkLogs(d.logFiles(), daemonKilledPids);
    result.logs = logs;
    for (const p of logs.problems) fail(`log: ${p}`);
    // Processes that ended gracefully (reload's old instances, the final kill) must have their E line.
    const logPids = new Set();
    for (const file of d.logFiles()) for (const m of fs.readFileSync(file, 'utf8').matchAll(/^E (\d+) /gm)) logPids.add(Number(m[1]));
    const missingEnd = [...gracefulPids].filter((p) => !logPids.has(p));
    if (missingEnd.length) fail(`log: no exit line from gracefully stopped pid(s) ${missingEnd.join(', ')} (their last lines were lost)`);

    // Summary per kind.
    result.byKind = {};
    for (const kind of kinds) {
      const fs_ = result.faults.filter((f) => f.kind === kind);
      result.byKind[kind] = {
        count: fs_.length,
        failedRequests: u.summarize(fs_.map((f) => f.failedRequests)),
        recoveredMs: u.summarize(fs_.map((f) => f.recoveredMs)),
      };
    }
    result.invariants = {
      orphans: !result.failures.some((f) => /orphan|left after/.test(f)),
      counters: !result.failures.some((f) => /expected \+|hang counter|pids changed|old pid/.test(f)),
      logs: !result.failures.some((f) => f.startsWith('log:')),
      flat: !result.failures.some((f) => /open fds|RSS grew/.test(f)),
    };
    return result;
  } finally {
    if (load) await load.stop().catch(() => {});
    if (d.pid && !u.isGone(d.pid)) {
      try {
        process.kill(d.pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    const swept = await u.sweep(tag);
    if (swept.length) log(`swept leftover processes: ${swept.join('; ')}`);
    if (opts.keep) log(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function summaryText(r) {
  const lines = [];
  lines.push(`seed ${r.seed}, ${r.durationMs / 1000} s, ${r.faults.length} faults, ${r.instances} instance(s)${r.cluster ? ' (cluster mode)' : ''}`);
  lines.push('| fault | count | requests failed per fault, median (min–max) | back to healthy, median (min–max) |');
  lines.push('|---|---|---|---|');
  for (const [kind, k] of Object.entries(r.byKind || {})) {
    const f = k.failedRequests;
    const t = k.recoveredMs;
    lines.push(k.count ? `| ${kind} | ${k.count} | ${f.median} (${f.min}–${f.max}) | ${Math.round(t.median)} ms (${t.min}–${t.max}) |` : `| ${kind} | 0 | | |`);
  }
  if (r.requests) lines.push(`requests: ${r.requests.ok} ok, ${r.requests.failed} failed`);
  if (r.logs) lines.push(`log lines checked: ${r.logs.lines} from ${r.logs.processes} processes; cut at a daemon kill: ${r.logs.cutAtDaemonKill}; processes whose tail went with a killed daemon: ${r.logs.tailLostProcesses}`);
  const kills = r.faults.filter((f) => f.kind === 'kill-daemon');
  if (kills.length) {
    lines.push(`daemon SIGKILL: app processes gone after ${kills.map((f) => `${f.orphansGoneMs} ms`).join(', ')}; counters before the kill → after resurrect: ${kills.map((f) => `${f.counters.beforeKill.restarts}/${f.counters.beforeKill.hangs} → ${f.counters.afterResurrect.restarts}/${f.counters.afterResurrect.hangs}`).join(', ')} (restarts/hangs)`);
  }
  if (r.epochs) lines.push(`daemon fds/RSS at healthy samples: ${r.epochs.map((e) => `pid ${e.daemonPid}: ${e.samples.map((s) => `${s.fds}/${s.rssKb}k`).join(' ')}`).join('; ')}`);
  lines.push(r.failures.length ? `FAILED invariants:\n  ${r.failures.join('\n  ')}` : 'all invariants hold');
  return lines.join('\n');
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`${err.message}\nusage: node bench/soak.js [--duration 5m] [--seed N] [--no-reload] [--json FILE] [--no-build]`);
    process.exit(2);
  }
  if (opts.build && !opts.bin) {
    const b = spawnSync(process.execPath, [path.join(REPO, 'scripts', 'build.js')], { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
    if (b.status !== 0) process.exit(1);
  }
  let result;
  try {
    result = await soak(opts);
  } catch (err) {
    console.error(`soak: error: ${err.message}`);
    process.exit(1);
  }
  if (opts.json) fs.writeFileSync(opts.json, `${JSON.stringify(result, null, 1)}\n`);
  process.stdout.write(`${summaryText(result)}\n`);
  process.exit(result.failures.length ? 1 : 0);
}

if (require.main === module) main();

module.exports = { soak, summaryText, parseDuration, checkLogs };
