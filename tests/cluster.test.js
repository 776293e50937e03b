'use strict';
// Cluster mode and rolling reloads (daemon mode): N instances of an unchanged HTTP server share
// one supervisor-owned listening socket; `reload` replaces them one at a time under load without
// a failed request; a broken new version aborts the reload; SIGTERM drains in-flight requests;
// a SIGKILLed instance is replaced while its siblings serve.
//
// Requests go over fresh connections (agent: false, no keep-alive) on purpose: every request is
// then a new accept() on the shared socket, so the counts measure exactly what the supervisor
// promises (the port never closes; a connection accepted by a draining instance is answered).
// One test reloads under kept-alive connections instead, with pauses between requests: the drain
// must end each one with `Connection: close` on its next response rather than close it while
// idle (which races with the client's next request on it).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const FIXTURE = path.join(h.FIXTURES, 'cluster.js');
/** Concurrent request loops while a reload or a kill happens. */
const LOOPS = 4;

/** Starts `web` with `instances` instances sharing 127.0.0.1:<free port>; returns the port. */
async function startWeb(home, { instances, script = FIXTURE, flags = [] }) {
  const port = await h.freePort();
  await home.ok([
    'start', script, '--name', 'web', '-i', String(instances), '--listen', `127.0.0.1:${port}`,
    '--kill-timeout', '5s', ...flags, '--', String(port),
  ]);
  return port;
}

/** The `web` rows of status once all `count` instances run (and only they). */
function waitInstances(home, count, { notPids = [], what } = {}) {
  return home.waitForStatus(
    (apps) => {
      const rows = apps.filter((a) => a.name === 'web');
      const ok = rows.length === count &&
        rows.every((r) => r.state === 'running' && Number.isInteger(r.pid) && !notPids.includes(r.pid));
      return ok ? rows : false;
    },
    { what: what || `${count} web instances running` },
  );
}

const { requestLoops } = h;

test('four instances share one port and the requests spread over them', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 4 });
  const rows = await waitInstances(home, 4);
  assert.deepEqual(rows.map((r) => r.instance), [0, 1, 2, 3]);
  const pids = rows.map((r) => r.pid);
  assert.equal(new Set(pids).size, 4, `distinct pids: ${pids}`);
  assert.deepEqual(rows.map((r) => r.id), [rows[0].id, rows[0].id + 1, rows[0].id + 2, rows[0].id + 3]);

  // Batches of concurrent requests until every instance has answered one.
  const seen = new Set();
  await home.waitFor(async () => {
    const answers = await Promise.all(Array.from({ length: 16 }, () => h.get(port, '/')));
    for (const answer of answers) {
      assert.equal(answer.status, 200);
      seen.add(Number(answer.body.trim()));
    }
    return pids.every((pid) => seen.has(pid));
  }, { what: `every instance (${pids}) to answer; seen so far: ${[...seen]}` });
  for (const pid of seen) assert.ok(pids.includes(pid), `answer from pid ${pid}, not an instance`);

  const text = await home.ok(['status']);
  assert.match(text.stdout, /^web:3\s+\d+\s+\d+\s+running/m);
});

test('a rolling reload under a request loop fails no request and replaces every pid', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 2 });
  const before = (await waitInstances(home, 2)).map((r) => r.pid);

  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  const reload = await home.ok(['reload', 'web'], { timeout: 60_000 });
  const afterReload = load.result.ok;
  await home.waitFor(() => load.result.ok >= afterReload + 20, { what: 'requests after the reload' });
  const result = await load.stop();

  t.diagnostic(`${result.ok} requests, ${result.failed} failed, by pid: ${JSON.stringify([...result.pids])}`);
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  assert.match(reload.stdout, /web: reloaded 2 instance\(s\)/);

  const after = (await waitInstances(home, 2)).map((r) => r.pid);
  for (const pid of before) {
    assert.ok(!after.includes(pid), `pid ${pid} was not replaced (now ${after})`);
    assert.ok(h.isGone(pid), `old pid ${pid} still runs after the reload returned`);
  }
  for (const pid of after) assert.ok(result.pids.has(pid), `new pid ${pid} served nothing`);

  // describe keeps each instance's history across the reload: its old start, then the new one.
  const described = JSON.parse((await home.ok(['describe', 'web', '--json'])).stdout);
  for (const [i, app] of described.entries()) {
    const started = app.events.filter((e) => e.kind === 'started').map((e) => Number(/pid (\d+)/.exec(e.message)[1]));
    assert.deepEqual(started, [before[i], after[i]], JSON.stringify(app.events));
    assert.ok(app.events.some((e) => e.kind === 'reloaded'));
  }
});

test('a rolling reload under kept-alive connections fails no request', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 2 });
  const before = (await waitInstances(home, 2)).map((r) => r.pid);
  const agent = new http.Agent({ keepAlive: true, maxSockets: LOOPS });
  t.after(() => agent.destroy());
  const load = requestLoops(port, '/', { agent, pauseMs: 5 });
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  for (let round = 0; round < 3; round++) await home.ok(['reload', 'web'], { timeout: 60_000 });
  const afterReload = load.result.ok;
  await home.waitFor(() => load.result.ok >= afterReload + 20, { what: 'requests after the reloads' });
  const result = await load.stop();

  t.diagnostic(`${result.ok} requests, ${result.failed} failed, by pid: ${JSON.stringify([...result.pids])}`);
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  const after = (await waitInstances(home, 2)).map((r) => r.pid);
  for (const pid of before) assert.ok(!after.includes(pid), `pid ${pid} was not replaced (now ${after})`);
});

test('a single instance reloads with the two overlapping: no failed request', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 1 });
  const [before] = (await waitInstances(home, 1)).map((r) => r.pid);
  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  await home.ok(['reload', 'web'], { timeout: 60_000 });
  const afterReload = load.result.ok;
  await home.waitFor(() => load.result.ok >= afterReload + 20, { what: 'requests after the reload' });
  const result = await load.stop();
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  const [after] = (await waitInstances(home, 1)).map((r) => r.pid);
  assert.notEqual(after, before);
});

/** A copy of the fixture in a temp dir, so a test can break it. */
function copyFixture(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-app-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'app.js');
  fs.copyFileSync(FIXTURE, script);
  return script;
}

for (const [how, source, flags] of [
  ['throws at start', "throw new Error('broken build');\n", []],
  ['never listens (listen timeout)', 'setInterval(() => {}, 1000);\n', ['--listen-timeout', '1500ms']],
]) {
  test(`a new version that ${how} aborts the reload; the old instances keep serving`, async (t) => {
    const home = new h.DaemonHome(t);
    const script = copyFixture(t);
    const port = await startWeb(home, { instances: 2, script, flags });
    const before = (await waitInstances(home, 2)).map((r) => r.pid);

    fs.writeFileSync(script, source);
    const reload = await home.cli(['reload', 'web'], { timeout: 60_000 });
    assert.notEqual(reload.code, 0, `reload exited 0: ${reload.stdout}`);
    const line = reload.stderr.trim();
    assert.equal(line.split('\n').length, 1, `one line: ${line}`);
    assert.match(line, /reload of web aborted: the new instance 0 did not become ready/);
    assert.match(line, /keep serving/);

    const rows = await waitInstances(home, 2);
    assert.deepEqual(rows.map((r) => r.pid), before, 'the old instances are the ones running');
    for (let i = 0; i < 10; i++) {
      const res = await h.get(port, '/');
      assert.equal(res.status, 200);
      assert.ok(before.includes(Number(res.body.trim())));
    }
    const described = JSON.parse((await home.ok(['describe', 'web', '--json'])).stdout);
    assert.equal(described.length, 2);
    for (const app of described) {
      const aborted = app.events.filter((e) => e.kind === 'reload_aborted');
      assert.equal(aborted.length, 1, JSON.stringify(app.events));
      assert.match(aborted[0].message, /did not become ready/);
    }
  });
}

test('SIGTERM drains: an in-flight request finishes, then the instance exits and is replaced', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 1 });
  const [pid] = (await waitInstances(home, 1)).map((r) => r.pid);

  // The headers arrive at once; the body only after 1.5 s: the request is in flight.
  const body = new Promise((resolve, reject) => {
    const http = require('node:http');
    const req = http.get({ host: '127.0.0.1', port, path: '/slow?ms=1500', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode, text }));
      res.on('error', reject);
      // Signal the process only once its response has begun.
      process.kill(pid, 'SIGTERM');
    });
    req.on('error', reject);
  });
  const answer = await body;
  assert.deepEqual({ status: answer.status, text: answer.text.trim() }, { status: 200, text: String(pid) });
  await h.waitGone([pid], { what: `pid ${pid} to exit after draining` });

  // It exited on its own (code 0, not a signal) and the supervisor started a replacement; the
  // port stayed open throughout.
  const [next] = (await waitInstances(home, 1, { notPids: [pid] })).map((r) => r.pid);
  const res = await h.get(port, '/');
  assert.equal(Number(res.body.trim()), next);
  const described = JSON.parse((await home.ok(['describe', 'web', '--json'])).stdout);
  const exited = described[0].events.find((e) => e.kind === 'exited');
  assert.match(exited.message, new RegExp(`pid ${pid}: exit code 0`));
});

test('a SIGKILLed instance is replaced while its sibling serves', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 2 });
  const [victim, sibling] = (await waitInstances(home, 2)).map((r) => r.pid);

  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  process.kill(victim, 'SIGKILL');
  const okAtKill = load.result.ok;
  const rows = await waitInstances(home, 2, { notPids: [victim], what: 'a replacement for the killed instance' });
  const replacement = rows.map((r) => r.pid).find((p) => p !== sibling);
  await home.waitFor(() => (load.result.pids.get(replacement) || 0) > 0, { what: 'the replacement to serve' });
  const result = await load.stop();

  t.diagnostic(`${result.ok} requests, ${result.failed} failed (${result.errors.join('; ')})`);
  assert.ok(result.ok > okAtKill, 'requests kept succeeding after the kill');
  // Only requests the killed process had already accepted can fail: at most one per loop.
  assert.ok(result.failed <= LOOPS, `${result.failed} failed: ${result.errors.join('; ')}`);
  assert.ok(rows.some((r) => r.pid === sibling), 'the sibling kept running');
  assert.equal(rows.find((r) => r.pid === replacement).restarts, 1);
});

test('a single instance without --listen reloads as stop-then-start, and the command says so', async (t) => {
  // With 2 or more instances the supervisor shares what the app listens on and reloads rolling
  // (tests/cluster-share.test.js); one instance binds its own port, so the two cannot overlap.
  const home = new h.DaemonHome(t);
  await home.ok(['start', path.join(h.FIXTURES, 'idle.js'), '--name', 'plain']);
  const before = await home.waitForStatus((apps) => (apps.length === 1 && apps.every((a) => a.state === 'running') ? apps : false));
  const reload = await home.ok(['reload', 'plain'], { timeout: 60_000 });
  assert.match(reload.stdout, /plain: no --listen address.*restarted them one at a time \(stop, then start\)/);
  const after = await home.waitForStatus((apps) => (apps.length === 1 && apps.every((a) => a.state === 'running') ? apps : false));
  for (const row of before) assert.ok(!after.some((a) => a.pid === row.pid), `pid ${row.pid} not replaced`);
});

test('resurrect brings a cluster app back with its instances, its port and each instance\'s counters', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 2 });
  const [, second] = await waitInstances(home, 2);
  // A crash of instance 1 only: the restart is that instance's, before and after resurrect.
  process.kill(second.pid, 'SIGKILL');
  await waitInstances(home, 2, { notPids: [second.pid], what: 'instance 1 replaced' });
  await home.ok(['kill']);
  await home.ok(['resurrect']);
  const rows = await waitInstances(home, 2);
  assert.deepEqual(rows.map((r) => [r.instance, r.restarts]), [[0, 0], [1, 1]]);
  const res = await h.get(port, '/');
  assert.ok(rows.some((r) => r.pid === Number(res.body.trim())));
  const saved = JSON.parse(fs.readFileSync(path.join(home.home, 'dump.json'), 'utf8'));
  assert.equal(saved.apps.length, 1);
  assert.equal(saved.apps[0].definition.instances, 2);
  assert.deepEqual(saved.apps[0].definition.listen, [`127.0.0.1:${port}`]);
});

test('the JS API: monitor.listen(server), --wait-ready with monitor.ready(), an own shutdown handler', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 2, script: path.join(h.FIXTURES, 'cluster-api.js'), flags: ['--wait-ready'] });
  const before = await waitInstances(home, 2);
  const log = () => fs.readFileSync(path.join(home.home, 'logs', 'web-out.log'), 'utf8');
  // `start` returned only once both had called ready(), which they do after listening.
  for (const row of before) assert.match(log(), new RegExp(`ready pid=${row.pid}\\b`));
  const described = JSON.parse((await home.ok(['describe', 'web', '--json'])).stdout);
  assert.ok(described.every((app) => app.events.some((e) => e.kind === 'ready')));

  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 10, { what: 'the request loops to get going' });
  await home.ok(['reload', 'web'], { timeout: 60_000 });
  const result = await load.stop();
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  for (const row of before) {
    assert.match(log(), new RegExp(`shutdown event pid=${row.pid}\\b`), 'the app\'s own shutdown handler ran');
    assert.ok(h.isGone(row.pid));
  }
});

test('a hung instance is killed and replaced while its sibling serves', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await startWeb(home, { instances: 2 });
  const pids = (await waitInstances(home, 2)).map((r) => r.pid);

  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  const hung = Number((await h.get(port, '/hang')).body.trim().split(' ').pop());
  assert.ok(pids.includes(hung), `hung pid ${hung} is one of ${pids}`);
  const okAtHang = load.result.ok;
  const rows = await waitInstances(home, 2, { notPids: [hung], what: 'a replacement for the hung instance' });
  const result = await load.stop();

  t.diagnostic(`${result.ok} requests, ${result.failed} failed (${result.errors.join('; ')})`);
  assert.ok(result.ok > okAtHang + 20, 'the sibling kept serving during the hang');
  // Only connections the hung process had already accepted can fail: at most one per loop.
  assert.ok(result.failed <= LOOPS, `${result.failed} failed: ${result.errors.join('; ')}`);
  const replaced = rows.find((r) => !pids.includes(r.pid));
  assert.equal(replaced.hangs, 1);
});

test('foreground mode runs a cluster too: -i 2 --listen, reload over the control socket, SIGTERM drains and exits 0', async (t) => {
  const port = await h.freePort();
  const sup = h.startSupervisor(t, {
    scripts: ['cluster.js'],
    flags: ['-i', '2', '--listen', `127.0.0.1:${port}`],
    appArgs: [String(port)],
  });
  const rows = await sup.waitForStatus((apps) => {
    const web = apps.filter((a) => a.name === 'cluster');
    return web.length === 2 && web.every((a) => a.state === 'running' && a.pid) ? web : false;
  }, { what: 'two cluster instances running' });
  assert.deepEqual(rows.map((r) => r.instance), [0, 1]);
  assert.deepEqual(rows.map((r) => r.id), [0, 1]);

  const load = requestLoops(port);
  await sup.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  const reload = await h.run(['reload', 'cluster', '--home', sup.home], { timeout: 60_000 });
  assert.equal(reload.code, 0, reload.stderr);
  const afterReload = load.result.ok;
  await sup.waitFor(() => load.result.ok >= afterReload + 20, { what: 'requests after the reload' });
  const result = await load.stop();
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  const after = await sup.waitForStatus((apps) => {
    const web = apps.filter((a) => a.name === 'cluster');
    return web.length === 2 && web.every((a) => a.state === 'running' && !rows.some((r) => r.pid === a.pid)) ? web : false;
  }, { what: 'two new instances after the reload' });

  sup.signal('SIGTERM');
  const exit = await sup.waitExit();
  assert.equal(exit.code, 0);
  await h.waitGone(after.map((r) => r.pid));
});

test('programs an instance runs do not inherit the shared listening socket, and end with it', async (t) => {
  const home = new h.DaemonHome(t);
  const pidFile = path.join(home.home, 'child.pid');
  const port = await h.freePort();
  await home.ok([
    'start', path.join(h.FIXTURES, 'cluster-child.js'), '--name', 'web', '-i', '1', '--listen', `127.0.0.1:${port}`,
    '--', String(port), pidFile,
  ]);
  const [row] = await waitInstances(home, 1);
  const childPid = Number(await home.waitFor(() => {
    try {
      return fs.readFileSync(pidFile, 'utf8').trim() || false;
    } catch {
      return false;
    }
  }, { what: 'the instance to start its child' }));

  // The socket the supervisor handed over, as the instance holds it: NODEGUARD_LISTEN=port=fd.
  const listen = /(?:^|\0)NODEGUARD_LISTEN=(\d+)=(\d+)/.exec(fs.readFileSync(`/proc/${row.pid}/environ`, 'latin1'));
  assert.ok(listen, 'the instance was started without NODEGUARD_LISTEN');
  const socket = fs.readlinkSync(`/proc/${row.pid}/fd/${listen[2]}`);
  assert.match(socket, /^socket:\[\d+\]$/);
  const childFds = fs.readdirSync(`/proc/${childPid}/fd`).map((fd) => {
    try {
      return fs.readlinkSync(`/proc/${childPid}/fd/${fd}`);
    } catch {
      return '';
    }
  });
  assert.ok(!childFds.includes(socket), `the child ${childPid} holds the shared socket ${socket}: ${childFds}`);

  // The instance drains and exits on the shutdown message alone; its child, still in its process
  // group, must end with it, also when the whole daemon is going away.
  await home.ok(['kill']);
  await h.waitGone([childPid], { what: `the instance's child ${childPid} to end` });
});
