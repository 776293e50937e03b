'use strict';
// What reaches the daemon from a crafted control-socket client or a planted dump.json is held to
// the same rules as the command line: bounded durations and sizes, the app-name rules, ids that
// never wrap. Names that need escaping get distinct log files. A short heartbeat interval alone
// is accepted (the default timeout follows it).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const IDLE = path.join(h.FIXTURES, 'idle.js');

/** A definition as `start` sends it, for idle.js. */
function definition(fields = {}) {
  return {
    name: 'crafted',
    script: IDLE,
    args: [],
    node: process.execPath,
    node_args: [],
    cwd: h.FIXTURES,
    env: [],
    heartbeat_interval_ms: 1000,
    heartbeat_timeout_ms: 1000,
    heartbeat_misses: 3,
    start_grace_ms: 5000,
    kill_timeout_ms: 5000,
    ...fields,
  };
}

/** Sends one control request and returns the daemon's outcome. */
async function request(d, command) {
  const reply = await h.exchange(d.paths.control, h.frame({ version: 1, command }));
  assert.equal(reply.frames.length, 1, `want one answer, got ${JSON.stringify(reply.frames)}\n${d.describe()}`);
  return reply.frames[0].outcome;
}

test('definitions from a crafted control client are bounded like the command line', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'keeper']);
  const daemonPid = d.daemonPid();

  const refused = [
    ['a start grace of 2^53 ms', { start_grace_ms: 2 ** 53 }, /start grace: .*too long/],
    ['a kill timeout of 10^15 ms', { kill_timeout_ms: 1e15 }, /kill timeout: .*too long/],
    ['a heartbeat interval of 10^15 ms', { heartbeat_interval_ms: 1e15, heartbeat_timeout_ms: 1000 }, /heartbeat interval: .*too long/],
    ['a restart delay of 10^15 ms', { restart_delay_ms: 1e15 }, /restart delay: .*too long/],
    ['a listen timeout of 10^15 ms', { listen_timeout_ms: 1e15 }, /listen timeout: .*too long/],
    ['a restart window of 10^15 ms', { restart_window_ms: 1e15 }, /restart window: .*too long/],
    ['a min uptime of 10^15 ms', { min_uptime_ms: 1e15 }, /min uptime: .*too long/],
    ['a backoff base of 10^15 ms', { backoff_base_ms: 1e15 }, /backoff base: .*too long/],
    ['a memory limit of 2^60 bytes', { max_memory: 2 ** 60 }, /too large/],
    ['a name with a newline', { name: 'evil\nnodeguard: forged' }, /control characters/],
    ['a name with an escape sequence', { name: 'evil\u001b[2J' }, /control characters/],
    ['a name of only spaces', { name: '   ' }, /empty or only spaces/],
    ['the name all', { name: 'all' }, /'all' is reserved/],
    ['a numeric name', { name: '7' }, /must not be a number/],
    ['a 300-byte name', { name: 'n'.repeat(300) }, /300 bytes long/],
  ];
  for (const [what, fields, message] of refused) {
    const outcome = await request(d, { type: 'start', apps: [definition(fields)] });
    assert.equal(outcome.type, 'error', `${what} was accepted: ${JSON.stringify(outcome)}`);
    assert.match(outcome.message, message, what);
    assert.ok(!outcome.message.includes('\n'), `${what}: the error spans lines: ${JSON.stringify(outcome.message)}`);
  }
  const apps = await d.status();
  assert.deepEqual(apps.map((a) => a.name), ['keeper'], 'a refused definition left an app behind');
  assert.equal(d.daemonPid(), daemonPid);
  assert.equal((await d.cli(['ping'])).code, 0, 'the daemon did not survive');
});

test('a planted dump.json is held to the name rules and cannot make ids wrap', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'keeper']);
  await d.ok(['kill']);
  const dump = path.join(d.home, 'dump.json');
  const saved = JSON.parse(fs.readFileSync(dump, 'utf8'));
  const keeper = saved.apps[0];
  const planted = (id, name, instances = 1) => ({
    ...keeper,
    id,
    definition: { ...keeper.definition, name, instances },
    instances: [],
  });
  saved.apps = [
    keeper,
    planted(1, 'evil\nnodeguard: forged line'),
    planted(2, 'x'.repeat(500)),
    planted(3, 'all'),
    planted(4294967294, 'wraps', 4),
  ];
  fs.writeFileSync(dump, JSON.stringify(saved), { mode: 0o600 });
  const result = await d.cli(['resurrect']);
  assert.equal(result.code, 1, `resurrect of a planted file: exit ${result.code}\n${result.stdout}${result.stderr}`);
  const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `want one line, got:\n${result.stderr}`);
  assert.match(lines[0], /control characters/);
  assert.match(lines[0], /500 bytes long/);
  assert.match(lines[0], /'all' is reserved/);
  assert.match(lines[0], /no ids left/);
  const apps = await d.status();
  assert.deepEqual(apps.map((a) => [a.id, a.name]), [[0, 'keeper']], 'a planted app was brought back');
});

test('a planted dump.json claiming u32::MAX instances is refused at once, not scanned id by id', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'keeper']);
  await d.ok(['kill']);
  const dump = path.join(d.home, 'dump.json');
  const saved = JSON.parse(fs.readFileSync(dump, 'utf8'));
  const keeper = saved.apps[0];
  saved.apps.push({ ...keeper, id: 7, definition: { ...keeper.definition, name: 'huge', instances: 4294967295 }, instances: [] });
  fs.writeFileSync(dump, JSON.stringify(saved), { mode: 0o600 });
  // Before the fix the daemon scanned four billion ids first and answered nothing for 8-16 s; the
  // bound only says "it did not do that", generously for a loaded machine.
  const started = Date.now();
  const result = await d.cli(['resurrect']);
  const took = Date.now() - started;
  assert.equal(result.code, 1, `resurrect: exit ${result.code}\n${result.stdout}${result.stderr}`);
  const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `want one line, got:\n${result.stderr}`);
  assert.match(lines[0], /huge/);
  assert.match(lines[0], /instances/);
  assert.ok(took < 4_000, `resurrect took ${took} ms`);
  const apps = await d.status();
  assert.deepEqual(apps.map((a) => [a.id, a.name]), [[0, 'keeper']]);
});

test('names that need escaping get their own log files: a/b and a-b do not share one', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'a/b', '--', 'from-a-slash-b']);
  await d.ok(['start', 'idle.js', '--name', 'a-b', '--', 'from-a-dash-b']);
  const logs = path.join(d.home, 'logs');
  const read = (file) => {
    try {
      return fs.readFileSync(path.join(logs, file), 'utf8');
    } catch {
      return '';
    }
  };
  await d.waitFor(
    () => read('a%2Fb-out.log').includes('from-a-slash-b') && read('a-b-out.log').includes('from-a-dash-b'),
    { what: 'each app writing its own log file' },
  );
  assert.ok(!read('a-b-out.log').includes('from-a-slash-b'), "a/b's output went into a-b's log");
  assert.ok(!read('a%2Fb-out.log').includes('from-a-dash-b'), "a-b's output went into a/b's log");
  // `logs` finds both by name, from the files alone too.
  const shown = await d.ok(['logs', 'a/b', '--lines', '5']);
  assert.match(shown.stdout, /from-a-slash-b/);
  assert.doesNotMatch(shown.stdout, /from-a-dash-b/);
});

test('a short heartbeat interval alone is accepted: the default timeout follows it', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'quick', '--heartbeat-interval', '100ms']);
  const described = JSON.parse((await d.ok(['describe', 'quick', '--json'])).stdout);
  const app = Array.isArray(described) ? described[0] : described;
  assert.equal(app.definition.heartbeat_interval_ms, 100);
  assert.equal(app.definition.heartbeat_timeout_ms, 100);
  // Only an explicit timeout longer than the interval is refused.
  const explicit = await d.cli(['start', 'idle.js', '--name', 'slow', '--heartbeat-interval', '100ms', '--heartbeat-timeout', '1s']);
  assert.equal(explicit.code, 2, `explicit timeout > interval: exit ${explicit.code}`);
  assert.match(explicit.stderr, /heartbeat timeout \(1\.0s\) must not exceed the heartbeat interval \(100ms\)/);
  // The same in a config file.
  const dir = fs.mkdtempSync(path.join(d.home, 'cfg-'));
  fs.copyFileSync(IDLE, path.join(dir, 'idle.js'));
  const file = path.join(dir, 'quick.json');
  fs.writeFileSync(file, JSON.stringify({ apps: [{ name: 'fromfile', script: 'idle.js', heartbeat_interval: '100ms' }] }));
  await d.ok(['start', file]);
  const fromFile = JSON.parse((await d.ok(['describe', 'fromfile', '--json'])).stdout);
  const fileApp = Array.isArray(fromFile) ? fromFile[0] : fromFile;
  assert.equal(fileApp.definition.heartbeat_timeout_ms, 100);
});
