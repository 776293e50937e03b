'use strict';
// Figure 13 (issue 5): failed requests under constant load while a cluster of the bench server is
// reloaded (2 and 4 instances), while one instance is SIGKILLed, and while one hangs; nodeguard
// (`start -i N --listen`, `nodeguard reload`) beside PM2 cluster mode (`pm2 start -i N`,
// `pm2 reload`), in the same run.
//
// Load: LOAD_LOOPS concurrent loops in this process, each doing sequential GETs on fresh
// connections (no keep-alive; the server also says `Connection: close`), with a per-request
// timeout of REQUEST_TIMEOUT_MS; or, in the kept-alive scenario, back-to-back GETs over
// LOAD_LOOPS kept-alive connections, as wrk sends them (the server then keeps them alive). A request fails if it errors (refused, reset), times out, or
// answers anything but 200. The window runs from SETTLE_MS before the action until SETTLE_MS after
// it completed (for a kill or a hang: until the instance was replaced, or HANG_WINDOW_MS for PM2,
// which does not detect hangs).

const http = require('node:http');
const u = require('./util');
const { NodeguardDaemon } = require('./nodeguard');

const LOAD_LOOPS = 8;
const REQUEST_TIMEOUT_MS = 2_000;
const SETTLE_MS = 1_000;
/** How long a hang is watched when the supervisor does not replace the hung instance. */
const HANG_WINDOW_MS = 8_000;

/** Runs the load around `action()`; returns { ok, failed, errors, actionMs, windowMs, info }. */
async function underLoad(port, action, { keepAlive = false } = {}) {
  let running = true;
  const out = { ok: 0, failed: 0, errors: {} };
  const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: LOAD_LOOPS }) : false;
  const loop = async () => {
    while (running) {
      try {
        const res = await u.get(port, '/', { timeout: REQUEST_TIMEOUT_MS, agent });
        if (res.status === 200) out.ok += 1;
        else {
          out.failed += 1;
          out.errors[`HTTP ${res.status}`] = (out.errors[`HTTP ${res.status}`] || 0) + 1;
        }
      } catch (err) {
        out.failed += 1;
        const kind = err.code || (/timed out/.test(err.message) ? 'timeout' : err.message.slice(0, 40));
        out.errors[kind] = (out.errors[kind] || 0) + 1;
      }
    }
  };
  const loops = Array.from({ length: LOAD_LOOPS }, loop);
  const start = u.now();
  await u.sleep(SETTLE_MS);
  if (out.ok === 0) {
    running = false;
    await Promise.all(loops);
    if (agent) agent.destroy();
    throw new Error(`no request succeeded before the action (${JSON.stringify(out.errors)})`);
  }
  const t0 = u.now();
  let info;
  try {
    info = await action();
  } finally {
    out.actionMs = u.now() - t0;
    await u.sleep(SETTLE_MS);
    running = false;
    await Promise.all(loops);
    if (agent) agent.destroy();
  }
  out.windowMs = u.now() - start;
  out.info = info;
  return out;
}

/** nodeguard: one daemon per scenario with `instances` instances of the server on a shared port. */
async function nodeguardScenario(ctx, script, { instances, what, keepAlive = false }) {
  const d = new NodeguardDaemon(ctx);
  const port = await u.freePort();
  const pids = [];
  try {
    const r = await d.cli(
      ['start', script, '--name', 'web', '-i', String(instances), '--listen', `127.0.0.1:${port}`, '--', '--port', String(port), '--bench-tag', ctx.tag, ...(keepAlive ? ['--keep-alive'] : [])],
      { timeout: 60_000 },
    );
    if (r.code !== 0) throw new Error(`nodeguard start failed (exit ${r.code}): ${r.stderr}\n${d.logTail()}`);
    d.pid = await d.ping();
    const running = async () => {
      const apps = (await d.status()).filter((a) => a.name === 'web');
      return apps.length === instances && apps.every((a) => a.state === 'running') ? apps : null;
    };
    const before = await u.waitUntil(running, { timeout: 30_000, every: 100, what: 'nodeguard instances running' });
    pids.push(...before.map((a) => a.pid));
    const result = await underLoad(port, async () => {
      if (what === 'reload') {
        const rr = await d.cli(['reload', 'web'], { timeout: 120_000 });
        if (rr.code !== 0) throw new Error(`nodeguard reload failed: ${rr.stderr}`);
        const after = await running();
        return { replaced: after ? after.filter((a) => !pids.includes(a.pid)).length : 0 };
      }
      const victim = before[0].pid;
      if (what === 'kill') process.kill(victim, 'SIGKILL');
      else await u.get(port, '/hang', { timeout: REQUEST_TIMEOUT_MS }).catch(() => {});
      // A hang lands on whichever instance accepted the request: wait for any pid to change.
      const t = u.now();
      const after = await u.waitUntil(
        async () => {
          const apps = await running();
          return apps && apps.some((a) => !pids.includes(a.pid)) ? apps : null;
        },
        { timeout: 30_000, every: 50, what: `a replacement after the ${what}` },
      );
      return { replacedMs: u.now() - t, replaced: after.filter((a) => !pids.includes(a.pid)).length };
    }, { keepAlive });
    const final = await d.status();
    pids.push(...final.map((a) => a.pid).filter(Boolean));
    return result;
  } finally {
    await d.kill(pids);
  }
}

/** PM2 cluster mode with the same app, port and load. */
async function pm2Scenario(ctx, pm2, script, { instances, what, keepAlive = false }) {
  const port = await u.freePort();
  try {
    await pm2.cli(['start', script, '--name', 'web', '-i', String(instances), '--', '--port', String(port), '--bench-tag', ctx.tag, ...(keepAlive ? ['--keep-alive'] : [])], { timeout: 60_000 });
    const online = async () => {
      const r = await pm2.cli(['jlist']);
      const apps = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))).filter((a) => a.name === 'web');
      return apps.length === instances && apps.every((a) => a.pm2_env.status === 'online' && a.pid > 0) ? apps : null;
    };
    const before = await u.waitUntil(online, { timeout: 30_000, every: 100, what: 'pm2 instances online' });
    // PM2 reports online before the workers listen: wait until the port answers.
    await u.waitServing(port, { timeout: 15_000 });
    const pids = before.map((a) => a.pid);
    return await underLoad(port, async () => {
      if (what === 'reload') {
        await pm2.cli(['reload', 'web'], { timeout: 120_000 });
        const after = await online();
        return { replaced: after ? after.filter((a) => !pids.includes(a.pid)).length : 0 };
      }
      if (what === 'kill') {
        process.kill(pids[0], 'SIGKILL');
        const t = u.now();
        const after = await u.waitUntil(
          async () => {
            const apps = await online();
            return apps && apps.some((a) => !pids.includes(a.pid)) ? apps : null;
          },
          { timeout: 30_000, every: 50, what: 'pm2 to replace the killed instance' },
        );
        return { replacedMs: u.now() - t, replaced: after.filter((a) => !pids.includes(a.pid)).length };
      }
      await u.get(port, '/hang', { timeout: REQUEST_TIMEOUT_MS }).catch(() => {});
      await u.sleep(HANG_WINDOW_MS);
      const after = await online();
      return { replaced: after ? after.filter((a) => !pids.includes(a.pid)).length : 0, watchedMs: HANG_WINDOW_MS };
    }, { keepAlive });
  } finally {
    await pm2.cli(['delete', 'web'], { check: false, timeout: 30_000 }).catch(() => {});
    await pm2.kill();
  }
}

const SCENARIOS = [
  { id: 'reload2', label: 'reload, 2 instances', instances: 2, what: 'reload' },
  { id: 'reload4', label: 'reload, 4 instances', instances: 4, what: 'reload' },
  { id: 'reload4ka', label: 'reload, 4 instances, kept-alive connections (as wrk)', instances: 4, what: 'reload', keepAlive: true },
  { id: 'kill', label: 'SIGKILL of 1 of 4 instances', instances: 4, what: 'kill' },
  { id: 'hang', label: 'hang of 1 of 4 instances', instances: 4, what: 'hang' },
];

module.exports = { SCENARIOS, nodeguardScenario, pm2Scenario, LOAD_LOOPS, REQUEST_TIMEOUT_MS, SETTLE_MS, HANG_WINDOW_MS };
