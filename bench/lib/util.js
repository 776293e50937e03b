'use strict';
// Shared helpers for the bench: statistics, /proc readings, process cleanup, loopback HTTP.
//
// Cleanup model: every process the bench starts gets NODEGUARD_BENCH_TAG=<tag> in its environment
// (children inherit it: nodeguard's workers, PM2's daemon and its apps). `sweep()` scans /proc for
// processes whose environment or command line holds the tag and SIGKILLs them (their group if they
// lead one). It runs after every phase and on exit, failure or not.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');

// ---------------------------------------------------------------------------------------------
// Statistics

function sorted(values) {
  return [...values].sort((a, b) => a - b);
}

function median(values) {
  if (values.length === 0) return NaN;
  const s = sorted(values);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
function percentile(values, p) {
  if (values.length === 0) return NaN;
  const s = sorted(values);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length, Math.max(1, rank)) - 1];
}

/** { n, median, min, max, p99 } of a list of numbers. */
function summarize(values) {
  return {
    n: values.length,
    median: median(values),
    min: values.length ? Math.min(...values) : NaN,
    max: values.length ? Math.max(...values) : NaN,
    p99: percentile(values, 99),
    values,
  };
}

// ---------------------------------------------------------------------------------------------
// Time

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const now = () => performance.now();

/** Polls `fn` (may be async) every `every` ms until it returns a truthy value; throws on timeout. */
async function waitUntil(fn, { timeout = 15_000, every = 20, what = 'a condition' } = {}) {
  const deadline = now() + timeout;
  let lastError;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
    }
    await sleep(every);
  }
}

// ---------------------------------------------------------------------------------------------
// /proc

function readProc(pid, file) {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return null;
  }
}

/** { state, ppid, pgid } from /proc/<pid>/stat, or null if there is no such process. */
function procStat(pid) {
  const stat = readProc(pid, 'stat');
  if (stat === null) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0], ppid: Number(fields[1]), pgid: Number(fields[2]) };
}

/** Gone = no /proc entry, or a zombie (exited, only waiting to be reaped). */
function isGone(pid) {
  const stat = procStat(pid);
  return stat === null || stat.state === 'Z';
}

/** Memory lines of /proc/<pid>/status in kB: { VmRSS, RssAnon, RssFile, RssShmem }, or null. */
function memKb(pid) {
  const status = readProc(pid, 'status');
  if (status === null) return null;
  const out = {};
  for (const key of ['VmRSS', 'RssAnon', 'RssFile', 'RssShmem', 'VmHWM', 'Threads']) {
    const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status);
    if (m) out[key] = Number(m[1]);
  }
  return out.VmRSS === undefined ? null : out;
}

/**
 * `count` readings of memKb(pid), `every` ms apart. Returns { samples: [memKb…], median: {key: kB} }.
 * Throws if the process vanishes.
 */
async function sampleMem(pid, { count = 5, every = 200 } = {}) {
  const samples = [];
  for (let i = 0; i < count; i++) {
    if (i) await sleep(every);
    const m = memKb(pid);
    if (!m) throw new Error(`process ${pid} vanished while sampling its memory`);
    samples.push(m);
  }
  const med = {};
  for (const key of Object.keys(samples[0])) med[key] = median(samples.map((s) => s[key]));
  return { samples, median: med };
}

const NODE_BINARY = (() => {
  try {
    return fs.realpathSync(process.execPath);
  } catch {
    return process.execPath;
  }
})();

/**
 * Resident memory by mapping, from /proc/<pid>/smaps: { name: kB } where name is the mapped file's
 * base name, or [heap], [stack], [anon] (no name), etc. The node binary (the one running the bench)
 * is split by segment: "node r--p@0", "node r-xp@772000", ... Null if the process is gone.
 */
function smapsByMapping(pid) {
  const text = readProc(pid, 'smaps');
  if (text === null) return null;
  const out = {};
  let name = null;
  for (const line of text.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ (\S+) ([0-9a-f]+) \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      const p = header[3].trim();
      if (p === NODE_BINARY) name = `node ${header[1]}@${parseInt(header[2], 16).toString(16)}`;
      else if (p === '') name = '[anon]';
      else if (p.startsWith('[')) name = p.replace(/^\[anon:.*\]$/, '[anon]');
      else name = p.split('/').pop().replace(/ \(deleted\)$/, '');
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && name !== null) out[name] = (out[name] || 0) + Number(rss[1]);
  }
  return out;
}

function taggedPids(tag) {
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const environ = readProc(pid, 'environ');
    const cmdline = readProc(pid, 'cmdline');
    if ((environ && environ.includes(`NODEGUARD_BENCH_TAG=${tag}`)) || (cmdline && cmdline.includes(tag))) {
      found.push(pid);
    }
  }
  return found;
}

/** Live (non-zombie) processes carrying the run's tag. */
function liveTagged(tag) {
  return taggedPids(tag).filter((pid) => !isGone(pid));
}

/** SIGKILLs a pid's process group if it leads one (and it is not ours), else the pid itself. */
function killHard(pid) {
  const stat = procStat(pid);
  if (!stat || stat.state === 'Z') return;
  const ownGroup = procStat(process.pid)?.pgid;
  if (stat.pgid === pid && pid !== ownGroup) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Kills every tagged process, repeating until none is left (or ~3 s pass). Returns what it killed. */
async function sweep(tag) {
  const killed = new Map();
  for (let round = 0; round < 30; round++) {
    const live = liveTagged(tag);
    if (live.length === 0) break;
    for (const pid of live) {
      if (!killed.has(pid)) killed.set(pid, (readProc(pid, 'cmdline') || '').split('\0').join(' ').trim().slice(0, 120));
      killHard(pid);
    }
    await sleep(100);
  }
  return [...killed].map(([pid, cmd]) => `${pid} (${cmd})`);
}

/** Synchronous last-resort version of sweep, for process 'exit'. */
function sweepSync(tag) {
  for (const pid of liveTagged(tag)) killHard(pid);
}

// ---------------------------------------------------------------------------------------------
// Child processes

/**
 * Runs a command to completion: resolves { code, signal, stdout, stderr, ms }. Killed (its whole
 * group) after `timeout`.
 */
function runCmd(cmd, args, { env, cwd, timeout = 120_000 } = {}) {
  const start = now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }, timeout);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(err), ms: now() - start });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: now() - start });
    });
  });
}

/**
 * A long-running child in its own process group, with its output collected as lines.
 * Returns { child, pid, lines: [{text, at}], waitLine(regex, timeout) }.
 */
function startDetached(cmd, args, { env, cwd } = {}) {
  const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const lines = [];
  const waiters = new Set();
  const onLine = (text) => {
    lines.push({ text, at: now() });
    for (const w of waiters) w();
  };
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop();
      parts.forEach(onLine);
    });
  }
  let exitInfo = null;
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      for (const w of waiters) w();
      resolve(exitInfo);
    }),
  );
  child.on('error', () => {});
  function waitLine(regex, { timeout = 15_000, from = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < lines.length; i++) {
          const m = regex.exec(lines[i].text);
          if (m) {
            done();
            resolve(m);
            return;
          }
        }
        if (exitInfo) {
          done();
          reject(new Error(`${cmd} exited (${JSON.stringify(exitInfo)}) before printing ${regex}; output:\n${tail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${regex}; output:\n${tail()}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  }
  function tail(n = 20) {
    return lines.slice(-n).map((l) => `  ${l.text}`).join('\n');
  }
  return { child, pid: child.pid, lines, waitLine, tail, exited, exit: () => exitInfo };
}

/** A word quoted for bash. */
function shellQuote(word) {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${String(word).replace(/'/g, `'\\''`)}'`;
}

/**
 * Times whole command invocations as a shell runs them: one bash process runs every command `n`
 * times, the commands in rotating order (so drift hits each alike), stdout and stderr to
 * /dev/null, each bracketed by $EPOCHREALTIME (µs). `commands` is { label: argv }. Returns
 * { label: { ms: [..], failures } } (a failure = non-zero exit status).
 */
async function timeInShell(commands, n, { env, cwd, timeout = 300_000 } = {}) {
  const labels = Object.keys(commands);
  const lines = ['set +e'];
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < labels.length; k++) {
      const idx = (i + k) % labels.length;
      const cmd = commands[labels[idx]].map(shellQuote).join(' ');
      lines.push(`s=$EPOCHREALTIME; ${cmd} >/dev/null 2>&1; rc=$?; e=$EPOCHREALTIME; echo "${idx} $s $e $rc"`);
    }
  }
  const script = lines.join('\n') + '\n';
  const r = await runCmd('bash', ['-c', script], { env: { ...env, LC_ALL: 'C' }, cwd, timeout });
  if (r.code !== 0) throw new Error(`timing shell failed (exit ${r.code}, ${r.signal}): ${r.stderr.slice(-1000)}`);
  const us = (t) => {
    const [sec, frac] = t.split('.');
    return Number(sec) * 1e6 + Number(frac.padEnd(6, '0'));
  };
  const out = Object.fromEntries(labels.map((l) => [l, { ms: [], failures: 0 }]));
  for (const line of r.stdout.trim().split('\n')) {
    const [idx, s, e, rc] = line.split(' ');
    const slot = out[labels[Number(idx)]];
    slot.ms.push((us(e) - us(s)) / 1000);
    if (rc !== '0') slot.failures++;
  }
  for (const l of labels) {
    if (out[l].ms.length !== n) throw new Error(`timing shell: ${out[l].ms.length} results for ${l}, expected ${n}`);
  }
  return out;
}

/** Open file descriptors of a process (sockets, pipes, log files), or null if it is gone. */
function fdCount(pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/**
 * Open file descriptors of a process by kind: { socket, pipe, 'anon_inode:[pidfd]', …, file }
 * (`file` = a path on disk), or null if it is gone.
 */
function fdKinds(pid) {
  let fds;
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return null;
  }
  const out = {};
  for (const fd of fds) {
    let target;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const kind = target.startsWith('/') ? 'file' : target.replace(/:\[\d+\]$/, '').replace(/^anon_inode:\[?([^\]]*)\]?$/, 'anon_inode:[$1]');
    out[kind] = (out[kind] || 0) + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loopback HTTP

/** A free TCP port on 127.0.0.1 (bound then released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** GET http://127.0.0.1:<port><path> on a fresh connection: { status, body, at } (at = end time). */
function get(port, urlPath = '/', { timeout = 1_000, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent, timeout }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body, at: now() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET :${port}${urlPath} timed out after ${timeout} ms`)));
    req.on('error', reject);
  });
}

/**
 * Polls GET / until a process other than `notPid` answers 200 "ok <pid>". Returns { pid, at,
 * attempts }. Refused connections come back at once; an attempt on a hung server times out after
 * `attemptTimeout` and is retried.
 */
async function waitServing(port, { notPid = null, timeout = 15_000, attemptTimeout = 250, gap = 1 } = {}) {
  const deadline = now() + timeout;
  let attempts = 0;
  let lastError = null;
  while (now() < deadline) {
    attempts++;
    try {
      const res = await get(port, '/', { timeout: attemptTimeout });
      const m = /^ok (\d+)/.exec(res.body);
      if (res.status === 200 && m && Number(m[1]) !== notPid) return { pid: Number(m[1]), at: res.at, attempts };
    } catch (err) {
      lastError = err;
    }
    if (gap) await sleep(gap);
  }
  throw new Error(`port ${port} not serving (from a new pid) within ${timeout} ms (${attempts} attempts; last error: ${lastError && lastError.message})`);
}

/** `a / b` for a report: `0.42× (2.4× less)` or `3.10×`; `n/a` when either is missing. */
function ratio(a, b) {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return 'n/a';
  const r = a / b;
  return r < 1 ? `${r.toFixed(2)}× (${(1 / r).toFixed(1)}× less)` : `${r.toFixed(2)}×`;
}

/** A phase's result that did not run or failed. */
const failed = (x) => !x || x.error !== undefined;
/** Why a phase has no figure, for the report. */
const why = (x) => (x && x.error ? `failed: ${x.error}` : 'not run');

module.exports = {
  ratio,
  failed,
  why,
  median,
  percentile,
  summarize,
  sleep,
  now,
  waitUntil,
  procStat,
  isGone,
  memKb,
  sampleMem,
  smapsByMapping,
  liveTagged,
  killHard,
  sweep,
  sweepSync,
  runCmd,
  startDetached,
  shellQuote,
  timeInShell,
  fdCount,
  fdKinds,
  freePort,
  get,
  waitServing,
};
