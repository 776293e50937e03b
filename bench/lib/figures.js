'use strict';
// Figures of issue 7, measured and reported: 9 supervisor CPU with 50 apps at 100 ms heartbeats,
// 10 `stop all` with 2 and 50 apps, 11 log throughput of one app writing as fast as it can,
// 12 start 100 apps (from figure 8's runs), and the summary row of 13 (failed requests during a
// rolling reload, measured by reload.js; its details table is report.js's clusterSection).

const fs = require('node:fs');
const path = require('node:path');
const u = require('./util');
const { NodeguardDaemon } = require('./nodeguard');

const APPS = {
  idle: path.join(__dirname, '..', 'apps', 'idle.js'),
  flood: path.join(__dirname, '..', 'apps', 'flood.js'),
};

function idleApps(count, tag, extra = {}) {
  return Array.from({ length: count }, (_, i) => ({ name: `idle-${i}`, script: APPS.idle, args: ['--bench-tag', tag], ...extra }));
}

/** CPU time (utime + stime) of a process in seconds, from /proc/<pid>/stat. */
function cpuSeconds(pid) {
  let stat;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state field here.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

const CLK_TCK = (() => {
  const r = require('node:child_process').spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  return Number(r.stdout) > 0 ? Number(r.stdout) : 100;
})();

/** CPU use of `pid` over `windowMs`, in % of one core: { pct, seconds, windowMs }. */
async function cpuOver(pid, windowMs) {
  const c0 = cpuSeconds(pid);
  const t0 = u.now();
  await u.sleep(windowMs);
  const c1 = cpuSeconds(pid);
  const wall = (u.now() - t0) / 1000;
  if (c0 === null || c1 === null) throw new Error(`process ${pid} vanished while its CPU was measured`);
  return { pct: (100 * (c1 - c0)) / wall, seconds: c1 - c0, windowMs: wall * 1000 };
}

// ---------------------------------------------------------------------------------------------
// Figure 9: CPU

/**
 * A nodeguard daemon with `count` idle apps at `intervalMs` heartbeats (timeout the same):
 * CPU % of one core over `windows` windows of `windowMs`, after every app answered heartbeats for
 * a few seconds. PM2's God daemon with the same apps (PM2 has no heartbeats) over the same window,
 * as a reference.
 */
async function cpuNodeguard(ctx, { count, intervalMs, windowMs, windows }) {
  const d = new NodeguardDaemon(ctx);
  const names = idleApps(count, ctx.tag).map((a) => a.name);
  const out = { count, intervalMs, clkTck: CLK_TCK };
  let pids = [];
  try {
    await d.startConfig(idleApps(count, ctx.tag, { heartbeat_interval: intervalMs, heartbeat_timeout: intervalMs }));
    pids = (await d.waitAllRunning(names)).map((a) => a.pid);
    await u.sleep(3_000);
    out.windows = [];
    for (let i = 0; i < windows; i++) out.windows.push(await cpuOver(d.pid, windowMs));
    out.pct = u.summarize(out.windows.map((w) => w.pct));
    const after = await d.status();
    out.running = after.filter((a) => a.state === 'running' && a.monitored).length;
    out.restarts = after.reduce((acc, a) => acc + a.restarts + a.hangs, 0);
    out.lastPongMax = Math.max(...after.map((a) => a.last_pong_ms ?? Infinity));
  } finally {
    out.kill = await d.kill(pids);
  }
  return out;
}

async function cpuPm2(pm2, tag, { count, windowMs, windows }) {
  const names = idleApps(count, tag).map((a) => a.name);
  const out = { count };
  try {
    await pm2.startEcosystem(idleApps(count, tag));
    await pm2.waitOnline(names, { timeout: 120_000 });
    const god = pm2.godPid();
    if (!god) throw new Error('no PM2 God daemon pid');
    await u.sleep(3_000);
    out.windows = [];
    for (let i = 0; i < windows; i++) out.windows.push(await cpuOver(god, windowMs));
    out.pct = u.summarize(out.windows.map((w) => w.pct));
  } finally {
    await pm2.kill();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Figure 10: stop all

/**
 * `nodeguard stop all` with `count` idle apps, timed as a whole CLI invocation (it returns once
 * every app has exited), `trials` times on one daemon (`restart all` in between). Checks that
 * every pid is gone when it returns.
 */
async function stopAllNodeguard(ctx, { count, trials }) {
  const d = new NodeguardDaemon(ctx);
  const names = idleApps(count, ctx.tag).map((a) => a.name);
  const out = { count, ms: [], leftAfterStop: 0 };
  let pids = [];
  try {
    await d.startConfig(idleApps(count, ctx.tag));
    for (let t = 0; t < trials; t++) {
      if (t) {
        const r = await d.cli(['restart', 'all'], { timeout: 120_000 });
        if (r.code !== 0) throw new Error(`nodeguard restart all failed: ${r.stderr}`);
      }
      pids = (await d.waitAllRunning(names)).map((a) => a.pid);
      await u.sleep(500);
      const r = await d.cli(['stop', 'all'], { timeout: 120_000 });
      if (r.code !== 0) throw new Error(`nodeguard stop all failed (exit ${r.code}): ${r.stderr}`);
      out.ms.push(r.ms);
      out.leftAfterStop += pids.filter((p) => !u.isGone(p)).length;
    }
    out.stop = u.summarize(out.ms);
  } finally {
    out.kill = await d.kill(pids);
  }
  return out;
}

async function stopAllPm2(pm2, tag, { count, trials }) {
  const names = idleApps(count, tag).map((a) => a.name);
  const out = { count, ms: [], leftAfterStop: 0 };
  try {
    await pm2.startEcosystem(idleApps(count, tag));
    for (let t = 0; t < trials; t++) {
      if (t) await pm2.cli(['restart', 'all'], { timeout: 120_000 });
      const by = await pm2.waitOnline(names, { timeout: 120_000 });
      await u.sleep(500);
      const r = await pm2.cli(['stop', 'all'], { timeout: 120_000 });
      out.ms.push(r.ms);
      out.leftAfterStop += names.filter((n) => !u.isGone(by[n].pid)).length;
    }
    out.stop = u.summarize(out.ms);
  } finally {
    await pm2.kill();
  }
  return out;
}

/**
 * The apps' own close time: `count` bare `node idle.js` processes, SIGTERM to all at once, time
 * until the last has exited; and a bare `node -e 0` start-to-exit for the CLI's own floor.
 */
async function stopBare(ctx, { count, trials }) {
  const ms = [];
  for (let t = 0; t < trials; t++) {
    const procs = Array.from({ length: count }, () => u.startDetached(process.execPath, [APPS.idle, '--bench-tag', ctx.tag], { cwd: ctx.tmp, env: ctx.env }));
    await Promise.all(procs.map((p) => p.waitLine(/^idle pid=/, { timeout: 30_000 })));
    const t0 = u.now();
    for (const p of procs) process.kill(p.pid, 'SIGTERM');
    await Promise.all(procs.map((p) => p.exited));
    ms.push(u.now() - t0);
  }
  return { count, stop: u.summarize(ms) };
}

// ---------------------------------------------------------------------------------------------
// Figure 11: log throughput

/** Reads `file` and checks it holds lines F 1 … F count whole and in order. */
function checkFlood(file, count) {
  const text = fs.readFileSync(file, 'utf8');
  let next = 1;
  let bad = 0;
  for (const line of text.split('\n')) {
    const m = /^F (\d+) x+$/.exec(line);
    if (!m) continue;
    if (Number(m[1]) === next && line.length === 99) next++;
    else bad++;
  }
  return { found: next - 1, bad };
}

/**
 * Waits until `file` has all `count` lines (by size: `flood start …` + 100 bytes a line), then
 * checks them. Throughput: bytes / (when the last byte was seen − when the app began writing).
 */
async function waitFlood(file, count, { timeout = 120_000 } = {}) {
  const payload = count * 100;
  let start = null;
  let header = 0;
  const end = await u.waitUntil(
    () => {
      let size;
      try {
        size = fs.statSync(file).size;
      } catch {
        return null;
      }
      if (start === null && size > 0) {
        const head = fs.readFileSync(file, 'utf8').slice(0, 200);
        const m = /^flood start (\d+)\n/.exec(head);
        if (m) {
          start = Number(m[1]);
          header = m[0].length;
        }
      }
      return start !== null && size >= header + payload ? Date.now() : null;
    },
    { timeout, every: 5, what: `${count} lines in ${path.basename(file)}` },
  );
  const check = checkFlood(file, count);
  const seconds = (end - start) / 1000;
  return { count, bytes: payload, seconds, mbps: payload / 1e6 / seconds, ...check };
}

async function floodNodeguard(ctx, { count, trials }) {
  const runs = [];
  for (let t = 0; t < trials; t++) {
    const d = new NodeguardDaemon(ctx);
    let pids = [];
    let kill = null;
    try {
      await d.startConfig([{ name: 'flood', script: APPS.flood, args: ['--lines', String(count), '--bench-tag', ctx.tag] }]);
      runs.push(await waitFlood(path.join(d.home, 'logs', 'flood-out.log'), count));
      pids = (await d.status()).map((a) => a.pid).filter(Boolean);
    } finally {
      kill = await d.kill(pids);
    }
    if (kill.left.length) throw new Error(`processes left after nodeguard kill: ${kill.left.join(', ')}`);
  }
  return summarizeFlood(runs);
}

async function floodPm2(pm2, tag, { count, trials }) {
  const runs = [];
  for (let t = 0; t < trials; t++) {
    try {
      const logs = path.join(pm2.home, 'logs');
      fs.rmSync(path.join(logs, 'flood-out.log'), { force: true });
      await pm2.startEcosystem([{ name: 'flood', script: APPS.flood, args: ['--lines', String(count), '--bench-tag', tag] }]);
      runs.push(await waitFlood(path.join(logs, 'flood-out.log'), count));
    } finally {
      await pm2.kill();
    }
  }
  return summarizeFlood(runs);
}

function summarizeFlood(runs) {
  return {
    runs,
    mbps: u.summarize(runs.map((r) => r.mbps)),
    lost: runs.reduce((acc, r) => acc + (r.count - r.found), 0),
    bad: runs.reduce((acc, r) => acc + r.bad, 0),
    count: runs[0]?.count,
  };
}

// ---------------------------------------------------------------------------------------------
// Report

const MB = (kb) => kb / 1000;

function fmt(v, digits) {
  return Number.isFinite(v) ? v.toFixed(digits) : 'n/a';
}

function spread(s, unit, digits) {
  return `${fmt(s.median, digits)} ${unit} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}

const { ratio, failed, why } = u;

function reportMore(r, rows, details, notes) {
  // ---- 9. CPU ------------------------------------------------------------------------------
  {
    const TARGET = 2;
    const x = r.cpuNg;
    const p = r.cpuPm2;
    const ok = !failed(x);
    rows.push([
      `9. Supervisor CPU, ${ok ? x.count : 50} apps at 100 ms heartbeats`,
      `≤ ${TARGET} % of one core`,
      ok ? spread(x.pct, '%', 2) : why(x),
      failed(p) ? why(p) : `${spread(p.pct, '%', 2)} (God daemon, same apps, no heartbeats)`,
      ok && !failed(p) ? ratio(x.pct.median, p.pct.median) : 'n/a',
      ok ? (x.pct.median <= TARGET ? (x.pct.max <= TARGET ? 'meets' : 'meets (median; a window went past it)') : `**misses** (${fmt(x.pct.median, 2)} %)`) : '**not measured**',
    ]);
    const lines = ['### 9. Supervisor CPU with 50 apps at 100 ms heartbeats', ''];
    if (ok) {
      lines.push(
        `A nodeguard daemon with ${x.count} \`idle.js\` apps, heartbeat interval and timeout ${x.intervalMs} ms (${Math.round((x.count * 1000) / x.intervalMs)} pings and as many pongs a second), measured 3 s after every app answered: the daemon's utime + stime from /proc/<pid>/stat (clock ticks of 1/${x.clkTck} s) over ${x.windows.length} window(s) of ${fmt(x.windows[0].windowMs / 1000, 1)} s each, as % of one core. At the end ${x.running} of ${x.count} apps were running with a monitor, the oldest last pong was ${x.lastPongMax} ms old, and ${x.restarts} restarts or hangs had happened. This includes the once-a-second scan of /proc for process trees (proctree.rs).`,
        '',
        `Per window: ${x.windows.map((w) => `${fmt(w.pct, 2)} %`).join(', ')}.`,
        '',
      );
      if (!failed(p)) lines.push(`PM2's God daemon with the same ${p.count} apps (PM2 sends no heartbeats; it polls each app's CPU and memory): ${p.windows.map((w) => `${fmt(w.pct, 2)} %`).join(', ')}.`, '');
      lines.push(
        'Profile (perf, 50 apps at 100 ms, before the fix): half of the time was the kernel\'s unix-socket send/receive, and most of the rest epoll wakeups and context switches: each app was pinged on its own schedule (its spawn time), so 50 apps meant ~1,000 separate wakeups a second. Pings after an app\'s first now go out on a grid shared by the supervisor\'s apps (`origin + k × interval`, never later than the app\'s own cadence: machine.rs `on_grid`), so apps with the same interval are pinged in one wakeup and their pongs are read in a few. Measured on the busy development machine: 3.1–4.3 % before, 1.8 % after.',
        '',
      );
    } else lines.push(why(x), '');
    details.push(lines.join('\n'));
  }

  // ---- 10. stop all --------------------------------------------------------------------------
  {
    const lines = ['### 10. `stop all` with 2 and with 50 apps', ''];
    lines.push(
      'Whole CLI invocations timed from the bench (spawn to exit): `nodeguard stop all` (it returns once every app has exited) and `pm2 stop all`, with `idle.js` apps (which exit at once on SIGTERM), a few trials each (`restart all` between them). The apps\' own close time: the same number of bare `node idle.js` processes sent SIGTERM at once, until the last has exited. nodeguard sends every app its stop in parallel (each app\'s task acts on its own; supervisor.rs `command_each`), so 50 apps stop in about the time one does.',
      '',
      '| apps | nodeguard `stop all` | PM2 `pm2 stop all` | ratio | bare: SIGTERM all, until all exited | left running after stop |',
      '|---|---|---|---|---|---|',
    );
    for (const [ng, pm, bare, count] of [
      [r.stopNg2, r.stopPm2_2, r.stopBare2, 2],
      [r.stopNg50, r.stopPm2_50, r.stopBare50, 50],
    ]) {
      const ngS = failed(ng) ? null : ng.stop;
      const pmS = failed(pm) ? null : pm.stop;
      lines.push(
        `| ${count} | ${ngS ? spread(ngS, 'ms', 0) : why(ng)} | ${pmS ? spread(pmS, 'ms', 0) : why(pm)} | ${ngS && pmS ? ratio(ngS.median, pmS.median) : 'n/a'} | ${failed(bare) ? why(bare) : spread(bare.stop, 'ms', 0)} | ${ngS ? ng.leftAfterStop : 'n/a'} (nodeguard), ${pmS ? pm.leftAfterStop : 'n/a'} (PM2) |`,
      );
      const target = count === 50 ? 'close to the apps\' own close time; ≤ 0.5 s (in parallel)' : 'close to the apps\' own close time';
      let verdict = '**not measured**';
      if (ngS) {
        if (count === 50) verdict = ngS.max <= 500 ? 'meets' : ngS.median <= 500 ? 'meets (median)' : `**misses** (${fmt(ngS.median, 0)} ms)`;
        else verdict = failed(bare) ? 'reported' : `reported: ${fmt(ngS.median - bare.stop.median, 0)} ms over the bare close (the CLI's own start and the round trip)`;
      }
      rows.push([`10. \`stop all\`, ${count} apps`, target, ngS ? spread(ngS, 'ms', 0) : why(ng), pmS ? spread(pmS, 'ms', 0) : why(pm), ngS && pmS ? ratio(ngS.median, pmS.median) : 'n/a', verdict]);
    }
    lines.push('');
    details.push(lines.join('\n'));
  }

  // ---- 11. log throughput ----------------------------------------------------------------------
  {
    const ng = r.floodNg;
    const pm = r.floodPm2;
    const ok = !failed(ng);
    const verdict = ok ? (ng.lost === 0 && ng.bad === 0 ? 'meets (no line lost or cut)' : `**misses**: ${ng.lost} lost, ${ng.bad} cut or out of order`) : '**not measured**';
    rows.push([
      '11. Log throughput, one app writing as fast as it can',
      'no lost lines; MB/s next to PM2\'s',
      ok ? `${spread(ng.mbps, 'MB/s', 1)}, ${ng.lost} lost` : why(ng),
      failed(pm) ? why(pm) : `${spread(pm.mbps, 'MB/s', 1)}, ${pm.lost} lost`,
      ok && !failed(pm) ? ratio(ng.mbps.median, pm.mbps.median) : 'n/a',
      verdict,
    ]);
    const lines = ['### 11. Log throughput', ''];
    lines.push(
      `\`flood.js\` writes ${ok ? ng.count : 'N'} numbered 100-byte lines to stdout as fast as it can (64 lines a write; stdout is a pipe, where Node writes synchronously, so the app goes as fast as the supervisor drains it), then idles. Throughput = the bytes / (the moment the log file held all of them, polled every 5 ms − the moment the app began writing, which it prints first). Then the file is read back: every line \`F 1\` … \`F N\` must be there, whole and in order. nodeguard writes to \`<home>/logs/flood-out.log\`; PM2 (fork mode) to \`$PM2_HOME/logs/flood-out.log\`. The total stays under nodeguard's 10 MiB rotation size.`,
      '',
    );
    if (ok) lines.push(`nodeguard runs: ${ng.runs.map((x) => `${fmt(x.mbps, 1)} MB/s (${x.found}/${x.count} lines)`).join(', ')}.`);
    if (!failed(pm)) lines.push(`PM2 runs: ${pm.runs.map((x) => `${fmt(x.mbps, 1)} MB/s (${x.found}/${x.count} lines)`).join(', ')}.`);
    lines.push('', 'nodeguard reads each pipe into a stack buffer of 64 KiB for one read at a time (output.rs), cuts lines there and hands them to one writer thread, which appends a batch to each file and lets its buffer go at the end of the batch (logfile.rs).', '');
    details.push(lines.join('\n'));
  }

  // ---- 12. start 100 apps ----------------------------------------------------------------------
  {
    const ng = r.daemonNgMany;
    const pm = r.daemonPm2Many;
    const ok = !failed(ng);
    rows.push([
      `12. Start ${ok ? ng.count : 100} apps (one config file)`,
      'time, next to PM2\'s',
      ok ? `${fmt(ng.readyMs / 1000, 2)} s until all running (start call ${fmt(ng.startMs / 1000, 2)} s)` : why(ng),
      failed(pm) ? why(pm) : `${fmt(pm.readyMs / 1000, 2)} s until all online (start call ${fmt(pm.startMs / 1000, 2)} s)`,
      ok && !failed(pm) ? ratio(ng.readyMs, pm.readyMs) : 'n/a',
      ok ? 'reported (see figure 8)' : '**not measured**',
    ]);
  }

  // ---- 13. reload under load (the details are report.js's clusterSection) ---------------------
  {
    const reloads = ['reload2', 'reload4', 'reload4ka'].map((id) => (r.cluster || {})[id]).filter(Boolean);
    const trials = (side) => reloads.flatMap((c) => (c[side] || []).filter((t) => t && !t.error));
    const ng = trials('ng');
    const pm = trials('pm2');
    const counts = (list) => list.map((t) => t.failed).join(', ');
    const total = (list) => list.reduce((sum, t) => sum + t.failed, 0);
    rows.push([
      '13. Failed requests during a rolling reload under load (2 and 4 instances; fresh and kept-alive connections)',
      '0',
      ng.length ? `${counts(ng)} failed (one per trial)` : 'not measured',
      pm.length ? `${counts(pm)} failed` : 'not run',
      'n/a',
      ng.length === 0 ? '**not measured**' : total(ng) === 0 ? 'meets' : '**misses**',
    ]);
  }
}

module.exports = {
  cpuSeconds,
  cpuNodeguard,
  cpuPm2,
  stopAllNodeguard,
  stopAllPm2,
  stopBare,
  floodNodeguard,
  floodPm2,
  reportMore,
  MB,
};
