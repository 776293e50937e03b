#!/usr/bin/env node
'use strict';
// The monitor's idle cost (issue 17): an idle HTTP app (bench/apps/server.js, nothing requested)
// bare, under nodeguard (default heartbeat, 1 s) and under PM2 (fork mode, its in-app agent), all
// three at once on the same machine. Over `--seconds` (default 20) windows it reads, per process,
// the context switches of every thread (/proc/<pid>/task/*/status: voluntary + nonvoluntary, i.e.
// wakeups) and the CPU time (/proc/<pid>/stat utime + stime), and the VmRSS at the end.
//
//   node bench/idle.js [--seconds 20] [--windows 2] [--no-pm2] [--node <path>]
//
// Uses target/release/nodeguard and the monitor at the repo root (node scripts/build.js first).
// PM2 is npm-installed (pm2@latest) into the run's temp dir, as bench/run.js does.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const u = require('./lib/util');
const { NodeguardRun } = require('./lib/nodeguard');
const { Pm2 } = require('./lib/pm2');

const argv = process.argv.slice(2);
const arg = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const SECONDS = Number(arg('--seconds', '20'));
const WINDOWS = Number(arg('--windows', '2'));
const NODE = path.resolve(arg('--node', process.execPath));
const REPO = path.join(__dirname, '..');
const APP = path.join(__dirname, 'apps', 'server.js');
const TICKS = 100; // USER_HZ on Linux

/** Per-thread { name, switches } and the process's CPU ticks (utime + stime). */
function sample(pid) {
  const threads = {};
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const name = /^Name:\s*(.*)$/m.exec(status)[1];
    const v = Number(/^voluntary_ctxt_switches:\s*(\d+)/m.exec(status)[1]);
    const n = Number(/^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status)[1]);
    threads[tid] = { name: tid === String(pid) ? `${name} (main)` : name, switches: v + n, nonvoluntary: n };
  }
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const rss = Number(/^VmRSS:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  return { threads, ticks: Number(fields[11]) + Number(fields[12]), at: process.hrtime.bigint(), rss };
}

function diff(a, b) {
  const seconds = Number(b.at - a.at) / 1e9;
  const perThread = [];
  let total = 0;
  for (const [tid, t] of Object.entries(b.threads)) {
    const before = a.threads[tid] || { switches: 0, nonvoluntary: 0 };
    const d = t.switches - before.switches;
    const n = t.nonvoluntary - before.nonvoluntary;
    total += d;
    if (d > 0) perThread.push(`${t.name}: ${(d / seconds).toFixed(2)}/s (${n} involuntary)`);
  }
  return {
    wakeupsPerS: total / seconds,
    cpuPct: ((b.ticks - a.ticks) / TICKS / seconds) * 100,
    rssMb: b.rss / 1024,
    perThread,
  };
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ngi-'));
  const tag = path.basename(tmp);
  const ctx = {
    bin: path.join(REPO, 'target', 'release', 'nodeguard'),
    tmp,
    tag,
    env: { ...process.env, NODEGUARD_BENCH_TAG: tag, NO_COLOR: '1', PATH: `${path.dirname(NODE)}:${process.env.PATH}` },
    preload: path.join(REPO, 'preload.js'),
  };
  delete ctx.env.NODEGUARD_PRELOAD;
  delete ctx.env.NODEGUARD_HOME;
  const pids = {};
  let ng;
  let pm2;
  try {
    const bare = u.startDetached(NODE, [APP, '--bench-tag', tag], { env: ctx.env, cwd: tmp });
    pids.bare = bare.pid;
    ng = new NodeguardRun(ctx, { apps: [APP] });
    const by = await ng.waitStatus((s) => s.server && s.server.state === 'running' && s.server.monitored, {
      what: 'server.js running with its monitor',
      timeout: 30_000,
    });
    pids.nodeguard = by.server.pid;
    if (!argv.includes('--no-pm2')) {
      pm2 = new Pm2(ctx);
      await pm2.install();
      await pm2.start(APP, 'server');
      const online = await pm2.waitOnline(['server'], { timeout: 30_000 });
      pids[`pm2 ${pm2.version}`] = online.server.pid;
    }
    await u.sleep(3_000);
    console.log(`node ${spawnVersion(NODE)}, ${os.cpus().length} cpus, ${os.cpus()[0].model}; windows of ${SECONDS} s`);
    for (let w = 0; w < WINDOWS; w++) {
      const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, sample(pid)]));
      await u.sleep(SECONDS * 1000);
      for (const [k, pid] of Object.entries(pids)) {
        const d = diff(before[k], sample(pid));
        console.log(
          `window ${w + 1} ${k.padEnd(12)} ${d.wakeupsPerS.toFixed(2).padStart(6)} wakeups/s  ` +
            `${d.cpuPct.toFixed(3).padStart(6)} % CPU  VmRSS ${d.rssMb.toFixed(2)} MB  [${d.perThread.join(', ')}]`,
        );
      }
    }
  } finally {
    if (ng) await ng.stop();
    if (pm2) await pm2.kill().catch(() => {});
    await u.sweep(tag);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function spawnVersion(node) {
  return require('node:child_process').execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
