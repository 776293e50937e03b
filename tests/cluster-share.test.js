'use strict';
// Cluster mode without --listen, as PM2 users write it: `-i 2` and an app that calls
// `server.listen(PORT, '127.0.0.1')` unchanged. The supervisor binds the address the app asked
// for (that host only) once, hands the socket to every instance over the worker socket, keeps it
// open across a reload (which is then rolling and loses nothing), and an address it cannot bind
// is the app's ordinary listen error. ES module entries, PM2's increment_var and foreground mode
// share too. With --listen, an app that listens elsewhere is told so.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const h = require('./helpers');

const SHARE = path.join(h.FIXTURES, 'share.js');

/** The LISTEN rows of /proc/net/tcp and tcp6 for `port`: [{ file, local, inode }]. */
function listening(port) {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const rows = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address is fields[1] (ADDR:PORT in hex); state 0A is LISTEN; inode is fields[9].
      if (fields.length > 9 && fields[3] === '0A' && fields[1].endsWith(`:${hexPort}`)) {
        rows.push({ file: path.basename(file), local: fields[1], inode: fields[9] });
      }
    }
  }
  return rows;
}

/** Resolves true if a TCP connection to host:port is accepted, false if refused. */
function connects(host, port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The `name` rows once `count` instances run, none of them in `notPids`. */
function waitInstances(home, name, count, notPids = []) {
  return home.waitForStatus(
    (apps) => {
      const rows = apps.filter((a) => a.name === name);
      const ok = rows.length === count &&
        rows.every((r) => r.state === 'running' && Number.isInteger(r.pid) && !notPids.includes(r.pid));
      return ok ? rows : false;
    },
    { what: `${count} ${name} instances running` },
  );
}

/** Waits until every pid in `pids` has answered a GET on 127.0.0.1:port; returns the pids seen. */
async function everyInstanceAnswers(home, port, pids) {
  const seen = new Set();
  await home.waitFor(async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => h.get(port, '/')));
    for (const answer of answers) {
      assert.equal(answer.status, 200);
      seen.add(Number(answer.body.trim()));
    }
    return pids.every((pid) => seen.has(pid));
  }, { what: `every instance (${pids}) to answer on ${port}; seen: ${[...seen]}` });
  return seen;
}

const { requestLoops } = h;

test('-i 2 without --listen shares the port the app chose, on the host it chose, and reloads losing nothing', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  await home.ok(['start', SHARE, '--name', 'web', '-i', '2', '--kill-timeout', '5s', '--', String(port), '127.0.0.1']);
  const before = (await waitInstances(home, 'web', 2)).map((r) => r.pid);
  await everyInstanceAnswers(home, port, before);

  // One socket, bound by the supervisor on 127.0.0.1 only (not on every interface).
  const rows = listening(port);
  assert.equal(rows.length, 1, `one listening socket on port ${port}: ${JSON.stringify(rows)}`);
  assert.equal(rows[0].file, 'tcp');
  assert.equal(rows[0].local, `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`);
  assert.equal(await connects('127.0.0.2', port), false, '127.0.0.2 (another local address) must be refused');
  assert.equal(await connects('127.0.0.1', port), true);
  const inode = rows[0].inode;

  // Both instances print the address they listen on: the one the app asked for.
  const out = path.join(home.home, 'logs', 'web-out.log');
  await home.waitFor(() => {
    const text = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
    return before.every((pid) => text.includes(`listening 127.0.0.1:${port} pid=${pid}`));
  }, { what: 'both instances to report listening on 127.0.0.1' });

  // A reload under load: rolling, the socket stays open throughout, nothing fails.
  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  const reload = await home.ok(['reload', 'web'], { timeout: 60_000 });
  const afterReload = load.result.ok;
  await home.waitFor(() => load.result.ok >= afterReload + 20, { what: 'requests after the reload' });
  const result = await load.stop();
  t.diagnostic(`${result.ok} requests during the reload, ${result.failed} failed`);
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  assert.match(reload.stdout, /web: reloaded 2 instance\(s\), each replacement ready before its old process was drained/);

  const after = (await waitInstances(home, 'web', 2, before)).map((r) => r.pid);
  for (const pid of before) assert.ok(h.isGone(pid), `old pid ${pid} still runs after the reload returned`);
  await everyInstanceAnswers(home, port, after);
  const still = listening(port);
  assert.deepEqual(still.map((r) => r.inode), [inode], 'the same socket, never closed during the reload');

  // A crashed instance's replacement gets the same socket while its sibling serves.
  process.kill(after[0], 'SIGKILL');
  const replaced = (await waitInstances(home, 'web', 2, [after[0]])).map((r) => r.pid);
  await everyInstanceAnswers(home, port, replaced);
  assert.deepEqual(listening(port).map((r) => r.inode), [inode], 'still the same socket after a crash');

  // Stopped, the socket closes (nothing listens on the port any more).
  await home.ok(['stop', 'web']);
  await home.waitFor(() => listening(port).length === 0, { what: `port ${port} to close after stop` });
});

test('an address the supervisor cannot bind is the app\'s own listen error, logged in one line', async (t) => {
  const home = new h.DaemonHome(t);
  // Someone else holds the port on 127.0.0.1.
  const other = net.createServer();
  await new Promise((resolve) => other.listen(0, '127.0.0.1', resolve));
  t.after(() => other.close());
  const { port } = other.address();
  const r = await home.cli(['start', SHARE, '--name', 'taken', '-i', '2', '--', String(port), '127.0.0.1', 'options']);
  const out = path.join(home.home, 'logs', 'taken-out.log');
  const line = await home.waitFor(() => {
    const text = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
    return /^.*listen error EADDRINUSE.*$/m.exec(text)?.[0];
  }, { what: `an EADDRINUSE listen error in the app's log (start: ${r.stdout} ${r.stderr})` });
  assert.match(line, new RegExp(`127\\.0\\.0\\.1:${port}`));
  await home.waitFor(() => /cannot share a listening socket with the app: cannot listen on 127\.0\.0\.1:\d+: .*code=EADDRINUSE/.test(home.daemonLog()), {
    what: 'the supervisor\'s line about it',
  });
  assert.equal(listening(port).length, 1, 'nothing but the other server listens on the port');
});

test('with --listen, an app that listens on another port is told so: "web:0 listened on X, not Y"', async (t) => {
  const home = new h.DaemonHome(t);
  const owned = await h.freePort();
  const elsewhere = await h.freePort();
  // Not waiting for start: the instance never listens on the shared port, so it is not ready.
  const start = home.cli(['start', SHARE, '--name', 'web', '-i', '1', '--listen', `127.0.0.1:${owned}`, '--', String(elsewhere), '127.0.0.1']);
  const expected = `web:0 listened on ${elsewhere}, not ${owned}`;
  const event = await home.waitFor(async () => {
    const described = await home.cli(['describe', 'web', '--json']);
    if (described.code !== 0) return false;
    const [app] = JSON.parse(described.stdout);
    return app.events.find((e) => e.kind === 'listened_elsewhere');
  }, { what: 'a listened_elsewhere event in describe' });
  assert.ok(event.message.startsWith(`pid ${event.message.match(/^pid (\d+): /)?.[1]}: ${expected}`), event.message);
  const err = path.join(home.home, 'logs', 'web-err.log');
  await home.waitFor(() => fs.existsSync(err) && fs.readFileSync(err, 'utf8').includes(`[nodeguard] ${expected}`), {
    what: 'the note in the app\'s own log',
  });
  assert.ok(home.daemonLog().includes(expected));
  await home.ok(['delete', 'web']);
  await start;
});

test('an ES module entry shares too: its top-level listen() runs before the monitor connects, and waits for it', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  await home.ok(['start', path.join(h.FIXTURES, 'share.mjs'), '--name', 'esm', '-i', '2', '--', String(port), '127.0.0.1']);
  const pids = (await waitInstances(home, 'esm', 2)).map((r) => r.pid);
  await everyInstanceAnswers(home, port, pids);
  assert.equal(listening(port).length, 1);
  const rows = await home.status();
  assert.ok(rows.every((r) => r.restarts === 0), JSON.stringify(rows));
});

/** A free port whose next port is free too (for increment_var). */
async function twoFreePorts() {
  for (;;) {
    const port = await h.freePort();
    if (port >= 65535) continue;
    const probe = net.createServer();
    const free = await new Promise((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(port + 1, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

test('PM2\'s increment_var: each instance shares a port of its own, and a reload waits for each on its own port', async (t) => {
  const home = new h.DaemonHome(t);
  const base = await twoFreePorts();
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'nodeguard-share-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, 'ecosystem.config.js');
  const script = path.join(h.FIXTURES, 'pm2', 'apps', 'server.js');
  fs.writeFileSync(config, `module.exports = { apps: [{ name: 'inc', script: ${JSON.stringify(script)}, instances: 2, increment_var: 'PORT', env: { PORT: ${base} } }] };\n`);
  await home.ok(['start', config], { cwd: dir });
  const before = (await waitInstances(home, 'inc', 2)).sort((a, b) => a.instance - b.instance).map((r) => r.pid);
  const pidOn = async (port) => JSON.parse((await home.waitFor(async () => {
    try {
      return await h.get(port, '/');
    } catch {
      return false;
    }
  }, { what: `an answer on ${port}` })).body).pid;
  assert.deepEqual([await pidOn(base), await pidOn(base + 1)], before);

  const reload = await home.ok(['reload', 'inc'], { timeout: 60_000 });
  assert.match(reload.stdout, /inc: reloaded 2 instance\(s\)/);
  const after = (await waitInstances(home, 'inc', 2, before)).sort((a, b) => a.instance - b.instance);
  assert.deepEqual([await pidOn(base), await pidOn(base + 1)], after.map((r) => r.pid));
  assert.ok(after.every((r) => r.restarts === 0), JSON.stringify(after));
});

test('foreground mode too: -i 2 -m app.js without --listen shares the app\'s port; SIGTERM closes it and exits 0', async (t) => {
  const port = await h.freePort();
  const sup = h.startSupervisor(t, { scripts: ['share.js'], flags: ['-i', '2'], appArgs: [String(port), '127.0.0.1'] });
  const rows = await sup.waitForStatus((apps) => {
    const mine = apps.filter((a) => a.name === 'share');
    return mine.length === 2 && mine.every((a) => a.state === 'running' && a.pid) ? mine : false;
  }, { what: 'two share instances running' });
  const pids = rows.map((r) => r.pid);
  const seen = new Set();
  await sup.waitFor(async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => h.get(port, '/')));
    for (const answer of answers) seen.add(Number(answer.body.trim()));
    return pids.every((pid) => seen.has(pid));
  }, { what: `both instances (${pids}) to answer; seen: ${[...seen]}` });
  assert.equal(listening(port).length, 1);
  sup.signal('SIGTERM');
  const exit = await sup.waitExit();
  assert.equal(exit.code, 0);
  await h.waitGone(pids);
  assert.equal(listening(port).length, 0, 'the shared socket closed with the supervisor');
});

test('a Fastify app from npm, fastify.listen({ port, host: \'localhost\' }) unchanged: -i 2 serves from both, loopback only', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  await home.ok(['start', path.join(h.FIXTURES, 'share-fastify.js'), '--name', 'fy', '-i', '2', '--', String(port)]);
  const pids = (await waitInstances(home, 'fy', 2)).map((r) => r.pid);
  await everyInstanceAnswers(home, port, pids);
  // Fastify listens on each address `localhost` has (127.0.0.1, and ::1 where there is one):
  // one shared socket each, all of them loopback.
  const rows = listening(port);
  assert.ok(rows.length >= 1 && rows.length <= 2, JSON.stringify(rows));
  const loopback = new Set([`0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`, `00000000000000000000000001000000:${port.toString(16).toUpperCase().padStart(4, '0')}`]);
  for (const row of rows) assert.ok(loopback.has(row.local), `not loopback: ${JSON.stringify(row)}`);
  assert.equal(await connects('127.0.0.2', port), false);
  assert.ok((await home.status()).every((r) => r.restarts === 0));
});

test('cluster mode with one instance (-i 1, as PM2 means it): the port is shared, a reload loses nothing, and scale adds instances on the same socket', async (t) => {
  const home = new h.DaemonHome(t);
  const port = await h.freePort();
  await home.ok(['start', SHARE, '--name', 'solo', '-i', '1', '--kill-timeout', '5s', '--', String(port), '127.0.0.1']);
  const [first] = (await waitInstances(home, 'solo', 1)).map((r) => r.pid);
  await everyInstanceAnswers(home, port, [first]);
  const rows = listening(port);
  assert.equal(rows.length, 1, `one listening socket on port ${port}: ${JSON.stringify(rows)}`);
  const inode = rows[0].inode;

  // One instance, and still a rolling reload: the replacement listens before the old one drains.
  const load = requestLoops(port);
  await home.waitFor(() => load.result.ok >= 20, { what: 'the request loops to get going' });
  const reload = await home.ok(['reload', 'solo'], { timeout: 60_000 });
  const afterReload = load.result.ok;
  await home.waitFor(() => load.result.ok >= afterReload + 20, { what: 'requests after the reload' });
  assert.match(reload.stdout, /solo: reloaded 1 instance\(s\), each replacement ready before its old process was drained/);

  // Scale to 3 under the same load: the new instances get the same socket, none fails to bind.
  await home.ok(['scale', 'solo', '3'], { timeout: 60_000 });
  const three = (await waitInstances(home, 'solo', 3)).map((r) => r.pid);
  await everyInstanceAnswers(home, port, three);
  const result = await load.stop();
  t.diagnostic(`${result.ok} requests during the reload and the scale, ${result.failed} failed`);
  assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 5).join('; ')}`);
  assert.deepEqual(listening(port).map((r) => r.inode), [inode], 'the same socket throughout');
  const log = fs.readFileSync(path.join(home.home, 'logs', 'solo-err.log'), 'utf8');
  assert.doesNotMatch(log, /EADDRINUSE/, 'no instance hit EADDRINUSE');
});
