'use strict';
// Event hooks (`--on-event KINDS=TARGET`, `on_event` in config files), kernel OOM kills told apart
// from other deaths, and a hang's last stderr lines: real daemons, real node apps, a real shell
// script hook that writes its stdin and environment to files, a real HTTP receiver for URL hooks,
// and a real OOM kill by the kernel in a memory cgroup the test makes.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const h = require('./helpers');

const FAST = ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms', '--heartbeat-misses', '3'];

/** A hook script that writes its stdin (the event) and NODEGUARD_* variables to $OUT_DIR. */
const HOOK_SH = `#!/bin/sh
set -e
name="$NODEGUARD_EVENT_KIND-$$"
cat > "$HOOK_OUT/$name.tmp"
env | grep '^NODEGUARD_' | grep -v '^NODEGUARD_HOME=' > "$HOOK_OUT/$name.env" || true
mv "$HOOK_OUT/$name.tmp" "$HOOK_OUT/$name.json"
`;

/** An app that, on its first run only, writes 25 numbered stderr lines and then blocks its loop. */
const HANGER = `
const fs = require('node:fs');
const marker = process.env.MARKER;
if (!fs.existsSync(marker)) {
  fs.writeFileSync(marker, String(process.pid));
  for (let n = 1; n <= 25; n++) console.error('before the hang ' + n);
  setTimeout(function spinHere() { for (;;) {} }, 600);
}
setInterval(() => {}, 1000);
`;

/** Events the hook script wrote so far: [{ kind, json, env }]. */
function hookEvents(dir) {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => {
    const base = f.slice(0, -'.json'.length);
    const env = Object.fromEntries(fs.readFileSync(path.join(dir, `${base}.env`), 'utf8').split('\n').filter(Boolean)
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
    return { json: JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')), env };
  });
}

/** A real HTTP server collecting POSTed bodies. */
async function receiver(t, { status = 204 } = {}) {
  const bodies = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      bodies.push({ method: req.method, url: req.url, type: req.headers['content-type'], body });
      res.writeHead(status).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  return { port: server.address().port, bodies };
}

function setup(t, extraFiles = []) {
  const dir = h.project(t, [['hook.sh', HOOK_SH, 0o755], ['hanger.js', HANGER], ...extraFiles], 'ng-hooks-');
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const home = new h.DaemonHome(t, { env: { HOOK_OUT: out, MARKER: path.join(dir, 'marker') } });
  return { dir, out, home };
}

test('a hang reaches a command hook and a URL hook with its stack and the last 20 stderr lines', async (t) => {
  const { dir, out, home } = setup(t);
  const http = await receiver(t);
  await home.ok(['start', path.join(dir, 'hanger.js'), '--name', 'hanger', ...FAST,
    '--on-event', 'hang=./hook.sh', '--on-event', `hang=http://127.0.0.1:${http.port}/hook?app=hanger`], { cwd: dir });

  const [event] = await home.waitFor(() => { const e = hookEvents(out); return e.length ? e : null; },
    { what: 'the hang hook to run', timeout: 30_000 });
  t.diagnostic(JSON.stringify(event.json));
  const { json, env } = event;
  assert.equal(json.kind, 'hang');
  assert.equal(json.app, 'hanger');
  assert.equal(json.pid, Number(fs.readFileSync(path.join(dir, 'marker'), 'utf8')));
  assert.ok(json.stack.length > 0 && /^spinHere \(hanger\.js:\d+:\d+\)$/.test(json.stack[0]), json.stack.join('\n'));
  // The last 20 lines before the hang, whole and in order.
  assert.deepEqual(json.stderr, Array.from({ length: 20 }, (_, i) => `before the hang ${i + 6}`));
  assert.match(json.message, /^hung \S+ in spinHere/);
  assert.equal(env.NODEGUARD_EVENT_KIND, 'hang');
  assert.equal(env.NODEGUARD_APP, 'hanger');
  assert.equal(env.NODEGUARD_PID, String(json.pid));
  assert.deepEqual(JSON.parse(env.NODEGUARD_EVENT_JSON), json);

  const [post] = await home.waitFor(() => (http.bodies.length ? http.bodies : null), { what: 'the URL hook' });
  assert.equal(post.method, 'POST');
  assert.equal(post.url, '/hook?app=hanger');
  assert.equal(post.type, 'application/json');
  assert.deepEqual(JSON.parse(post.body), json);

  // The same lines are in describe's event and in the app's error log, after the stack.
  const described = JSON.parse((await home.ok(['describe', 'hanger', '--json'])).stdout);
  const app = Array.isArray(described) ? described[0] : described;
  const stack = (app.events || []).find((e) => e.kind === 'stack');
  assert.ok(stack, JSON.stringify(app.events));
  assert.match(stack.message, /last 20 stderr line\(s\) before the hang:\n {2}\| before the hang 6\n/);
  assert.match(stack.message, / {2}\| before the hang 25$/);
  const errLog = () => fs.readdirSync(path.join(home.home, 'logs')).filter((f) => /hanger.*err/.test(f))
    .map((f) => fs.readFileSync(path.join(home.home, 'logs', f), 'utf8')).join('');
  await home.waitFor(() => /\[nodeguard\] {3}\| before the hang 25/.test(errLog()), { what: `the tail in the error log: ${errLog()}` });
});

test('a crash hook gets the exit code; on_event in a config file works the same', async (t) => {
  const crasher = `
const fs = require('node:fs');
if (!fs.existsSync(process.env.MARKER)) { fs.writeFileSync(process.env.MARKER, String(process.pid)); setTimeout(() => process.exit(3), 300); }
setInterval(() => {}, 1000);
`;
  const config = `module.exports = { apps: [{ name: 'crasher', script: 'crasher.js', on_event: { 'crash,errored': './hook.sh' } }] };\n`;
  const { dir, out, home } = setup(t, [['crasher.js', crasher], ['ecosystem.config.js', config]]);
  await home.ok(['start', 'ecosystem.config.js'], { cwd: dir });
  const [event] = await home.waitFor(() => { const e = hookEvents(out); return e.length ? e : null; }, { what: 'the crash hook' });
  t.diagnostic(JSON.stringify(event.json));
  assert.equal(event.json.kind, 'crash');
  assert.equal(event.json.code, 3);
  assert.equal(event.json.signal, undefined);
  assert.equal(event.json.pid, Number(fs.readFileSync(path.join(dir, 'marker'), 'utf8')));
  assert.equal(event.env.NODEGUARD_EXIT_CODE, '3');
  assert.equal(event.env.NODEGUARD_EVENT_KIND, 'crash');
  assert.match(event.json.message, /exit code 3 after/);
  // Bad hooks are refused up front, with the reason.
  const bad = await home.cli(['start', path.join(dir, 'crasher.js'), '--name', 'bad', '--on-event', 'crash=https://example.com/']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /https is not built in/);
});

test('a hook that outlives its timeout is killed with its process group, and the failure is logged', async (t) => {
  const slow = `#!/bin/sh\nsleep 300 &\necho $! > "$HOOK_OUT/grandchild.pid"\necho $$ > "$HOOK_OUT/hook.pid"\nsleep 300\n`;
  const { dir, out, home } = setup(t, [['slow.sh', slow, 0o755]]);
  await home.ok(['start', path.join(dir, 'hanger.js'), '--name', 'starter', '--on-event', 'start,timeout:1s=./slow.sh'], { cwd: dir });
  await home.waitFor(() => fs.existsSync(path.join(out, 'hook.pid')) && fs.existsSync(path.join(out, 'grandchild.pid')), { what: 'the slow hook to start' });
  const pids = ['hook.pid', 'grandchild.pid'].map((f) => Number(fs.readFileSync(path.join(out, f), 'utf8')));
  await h.waitGone(pids, { what: 'the timed-out hook and its grandchild to be killed', timeout: 10_000 });
  await home.waitFor(() => /hook "start,timeout:1s=.\/slow.sh" failed for a start event: still running after 1\.0s; its process group was killed/.test(home.daemonLog()),
    { what: 'the timeout in the daemon log' });
});

test('a flood of events with slow hooks never holds up supervision; what does not fit is dropped and counted', async (t) => {
  const { dir, home } = setup(t, [['crashloop.js', 'setTimeout(() => process.exit(1), 50);\n'], ['idle.js', 'setInterval(() => {}, 1000);\n']]);
  // 16 slow hooks on every event of an app that crashes at once, over and over.
  const hooks = Array.from({ length: 16 }, () => ['--on-event', 'all=sleep 7.654']).flat();
  await home.ok(['start', path.join(dir, 'idle.js'), '--name', 'idle'], { cwd: dir });
  // How long a restart takes here with no hooks at all.
  let started = performance.now();
  await home.ok(['restart', 'idle']);
  const baseline = performance.now() - started;
  await home.ok(['start', path.join(dir, 'crashloop.js'), '--name', 'loop', '--min-uptime', '1ms', '--max-restarts', '0', ...hooks], { cwd: dir });
  const t0 = performance.now();
  await home.waitFor(() => /dropped since start/.test(home.daemonLog()), { what: 'hook runs to be dropped' });
  t.diagnostic(`dropping after ${Math.round(performance.now() - t0)} ms`);
  // Never more than 4 hooks at once.
  const sleeping = () => h.processesMatching('sleep 7.654').length;
  for (let i = 0; i < 10; i++) {
    assert.ok(sleeping() <= 4, `${sleeping()} hooks running at once`);
    await h.sleep(50);
  }
  // Supervision goes on: the crash loop keeps being restarted, and another app restarts at once.
  const before = (await home.byName()).loop.restarts;
  await home.waitFor(async () => (await home.byName()).loop.restarts > before + 1, { what: 'more restarts of the loop' });
  t.diagnostic(`restarts went on after ${Math.round(performance.now() - t0)} ms`);
  const idlePid = (await home.byName()).idle.pid;
  started = performance.now();
  await home.ok(['restart', 'idle']);
  const took = performance.now() - started;
  t.diagnostic(`restart idle took ${Math.round(took)} ms with hooks saturated, ${Math.round(baseline)} ms before`);
  assert.ok(took < baseline * 3 + 2_000, `restart took ${took} ms, ${baseline} ms without hooks`);
  assert.notEqual((await home.byName()).idle.pid, idlePid);
});

/** This process's memory cgroup directory and version, or a loud failure. */
function memoryCgroup() {
  const own = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').filter(Boolean).map((l) => l.split(':'));
  const v1 = own.find(([, controllers]) => controllers.split(',').includes('memory'));
  if (v1 && fs.existsSync('/sys/fs/cgroup/memory')) return { version: 1, dir: path.join('/sys/fs/cgroup/memory', v1[2]) };
  const v2 = own.find(([id, controllers]) => id === '0' && controllers === '');
  if (v2 && fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) return { version: 2, dir: path.join('/sys/fs/cgroup', v2[2]) };
  throw new Error(`no memory cgroup this test can use (/proc/self/cgroup: ${JSON.stringify(own)}); the OOM test needs root and a writable cgroup`);
}

test('an app killed by the kernel OOM killer is reported as such, with an oom hook; other apps are untouched', async (t) => {
  if (process.getuid() !== 0) throw new Error('the OOM test needs root (it makes a memory cgroup)');
  const cgroup = memoryCgroup();
  const child = path.join(cgroup.dir, `ng-oom-${process.pid}`);
  fs.mkdirSync(child);
  t.after(() => { try { fs.rmdirSync(child); } catch { /* still busy: the kernel frees it once empty */ } });
  const limit = String(96 * 1024 * 1024);
  if (cgroup.version === 1) {
    fs.writeFileSync(path.join(child, 'memory.limit_in_bytes'), limit);
  } else {
    fs.writeFileSync(path.join(child, 'memory.max'), limit);
    fs.writeFileSync(path.join(child, 'memory.swap.max'), '0');
  }
  // First run: wait to be moved into the cgroup, then allocate until the kernel kills it.
  const eater = `
const fs = require('node:fs');
if (!fs.existsSync(process.env.MARKER)) {
  fs.writeFileSync(process.env.MARKER, String(process.pid));
  const moved = setInterval(() => {
    if (!fs.readFileSync('/proc/self/cgroup', 'utf8').includes(process.env.OOM_CGROUP)) return;
    clearInterval(moved);
    const hold = [];
    setInterval(() => { for (let i = 0; i < 8; i++) hold.push(Buffer.alloc(1 << 20, 1)); }, 5);
  }, 20);
}
setInterval(() => {}, 1000);
`;
  const { dir, out, home } = setup(t, [['eater.js', eater], ['idle.js', 'setInterval(() => {}, 1000);\n']]);
  await home.ok(['start', path.join(dir, 'idle.js'), '--name', 'idle'], { cwd: dir });
  await home.ok(['start', path.join(dir, 'eater.js'), '--name', 'eater', '--on-event', 'oom=./hook.sh'],
    { cwd: dir, env: { OOM_CGROUP: path.basename(child) } });
  await home.waitFor(() => fs.existsSync(path.join(dir, 'marker')), { what: 'the eater to start' });
  const idle = (await home.byName()).idle;
  const pid = Number(fs.readFileSync(path.join(dir, 'marker'), 'utf8'));
  fs.writeFileSync(path.join(child, 'cgroup.procs'), String(pid));

  const [event] = await home.waitFor(() => { const e = hookEvents(out); return e.length ? e : null; }, { what: 'the oom hook', timeout: 30_000 });
  t.diagnostic(JSON.stringify(event.json));
  assert.equal(event.json.kind, 'oom');
  assert.equal(event.json.pid, pid);
  assert.equal(event.json.signal, 'SIGKILL');
  assert.match(event.json.message, /signal SIGKILL \(killed by the kernel OOM killer\) after/);
  const rows = await home.waitForStatus((apps) => {
    const by = Object.fromEntries(apps.map((a) => [a.name, a]));
    return by.eater.state === 'running' && by.eater.pid !== pid ? by : null;
  }, { what: 'the eater back' });
  assert.match(rows.eater.last_exit, /killed by the kernel OOM killer/);
  assert.equal(rows.eater.restarts, 1);
  assert.equal(rows.idle.pid, idle.pid);
  assert.equal(rows.idle.restarts, 0);
  assert.match(home.daemonLog(), /signal SIGKILL \(killed by the kernel OOM killer\)/);
});

/** The records in the kernel log now (`/dev/kmsg`, one per read; root only here). */
function kernelLogRecords() {
  const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const buffer = Buffer.alloc(8192);
  let records = 0;
  try {
    for (;;) {
      try {
        fs.readSync(fd, buffer, 0, buffer.length, null);
        records++;
      } catch (error) {
        if (error.code === 'EPIPE') continue; // records overwritten meanwhile
        if (error.code === 'EAGAIN') return records;
        throw error;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** read() calls made so far by a process's threads, but its sweeper's (which scans /proc every second). */
function readCalls(pid) {
  let total = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('nodeguard-swee')) continue;
      total += Number(/^syscr: (\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/io`, 'utf8'))[1]);
    } catch (error) {
      if (error.code !== 'ENOENT' && error.code !== 'ESRCH') throw error; // a thread that ended
    }
  }
  return total;
}

test('the OOM check after a SIGKILL reads the kernel log records logged since its last look, not the whole log', async (t) => {
  if (process.getuid() !== 0) throw new Error('this test needs root (the daemon reads /dev/kmsg only as root here)');
  const records = kernelLogRecords();
  // A booted machine's log holds hundreds of records; with too few, a whole read looks cheap too.
  assert.ok(records >= 100, `the kernel log holds only ${records} records: too few to tell a whole read from a look at the new ones`);
  const sleep = ['/usr/bin/sleep', '/bin/sleep'].find((p) => fs.existsSync(p));
  assert.ok(sleep, 'no sleep binary');
  const { dir, home } = setup(t, [['apps.json', JSON.stringify({ apps: [{ name: 'sleeper', script: sleep, args: ['1000'], start_grace: '200ms' }] })]]);
  await home.ok(['start', path.join(dir, 'apps.json')], { cwd: dir });
  const daemon = home.daemonPid();
  const perExit = [];
  for (let i = 0; i < 3; i++) {
    const { pid } = (await home.waitForStatus((apps) => apps.find((a) => a.name === 'sleeper' && a.state === 'running' && a.pid > 0), { what: 'the sleeper running' }));
    // The start (or the restart) and the status command are answered: let the daemon go idle.
    await h.sleep(300);
    const before = readCalls(daemon);
    process.kill(pid, 'SIGKILL');
    const logged = new RegExp(`signal SIGKILL after .* pid=${pid}$`, 'm');
    await home.waitFor(() => logged.test(home.daemonLog()), { what: `the exit of ${pid} logged` });
    perExit.push(readCalls(daemon) - before);
  }
  t.diagnostic(`kernel log: ${records} records; read() calls by the daemon per SIGKILL exit: ${perExit.join(', ')}`);
  // The exit's own reads (its pipes, the cgroup's counter, the restart) are a few dozen at most;
  // a read of the whole log is one per record on top.
  const fewest = Math.min(...perExit);
  assert.ok(fewest < Math.min(60, records / 2), `${fewest} read() calls for one exit with ${records} records in the kernel log`);
});
