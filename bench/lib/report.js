'use strict';
// Turns the bench's raw results into bench/RESULTS.md: one summary table (figure, target,
// nodeguard, PM2, ratio, verdict), then the details of every figure and how it was measured.
//
// Units: memory in MB = 10^6 bytes (the kB of /proc are KiB, converted), times in ms.
// "median (min–max)" is over every sample of every trial unless said otherwise.

const fs = require('node:fs');
const { median, summarize, ratio, failed, why } = require('./util');

const MB = (kb) => (kb * 1024) / 1e6;

function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return 'n/a';
  if (!Number.isFinite(v)) return '∞';
  return v.toFixed(digits);
}

/** Digits that suit a time in ms. */
function msDigits(v) {
  return Math.abs(v) < 1 ? 3 : Math.abs(v) < 10 ? 2 : Math.abs(v) < 100 ? 1 : 0;
}

function ms(v) {
  return `${num(v, msDigits(v))} ms`;
}

/** `+1.23 ms` / `−4.56 ms`; `n/a` for a missing value. */
function signed(v) {
  return Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${ms(Math.abs(v))}` : 'n/a';
}

function spread(s, fmt) {
  return `${fmt(s.median)} (${fmt(s.min).replace(/ .*/, '')}–${fmt(s.max)})`;
}

/** All samples of `key` (kB) of role `role` over the trials of a memory phase, in MB. */
function memSamples(trials, role, key = 'VmRSS') {
  return trials.flatMap((t) => t[role].samples.map((s) => MB(s[key])));
}

function memStats(trials, role, key) {
  return summarize(memSamples(trials, role, key));
}

const mb = (v) => `${num(v, 2)} MB`;

/** Median resident kB per mapping name over the trials of a phase. */
function mapsMedian(trials) {
  const names = new Set(trials.flatMap((t) => Object.keys(t.serverMaps || {})));
  const out = {};
  for (const name of names) out[name] = median(trials.map((t) => (t.serverMaps || {})[name] || 0));
  return out;
}

/** "node r--p@0" -> "node r--p@0 (.gnu.hash, .dynsym, .dynstr)": the biggest sections in that segment. */
function segmentLabeler(sections, names) {
  if (!sections) return (name) => name;
  const offsets = [...names]
    .map((n) => /^node \S+@([0-9a-f]+)$/.exec(n))
    .filter(Boolean)
    .map((m) => parseInt(m[1], 16))
    .sort((a, b) => a - b);
  return (name) => {
    const m = /^node \S+@([0-9a-f]+)$/.exec(name);
    if (!m) return name;
    const start = parseInt(m[1], 16);
    const next = offsets.find((o) => o > start) ?? Infinity;
    const inside = sections
      .filter(([sec, off, size]) => sec.startsWith('.') && size > 0 && ((off >= start && off < next) || (off <= start && start < off + size)))
      .sort((a, b) => b[2] - a[2])
      .slice(0, 3)
      .map(([sec]) => sec);
    return inside.length ? `${name} (${inside.join(', ')})` : name;
  };
}

/** Markdown rows of the mappings whose resident size differs most between two phases. */
function mapsDiff(withTrials, withoutTrials, { min = 16, top = 8 } = {}) {
  const a = mapsMedian(withTrials);
  const b = mapsMedian(withoutTrials);
  const names = new Set([...Object.keys(a), ...Object.keys(b)]);
  const diffs = [...names]
    .map((name) => ({ name, a: a[name] || 0, b: b[name] || 0, d: (a[name] || 0) - (b[name] || 0) }))
    .filter((x) => Math.abs(x.d) >= min)
    .sort((x, y) => y.d - x.d);
  const total = diffs.reduce((acc, x) => acc + x.d, 0);
  return { rows: diffs.slice(0, top), rest: diffs.slice(top), total };
}

/** Markdown lines splitting restarts into phases, from the supervisor's own log timestamps. */
function phaseLines(label, ph, firstPhase) {
  if (!ph || ph.detect.n === 0) return [`(${label}: no phase split: the supervisor's log lines were not found.)`, ''];
  const row = (name, s) => `| ${name} | ${ms(s.median)} | ${ms(s.min)} | ${ms(s.max)} |`;
  return [
    `${label}, split by the supervisor's log timestamps (n=${ph.detect.n}${ph.missing ? `, ${ph.missing} trial(s) without log lines` : ''}; the bench converts its monotonic clock to wall time, so the boundaries between phases are good to about ±1 ms):`,
    '',
    '| phase | median | min | max |',
    '|---|---|---|---|',
    row(firstPhase, ph.detect),
    row('supervisor: that line → "started" line of the new pid (kill/reap, spawn)', ph.respawn),
    row('new pid: started → first HTTP answer (node boot, preload, listen)', ph.boot),
    '',
  ];
}

/** "Open fds grow by … per app: +n socket, +n pipe, …" from two fdKinds readings. */
function fdGrowth(a, b) {
  if (!a.fdKinds || !b.fdKinds) return '';
  const per = b.count - a.count;
  const kinds = [...new Set([...Object.keys(a.fdKinds), ...Object.keys(b.fdKinds)])]
    .map((k) => [k, ((b.fdKinds[k] || 0) - (a.fdKinds[k] || 0)) / per])
    .filter(([, d]) => d !== 0)
    .sort((x, y) => y[1] - x[1]);
  if (!kinds.length) return 'Open fds do not grow with the app count.';
  const total = kinds.reduce((acc, [, d]) => acc + d, 0);
  return `Open fds grow by ${num(total, 1)} per app: ${kinds.map(([k, d]) => `${num(d, 1)} \`${k}\``).join(', ')} (\`file\` = log files).`;
}

function writeReport(r, outPath) {
  const rows = [];
  const details = [];
  const notes = [];
  const e = r.env;
  const clusterLines = [...clusterSection(r), ...frameworksSection(r)];

  // ---- Figure 1 -------------------------------------------------------------------------------
  const TARGET_SUP_MB = 5;
  {
    const ng = failed(r.memNgPreload) ? null : memStats(r.memNgPreload, 'supervisor', 'VmRSS');
    const pm = failed(r.memPm2) ? null : memStats(r.memPm2, 'god', 'VmRSS');
    rows.push([
      '1. Supervisor RSS, 2 apps running',
      `≤ ${TARGET_SUP_MB} MB`,
      ng ? spread(ng, mb) : why(r.memNgPreload),
      pm ? `${spread(pm, mb)} (God daemon)` : why(r.memPm2),
      ng && pm ? ratio(ng.median, pm.median) : 'n/a',
      ng ? (ng.max <= TARGET_SUP_MB ? 'meets' : `**misses** (max ${mb(ng.max)})`) : '**not measured**',
    ]);
    const lines = ['### 1. Supervisor RSS with 2 apps', ''];
    lines.push(
      `VmRSS from /proc/<pid>/status of the \`nodeguard\` process supervising \`server.js\` and \`idle.js\` (default flags: heartbeats every 1 s, monitor preloaded), sampled ${r.n.memSamples}× (200 ms apart) ${r.settleMs / 1000} s after both apps were running and answering heartbeats; ${r.n.memTrials} fresh supervisor(s). PM2: the God daemon's VmRSS with the same two apps (fork mode), a fresh daemon per trial, same timing.`,
      '',
    );
    if (ng) {
      const anon = memStats(r.memNgPreload, 'supervisor', 'RssAnon');
      const file = memStats(r.memNgPreload, 'supervisor', 'RssFile');
      lines.push(
        `| | VmRSS | RssAnon (heap, stacks) | RssFile (mapped binary, libc) |`,
        `|---|---|---|---|`,
        `| nodeguard | ${spread(ng, mb)} | ${spread(anon, mb)} | ${spread(file, mb)} |`,
      );
      if (pm) {
        lines.push(
          `| PM2 God daemon | ${spread(pm, mb)} | ${spread(memStats(r.memPm2, 'god', 'RssAnon'), mb)} | ${spread(memStats(r.memPm2, 'god', 'RssFile'), mb)} |`,
        );
      }
      if (!failed(r.memNgNoPreload)) {
        const np = memStats(r.memNgNoPreload, 'supervisor', 'VmRSS');
        lines.push(`| nodeguard, \`--no-preload\` (no heartbeats) | ${spread(np, mb)} | ${spread(memStats(r.memNgNoPreload, 'supervisor', 'RssAnon'), mb)} | ${spread(memStats(r.memNgNoPreload, 'supervisor', 'RssFile'), mb)} |`);
      }
      lines.push('');
      const threads = median(r.memNgPreload.flatMap((t) => t.supervisor.samples.map((s) => s.Threads)));
      lines.push(
        `Where it goes: ${mb(file.median)} of the median is file-backed pages (the nodeguard binary and the shared libraries: clean pages, shared with the page cache, but counted in RSS), ${mb(anon.median)} is anonymous memory (allocator heap, ${threads} thread stacks as touched).`,
        '',
      );
      if (r.memNgPreload.every((t) => t.supervisorMaps)) {
        const med = mapsMedian(r.memNgPreload.map((t) => ({ serverMaps: t.supervisorMaps })));
        const rowsMaps = Object.entries(med)
          .filter(([, kb]) => kb >= 8)
          .sort((a, b) => b[1] - a[1]);
        const binKb = med.nodeguard || 0;
        lines.push(
          'Resident size per mapping of the supervisor (/proc/<pid>/smaps, median over trials):',
          '',
          '| mapping | resident |',
          '|---|---|',
          ...rowsMaps.map(([name, kb]) => `| \`${name}\` | ${kb} kB |`),
          '',
        );
        if (e.nodeguardBytes) {
          lines.push(
            `The binary is ${Math.round(e.nodeguardBytes / 1024)} KiB on disk and ${binKb} kB of it is resident (${Math.round((100 * binKb * 1024) / e.nodeguardBytes)} %): the kernel maps file pages around every page fault (fault-around), so most of the binary counts once it runs. With ${med['libc.so.6'] || 0} kB of libc.so.6 (shared with every process on the machine, but counted in each RSS), file-backed pages are ${Math.round((100 * file.median) / ng.median)} % of the figure: the binary's size is the main lever on it; the supervisor's own heap is small.`,
            '',
          );
        }
      }
    }
    details.push(lines.join('\n'));
  }

  // ---- Figure 2 -------------------------------------------------------------------------------
  const TARGET_MON_MB = 1.5;
  {
    const lines = ['### 2. The monitor\'s RSS cost inside a worker', ''];
    lines.push(
      `The same \`server.js\` worker (VmRSS, ${r.n.memSamples} samples × ${r.n.memTrials} trial(s), ${r.settleMs / 1000} s after it serves): under nodeguard with the monitor preloaded (connected, answering pings every 1 s) vs under nodeguard with \`--no-preload\`; and under PM2 (fork mode) vs bare \`node server.js\`. Cost = difference of the medians; the spread shown is the widest difference the samples allow (max of one side − min of the other).`,
      '',
    );
    const have = !failed(r.memNgPreload) && !failed(r.memNgNoPreload);
    const havePm2 = !failed(r.memPm2) && !failed(r.memBare);
    let ngCost = null;
    let pmCost = null;
    const cost = (a, b) => ({ median: a.median - b.median, min: a.min - b.max, max: a.max - b.min });
    if (have) {
      const w = memStats(r.memNgPreload, 'server', 'VmRSS');
      const wo = memStats(r.memNgNoPreload, 'server', 'VmRSS');
      ngCost = cost(w, wo);
      ngCost.anon = memStats(r.memNgPreload, 'server', 'RssAnon').median - memStats(r.memNgNoPreload, 'server', 'RssAnon').median;
      ngCost.file = memStats(r.memNgPreload, 'server', 'RssFile').median - memStats(r.memNgNoPreload, 'server', 'RssFile').median;
      ngCost.withS = w;
      ngCost.withoutS = wo;
      const notMonitored = r.memNgPreload.filter((t) => !t.monitored).length;
      if (notMonitored) notes.push(`Figure 2: in ${notMonitored} trial(s) the preloaded worker was not shown as monitored at sampling time.`);
    }
    if (havePm2) {
      const p = memStats(r.memPm2, 'server', 'VmRSS');
      const b = memStats(r.memBare, 'server', 'VmRSS');
      pmCost = cost(p, b);
      pmCost.p = p;
      pmCost.b = b;
    }
    const costFmt = (c) => `+${num(c.median, 2)} MB (${num(c.min, 2)} to ${num(c.max, 2)})`;
    rows.push([
      '2. Monitor RSS cost in a worker',
      `≤ ${TARGET_MON_MB} MB`,
      ngCost ? costFmt(ngCost) : why(failed(r.memNgPreload) ? r.memNgPreload : r.memNgNoPreload),
      pmCost ? `${costFmt(pmCost)} (PM2 fork vs bare node)` : why(failed(r.memPm2) ? r.memPm2 : r.memBare),
      ngCost && pmCost ? ratio(ngCost.median, pmCost.median) : 'n/a',
      ngCost ? (ngCost.median <= TARGET_MON_MB ? (ngCost.max <= TARGET_MON_MB ? 'meets' : 'meets (median; sample spread reaches past it)') : `**misses** (+${num(ngCost.median, 2)} MB)`) : '**not measured**',
    ]);
    lines.push('| worker `server.js` | VmRSS median (min–max) | RssAnon | RssFile |', '|---|---|---|---|');
    const row = (label, phase) =>
      failed(phase)
        ? `| ${label} | ${why(phase)} | | |`
        : `| ${label} | ${spread(memStats(phase, 'server', 'VmRSS'), mb)} | ${mb(memStats(phase, 'server', 'RssAnon').median)} | ${mb(memStats(phase, 'server', 'RssFile').median)} |`;
    lines.push(
      row('bare `node server.js`', r.memBare),
      row('nodeguard `--no-preload`', r.memNgNoPreload),
      row('nodeguard with the monitor (default)', r.memNgPreload),
      row('PM2 fork mode', r.memPm2),
      '',
    );
    if (ngCost) {
      lines.push(
        `Monitor cost: ${costFmt(ngCost)}; of the median, ${num(ngCost.anon, 2)} MB anonymous (JS heap, the monitor thread's stack and buffers) and ${num(ngCost.file, 2)} MB file-backed (pages of the addon and of the node binary itself; clean pages, shared with the page cache, but counted in RSS).`,
      );
    }
    if (have && r.memNgPreload.every((t) => t.serverMaps) && r.memNgNoPreload.every((t) => t.serverMaps)) {
      const d = mapsDiff(r.memNgPreload, r.memNgNoPreload);
      const sections = failed(r.memBareDlopen) ? null : r.memBareDlopen.nodeSections;
      const label = segmentLabeler(sections, Object.keys(mapsMedian(r.memNgPreload)));
      lines.push(
        '',
        'Where the monitor\'s memory goes: resident size per mapping of the worker (/proc/<pid>/smaps, median over trials), with the monitor minus `--no-preload`, mappings that differ by ≥ 16 kB:',
        '',
        '| mapping | with monitor | `--no-preload` | difference |',
        '|---|---|---|---|',
        ...d.rows.map((x) => `| \`${label(x.name)}\` | ${x.a} kB | ${x.b} kB | ${x.d > 0 ? '+' : ''}${x.d} kB |`),
        ...(d.rest.length ? [`| ${d.rest.length} other mapping(s) | | | ${d.rest.reduce((acc, x) => acc + x.d, 0)} kB |`] : []),
        '',
      );
      const dl = r.memBareDlopen;
      if (!failed(dl) && !failed(r.memBare)) {
        const dd = mapsDiff(dl.trials, r.memBare);
        const dlCost = memStats(dl.trials, 'server', 'VmRSS').median - memStats(r.memBare, 'server', 'VmRSS').median;
        lines.push(
          `Attribution: the same app run bare with a preload that only \`require()\`s the addon (\`${dl.addon}\`, ${dl.addonKiB} KiB on disk; no connection, no sampler, no heartbeats) costs +${num(dlCost, 2)} MB over bare node, i.e. ${ngCost.median > 0 ? Math.round((100 * dlCost) / ngCost.median) : 'n/a'} % of the monitor's cost is just loading the .node:`,
          '',
          '| mapping | addon loaded only | bare node | difference |',
          '|---|---|---|---|',
          ...dd.rows.map((x) => `| \`${label(x.name)}\` | ${x.a} kB | ${x.b} kB | ${x.d > 0 ? '+' : ''}${x.d} kB |`),
          '',
        );
        const symSeg = dd.rows.find((x) => /^node r--p@0$/.test(x.name) && x.d > 0);
        if (dl.imports !== null) {
          lines.push(
            `The addon imports ${dl.imports} dynamic symbols (${dl.napiImports} of them napi_*)${dl.bindNow ? ', all bound when it is loaded (BIND_NOW)' : ''}.${symSeg ? ` The node segment that grows most when it is loaded is the one holding node's export tables (+${symSeg.d} kB). Likely explanation: every import is looked up in the node executable first (it heads the global symbol scope), and each napi_* one is found there, touching a few scattered 4 KiB pages of node's multi-MB .gnu.hash/.dynsym/.dynstr each (${dl.napiImports} × ~4 pages ≈ ${Math.round((dl.napiImports * 4 * 4096) / 1024)} kB, close to what is measured). Importing fewer napi functions would shrink it.` : ''}`,
            '',
          );
        }
      }
    }
    if (pmCost) lines.push(`PM2's in-app cost (its ProcessContainerFork wrapper and @pm2/io loaded into the app): ${costFmt(pmCost)}.`);
    lines.push('');
    details.push(lines.join('\n'));
  }

  // ---- Figure 3 -------------------------------------------------------------------------------
  {
    const x = r.rtt;
    const lines = ['### 3. Pong round trip', ''];
    if (failed(x)) {
      rows.push(['3. Pong round trip (100ms/100ms)', '—', why(x), 'no heartbeat', 'n/a', '**not measured**']);
      lines.push(why(x));
    } else {
      const s = x.rtt;
      rows.push([
        '3. Pong round trip (100ms/100ms)',
        '— (reported)',
        `${ms(s.median)} median, p99 ${ms(s.p99)} (${num(s.min, 3)}–${ms(s.max)}), n=${s.n}`,
        'no heartbeat: nothing to compare',
        'n/a',
        s.n > 0 ? 'reported (no target)' : '**no samples**',
      ]);
      lines.push(
        `\`pong_rtt_ms\` of both apps (\`server.js\`, \`idle.js\`) from \`nodeguard status --json\`, polled every ~40 ms for ${x.seconds} s under \`--heartbeat-interval 100ms --heartbeat-timeout 100ms\`; each pong counted once (deduplicated by its arrival time, now − \`last_pong_ms\`). ${x.polls} status polls, ${s.n} distinct pongs.`,
        '',
        `| | median | p99 | min | max |`,
        `|---|---|---|---|---|`,
        `| pong round trip | ${ms(s.median)} | ${ms(s.p99)} | ${ms(s.min)} | ${ms(s.max)} |`,
        `| loop delay reported with it (\`loop_delay_ms\`) | ${ms(x.loopDelay.median)} | ${ms(x.loopDelay.p99)} | ${ms(x.loopDelay.min)} | ${ms(x.loopDelay.max)} |`,
        '',
        `Restarts during the sampling: ${x.restarts} (hangs: ${x.hangs}).${x.restarts ? ' **A restart at 100 ms/100 ms means a pong came later than 100 ms.**' : ''}`,
        '',
      );
      if (x.restarts) notes.push(`Figure 3: ${x.restarts} restart(s) (${x.hangs} for hangs) while sampling at 100ms/100ms.`);
    }
    details.push(lines.join('\n'));
  }

  // ---- Figure 4 -------------------------------------------------------------------------------
  let ngRestartMax = null;
  {
    const ng = r.crashNg;
    const pm = r.crashPm2;
    const bare = r.spawnBare;
    const lines = ['### 4. Crash → serving again', ''];
    lines.push(
      `\`server.js\` on a fixed free loopback port; \`GET /crash\` replies, then \`process.exit(1)\`. Time from the end of that reply to the first \`200 ok <pid>\` from a new pid (a fresh connection every ~1 ms; refused connections fail at once). Before each trial the app had ≥ ${r.minUptimeMs} ms of uptime, so nodeguard's restart is the immediate one (no backoff) and PM2 counts it as stable. Reference: bare \`node server.js\` from spawn to the same first answer. The three are interleaved: one nodeguard supervisor and one PM2 daemon run side by side (each with its own copy of the app, on its own port) and each round crashes both once and spawns one bare app, in rotating order, so background load on the machine hits all three alike.${ng && ng.caBundleRemoved ? ' The three apps run without this machine\'s `NODE_EXTRA_CA_CERTS` (set in its environment to the system bundle): with it every node start parses that bundle, about 85 ms of CPU in a 125 ms start, the same for all three but with run-to-run noise larger than the 5 ms looked for. The other figures keep it.' : ''}`,
      '',
      '| | trials | median | min | max | restarts counted |',
      '|---|---|---|---|---|---|',
    );
    const row = (label, x, restarts = true) =>
      failed(x) ? `| ${label} | | ${why(x)} | | | |` : `| ${label} | ${x.trials} | ${ms(x.times.median)} | ${ms(x.times.min)} | ${ms(x.times.max)} | ${restarts ? x.restarts : '—'} |`;
    lines.push(row('nodeguard', ng), row('PM2', pm), row('bare `node server.js` spawn → serving', bare, false), '');
    if (!failed(ng)) {
      lines.push(...phaseLines('nodeguard crash → serving', ng.phases, 'reply to /crash → supervisor logs "exited"'));
      ngRestartMax = ng.times.max;
      if (ng.restarts !== ng.trials) notes.push(`Figure 4: nodeguard counted ${ng.restarts} restarts for ${ng.trials} crashes.`);
      if (!failed(bare)) {
        lines.push(
          `nodeguard crash → serving minus bare spawn → serving: ${signed(ng.paired ? ng.paired.median : NaN)} at the median of the ${ng.paired ? ng.paired.n : 0} rounds' own differences (each round's nodeguard trial minus its bare trial; range ${signed(ng.paired ? ng.paired.min : NaN)} … ${signed(ng.paired ? ng.paired.max : NaN)}), ${signed(ng.times.median - bare.times.median)} between the two medians. (The bare figure includes the bench's own spawn from a busy node process; the supervisor's part of a restart is the first two phases above.)`,
          '',
        );
        if (ng.listening && ng.listening.n && bare.listening && bare.listening.n) {
          lines.push(
            'Inside the new process (`GET /started`: `performance.now()`, ms since that process started, when `server.js` ran its first line and when it began to listen; under nodeguard the monitor is preloaded before that first line):',
            '',
            '| | n | first line of server.js, median (min–max) | listening, median (min–max) |',
            '|---|---|---|---|',
            `| nodeguard (monitor preloaded) | ${ng.listening.n} | ${spread(ng.firstLine, ms)} | ${spread(ng.listening, ms)} |`,
            `| bare \`node server.js\` | ${bare.listening.n} | ${spread(bare.firstLine, ms)} | ${spread(bare.listening, ms)} |`,
            '',
            `The monitor's part of a start, at the medians: ${signed(ng.firstLine.median - bare.firstLine.median)} to the first line, ${signed(ng.listening.median - bare.listening.median)} to listening.`,
            '',
          );
        }
        if (bare.deaths && bare.deaths.n) {
          const respawn = ng.phases && ng.phases.respawn && ng.phases.respawn.n ? ng.phases.respawn.median : NaN;
          lines.push(
            `Where a restart's time over a bare start goes: a crash → serving includes the old process's death, which a start does not. Each bare app of this figure is ended the same way (\`GET /crash\`, \`process.exit(1)\`), and the bench, its parent, saw it exit ${ms(bare.deaths.median)} after the reply at the median (${ms(bare.deaths.min)}–${ms(bare.deaths.max)}): node's exit and the kernel's teardown of its memory, with no supervisor involved (nodeguard's own "reply → exited" phase above is ${ms(ng.phases && ng.phases.detect && ng.phases.detect.n ? ng.phases.detect.median : NaN)}). Then the supervisor's respawn (${ms(respawn)}) and the monitor's part of the new process's start (${ng.listening && ng.listening.n && bare.listening && bare.listening.n ? signed(ng.listening.median - bare.listening.median) : 'n/a'} to listening). Without the death, nodeguard's crash → serving is ${signed(ng.paired && ng.paired.n ? ng.paired.median - bare.deaths.median : NaN)} over a bare start at the paired median.`,
            '',
          );
        }
      }
    }
    if (!failed(pm) && pm.restarts !== pm.trials) notes.push(`Figure 4: PM2 counted ${pm.restarts} restarts for ${pm.trials} crashes.`);
    // Issue 7's target: within 5 ms of a bare start. Node's boot varies by tens of ms from one
    // spawn to the next, so trials are compared at the median, and "every time" is checked on
    // the supervisor's own part: from the exit it saw to the replacement's spawn.
    const CRASH_TARGET_MS = 5;
    let verdict = '**not measured**';
    if (!failed(ng) && !failed(bare)) {
      const over = ng.paired && ng.paired.n > 0 ? ng.paired.median : ng.times.median - bare.times.median;
      const own = ng.phases && ng.phases.respawn && ng.phases.respawn.n > 0 ? ng.phases.respawn : null;
      const overText = `${signed(over)} over a bare start at the median${ng.paired && ng.paired.n > 0 ? ' of paired rounds' : ''}`;
      if (over <= CRASH_TARGET_MS && own && own.max <= CRASH_TARGET_MS) {
        verdict = `meets (${overText}; exit seen → replacement spawned ≤ ${ms(own.max)} in every trial)`;
      } else {
        verdict = `**misses** (${overText}${own ? `; exit seen → replacement spawned up to ${ms(own.max)}` : '; no phase split'})`;
      }
    }
    rows.push([
      '4. Crash → serving again',
      `within ${CRASH_TARGET_MS} ms of a bare start (bare spawn → serving: ${failed(bare) ? 'n/a' : ms(bare.times.median)})`,
      failed(ng) ? why(ng) : `${spread(ng.times, ms)}, n=${ng.trials}`,
      failed(pm) ? why(pm) : `${spread(pm.times, ms)}, n=${pm.trials}`,
      !failed(ng) && !failed(pm) ? ratio(ng.times.median, pm.times.median) : 'n/a',
      verdict,
    ]);
    details.push(lines.join('\n'));
  }

  // ---- Figure 5 -------------------------------------------------------------------------------
  {
    const lines = ['### 5. Hang → serving again', ''];
    lines.push(
      `\`GET /hang\` replies, then the app runs \`while (true) {}\`. Time from the end of that reply to the first \`200\` from a new pid (attempts on the hung process time out after 250 ms and are retried). Each hang starts at a random phase of the heartbeat schedule (a random 0–1 interval wait after the app is ready). Bound checked: detection (reply to /hang → the supervisor's "hung" log line) ≤ interval × misses + one interval (the hang can start just after a ping was answered); the restart after it is shown separately. Expected window for the total: interval × (misses − 1) + timeout … interval × (misses + 1) + the slowest nodeguard crash → serving of figure 4 (${ngRestartMax === null ? 'not measured: 0 used' : ms(ngRestartMax)}).`,
      '',
      '| interval/timeout/misses | trials | median | min | max | expected window | hang restarts counted |',
      '|---|---|---|---|---|---|---|',
    );
    const pm = r.hangPm2;
    const pmText = failed(pm)
      ? why(pm)
      : pm.servedAgainAfter === null
        ? `not serving after ${num(pm.waitedMs / 1000, 1)} s; restarts ${pm.restarts}, status "${pm.status}"`
        : `served again after ${ms(pm.servedAgainAfter)} (restarts ${pm.restarts})`;
    for (const [label, x, iMs, tMs, m] of [
      ['defaults 1s/1s/3', r.hangDefault, 1000, 1000, 3],
      ['200ms/200ms/3', r.hangFast, 200, 200, 3],
    ]) {
      const detectBound = iMs * m + iMs;
      const bound = detectBound + (ngRestartMax || 0);
      const lower = iMs * (m - 1) + tMs;
      if (failed(x)) {
        lines.push(`| ${label} | | ${why(x)} | | | | |`);
        rows.push([`5. Hang → serving (${label})`, `≤ ${detectBound} ms + restart`, why(x), pmText, 'n/a', '**not measured**']);
        continue;
      }
      const s = x.times;
      const d = x.phases && x.phases.detect;
      const split = d && d.n === x.trials;
      lines.push(`| ${label} | ${x.trials} | ${ms(s.median)} | ${ms(s.min)} | ${ms(s.max)} | ${ms(lower)} … ${ms(bound)} | ${x.hangs} |`);
      if (x.hangs !== x.trials) notes.push(`Figure 5 (${label}): nodeguard counted ${x.hangs} hang restarts for ${x.trials} hangs.`);
      const overTotal = s.values.filter((v) => v > bound).length;
      if (overTotal) {
        notes.push(
          `Figure 5 (${label}): ${overTotal}/${x.trials} trial(s) took longer in total than ${detectBound} ms + the slowest crash restart of figure 4 (${ms(bound)}); ${split ? `detection itself stayed ≤ ${ms(d.max)}, so the excess is in the restart (kill, respawn, node boot), which ran slower than in figure 4` : 'no log split available'}.`,
        );
      }
      let verdict;
      if (split) {
        const over = d.max - detectBound;
        if (over <= 0) verdict = `meets (detection max ${ms(d.max)} ≤ ${detectBound} ms)`;
        else if (over <= 2) verdict = `**misses by ${ms(over)}** (detection max ${ms(d.max)}; timer resolution, see notes)`;
        else verdict = `**misses** (detection max ${ms(d.max)} > ${detectBound} ms)`;
        if (over > 0) {
          const worst = x.phases.perTrial.reduce((a, b) => (b[0] > a[0] ? b : a));
          notes.push(
            `Figure 5 (${label}): the slowest detection was ${ms(worst[0])}, ${ms(over)} over interval × misses + interval = ${detectBound} ms${worst[1] !== null ? `; the supervisor logged the loop "silent for ${worst[1]} ms" (time since its last pong), so this hang began right after a pong, the worst phase, and the last of the ${m} timeouts fired ~${ms(Math.max(0, worst[0] - detectBound))} late` : ''}. ${over <= 2 ? 'An excess of this size is timer resolution (ms timers) plus the ±1 ms of the bench\'s clock conversion, not a design problem, but the bound as stated was not met in every trial.' : ''}`,
          );
        }
      } else {
        verdict = s.max <= bound ? `meets (total ≤ ${ms(bound)})` : `**misses** (max ${ms(s.max)} > ${ms(bound)})`;
      }
      rows.push([
        `5. Hang → serving (${label})`,
        `detection ≤ ${detectBound} ms (interval × misses + interval), then restart`,
        `${spread(s, ms)}, n=${x.trials}${split ? `; detection ${spread(d, ms)}` : ''}`,
        pmText,
        failed(pm) ? 'n/a' : pm.servedAgainAfter === null ? 'PM2 never recovers' : ratio(s.median, pm.servedAgainAfter),
        verdict,
      ]);
    }
    lines.push('');
    for (const [label, x] of [['defaults 1s/1s/3', r.hangDefault], ['200ms/200ms/3', r.hangFast]]) {
      if (failed(x)) continue;
      lines.push(...phaseLines(`Hang → serving (${label})`, x.phases, 'reply to /hang → supervisor logs "hung"'));
      if (x.phases && x.phases.perTrial.length) {
        lines.push(
          `Per trial, detection / "silent for" in the supervisor's log: ${x.phases.perTrial.map(([det, silent]) => `${num(det, 0)}/${silent === null ? '?' : silent}`).join(', ')} ms.`,
          '',
        );
      }
    }
    if (!failed(pm)) {
      lines.push(
        `PM2 (same app, fork mode, default settings): after \`/hang\` the port was polled every ~1 s (500 ms per attempt) for ${num(pm.waitedMs / 1000, 1)} s: ${pm.servedAgainAfter === null ? 'it never answered again' : `it answered again after ${ms(pm.servedAgainAfter)}`}. \`pm2 jlist\` then: status "${pm.status}", restarts ${pm.restarts}, same pid ${pm.samePid ? 'yes' : 'no'}, that pid still alive ${pm.pidAlive ? 'yes (spinning)' : 'no'}. PM2 has no event-loop liveness check, so a hung app stays "online".`,
        '',
      );
    }
    details.push(lines.join('\n'));
  }

  // ---- Figure 6 -------------------------------------------------------------------------------
  const TARGET_ORPHAN_MS = 50;
  {
    const x = r.orphanNg;
    const pm = r.orphanPm2;
    const lines = ['### 6. Orphan exit after SIGKILL of the supervisor', ''];
    lines.push(
      `A supervisor with one idle worker (\`idle.js\`) and one stuck in \`while (true)\` from its start (\`busy.js\`, monitor connected, \`--start-grace 60s\` so it is not restarted first). The bench SIGKILLs the nodeguard process and polls /proc/<pid>/stat of both workers in a synchronous loop every ~0.1 ms (sleeping in between rather than spinning, so the poller does not take the CPU the dying workers need on a 2-core machine); a worker counts as gone when its entry is missing or its state is Z. Time = from just before \`kill()\` to the first poll that sees it gone.`,
      '',
    );
    let pmText = why(pm);
    if (!failed(pm)) {
      const survivors = pm.reduce((a, t) => a + t.survivors, 0);
      const total = pm.reduce((a, t) => a + t.of, 0);
      pmText = `${survivors}/${total} apps survive as orphans (${pm.length} trial(s), checked ${pm[0] ? pm[0].checkedAfterMs / 1000 : '?'} s after)`;
      const fate = (v) => (v === null ? `alive after ${pm[0].checkedAfterMs / 1000} s (orphan)` : `gone after ${ms(v)}`);
      lines.push(
        `PM2: SIGKILL of the God daemon (pid from $PM2_HOME/pm2.pid) with \`idle.js\` and \`busy.js\` running: ${pmText}; survivors reparented to pid ${[...new Set(pm.flatMap((t) => t.reparentedTo))].join(', ') || '—'}. (The bench kills them afterwards.)`,
        '',
        '| PM2 trial | idle.js | busy.js (while (true)) |',
        '|---|---|---|',
        ...pm.map((t, i) => `| ${i + 1} | ${fate(t.idleGoneMs)} | ${fate(t.busyGoneMs)} |`),
        '',
      );
    }
    if (failed(x)) {
      rows.push(['6. Orphan exit after supervisor SIGKILL', `≤ ${TARGET_ORPHAN_MS} ms, 100 % of trials`, why(x), pmText, 'n/a', '**not measured**']);
    } else {
      const all = [...x.idle, ...x.busy];
      const ok = all.filter((v) => v !== null && v <= TARGET_ORPHAN_MS).length;
      const alive = all.filter((v) => v === null).length;
      const si = summarize(x.idle.filter((v) => v !== null));
      const sb = summarize(x.busy.filter((v) => v !== null));
      lines.push(
        '| worker | trials | median | min | max | ≤ 50 ms | still alive after 2 s |',
        '|---|---|---|---|---|---|---|',
        `| idle | ${x.idle.length} | ${ms(si.median)} | ${ms(si.min)} | ${ms(si.max)} | ${x.idle.filter((v) => v !== null && v <= TARGET_ORPHAN_MS).length}/${x.idle.length} | ${x.idle.filter((v) => v === null).length} |`,
        `| busy (while (true)) | ${x.busy.length} | ${ms(sb.median)} | ${ms(sb.min)} | ${ms(sb.max)} | ${x.busy.filter((v) => v !== null && v <= TARGET_ORPHAN_MS).length}/${x.busy.length} | ${x.busy.filter((v) => v === null).length} |`,
        '',
      );
      const worst = Math.max(...all.map((v) => (v === null ? Infinity : v)));
      rows.push([
        '6. Orphan exit after supervisor SIGKILL',
        `≤ ${TARGET_ORPHAN_MS} ms, 100 % of trials`,
        `idle ${ms(si.median)}, busy ${ms(sb.median)} median; max ${ms(worst)}; ${ok}/${all.length} ≤ ${TARGET_ORPHAN_MS} ms`,
        pmText,
        'n/a',
        ok === all.length ? 'meets' : `**misses** (${all.length - ok}/${all.length} over${alive ? `, ${alive} never died` : ''})`,
      ]);
    }
    details.push(lines.join('\n'));
  }

  // ---- Figure 7 -------------------------------------------------------------------------------
  const TARGET_STATUS_MS = 2;
  const TARGET_STATUS_MS_ISSUE7 = 1.5;
  const TARGET_STATUS_FACTOR = 100;
  {
    const ng = r.daemonNg2;
    const pm = r.daemonPm2_2;
    const ngMany = r.daemonNgMany;
    const pmMany = r.daemonPm2Many;
    const lines = ['### 7. `status --json` round trip (daemon mode)', ''];
    lines.push(
      `A nodeguard daemon on a fresh \`NODEGUARD_HOME\` (under the run's temp dir) with 2 idle apps (\`idle.js\` twice, from one JSON config file and one \`nodeguard start\`), and a fresh PM2 God daemon with the same 2 apps (one \`pm2 start ecosystem-2.config.js\`, fork mode). Each whole invocation is timed the way a shell runs it: one \`bash\` runs the commands in rotating order, ${r.n.statusRuns} times each, output to /dev/null, each bracketed by \`$EPOCHREALTIME\` (µs), so the time is process spawn + start + connect + answer + print + exit + the shell's wait. \`/usr/bin/true\` in the same loop is the floor: what the shell's fork + exec + wait costs for a program that does nothing. The control socket alone is timed from the bench's node process with a tiny client speaking the protocol (4-byte big-endian length + \`{"version":1,"command":{"type":"status"}}\`, the answer is one frame): connect → request → whole answer, ${r.n.socketRuns} requests after 10 untimed. PM2's equivalent is \`pm2.list()\` (the \`getMonitorData\` RPC behind \`jlist\`) from one node process that required PM2's API and connected once, ${r.n.statusRuns} calls after 5 untimed.`,
      '',
    );
    const sh = (x, key) => (failed(x) || !x.shell || !x.shell[key] ? null : x.shell[key]);
    const trow = (label, st) => (st ? `| ${label} | ${st.n}${st.failures ? ` (${st.failures} failed)` : ''} | ${ms(st.median)} | ${ms(st.min)} | ${ms(st.max)} |` : `| ${label} | | not measured | | |`);
    const ngStatus = sh(ng, 'status');
    const pmJlist = sh(pm, 'jlist');
    if (!failed(ng) || !failed(pm)) {
      lines.push(
        '| invocation, 2 apps | n | median | min | max |',
        '|---|---|---|---|---|',
        trow('`/usr/bin/true` (floor: the shell\'s fork + exec + wait), nodeguard phase', sh(ng, 'floor')),
        trow('`nodeguard --version` (load and start the binary, parse arguments; no runtime, no socket)', sh(ng, 'version')),
        trow('**`nodeguard status --json`**', ngStatus),
        trow('control socket alone: connect → status request → answer (node client)', failed(ng) ? null : ng.socket),
        trow('… of which connect', failed(ng) ? null : ng.socketConnect),
        trow('`/usr/bin/true` (floor), PM2 phase', sh(pm, 'floor')),
        trow('`node -e 0` (node\'s own start and exit)', sh(pm, 'nodeBoot')),
        trow('**`pm2 jlist`**', pmJlist),
        trow('`pm2.list()` from a connected process (PM2\'s RPC alone)', failed(pm) ? null : pm.api),
        '',
      );
    }
    if (!failed(ng) && ngStatus) {
      const floor = sh(ng, 'floor');
      const version = sh(ng, 'version');
      lines.push(
        `Where nodeguard's ${ms(ngStatus.median)} goes (medians): ${ms(floor.median)} is the shell's fork + exec + wait, which any program pays; loading and starting the ${e.nodeguardBytes ? `${Math.round(e.nodeguardBytes / 1024)} KiB ` : ''}binary up to its argument parser adds ${ms(version.median - floor.median)} (\`--version\` − floor); the rest, ${ms(ngStatus.median - version.median)} (\`status --json\` − \`--version\`), is the async runtime, the connect, the daemon's answer and printing ${ng.statusBytes} bytes of JSON. The socket round trip alone is ${ms(ng.socket.median)} from a node client (its own event loop included; the answer frame is ${ng.frameBytes} bytes), so the process start, not the daemon, is most of the figure.`,
        '',
      );
    }
    if (!failed(pm) && pmJlist) {
      const nb = sh(pm, 'nodeBoot');
      lines.push(
        `Where \`pm2 jlist\`'s ${ms(pmJlist.median)} goes: ${ms(nb.median)} is node starting and exiting; ${ms(pmJlist.median - nb.median)} more is PM2's CLI loading its modules, connecting to the God daemon's RPC socket and printing ${pm.statusBytes} bytes (every app's whole \`pm2_env\`, environment included); the RPC itself takes ${ms(pm.api.median)} once connected. Socket round trip alone, nodeguard ÷ PM2: ${failed(ng) ? 'n/a' : ratio(ng.socket.median, pm.api.median)}.`,
        '',
      );
    }
    // With many apps (from figure 8's phases).
    const ngManyStatus = sh(ngMany, 'status');
    const pmManyJlist = sh(pmMany, 'jlist');
    if (ngManyStatus || pmManyJlist) {
      lines.push(
        `With ${r.n.manyApps} apps (figure 8's daemons): \`nodeguard status --json\` ${ngManyStatus ? `${spread(ngManyStatus, ms)}, n=${ngManyStatus.n} (${ngMany.statusBytes} bytes printed; socket alone ${ms(ngMany.socket.median)}, answer frame ${ngMany.frameBytes} bytes)` : why(ngMany)}; \`pm2 jlist\` ${pmManyJlist ? `${spread(pmManyJlist, ms)}, n=${pmManyJlist.n} (${pmMany.statusBytes} bytes printed; \`pm2.list()\` alone ${ms(pmMany.api.median)})` : why(pmMany)}${ngManyStatus && pmManyJlist ? `; ratio ${ratio(ngManyStatus.median, pmManyJlist.median)}` : ''}.`,
        '',
      );
    }
    for (const [label, x] of [['nodeguard', ng], ['PM2', pm]]) {
      if (failed(x) || !x.shell) continue;
      for (const [key, st] of Object.entries(x.shell)) {
        if (st.failures) notes.push(`Figure 7 (${label}): ${st.failures} of ${st.n} \`${key}\` invocations exited non-zero.`);
      }
    }
    let verdict = '**not measured**';
    if (ngStatus) {
      const v3 = ngStatus.median <= TARGET_STATUS_MS ? `issue 3: meets (median ≤ ${TARGET_STATUS_MS} ms${ngStatus.max <= TARGET_STATUS_MS ? ', every run' : `; max ${ms(ngStatus.max)}`})` : `issue 3: **misses** (median ${ms(ngStatus.median)} > ${TARGET_STATUS_MS} ms)`;
      const factor = pmJlist ? pmJlist.median / ngStatus.median : NaN;
      const fastOk = ngStatus.median <= TARGET_STATUS_MS_ISSUE7;
      const factorOk = factor >= TARGET_STATUS_FACTOR;
      const v7 =
        fastOk && factorOk
          ? `issue 7: meets (median ≤ ${TARGET_STATUS_MS_ISSUE7} ms, ${num(factor, 0)}× faster)`
          : `issue 7: **misses** (${fastOk ? `median ≤ ${TARGET_STATUS_MS_ISSUE7} ms` : `median ${ms(ngStatus.median)} > ${TARGET_STATUS_MS_ISSUE7} ms`}; ${Number.isFinite(factor) ? `${num(factor, 0)}× faster than \`pm2 jlist\`${factorOk ? '' : ` < ${TARGET_STATUS_FACTOR}×`}` : 'no PM2 figure'})`;
      verdict = `${v3}; ${v7}`;
    }
    rows.push([
      '7. `status --json` round trip, daemon with 2 apps (whole CLI invocation)',
      `≤ ${TARGET_STATUS_MS} ms (issue 3); ≤ ${TARGET_STATUS_MS_ISSUE7} ms median and ≥ ${TARGET_STATUS_FACTOR}× faster than \`pm2 jlist\` (issue 7)`,
      ngStatus ? `${spread(ngStatus, ms)}, n=${ngStatus.n}; socket alone ${ms(ng.socket.median)}` : why(ng),
      pmJlist ? `\`pm2 jlist\` ${spread(pmJlist, ms)}, n=${pmJlist.n}; RPC alone ${ms(pm.api.median)}` : why(pm),
      ngStatus && pmJlist ? ratio(ngStatus.median, pmJlist.median) : 'n/a',
      verdict,
    ]);
    details.push(lines.join('\n'));
  }

  // ---- Figure 8 -------------------------------------------------------------------------------
  {
    const sets = [
      ['nodeguard daemon', r.daemonNg2, r.daemonNgMany, r.daemonNgMid],
      ['PM2 God daemon', r.daemonPm2_2, r.daemonPm2Many, r.daemonPm2Mid],
    ];
    const many = r.n.manyApps;
    const lines = ['### 8. Daemon RSS with 2, ' + r.n.midApps + ' and ' + many + ' apps', ''];
    lines.push(
      `The daemon process's VmRSS (/proc/<pid>/status; nodeguard's pid from \`nodeguard ping\`, PM2's from $PM2_HOME/pm2.pid), ${r.n.memSamples} samples 200 ms apart, ${r.settleMs / 1000} s after every app ran (nodeguard: \`running\` with its monitor connected, so a few heartbeats were answered; PM2: \`online\`), before any timing of figure 7. The app is \`idle.js\` (a timer and one line of output). Started with one call each: \`nodeguard start apps-<n>.json\` (a JSON config file listing the apps; it returns once every app runs, i.e. answered its first heartbeat) and \`pm2 start ecosystem-<n>.config.js\` (fork mode; PM2 marks an app \`online\` once spawned, so the bench then polls \`pm2 jlist\` until all are). A fresh daemon for each count; afterwards \`nodeguard kill\` / \`pm2 kill\`, and the bench checks that the daemon and every app pid are gone.`,
      '',
      '| | apps | start call | until all running | VmRSS median (min–max) | RssAnon | RssFile | threads | open fds | stop (kill) | left after stop |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    );
    const memRow = (label, x) => {
      if (failed(x)) return `| ${label} | | ${why(x)} | | | | | | | | |`;
      const m = x.mem.median;
      return `| ${label} | ${x.count} | ${ms(x.startMs)} | ${ms(x.readyMs)} | ${spread(summarize(x.mem.samples.map((q) => MB(q.VmRSS))), mb)} | ${mb(MB(m.RssAnon))} | ${mb(MB(m.RssFile))} | ${m.Threads} | ${x.fds ?? 'n/a'} | ${ms(x.kill.ms)} | ${x.kill.left.length ? `**${x.kill.left.length}: ${x.kill.left.join(', ')}**` : 'none'} |`;
    };
    for (const [label, two, lots, mid] of sets) lines.push(memRow(label, two), memRow(label, mid), memRow(label, lots));
    lines.push('');
    const perApp = (two, lots, key) => (MB(lots.mem.median[key]) - MB(two.mem.median[key])) / (lots.count - two.count);
    const growth = {};
    for (const [label, two, lots] of sets) {
      if (failed(two) || failed(lots)) continue;
      growth[label] = { rss: perApp(two, lots, 'VmRSS'), anon: perApp(two, lots, 'RssAnon'), fds: (lots.fds - two.fds) / (lots.count - two.count) };
      lines.push(
        `${label}: each app beyond 2 adds ${num(growth[label].rss * 1000, 0)} kB of VmRSS (${num(growth[label].anon * 1000, 0)} kB anonymous) and ${num(growth[label].fds, 1)} open fds.`,
      );
      for (const x of [two, lots]) {
        if (x.running !== x.count) notes.push(`Figure 8 (${label}, ${x.count} apps): ${x.running} of ${x.count} apps were running at the end.`);
        if (x.restarts) notes.push(`Figure 8 (${label}, ${x.count} apps): ${x.restarts} restart(s) while measuring.`);
        if (x.kill.left.length) notes.push(`Figure 8 (${label}, ${x.count} apps): after the stop, ${x.kill.left.length} process(es) were still alive (${x.kill.left.join(', ')}); the bench's sweep killed them.`);
      }
    }
    lines.push('');
    const ng2 = r.daemonNg2;
    const ngN = r.daemonNgMany;
    if (!failed(ng2) && !failed(ngN) && ng2.maps && ngN.maps) {
      const d = mapsDiff([{ serverMaps: ngN.maps }], [{ serverMaps: ng2.maps }], { min: 8 });
      lines.push(
        `Where nodeguard's per-app memory goes: resident size per mapping of the daemon (/proc/<pid>/smaps), ${many} apps minus 2 apps, mappings that differ by ≥ 8 kB:`,
        '',
        `| mapping | ${many} apps | 2 apps | difference | per extra app |`,
        '|---|---|---|---|---|',
        ...d.rows.map((x) => `| \`${x.name}\` | ${x.a} kB | ${x.b} kB | ${x.d > 0 ? '+' : ''}${x.d} kB | ${num(x.d / (ngN.count - ng2.count), 1)} kB |`),
        '',
        `The growth is in the allocator heap, not in threads (${ngN.mem.median.Threads} threads at ${ngN.count} apps, ${ng2.mem.median.Threads} at 2). Per app the daemon holds the app's record (config, counters, a 50-event history), its task (about 4 KB of future), its worker-socket connection, and a reading task per stream (stdout, stderr). No read or write buffer stays allocated per app: pipes and sockets are read into a stack buffer one read at a time (output.rs, framed.rs), and a log file's batch buffer is let go at the end of each batch (logfile.rs). Before that change (issue 7) an app cost about 151 kB: a 64 KiB BufReader per stream (all of it touched) plus a 64 KiB BufWriter per log file, and the daemon held 19.4 MB at 100 apps. ${fdGrowth(ng2, ngN)}`,
        '',
      );
      const after = ng2.memAfterRequests;
      if (after) {
        lines.push(
          `After figure 7's ${ng2.requests} status requests the 2-app daemon's VmRSS was ${mb(MB(after.VmRSS))} (${after.VmRSS - ng2.mem.median.VmRSS >= 0 ? '+' : ''}${after.VmRSS - ng2.mem.median.VmRSS} kB vs before them); with ${ngN.count} apps, after ${ngN.requests}: ${mb(MB(ngN.memAfterRequests.VmRSS))} (${ngN.memAfterRequests.VmRSS - ngN.mem.median.VmRSS >= 0 ? '+' : ''}${ngN.memAfterRequests.VmRSS - ngN.mem.median.VmRSS} kB).`,
          '',
        );
      }
    }
    const pm2 = r.daemonPm2_2;
    const pmN = r.daemonPm2Many;
    if (!failed(pm2) && !failed(pmN) && pm2.maps && pmN.maps) {
      const d = mapsDiff([{ serverMaps: pmN.maps }], [{ serverMaps: pm2.maps }], { min: 64, top: 4 });
      lines.push(
        `PM2's God daemon is a node process: ${mb(MB(pm2.mem.median.RssFile))} of its 2-app figure is file-backed (the node binary's code and read-only data), ${mb(MB(pm2.mem.median.RssAnon))} anonymous (V8 heap and node's own allocations). From 2 to ${pmN.count} apps it grows mostly in ${d.rows.length ? d.rows.map((x) => `\`${x.name}\` (${x.d > 0 ? '+' : ''}${x.d} kB)`).join(', ') : 'no single mapping'}: the JS objects PM2 keeps per app (its \`pm2_env\`, with a copy of the environment), log streams and the child handles. ${fdGrowth(pm2, pmN)}`,
        '',
      );
    }
    const TARGET_SUP_MB_DAEMON = 5;
    // Issue 7's targets: ≤ 7 MB with 50 apps, ≤ 9 MB with 100.
    const TARGETS_MANY = { 50: 7, 100: 9 };
    const row = (count, ngx, pmx) => {
      const ngS = failed(ngx) ? null : summarize(ngx.mem.samples.map((q) => MB(q.VmRSS)));
      const pmS = failed(pmx) ? null : summarize(pmx.mem.samples.map((q) => MB(q.VmRSS)));
      const two = count === 2;
      const target = two ? TARGET_SUP_MB_DAEMON : TARGETS_MANY[count];
      const perApp = growth['nodeguard daemon'] ? `; +${num(growth['nodeguard daemon'].rss * 1000, 0)} kB per app${growth['PM2 God daemon'] ? ` (PM2 +${num(growth['PM2 God daemon'].rss * 1000, 0)} kB)` : ''}` : '';
      let verdict;
      if (!ngS) verdict = '**not measured**';
      else if (target) verdict = (ngS.max <= target ? 'meets' : `**misses** (max ${mb(ngS.max)})`) + (two ? '' : perApp);
      else verdict = `reported (no target at ${count})${perApp}`;
      return [
        `8. Daemon RSS, ${count} idle apps`,
        two ? `≤ ${TARGET_SUP_MB_DAEMON} MB (figure 1's target, applied to the daemon)` : target ? `≤ ${target} MB` : '— (none set; per-app growth reported)',
        ngS ? `${spread(ngS, mb)}` : why(ngx),
        pmS ? `${spread(pmS, mb)} (God daemon)` : why(pmx),
        ngS && pmS ? ratio(ngS.median, pmS.median) : 'n/a',
        verdict,
      ];
    };
    rows.push(row(2, r.daemonNg2, r.daemonPm2_2), row(r.n.midApps, r.daemonNgMid, r.daemonPm2Mid), row(many, r.daemonNgMany, r.daemonPm2Many));
    details.push(lines.join('\n'));
  }

  // ---- Figures 9 to 13 (issue 7) ---------------------------------------------------------------
  require('./figures').reportMore(r, rows, details, notes);

  // ---- Assemble ---------------------------------------------------------------------------------
  if (r.leftover && r.leftover.length) notes.push(`**Processes still running after cleanup: ${r.leftover.join(', ')}.**`);
  if (e.quick) notes.push('This was a `--quick` run: few trials, indicative only.');
  if (e.only) notes.push(`Only figure(s) ${e.only.join(', ')} were run (\`--only\`); the others show "not run".`);
  for (const [key, value] of Object.entries(r)) {
    if (value && typeof value === 'object' && value.error) notes.push(`Phase \`${key}\` failed: ${value.error}`);
  }

  const table = [
    '| Figure | Target | nodeguard | PM2 | Ratio nodeguard/PM2 | Verdict |',
    '|---|---|---|---|---|---|',
    ...rows.map((cells) => `| ${cells.join(' | ')} |`),
  ].join('\n');

  const md = [
    '# nodeguard vs PM2: benchmark results',
    '',
    'Generated by `node bench/run.js` (`npm run bench`); do not edit by hand, rerun it.',
    '',
    `- Date: ${e.date}`,
    `- Machine: ${e.cpu}, ${e.cores} cores, ${num(e.ramGiB, 1)} GiB RAM`,
    `- OS: ${e.os}`,
    `- Load average (1/5/15 min) at start: ${e.loadBefore.map((v) => v.toFixed(2)).join(' / ')}; at end: ${(e.loadAfter || []).map((v) => v.toFixed(2)).join(' / ')} (other work on the machine shows up as noise here)`,
    `- Versions: node ${e.node}, npm ${e.npm}, ${e.rustc}, pm2 ${e.pm2}, ${e.nodeguard} (commit ${e.commit})`,
    `- Trials: memory ${r.n.memTrials} × ${r.n.memSamples} samples per setup; pong RTT ${r.n.rttSeconds} s of polling; crash ${r.n.crash}; hang ${r.n.hangDefault} (1s/1s/3) and ${r.n.hangFast} (200ms/200ms/3); orphans ${r.n.orphan} (PM2 ${r.n.pm2Orphan}); \`status --json\` / \`pm2 jlist\` ${r.n.statusRuns} invocations each, control socket ${r.n.socketRuns} requests; daemons with 2 and ${r.n.manyApps} apps. Whole run: ${num(r.totalSeconds, 0)} s.`,
    `- Units: MB = 10^6 bytes; "median (min–max)" over all samples; ratio = nodeguard ÷ PM2 (lower is better for every figure).`,
    '',
    ...clusterLines,
    '## Summary',
    '',
    table,
    '',
    ...(notes.length ? ['## Notes', '', ...notes.map((n) => `- ${n}`), ''] : []),
    '## Details',
    '',
    ...details,
    '## Method',
    '',
    '- One process at a time: the nodeguard and PM2 phases run one after the other in the same invocation, on the same fixture apps (`bench/apps/`), on 127.0.0.1 only.',
    '- nodeguard: `target/release/nodeguard` built by `node scripts/build.js` at the start of the run (unless `--no-build`), then copied, with the monitor package (`preload.js`, `index.js`, `platform.js`, the `.node`), into the run\'s temp dir; the copies are what is measured (`--preload` points at the copied `preload.js`), so a rebuild in the working tree during the run cannot mix versions. Each supervisor gets a fresh `NODEGUARD_HOME` under the temp dir; state is read with `nodeguard status --json`.',
    '- PM2: `npm install pm2@latest` into a fresh temp dir, `PM2_HOME` in the same temp dir, apps started with `pm2 start <app> -- <args>` (fork mode, default settings), `pm2 kill` after every PM2 phase and at the end.',
    '- Phases, their duration and the 1-minute load average at their start → end (it counts the bench\'s own processes too, e.g. about 1 for a hung app spinning; the machine is shared, so more than that means other work competed for the 2 cores):',
    '',
    '| phase | seconds | load at start → end |',
    '|---|---|---|',
    ...(r.phaseLog || []).map((p) => `| ${p.name}${p.failed ? ' (failed)' : ''} | ${num(p.seconds, 1)} | ${num(p.loadStart, 2)} → ${num(p.loadEnd, 2)} |`),
    '',
    '- Cleanup: every process started carries `NODEGUARD_BENCH_TAG` in its environment; after each phase and at exit every tagged process still alive is SIGKILLed (process group first), and the temp dir is removed. ' +
      `Tagged processes alive at the end of this run: ${r.leftover && r.leftover.length ? r.leftover.join(', ') : 'none'}.`,
    '',
  ].join('\n');

  // The "Real ecosystem files" section is bench/ecosystem.js's (a separate run) and the "Scale"
  // section is figure 15's (written by run.js after this, or by an `--only scale` run): kept as
  // they were, from whichever comes first.
  let kept = '';
  try {
    const old = fs.readFileSync(outPath, 'utf8');
    const found = [old.indexOf(require('./scale').SCALE_HEADING), old.indexOf(ECOSYSTEM_HEADING)].filter((i) => i >= 0);
    const at = found.length ? Math.min(...found) : -1;
    if (at >= 0) kept = `\n${old.slice(at)}`;
  } catch {
    // no earlier report
  }
  fs.writeFileSync(outPath, md + kept);
  return table;
}

/** The heading of bench/ecosystem.js's section in RESULTS.md (always the last section). */
const ECOSYSTEM_HEADING = '## Real ecosystem files';

/** Figure 13: failed requests per reload / kill / hang, nodeguard beside PM2 cluster mode. */
function clusterSection(r) {
  if (!r.cluster || Object.keys(r.cluster).length === 0) return [];
  const cell = (trials) => {
    const done = (trials || []).filter((t) => t && !t.error);
    if (done.length === 0) {
      const failure = (trials || []).find((t) => t && t.error);
      return failure ? `not measured (${failure.error.slice(0, 80)})` : 'not measured';
    }
    const failed = done.map((t) => t.failed).join(', ');
    const ok = done.map((t) => t.ok).join(', ');
    const kinds = {};
    for (const t of done) for (const [k, v] of Object.entries(t.errors)) kinds[k] = (kinds[k] || 0) + v;
    const kindText = Object.keys(kinds).length ? `; ${Object.entries(kinds).map(([k, v]) => `${k}×${v}`).join(', ')}` : '';
    return `**${failed}** failed of ${ok} ok${kindText}`;
  };
  const l = r.clusterLoad || {};
  return [
    '## 13. Failed requests under load: reload, kill, hang (cluster mode)',
    '',
    `${l.loops} concurrent loops of sequential GETs on fresh connections (no keep-alive; in the kept-alive scenario, back to back over ${l.loops} kept-alive connections, as wrk sends them), ${l.requestTimeoutMs} ms timeout per request; counted from ${l.settleMs} ms before the action to ${l.settleMs} ms after it completed (a reload: when \`reload\` returned; a kill or a hang: when status showed a replacement; PM2 never replaces a hung instance, so its hang is watched for ${l.hangWindowMs} ms). nodeguard: \`nodeguard start bench/apps/server.js -i N --listen 127.0.0.1:PORT\`, \`nodeguard reload web\`. PM2: \`pm2 start bench/apps/server.js -i N\` (cluster mode), \`pm2 reload web\`. One figure per trial.`,
    '',
    '| scenario | nodeguard | PM2 cluster mode |',
    '|---|---|---|',
    ...Object.values(r.cluster).map((c) => `| ${c.label} | ${cell(c.ng)} | ${cell(c.pm2)} |`),
    '',
  ];
}

/** Figure 14: failed requests of real frameworks over reloads (and a restart), nodeguard beside PM2. */
function frameworksSection(r) {
  const f = r.frameworks;
  if (!f) return [];
  if (f.install && f.install.error) {
    return ['## 14. Real frameworks with their own shutdown handlers: failed requests over reloads', '', `Not measured: ${f.install.error}`, ''];
  }
  const cell = (trials) => {
    const done = (trials || []).filter((t) => t && !t.error);
    if (done.length === 0) {
      const failure = (trials || []).find((t) => t && t.error);
      return failure ? `not measured (${failure.error.slice(0, 100)})` : 'not measured';
    }
    const kinds = {};
    for (const t of done) for (const [k, v] of Object.entries(t.errors)) kinds[k] = (kinds[k] || 0) + v;
    const kindText = Object.keys(kinds).length ? `; ${Object.entries(kinds).map(([k, v]) => `${k}×${v}`).join(', ')}` : '';
    return `**${done.map((t) => t.failed).join(', ')}** failed of ${done.map((t) => t.requests).join(', ')}${kindText}`;
  };
  const v = f.install.versions || {};
  const l = f.load;
  return [
    '## 14. Real frameworks with their own shutdown handlers: failed requests over reloads',
    '',
    `autocannon ${r.env.autocannon} (HTTP/1.1, ${l.connections} kept-alive connections, ${l.timeoutS} s timeout) against 2 instances on 127.0.0.1, from ${l.settleMs} ms before the first action to ${l.settleMs} ms after the last; ${l.reloads} reloads one after the other (or one restart), each waited for. Failed = autocannon's errors (resets, refused, timeouts) + non-2xx answers. nodeguard: \`nodeguard start <app> -i 2 --listen 127.0.0.1:PORT --listen-timeout ${l.listenTimeout}\`, \`nodeguard reload web\` / \`restart web\`. PM2: \`pm2 start <app> -i 2\` (cluster mode), \`pm2 reload web\` / \`restart web\`. Installed by npm into the run's temp dir: express ${v.express}, fastify ${v.fastify}, @nestjs/core ${v['@nestjs/core']}, next ${v.next} (react ${v.react}; the app is one API route, built with \`next build\`). Each app handles SIGTERM (nodeguard's kill signal) and SIGINT (PM2's) as its docs show. One figure per trial.`,
    '',
    '| app (2 instances, under load) | nodeguard | PM2 cluster mode |',
    '|---|---|---|',
    ...f.rows.map((row) => `| ${row.label} | ${cell(row.ng)} | ${cell(row.pm2)} |`),
    '',
  ];
}

module.exports = { writeReport };
