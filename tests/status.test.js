'use strict';
// `nodeguard status --json`: every field, its type, and the starting → running transition; plus
// naming, argument passing and output routing as seen from outside.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const h = require('./helpers');

const STATES = ['starting', 'running', 'stopping', 'stopped', 'backoff', 'errored'];
const MEMORY_FIELDS = ['rss', 'heap_total', 'heap_used', 'external', 'array_buffers'];
const INTERVAL_MS = 200;
/** slowstart.js blocks its loop this long before its first pong can be answered. */
const BOOT_MS = 1_500;

const isCount = (v) => Number.isInteger(v) && v >= 0;
const isMs = (v) => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** Checks the shape every row must have, whatever its state. */
function assertRowShape(row) {
  const where = `row ${JSON.stringify(row)}`;
  assert.equal(typeof row.name, 'string', where);
  assert.ok(isCount(row.id), `id: ${where}`);
  assert.equal(typeof row.script, 'string', where);
  assert.ok(row.pid === null || (Number.isInteger(row.pid) && row.pid > 0), `pid: ${where}`);
  assert.ok(STATES.includes(row.state), `state: ${where}`);
  assert.ok(isCount(row.restarts), `restarts: ${where}`);
  assert.ok(isCount(row.hangs) && row.hangs <= row.restarts, `hangs: ${where}`);
  assert.ok(row.uptime_ms === null || isCount(row.uptime_ms), `uptime_ms: ${where}`);
  assert.equal(typeof row.monitored, 'boolean', `monitored: ${where}`);
  if (row.memory !== null) {
    assert.equal(typeof row.memory, 'object', `memory: ${where}`);
    for (const field of MEMORY_FIELDS) assert.ok(isCount(row.memory[field]), `memory.${field}: ${where}`);
  }
  assert.ok(row.loop_delay_ms === null || isMs(row.loop_delay_ms), `loop_delay_ms: ${where}`);
  assert.ok(row.last_pong_ms === null || isCount(row.last_pong_ms), `last_pong_ms: ${where}`);
  assert.ok(row.last_exit === null || typeof row.last_exit === 'string', `last_exit: ${where}`);
  for (const key of ['pid', 'uptime_ms', 'memory', 'loop_delay_ms', 'last_pong_ms', 'last_exit']) {
    assert.ok(key in row, `${key} missing (should be present, null if unknown): ${where}`);
  }
}

test('status --json reports every field, and a worker goes starting → running at its first pong', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['slowstart.js', 'server.js'],
    flags: ['--heartbeat-interval', `${INTERVAL_MS}ms`, '--heartbeat-timeout', `${INTERVAL_MS}ms`, '--start-grace', '10s'],
    env: { BOOT_MS: String(BOOT_MS) },
  });

  // Record every state slowstart is seen in, until it is running with a pong behind it.
  const seen = [];
  let starting = null;
  const running = await sup.waitForStatus((apps) => {
    apps.forEach(assertRowShape);
    const row = apps.find((a) => a.name === 'slowstart');
    if (!row) return false;
    if (seen[seen.length - 1] !== row.state) seen.push(row.state);
    if (row.state === 'starting' && row.pid !== null) starting ??= row;
    return row.state === 'running' && row.memory !== null ? { apps, row } : false;
  }, { what: 'slowstart running with memory figures' });

  assert.deepEqual(seen, ['starting', 'running'], `slowstart went through ${seen.join(' → ')}`);
  assert.ok(starting, 'never saw slowstart starting with a pid');
  assert.equal(starting.memory, null, 'memory before the first pong');
  assert.equal(starting.last_pong_ms, null, 'last_pong_ms before the first pong');
  assert.equal(starting.restarts, 0);
  assert.ok(isCount(starting.uptime_ms));

  const { apps, row } = running;
  assert.deepEqual(apps.map((a) => a.name).sort(), ['server', 'slowstart']);
  assert.equal(new Set(apps.map((a) => a.id)).size, 2, 'ids are distinct');
  assert.equal(row.script, path.join(h.FIXTURES, 'slowstart.js'));
  assert.equal(row.pid, starting.pid, 'same process from starting to running');
  assert.equal(row.monitored, true);
  for (const field of MEMORY_FIELDS) assert.ok(row.memory[field] > 0, `memory.${field} = ${row.memory[field]}`);
  assert.ok(row.memory.heap_used <= row.memory.heap_total, 'heap_used ≤ heap_total');
  assert.ok(isMs(row.loop_delay_ms));
  const delay = row.loop_delay;
  assert.ok(delay && ['mean_ms', 'p50_ms', 'p99_ms', 'max_ms'].every((k) => isMs(delay[k])), `loop_delay ${JSON.stringify(delay)}`);
  assert.ok(delay.p50_ms <= delay.p99_ms && delay.p99_ms <= delay.max_ms, `percentiles in order: ${JSON.stringify(delay)}`);
  assert.equal(row.loop_delay_ms, delay.p99_ms, 'loop_delay_ms is the p99');
  assert.ok(isCount(row.last_pong_ms) && row.last_pong_ms < 5 * INTERVAL_MS, `last_pong_ms ${row.last_pong_ms}`);
  assert.ok(row.uptime_ms >= BOOT_MS * 0.9, `uptime ${row.uptime_ms} ms, but it booted for ${BOOT_MS} ms`);
  assert.equal(row.restarts, 0);
  assert.equal(row.hangs, 0);
  assert.equal(row.last_exit, null);

  // The pid is the one the app itself reports, and uptime moves on.
  const { pid } = await sup.waitListening('slowstart');
  assert.equal(pid, row.pid);
  const later = await sup.waitForStatus((xs) => {
    const r = xs.find((a) => a.name === 'slowstart');
    return r.uptime_ms > row.uptime_ms ? r : false;
  }, { what: 'uptime to increase' });
  assert.equal(later.state, 'running');
});

test('names, app args and output routing', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['idle.js', 'idle.js', 'server.js'],
    appArgs: ['--alpha', 'beta gamma'],
  });
  const byName = await sup.waitRunning(['idle', 'idle-1', 'server']);
  assert.deepEqual(Object.keys(byName).sort(), ['idle', 'idle-1', 'server']);
  for (const name of ['idle', 'idle-1']) {
    const line = (await sup.waitForLine(name, /^idle pid=(\d+) args=(.*)$/))[0];
    assert.match(line, /args=\["--alpha","beta gamma"\]$/, `${name} got other args: ${line}`);
    // App stderr goes to nodeguard's stderr with the same prefix.
    await sup.waitForLine(name, /^idle stderr pid=\d+$/, { stream: 'stderr' });
    assert.ok(!sup.appLines(name, 'stdout').some((l) => l.startsWith('idle stderr')), 'stderr line on stdout');
  }
  // Everything on stdout is an app line, and nothing is coloured when stdout is not a TTY.
  const stdout = sup.lines.filter((l) => l.stream === 'stdout');
  for (const line of stdout) assert.ok(line.app, `stdout line without an app prefix: ${JSON.stringify(line.raw)}`);
  for (const line of sup.lines) assert.ok(!line.raw.includes('\x1b'), `colour codes on a pipe: ${JSON.stringify(line.raw)}`);
});

test('status finds the supervisor through NODEGUARD_HOME as well as --home', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['idle.js'] });
  await sup.waitRunning(['idle']);
  const viaEnv = await h.run(['status', '--json'], { env: { NODEGUARD_HOME: sup.home } });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.deepEqual(JSON.parse(viaEnv.stdout).map((a) => a.name), ['idle']);
  const human = await h.run(['status', '--home', sup.home]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /idle/);
});
