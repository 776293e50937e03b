'use strict';
// Daemon state: `describe` (config, counters, event history), the state file <home>/dump.json kept
// in step by the daemon and written by `save`, and `resurrect` after `kill`, after a daemon
// SIGKILL, with a corrupt state file, and twice in a row. Real daemons and node apps in a fresh
// home per test; every wait is on an observed condition under a generous deadline; cleanup kills
// every process of the home, failure or not (DaemonHome in helpers.js).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const fixture = (name) => path.join(h.FIXTURES, name);

/** Short heartbeats, so a blocked loop is declared hung within about a second. */
const FAST_HEARTBEATS = ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms', '--heartbeat-misses', '3'];
/** How long the daemon process may take to vanish once `kill` returned. */
const DAEMON_EXIT_MS = 2_000;
/** Slack between our clock and the daemon's timestamps (same machine; covers rounding). */
const CLOCK_SLACK_MS = 2_000;
/** RFC 3339 in UTC, as `describe --json` writes `at`. */
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
/** A duration as nodeguard prints it: 816ms, 4.4s, 1m2s … */
const DURATION = /\b\d+(\.\d+)?(ms|s|m|h)\b/;
/** Fields of `definition` in `describe --json` and in dump.json. */
const DEFINITION_FIELDS = ['name', 'script', 'args', 'node', 'node_args', 'cwd', 'env', 'heartbeat_interval_ms',
  'heartbeat_timeout_ms', 'heartbeat_misses', 'start_grace_ms', 'kill_timeout_ms'];
/** Fields of status rows that do not move between two reads of a quiet app. */
const STABLE_STATUS_FIELDS = ['name', 'id', 'script', 'pid', 'state', 'restarts', 'hangs', 'monitored'];

function byName(apps) {
  return Object.fromEntries(apps.map((a) => [a.name, a]));
}

function assertRunning(row, what) {
  assert.ok(row, `${what}: not listed`);
  assert.equal(row.state, 'running', `${what}: state ${row.state}, want running (${JSON.stringify(row)})`);
  assert.ok(Number.isInteger(row.pid) && !h.isGone(row.pid), `${what}: pid ${row.pid} is not a running process`);
}

function oneLine(text, what) {
  const lines = text.trim().split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `${what}: want exactly one line, got ${lines.length}: ${JSON.stringify(text)}`);
  return lines[0];
}

function dumpPath(d) {
  return path.join(d.home, 'dump.json');
}

/** The parsed dump.json (fails with its text if it is not JSON). */
function readDump(d) {
  const text = fs.readFileSync(dumpPath(d), 'utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    assert.fail(`${dumpPath(d)} is not valid JSON (${err.message}): ${text}`);
  }
}

/** `describe <target> --json`: the one entry of the array. */
async function describeJson(d, target) {
  const r = await d.ok(['describe', target, '--json']);
  let parsed;
  try {
    parsed = JSON.parse(r.stdout);
  } catch (err) {
    assert.fail(`describe ${target} --json printed invalid JSON (${err.message}): ${r.stdout}`);
  }
  assert.ok(Array.isArray(parsed) && parsed.length === 1, `describe ${target} --json: want a one-element array, got ${r.stdout}`);
  return parsed[0];
}

/** Retries GET /pid until the app on `port` answers with `pid` (it may not listen yet when it runs). */
function waitServing(d, port, pid) {
  return d.waitFor(async () => {
    try {
      const reply = await h.get(port, '/pid');
      return reply.body.trim() === String(pid);
    } catch {
      return false;
    }
  }, { what: `pid ${pid} to serve on port ${port}` });
}

/** Crashes the web app (exit code 3) and waits for its restart; returns the new status row. */
async function crash(d, port, row) {
  await waitServing(d, port, row.pid);
  await h.get(port, '/crash');
  return d.waitForStatus((list) => {
    const web = byName(list)[row.name];
    return web && web.state === 'running' && web.pid !== row.pid && web.restarts === row.restarts + 1 ? web : false;
  }, { what: `${row.name} to be restarted after exit code 3` });
}

/** Blocks the web app's event loop and waits for the hang restart; returns the new status row. */
async function hang(d, port, row) {
  await waitServing(d, port, row.pid);
  await h.get(port, '/hang');
  return d.waitForStatus((list) => {
    const web = byName(list)[row.name];
    return web && web.state === 'running' && web.pid !== row.pid && web.hangs === row.hangs + 1 ? web : false;
  }, { what: `${row.name} to be restarted as hung` });
}

/** `kill`, then waits until the daemon and `pids` are gone and no process of the home is left. */
async function killAll(d, pids) {
  const daemonPid = d.daemonPid();
  await d.ok(['kill']);
  await h.waitGone([daemonPid, ...pids], { timeout: DAEMON_EXIT_MS, what: 'the daemon and its apps to be gone after kill' });
  assert.deepEqual(d.processes(), [], 'processes of this home still running after kill');
}

/** Files in the home that look like leftovers of a state-file write (anything dump* but dump.json and backups). */
function strayStateFiles(d) {
  return fs.readdirSync(d.home).filter((f) => /dump/.test(f) && f !== 'dump.json' && !/^dump\.json\.corrupt-\d+$/.test(f));
}

test('describe: config echoed, counters, and started/exited/hung events with ordered ISO timestamps', async (t) => {
  const d = new h.DaemonHome(t);
  const testStart = Date.now();
  const port = await h.freePort();
  const appArgs = [String(port), 'two words', '--flag'];
  await d.ok(['start', fixture('portserver.js'), '--name', 'web', ...FAST_HEARTBEATS, '--start-grace', '3s',
    '--kill-timeout', '2s', '--node-arg=--no-warnings', '--', ...appArgs]);
  const first = (await d.byName()).web;
  assertRunning(first, 'web after start');

  const second = await crash(d, port, first);
  const third = await hang(d, port, second);

  const rows = await d.status();
  const desc = await describeJson(d, 'web');
  const after = byName(rows).web;

  // status: the same object as `status --json`, with the counters.
  assert.deepEqual(Object.keys(desc.status).sort(), Object.keys(after).sort(), 'describe.status has the fields of a status --json row');
  for (const field of STABLE_STATUS_FIELDS) {
    assert.deepEqual(desc.status[field], after[field], `describe.status.${field} vs status --json`);
  }
  assert.equal(desc.status.restarts, 2, `restarts after one crash and one hang: ${JSON.stringify(desc.status)}`);
  assert.equal(desc.status.hangs, 1, `hangs after one hang: ${JSON.stringify(desc.status)}`);
  assert.equal(desc.status.pid, third.pid);

  // definition: every flag and the args after `--`.
  const def = desc.definition;
  for (const field of DEFINITION_FIELDS) assert.ok(field in def, `definition lacks ${field}: ${JSON.stringify(def)}`);
  assert.equal(def.name, 'web');
  assert.equal(def.script, fixture('portserver.js'));
  assert.deepEqual(def.args, appArgs, 'definition.args are the args after --');
  assert.deepEqual(def.node_args, ['--no-warnings']);
  assert.equal(def.cwd, h.FIXTURES, 'definition.cwd is the directory start ran in');
  assert.equal(def.heartbeat_interval_ms, 200);
  assert.equal(def.heartbeat_timeout_ms, 200);
  assert.equal(def.heartbeat_misses, 3);
  assert.equal(def.start_grace_ms, 3000);
  assert.equal(def.kill_timeout_ms, 2000);
  assert.equal(typeof def.node, 'string');

  // events: RFC 3339 UTC, non-decreasing, within this test's lifetime; the story in order.
  const events = desc.events;
  assert.ok(Array.isArray(events), `events: ${JSON.stringify(events)}`);
  let previous = -Infinity;
  for (const e of events) {
    assert.match(e.at, RFC3339_UTC, `event at ${JSON.stringify(e.at)} is not an RFC 3339 UTC time`);
    const at = Date.parse(e.at);
    assert.ok(Number.isFinite(at), `event at ${e.at} does not parse`);
    assert.ok(at >= previous, `events out of order: ${JSON.stringify(events)}`);
    assert.ok(at >= testStart - CLOCK_SLACK_MS && at <= Date.now() + CLOCK_SLACK_MS,
      `event at ${e.at} outside this test (${new Date(testStart).toISOString()} .. now)`);
    previous = at;
  }
  const story = events.filter((e) => ['started', 'exited', 'hung'].includes(e.kind));
  assert.deepEqual(story.map((e) => e.kind), ['started', 'exited', 'started', 'hung', 'started'],
    `started/exited/hung events: ${JSON.stringify(events, null, 1)}`);
  const others = events.filter((e) => !story.includes(e));
  if (others.length) t.diagnostic(`other events: ${others.map((e) => e.kind).join(', ')}`);
  const exited = story[1];
  assert.match(exited.message, /\bexit code 3\b/, `exited message: ${exited.message}`);
  assert.match(exited.message, DURATION, `exited message gives the uptime: ${exited.message}`);
  assert.match(exited.message, /restarted at once|restart in .*\(backoff\)/, `exited message says how it restarts: ${exited.message}`);
  assert.match(story[3].message, /event loop silent for \d/, `hung message: ${story[3].message}`);
  assert.match(story[3].message, /a ping waited \S+ for the JS thread/, `hung message gives the evidence: ${story[3].message}`);
  // Forensics: where the loop was stuck, in describe and in the app's error log.
  const stack = events.find((e) => e.kind === 'stack');
  assert.ok(stack, `no stack event: ${JSON.stringify(events, null, 1)}`);
  assert.match(stack.message, /^hung \S+ in blockForever \(server\.js:\d+:\d+\) < /, `stack event: ${stack.message}`);
  assert.ok(Date.parse(stack.at) >= Date.parse(story[3].at), 'the stack event follows the hung event');
  const errLog = fs.readFileSync(path.join(d.home, 'logs', 'web-err.log'), 'utf8');
  assert.ok(errLog.includes(`[nodeguard] ${stack.message}\n`), `web-err.log lacks the stack line:\n${errLog}`);

  // The text form shows the config, the counters and every event.
  const text = (await d.ok(['describe', 'web'])).stdout;
  assert.match(text, /\bweb\b/);
  assert.match(text, /200ms/, `text describe shows the heartbeat interval:\n${text}`);
  assert.match(text, /two words/, `text describe shows the args:\n${text}`);
  assert.match(text, /restarts\D*2\b/, `text describe shows restarts 2:\n${text}`);
  for (const e of story) {
    assert.ok(text.includes(e.at) && text.includes(e.message), `text describe lacks event ${JSON.stringify(e)}:\n${text}`);
  }
  const byId = await describeJson(d, String(first.id));
  assert.equal(byId.definition.name, 'web', 'describe by id');

  for (const args of [['describe', 'nope'], ['describe', 'nope', '--json'], ['describe', '99']]) {
    const r = await d.cli(args);
    assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}, stdout ${r.stdout}, stderr ${r.stderr}`);
    assert.match(oneLine(r.stderr, args.join(' ')), new RegExp(args[1]), `${args.join(' ')}: names the target`);
    assert.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`);
  }
});

test('save → kill → resurrect: same ids, names, config and counters; the stopped app stays stopped', async (t) => {
  const d = new h.DaemonHome(t);
  const port = await h.freePort();
  const appArgs = [String(port), 'two words'];
  await d.ok(['start', fixture('idle.js'), '--name', 'idle']);
  await d.ok(['start', fixture('idle.js'), '--name', 'gone']);
  await d.ok(['start', fixture('portserver.js'), '--name', 'web', ...FAST_HEARTBEATS, '--', ...appArgs]);
  await d.ok(['delete', 'gone']); // so the ids are not simply 0, 1
  let web = (await d.byName()).web;
  web = await crash(d, port, web);
  web = await hang(d, port, web);
  await d.ok(['stop', 'idle']);

  const before = await d.byName();
  assert.deepEqual(Object.keys(before).sort(), ['idle', 'web']);
  assert.equal(before.idle.state, 'stopped');
  assert.equal(before.web.restarts, 2);
  assert.equal(before.web.hangs, 1);
  const defBefore = { web: (await describeJson(d, 'web')).definition, idle: (await describeJson(d, 'idle')).definition };

  const saved = await d.ok(['save']);
  assert.equal(saved.stdout.trim(), `saved 2 app(s) to ${dumpPath(d)}`);
  const dump = readDump(d);
  assert.equal(dump.version, 1);
  const dumped = byName(dump.apps.map((a) => ({ ...a, name: a.definition?.name })));
  assert.deepEqual(Object.keys(dumped).sort(), ['idle', 'web'], `dump.json apps: ${JSON.stringify(dump)}`);
  assert.deepEqual(
    { id: dumped.web.id, restarts: dumped.web.restarts, hangs: dumped.web.hangs, stopped: dumped.web.stopped },
    { id: before.web.id, restarts: 2, hangs: 1, stopped: false }, 'web in dump.json');
  assert.deepEqual({ id: dumped.idle.id, stopped: dumped.idle.stopped }, { id: before.idle.id, stopped: true }, 'idle in dump.json');

  await killAll(d, [web.pid]);

  // From another directory: the cwd comes from the saved definition, not from the client.
  await d.ok(['resurrect'], { cwd: os.tmpdir() });
  const after = await d.waitForStatus((list) => {
    const by = byName(list);
    return by.web?.state === 'running' ? by : false;
  }, { what: 'web to run after resurrect' });
  assert.deepEqual(Object.keys(after).sort(), ['idle', 'web'], 'resurrect brought back exactly the saved apps');
  assertRunning(after.web, 'web after resurrect');
  assert.notEqual(after.web.pid, web.pid, 'web has a new process');
  assert.equal(after.web.id, before.web.id, 'web keeps its id');
  assert.equal(after.web.restarts, 2, 'web keeps its restarts counter');
  assert.equal(after.web.hangs, 1, 'web keeps its hangs counter');
  assert.equal(after.idle.id, before.idle.id, 'idle keeps its id');
  assert.equal(after.idle.state, 'stopped', `idle comes back stopped: ${JSON.stringify(after.idle)}`);
  assert.equal(after.idle.pid, null);
  assert.deepEqual((await describeJson(d, 'web')).definition, defBefore.web, 'web keeps its definition');
  assert.deepEqual((await describeJson(d, 'idle')).definition, defBefore.idle, 'idle keeps its definition');

  // The new process really is the app as configured: its port, args and cwd.
  await waitServing(d, port, after.web.pid);
  const argv = h.procArgv(after.web.pid);
  assert.deepEqual(argv.slice(-appArgs.length), appArgs, `web's argv after resurrect: ${JSON.stringify(argv)}`);
  assert.equal(fs.readlinkSync(`/proc/${after.web.pid}/cwd`), h.FIXTURES, 'web runs in its saved cwd');

  // The stopped app's saved definition works, and a new app gets an id of its own.
  await d.ok(['restart', 'idle']);
  assertRunning((await d.byName()).idle, 'idle restarted after resurrect');
  await d.ok(['start', fixture('idle.js'), '--name', 'newcomer']);
  const now = await d.byName();
  assert.ok(![before.web.id, before.idle.id].includes(now.newcomer.id),
    `an app started after resurrect got id ${now.newcomer.id}, already used by a resurrected app (web ${before.web.id}, idle ${before.idle.id})`);
  assert.deepEqual(strayStateFiles(d), [], 'leftover state-file temp files in the home');
});

test('a SIGKILLed daemon\'s apps come back with resurrect, from the auto-saved state (no save)', async (t) => {
  const d = new h.DaemonHome(t);
  const port = await h.freePort();
  const appArgs = [String(port), 'x'];
  await d.ok(['start', fixture('portserver.js'), '--name', 'web', '--', ...appArgs]);
  await d.ok(['start', fixture('idle.js'), '--name', 'idle']);
  await d.ok(['start', fixture('idle.js'), '--name', 'extra']);
  await d.ok(['stop', 'idle']);
  await d.ok(['delete', 'extra']);
  const before = await d.byName();
  assertRunning(before.web, 'web');

  // The state file follows every change without `save`.
  const dump = readDump(d);
  const dumped = Object.fromEntries(dump.apps.map((a) => [a.definition?.name, a]));
  assert.deepEqual(Object.keys(dumped).sort(), ['idle', 'web'], `auto-saved dump.json after start/stop/delete: ${JSON.stringify(dump)}`);
  assert.equal(dumped.idle.stopped, true, 'the stop is in dump.json');
  assert.equal(dumped.web.stopped, false);

  const daemonPid = d.daemonPid();
  process.kill(daemonPid, 'SIGKILL');
  await h.waitGone([daemonPid, before.web.pid], { what: 'the SIGKILLed daemon and its app to be gone' });
  assert.deepEqual(d.processes(), [], 'processes of this home left after the daemon SIGKILL');

  const r = await d.ok(['resurrect']);
  assert.match(r.stdout, /daemon started/, 'resurrect launches a daemon when none runs');
  const after = await d.waitForStatus((list) => {
    const by = byName(list);
    return by.web?.state === 'running' ? by : false;
  }, { what: 'web to run after resurrect' });
  assert.deepEqual(Object.keys(after).sort(), ['idle', 'web'], 'exactly the apps the dead daemon had (the deleted one stays deleted)');
  assertRunning(after.web, 'web after resurrect');
  assert.notEqual(after.web.pid, before.web.pid);
  assert.equal(after.web.id, before.web.id, 'web keeps its id');
  assert.equal(after.idle.id, before.idle.id, 'idle keeps its id');
  assert.equal(after.idle.state, 'stopped', `idle comes back stopped: ${JSON.stringify(after.idle)}`);
  await waitServing(d, port, after.web.pid);
  assert.deepEqual(h.procArgv(after.web.pid).slice(-appArgs.length), appArgs, 'web gets its args back');
});

test('a corrupt dump.json: one-line error, set aside as a backup, and the daemon carries on', async (t) => {
  const d = new h.DaemonHome(t);
  const garbage = '{"version":1,"apps":[{"id":0,"definition":{"name":"we';
  fs.writeFileSync(dumpPath(d), garbage);
  const before = Math.floor(Date.now() / 1000);

  const r = await d.cli(['resurrect']);
  const after = Math.ceil(Date.now() / 1000);
  assert.equal(r.code, 1, `resurrect with a corrupt dump.json: exit ${r.code}, stdout ${r.stdout}, stderr ${r.stderr}`);
  const line = oneLine(r.stderr, 'resurrect with a corrupt dump.json (stderr)');
  assert.match(line, /dump\.json/, 'the error names the file');
  assert.match(line, /set aside|backup|moved|renamed/i, 'the error says the file was set aside');

  const backups = fs.readdirSync(d.home).filter((f) => /^dump\.json\.corrupt-\d+$/.test(f));
  assert.equal(backups.length, 1, `one backup in ${d.home}: ${fs.readdirSync(d.home).join(', ')}`);
  const stamp = Number(backups[0].split('-').pop());
  assert.ok(stamp >= before - 1 && stamp <= after + 1, `backup suffix ${stamp} is not the unix time (${before}..${after})`);
  assert.equal(fs.readFileSync(path.join(d.home, backups[0]), 'utf8'), garbage, 'the backup holds the garbage as it was');
  assert.ok(!fs.existsSync(dumpPath(d)) || fs.readFileSync(dumpPath(d), 'utf8') !== garbage, 'dump.json still holds the garbage');

  // The daemon that resurrect launched is alive and obeys.
  const daemonPid = d.daemonPid();
  assert.ok(daemonPid && !h.isGone(daemonPid), `daemon (lock file pid ${daemonPid}) is not running`);
  await d.ok(['ping']);
  const started = await d.ok(['start', fixture('idle.js')]);
  assert.doesNotMatch(started.stdout, /daemon started/, 'start used the daemon that survived the corrupt file');
  const apps = await d.byName();
  assertRunning(apps.idle, 'idle started after the corrupt file');
  assert.equal(d.daemonPid(), daemonPid);
  const fresh = readDump(d);
  assert.deepEqual(fresh.apps.map((a) => a.definition?.name), ['idle'], 'a valid dump.json is written again');

  // The same with a running daemon and an app: the app is untouched, the daemon survives.
  const second = '\u0000\u00ff not json at all';
  // The backup is named by the second; do not let the clock's second collide with the first one.
  await d.waitFor(() => Math.floor(Date.now() / 1000) > stamp, { what: 'the clock to pass the first backup\'s second' });
  fs.writeFileSync(dumpPath(d), second);
  const again = await d.cli(['resurrect']);
  assert.equal(again.code, 1, `resurrect with a corrupt dump.json and a running daemon: exit ${again.code}, ${again.stderr}`);
  assert.match(oneLine(again.stderr, 'second corrupt resurrect (stderr)'), /dump\.json/);
  const backups2 = fs.readdirSync(d.home).filter((f) => /^dump\.json\.corrupt-\d+$/.test(f));
  assert.equal(backups2.length, 2, `two backups now: ${backups2.join(', ')}`);
  assert.ok(backups2.some((f) => fs.readFileSync(path.join(d.home, f), 'utf8') === second), 'the second backup holds the second garbage');
  assert.equal(fs.readFileSync(path.join(d.home, backups[0]), 'utf8'), garbage, 'the first backup is untouched');
  const ping = await d.ok(['ping']);
  assert.match(ping.stdout, new RegExp(`\\bpid ${daemonPid}\\b`), 'the same daemon answers');
  assert.equal((await d.byName()).idle.pid, apps.idle.pid, 'the running app was left alone');
});

test('resurrect with nothing saved fails in one line; twice, or with everything running, it adds nothing', async (t) => {
  const d = new h.DaemonHome(t);
  // Nothing saved yet: one line, exit 1.
  const nothing = await d.cli(['resurrect']);
  assert.equal(nothing.code, 1, `resurrect with no dump.json: exit ${nothing.code}, ${nothing.stderr}`);
  assert.match(oneLine(nothing.stderr, 'resurrect with no dump.json (stderr)'), /nothing to resurrect/);

  await d.ok(['start', fixture('idle.js'), '--name', 'a']);
  await d.ok(['start', fixture('idle.js'), '--name', 'b']);
  await d.ok(['stop', 'b']);
  const first = await d.byName();

  // Everything in dump.json is already present.
  const noop = await d.cli(['resurrect']);
  assert.equal(noop.code, 0, `resurrect with every saved app present: exit ${noop.code}, ${noop.stderr}`);
  let list = await d.status();
  assert.deepEqual(list.map((a) => a.name).sort(), ['a', 'b'], 'no duplicates with everything present');
  assert.equal(byName(list).a.pid, first.a.pid, 'the running app was not restarted');
  assert.equal(byName(list).b.state, 'stopped');

  await killAll(d, [first.a.pid]);
  await d.ok(['resurrect']);
  const back = await d.waitForStatus((l) => (byName(l).a?.state === 'running' ? byName(l) : false), { what: 'a to run after resurrect' });
  const r = await d.cli(['resurrect']);
  assert.equal(r.code, 0, `second resurrect: exit ${r.code}, ${r.stderr}`);
  list = await d.status();
  assert.deepEqual(list.map((a) => a.name).sort(), ['a', 'b'], `second resurrect made duplicates: ${JSON.stringify(list.map((a) => [a.name, a.id]))}`);
  const by = byName(list);
  assert.deepEqual([by.a.id, by.b.id], [first.a.id, first.b.id]);
  assert.equal(by.a.pid, back.a.pid, 'the second resurrect did not restart a');
  assert.equal(by.b.state, 'stopped', 'the second resurrect did not start b');
  const live = d.processes().filter((pid) => pid !== d.daemonPid());
  assert.deepEqual(live, [by.a.pid], 'one app process after two resurrects');
  assert.deepEqual(readDump(d).apps.map((a) => a.definition?.name).sort(), ['a', 'b'], 'dump.json lists each app once');
});

test('dump.json is replaced atomically: a reader never sees a partial file during a burst of changes', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('idle.js'), '--name', 'a']);
  await d.ok(['start', fixture('idle.js'), '--name', 'b']);
  let done = false;
  let reads = 0;
  const bad = [];
  const seen = new Set();
  const reader = (async () => {
    while (!done) {
      let text;
      try {
        text = await fs.promises.readFile(dumpPath(d), 'utf8');
      } catch (err) {
        bad.push(`read failed: ${err.code}`);
        continue;
      }
      reads++;
      try {
        const dump = JSON.parse(text);
        seen.add(dump.apps.map((a) => `${a.definition.name}:${a.stopped}`).sort().join(','));
      } catch (err) {
        bad.push(`${err.message}: ${JSON.stringify(text.slice(0, 80))}`);
      }
    }
  })();
  try {
    for (let i = 0; i < 5; i++) {
      await d.ok(['stop', 'a']);
      await d.ok(['restart', 'a']);
    }
    await d.ok(['restart', 'all']);
  } finally {
    done = true;
    await reader;
  }
  t.diagnostic(`${reads} reads of dump.json, ${seen.size} distinct app lists`);
  assert.deepEqual(bad.slice(0, 5), [], `${bad.length} of ${reads + bad.length} reads saw a missing or partial dump.json`);
  assert.ok(seen.has('a:true,b:false') && seen.has('a:false,b:false'), `the reads saw the changes: ${[...seen].join(' | ')}`);
  assert.deepEqual(strayStateFiles(d), [], 'leftover state-file temp files in the home');
});
