'use strict';
// `nodeguard profile --cpu/--heap`, `--heap-snapshot-on-memory-restart` and `--profile-on-stall`:
// profiles taken by the monitor inside real Node apps through Node's inspector module, streamed
// to the daemon's home and moved to the caller's file.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const APP = path.join(h.FIXTURES, 'profiled.js');

function outDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-profile-out-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function events(d, name) {
  const r = await d.ok(['describe', name, '--json']);
  return JSON.parse(r.stdout).flatMap((app) => app.events);
}

function profilesIn(home) {
  try {
    return fs.readdirSync(path.join(home, 'profiles')).map((f) => path.join(home, 'profiles', f));
  } catch {
    return [];
  }
}

/** Inodes of the TCP sockets listening on this machine (IPv4 and IPv6). */
function listeningInodes() {
  const inodes = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of fs.readFileSync(file, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === '0A') inodes.add(cols[9]);
    }
  }
  return inodes;
}

/** Whether `pid` holds a listening TCP socket. */
function listensOnTcp(pid) {
  const listening = listeningInodes();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m && listening.has(m[1])) return true;
  }
  return false;
}

test('profile --cpu writes a .cpuprofile naming the busy function, --heap a .heapsnapshot with the app\'s class; no port is opened', async (t) => {
  const d = new h.DaemonHome(t);
  const cwd = outDir(t);
  await d.ok(['start', APP, '--name', 'prof']);
  const { pid } = await d.waitForStatus((apps) => apps.find((a) => a.name === 'prof' && a.monitored && a.pid), {
    what: 'the app to run with its monitor',
  });

  const cpu = await d.ok(['profile', 'prof', '--cpu', '--duration', '2s'], { cwd });
  const written = fs.readdirSync(cwd);
  assert.equal(written.length, 1, `one file in the caller's directory: ${written}`);
  assert.match(written[0], new RegExp(`^prof-${pid}-\\d{8}T\\d{6}Z\\.cpuprofile$`));
  assert.match(cpu.stdout, /hottest function: burnCpu \(.*profiled\.js:\d+\) \d+%/);
  const profile = JSON.parse(fs.readFileSync(path.join(cwd, written[0]), 'utf8'));
  assert.ok(Array.isArray(profile.nodes) && Array.isArray(profile.samples) && profile.startTime < profile.endTime, 'a DevTools CPU profile');
  const burn = profile.nodes.find((n) => n.callFrame.functionName === 'burnCpu');
  assert.ok(burn && burn.hitCount > 0, 'burnCpu has samples');

  const target = path.join(cwd, 'snap.heapsnapshot');
  await d.ok(['profile', 'prof', '--heap', '-o', 'snap.heapsnapshot'], { cwd });
  const snapshot = JSON.parse(fs.readFileSync(target, 'utf8'));
  assert.ok(snapshot.snapshot && snapshot.snapshot.meta && Array.isArray(snapshot.nodes), 'a V8 heap snapshot');
  assert.ok(snapshot.strings.includes('LeakyThing'), 'the snapshot names the class LeakyThing');
  assert.equal((fs.statSync(target).mode & 0o777).toString(8), '600');

  // Moved out of the daemon's home; the app kept running, and never listened on a port.
  assert.deepEqual(profilesIn(d.home), []);
  const after = (await d.byName()).prof;
  assert.equal(after.pid, pid);
  assert.equal(after.restarts, 0);
  assert.ok(!listensOnTcp(pid), 'the app listens on no TCP port (no inspector port)');
});

test('profile of an app with two instances writes one file per instance', async (t) => {
  const d = new h.DaemonHome(t);
  const cwd = outDir(t);
  await d.ok(['start', APP, '--name', 'duo', '-i', '2']);
  await d.waitForStatus((apps) => apps.filter((a) => a.name === 'duo' && a.monitored).length === 2, {
    what: 'both instances to run with their monitors',
  });
  const r = await d.ok(['profile', 'duo', '--cpu', '--duration', '1s', '-o', 'duo.cpuprofile'], { cwd });
  assert.deepEqual(fs.readdirSync(cwd).sort(), ['duo-0.cpuprofile', 'duo-1.cpuprofile'], r.stdout);
  for (const file of fs.readdirSync(cwd)) {
    const profile = JSON.parse(fs.readFileSync(path.join(cwd, file), 'utf8'));
    assert.ok(profile.nodes.some((n) => n.callFrame.functionName === 'burnCpu'), `${file} names burnCpu`);
  }
});

test('profile refuses in one line: unknown target, unmonitored app, stopped app, a profile already running, no kind', async (t) => {
  const d = new h.DaemonHome(t);
  const cwd = outDir(t);
  await d.ok(['start', APP, '--name', 'prof']);
  await d.ok(['start', 'sleep', '--name', 'plain', '--interpreter', 'none', '--', '1000']);
  await d.waitForStatus((apps) => apps.find((a) => a.name === 'prof' && a.monitored) && apps.find((a) => a.name === 'plain' && a.pid), {
    what: 'both apps to run',
  });
  const refused = async (args, pattern, code = 1) => {
    const r = await d.cli(args, { cwd });
    assert.equal(r.code, code, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  };
  await refused(['profile', 'nope', '--cpu'], /no app named.*'nope'/);
  await refused(['profile', 'plain', '--heap'], /plain: it has no monitor connected/);
  await refused(['profile', 'prof'], /--cpu\|--heap/, 2);
  await refused(['profile', 'prof', '--cpu', '--duration', '2m'], /lasts from 1ms to 60s/, 2);

  const first = d.cli(['profile', 'prof', '--cpu', '--duration', '3s'], { cwd });
  // The second request is sent once the first is under way (the supervisor creates its file in
  // <home>/profiles/ as it asks the app), while it runs (it takes 3 s).
  await d.waitFor(() => profilesIn(d.home).length > 0, { what: 'the first profile to begin' });
  await refused(['profile', 'prof', '--heap'], /prof: a profile is already being taken/);
  assert.equal((await first).code, 0);

  await d.ok(['stop', 'prof']);
  await refused(['profile', 'prof', '--cpu'], /prof: it is not running/);
  assert.deepEqual(profilesIn(d.home), [], 'no partial file is left behind');
});

test('--heap-snapshot-on-memory-restart writes a heap snapshot before the memory guard restarts the app', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', APP, '--name', 'leaky', '--max-memory', '200M', '--heap-snapshot-on-memory-restart'], {
    env: { PROFILED_MODE: 'leak' },
  });
  const first = await d.waitForStatus((apps) => apps.find((a) => a.name === 'leaky' && a.pid), { what: 'the app to run' });
  await d.waitForStatus((apps) => apps.find((a) => a.name === 'leaky' && a.restarts >= 1 && a.pid && a.pid !== first.pid), {
    what: 'the memory guard to restart the app',
    timeout: 45_000,
  });
  const memory = (await events(d, 'leaky')).find((e) => e.kind === 'memory');
  assert.ok(memory, 'a memory event');
  const m = /heap snapshot (\S+\.heapsnapshot) \(/.exec(memory.message);
  assert.ok(m, `the memory event names the snapshot: ${memory.message}`);
  assert.equal(path.dirname(m[1]), path.join(d.home, 'profiles'));
  assert.ok(path.basename(m[1]).startsWith(`leaky-${first.pid}-`), m[1]);
  const snapshot = JSON.parse(fs.readFileSync(m[1], 'utf8'));
  assert.ok(snapshot.strings.includes('LeakyThing'), 'the snapshot names the class LeakyThing');
  assert.equal((fs.statSync(m[1]).mode & 0o777).toString(8), '600');
  assert.equal((fs.statSync(path.dirname(m[1])).mode & 0o777).toString(8), '700');
});

test('--profile-on-stall takes one CPU profile of a slow app, naming its slow function, and only one', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', APP, '--name', 'slow', '--profile-on-stall', '100ms'], { env: { PROFILED_MODE: 'stall' } });
  const profileEvents = async () => (await events(d, 'slow')).filter((e) => e.kind === 'profile');
  const [event] = await d.waitFor(async () => {
    const found = await profileEvents();
    return found.length > 0 ? found : false;
  }, { what: 'a profile event', timeout: 25_000 });
  assert.match(event.message, /loop delay p99 \d+ ms over the stall threshold: CPU profile \S+\.cpuprofile/);
  assert.match(event.message, /hottest function: slowHandler \(.*profiled\.js:\d+\)/);
  const file = /CPU profile (\S+\.cpuprofile)/.exec(event.message)[1];
  const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.ok(profile.nodes.some((n) => n.callFrame.functionName === 'slowHandler' && n.hitCount > 0));

  // Three more slow heartbeats after the profile: still one profile (rate-limited).
  const seen = new Set();
  await d.waitForStatus((apps) => {
    const app = apps.find((a) => a.name === 'slow');
    if (app && app.loop_delay_ms >= 100 && app.last_pong_ms !== null && app.uptime_ms !== null) seen.add(Math.floor((app.uptime_ms - app.last_pong_ms) / 500));
    return seen.size >= 3;
  }, { what: 'three more slow heartbeats' });
  assert.equal((await profileEvents()).length, 1, 'one profile only');
  assert.equal(profilesIn(d.home).length, 1);
});

test('a hung app cannot be profiled: the request fails in one line, bounded, and the hang is still detected', async (t) => {
  const d = new h.DaemonHome(t);
  const cwd = outDir(t);
  await d.ok(['start', APP, '--name', 'hung', '--autorestart', 'never'], { env: { PROFILED_MODE: 'hang' } });
  const { pid } = await d.waitForStatus((apps) => apps.find((a) => a.name === 'hung' && a.monitored && a.last_pong_ms > 1000), {
    what: 'the app to stop answering heartbeats',
  });
  for (const kind of ['--heap', '--cpu']) {
    const began = performance.now();
    const r = await d.cli(['profile', 'hung', kind], { cwd });
    assert.equal(r.code, 1, `${kind}: exit ${r.code}: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, /hung: (the process exited|the monitor's connection ended|it is not running|it has no monitor connected)/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(performance.now() - began < 20_000, `${kind} answered in ${performance.now() - began} ms`);
  }
  const row = (await d.byName()).hung;
  assert.ok(row.hangs >= 1, 'the hang was detected and the app killed');
  assert.ok(h.isGone(pid));
  assert.deepEqual(fs.readdirSync(cwd), []);
  assert.deepEqual(profilesIn(d.home), [], 'no partial file is left behind');
});
