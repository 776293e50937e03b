'use strict';
// Tests of the nodeguard-monitor package (index.js, preload.js and the native addon) in real node
// child processes, against a fake supervisor: a `net` server on a Unix socket in a private temp
// dir speaking the worker protocol (4-byte big-endian length + JSON).
//
// Build first: `node scripts/build.js`. Every wait is on an event, under a generous deadline; the
// only fixed windows are the ones that check that something does NOT happen.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const { once } = require('node:events');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { platformTriple } = require('../platform.js');

const ROOT = path.resolve(__dirname, '..');
const ADDON = path.join(ROOT, `nodeguard-monitor.${platformTriple()}.node`);
const PROTOCOL_VERSION = 1;
/** Exit code of a monitored process whose supervisor connection closed (EXIT_SUPERVISOR_GONE). */
const EXIT_SUPERVISOR_GONE = 69;
const DEADLINE_MS = 10_000;
/** How long to watch for something that must not happen. */
const QUIET_WINDOW_MS = 300;

// ---------------------------------------------------------------------------------------------
// Helpers

function withDeadline(promise, what, ms = DEADLINE_MS) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

function encodeFrame(message) {
  const payload = Buffer.from(JSON.stringify(message));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/** One monitor connection, seen from the supervisor's side. */
class Peer {
  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.queue = [];
    this.waiters = [];
    this.closed = once(socket, 'close');
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      for (const waiter of this.waiters.splice(0)) waiter.reject(new Error('connection closed'));
    });
  }

  onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 4) {
      const length = this.buffer.readUInt32BE(0);
      if (this.buffer.length < 4 + length) break;
      const message = JSON.parse(this.buffer.subarray(4, 4 + length).toString('utf8'));
      this.buffer = this.buffer.subarray(4 + length);
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(message);
      else this.queue.push(message);
    }
  }

  /** The next message from the monitor. */
  next(what = 'a message from the monitor', ms = DEADLINE_MS) {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    if (this.socket.destroyed) return Promise.reject(new Error('connection closed'));
    const promise = new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
    return withDeadline(promise, what, ms);
  }

  /** Messages received and not yet taken with next(). */
  pending() {
    return this.queue.length;
  }

  send(...messages) {
    // One write for all of them: the monitor reads a burst in one go.
    this.socket.write(Buffer.concat(messages.map(encodeFrame)));
  }

  async ping(seq) {
    this.send({ type: 'ping', seq });
    const pong = await this.next(`the pong for ping ${seq}`);
    assert.equal(pong.type, 'pong');
    assert.equal(pong.seq, seq);
    return pong;
  }
}

/**
 * A supervisor's worker socket. `answer(hello)` returns the reply to a hello (default: welcome),
 * or null to stay silent.
 */
async function fakeSupervisor(t, answer = () => ({ type: 'welcome', version: PROTOCOL_VERSION })) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngm-test-'));
  fs.chmodSync(dir, 0o700);
  const socketPath = path.join(dir, 'worker.sock');
  const peers = [];
  const arrivals = [];
  const server = net.createServer(async (socket) => {
    const peer = new Peer(socket);
    peers.push(peer);
    try {
      peer.hello = await peer.next('the hello');
      const reply = answer(peer.hello);
      if (reply) peer.send(reply);
      if (reply && reply.type === 'refused') socket.end();
    } catch {
      // The monitor went away during the handshake; the test sees it through its own waits.
    }
    const waiter = arrivals.shift();
    if (waiter) waiter(peer);
    else peer.ready = true;
  });
  server.listen(socketPath);
  await once(server, 'listening');
  t.after(() => {
    for (const peer of peers) peer.socket.destroy();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    socketPath,
    peers,
    /** The next connection whose hello was answered. */
    accepted(what = 'the monitor to connect') {
      const early = peers.find((peer) => peer.ready && !peer.taken);
      if (early) {
        early.taken = true;
        return Promise.resolve(early);
      }
      return withDeadline(
        new Promise((resolve) =>
          arrivals.push((peer) => {
            peer.taken = true;
            resolve(peer);
          }),
        ),
        what,
      );
    },
    env(token = 'the-token') {
      return { NODEGUARD_SOCKET: socketPath, NODEGUARD_TOKEN: token };
    },
  };
}

/**
 * Runs `node <args>` (`node`: another node binary) with a clean NODEGUARD_* environment plus
 * `env`; collects its output.
 */
function runNode(t, args, env = {}, node = process.execPath) {
  const childEnv = { ...process.env };
  for (const name of Object.keys(childEnv)) {
    if (name.startsWith('NODEGUARD_')) delete childEnv[name];
  }
  const child = spawn(node, args, {
    cwd: ROOT,
    env: { ...childEnv, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const run = { child, stdout: '', stderr: '', lines: [], lineWaiters: [] };
  child.stdout.setEncoding('utf8').on('data', (data) => (run.stdout += data));
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (data) => {
    run.stderr += data;
    partial += data;
    let newline;
    while ((newline = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, newline);
      partial = partial.slice(newline + 1);
      run.lines.push(line);
      for (const waiter of run.lineWaiters.slice()) waiter(line);
    }
  });
  run.exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  /** Resolves with the first stderr line (past or future) that `predicate` accepts. */
  run.line = (predicate, what, ms = DEADLINE_MS) => {
    const seen = run.lines.find(predicate);
    if (seen !== undefined) return Promise.resolve(seen);
    return withDeadline(
      new Promise((resolve) => {
        const waiter = (line) => {
          if (predicate(line)) {
            run.lineWaiters.splice(run.lineWaiters.indexOf(waiter), 1);
            resolve(line);
          }
        };
        run.lineWaiters.push(waiter);
      }),
      `${what} (stderr so far: ${JSON.stringify(run.stderr)})`,
      ms,
    );
  };
  /** The first `report:` JSON line the child wrote to stderr with `key` in it. */
  run.report = async (key, ms = DEADLINE_MS) => {
    const line = await run.line(
      (l) => l.startsWith('report:') && key in JSON.parse(l.slice(7)),
      `report "${key}"`,
      ms,
    );
    return JSON.parse(line.slice(7));
  };
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return run;
}

/** Child-side code: write `report:<json>` to stderr, synchronously (works with a blocked loop). */
const REPORT = `const report = (o) => require('fs').writeSync(2, 'report:' + JSON.stringify(o) + '\\n');`;
const MONITOR = JSON.stringify(ROOT);
const PRELOAD = path.join(ROOT, 'preload.js');

// ---------------------------------------------------------------------------------------------
// Tests

test('the native addon is built for this platform', () => {
  assert.ok(
    fs.existsSync(ADDON),
    `missing ${ADDON}: run "node scripts/build.js" before these tests`,
  );
  const addon = require(ADDON);
  assert.equal(typeof addon.connect, 'function');
  // index.js reads these names; they must be the wire contract's.
  assert.deepEqual(addon.envNames(), [
    'NODEGUARD_SOCKET',
    'NODEGUARD_TOKEN',
    'NODEGUARD_LISTEN',
    'NODEGUARD_WAIT_READY',
    'NODEGUARD_SHARE',
  ]);
  const index = fs.readFileSync(path.join(ROOT, 'index.js'), 'utf8');
  for (const name of addon.envNames()) assert.ok(index.includes(`'${name}'`), name);
});

test('outside nodeguard start() is a silent no-op that returns false', async (t) => {
  const run = runNode(t, [
    '-e',
    `${REPORT}
     const monitor = require(${MONITOR});
     report({ first: monitor.start(), second: monitor.start(), supervised: monitor.isSupervised() });`,
  ]);
  const { first, second, supervised } = await run.report('first');
  assert.deepEqual(
    { first, second, supervised },
    { first: false, second: false, supervised: false },
  );
  assert.equal((await run.exited).code, 0);
  assert.equal(run.stdout, '', 'nothing may be written to stdout');

  const preloaded = runNode(t, ['--require', PRELOAD, '-e', '']);
  assert.equal((await preloaded.exited).code, 0);
  assert.equal(preloaded.stdout + preloaded.stderr, '');
});

test('hello carries the token and pid; start() twice, from two copies, makes one connection', async (t) => {
  const supervisor = await fakeSupervisor(t);
  // A second copy of the package, as if the app had its own in node_modules.
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'ngm-copy-'));
  t.after(() => fs.rmSync(copy, { recursive: true, force: true }));
  for (const file of ['index.js', 'platform.js', 'preload.js', path.basename(ADDON)]) {
    fs.copyFileSync(path.join(ROOT, file), path.join(copy, file));
  }
  const run = runNode(
    t,
    [
      '--require',
      PRELOAD,
      '-e',
      `${REPORT}
       const own = require(${JSON.stringify(copy)});
       const results = [own.start(), own.start(), require(${MONITOR}).start()];
       report({ results, supervised: own.isSupervised(),
                env: [process.env.NODEGUARD_SOCKET, process.env.NODEGUARD_TOKEN] });
       setInterval(() => {}, 1000);`,
    ],
    supervisor.env('token-123'),
  );
  const peer = await supervisor.accepted();
  assert.deepEqual(peer.hello, {
    type: 'hello',
    version: PROTOCOL_VERSION,
    token: 'token-123',
    pid: run.child.pid,
    // Node exports the V8 functions the monitor's stack capture needs.
    stack_capture: true,
  });
  const report = await run.report('results');
  assert.deepEqual(report.results, [true, true, true]);
  assert.equal(report.supervised, true);
  assert.deepEqual(
    report.env,
    [null, null],
    'NODEGUARD_SOCKET/TOKEN must be removed from process.env',
  );
  // A second connection would have been made synchronously before the report; one round trip
  // later its arrival would certainly have been seen by this server.
  await peer.ping(1);
  assert.equal(supervisor.peers.length, 1);
  assert.equal(run.stdout, '');
});

test('pings get pongs from the JS thread with memory and loop delay', async (t) => {
  const supervisor = await fakeSupervisor(t);
  const run = runNode(
    t,
    ['--require', PRELOAD, '-e', 'setInterval(() => {}, 1000)'],
    supervisor.env(),
  );
  const peer = await supervisor.accepted();
  for (let seq = 1; seq <= 3; seq++) {
    const pong = await peer.ping(seq);
    assert.ok(pong.memory.rss > 0, 'rss');
    assert.ok(pong.memory.heap_used > 0, 'heap_used');
    assert.ok(pong.memory.heap_total >= pong.memory.heap_used, 'heap_total');
    assert.ok(pong.memory.external >= 0 && pong.memory.array_buffers >= 0);
    for (const field of ['mean_ms', 'p50_ms', 'p99_ms', 'max_ms']) {
      assert.equal(typeof pong.loop_delay[field], 'number', field);
      assert.ok(pong.loop_delay[field] >= 0, field);
    }
    assert.ok(pong.loop_delay.max_ms >= pong.loop_delay.p50_ms);
    assert.ok(pong.queued_ms >= 0);
  }
  assert.equal(run.stdout, '');
});

test('if the ping callback throws, no pong is sent, the app goes on, and the next ping is answered', async (t) => {
  const supervisor = await fakeSupervisor(t);
  const run = runNode(
    t,
    [
      '--require',
      PRELOAD,
      '-e',
      `${REPORT}
       const real = process.memoryUsage;
       process.stdin.setEncoding('utf8').on('data', (command) => {
         process.memoryUsage = command.startsWith('break') ? () => { throw new Error('boom'); } : real;
         report({ done: command.trim() });
       });`,
    ],
    supervisor.env(),
  );
  const peer = await supervisor.accepted();
  await peer.ping(1);
  run.child.stdin.write('break\n');
  await run.report('done');
  peer.send({ type: 'ping', seq: 2 });
  await new Promise((resolve) => setTimeout(resolve, QUIET_WINDOW_MS));
  assert.equal(peer.pending(), 0, 'no pong when the callback threw');
  run.child.stdin.write('mend\n');
  await run.line((line) => line.includes('"mend"'), 'the child to restore memoryUsage');
  await peer.ping(3);
  assert.equal(run.child.exitCode, null, 'the app is still running');
  assert.doesNotMatch(run.stderr, /boom|Error/);
  run.child.stdin.end();
});

test('a blocked event loop answers no ping; after it unblocks, one pong for the whole batch', async (t) => {
  const supervisor = await fakeSupervisor(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngm-flag-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const flag = path.join(dir, 'unblock');
  const run = runNode(
    t,
    [
      '--require',
      PRELOAD,
      '-e',
      `${REPORT}
       const fs = require('fs');
       process.stdin.on('data', () => {
         report({ blocked: true });
         while (!fs.existsSync(${JSON.stringify(flag)})) {}
         report({ unblocked: true });
       });`,
    ],
    supervisor.env(),
  );
  const peer = await supervisor.accepted();
  await peer.ping(1);

  run.child.stdin.write('block\n');
  await run.report('blocked');
  peer.send(...[2, 3, 4, 5, 6].map((seq) => ({ type: 'ping', seq })));
  await new Promise((resolve) => setTimeout(resolve, QUIET_WINDOW_MS));
  assert.equal(peer.pending(), 0, 'no pong may come while the JS thread is blocked');

  fs.writeFileSync(flag, '');
  const pong = await peer.next('the pong after unblocking');
  assert.equal(pong.type, 'pong');
  assert.equal(pong.seq, 2, 'the first ping of the batch is the one answered');
  // Both waited through the quiet window (give or take timer granularity and the sampling step).
  assert.ok(pong.queued_ms >= QUIET_WINDOW_MS - 50, `queued_ms ${pong.queued_ms}`);
  assert.ok(
    pong.loop_delay.max_ms >= QUIET_WINDOW_MS - 50,
    `loop_delay.max_ms ${pong.loop_delay.max_ms}`,
  );
  // Pongs are written in order: anything else left from the batch would arrive before this one.
  await peer.ping(7);
  run.child.stdin.end();
});

test('when the supervisor closes the connection, a process stuck in while(true) exits at once', async (t) => {
  const supervisor = await fakeSupervisor(t);
  const run = runNode(
    t,
    [
      '--require',
      PRELOAD,
      '-e',
      `${REPORT}
       process.stdin.on('data', () => { report({ spinning: true }); while (true) {} });`,
    ],
    supervisor.env(),
  );
  const peer = await supervisor.accepted();
  await peer.ping(1);
  run.child.stdin.write('spin\n');
  await run.report('spinning');

  const closedAt = performance.now();
  peer.socket.destroy();
  const exit = await withDeadline(run.exited, 'the process to exit', 1000);
  t.diagnostic(`exited ${(exit.at - closedAt).toFixed(1)} ms after the supervisor closed`);
  assert.deepEqual([exit.code, exit.signal], [EXIT_SUPERVISOR_GONE, null]);
});

test('a process with nothing left to do exits on its own while connected', async (t) => {
  const supervisor = await fakeSupervisor(t);
  // stdin keeps the child busy until the test has exchanged pings; then nothing is left but the
  // monitor, which must not keep the process alive.
  const run = runNode(
    t,
    [
      '-e',
      `require(${MONITOR}).start(); process.stdin.once('data', () => process.stdin.destroy());`,
    ],
    supervisor.env(),
  );
  const peer = await supervisor.accepted();
  await peer.ping(1);
  await peer.ping(2);
  run.child.stdin.write('done\n');
  const exit = await run.exited;
  assert.deepEqual([exit.code, exit.signal], [0, null]);
  await withDeadline(peer.closed, 'the connection to close');

  const preloaded = runNode(t, ['--require', PRELOAD, '-e', ''], supervisor.env());
  await supervisor.accepted();
  assert.deepEqual(
    [(await preloaded.exited).code, preloaded.stdout, preloaded.stderr],
    [0, '', ''],
  );
});

test('refused: start() throws the reason; preload reports one line and the app runs', async (t) => {
  const supervisor = await fakeSupervisor(t, () => ({ type: 'refused', reason: 'unknown token' }));
  const run = runNode(
    t,
    [
      '-e',
      `${REPORT}
       const monitor = require(${MONITOR});
       const outcomes = [];
       for (let i = 0; i < 2; i++) {
         try { outcomes.push(monitor.start()); } catch (e) { outcomes.push(e.message); }
       }
       report({ outcomes, supervised: monitor.isSupervised() });`,
    ],
    supervisor.env('wrong'),
  );
  const { outcomes, supervised } = await run.report('outcomes');
  assert.equal(
    outcomes[0],
    'nodeguard-monitor: the supervisor refused this process: unknown token',
  );
  assert.equal(outcomes[1], outcomes[0], 'a later start() throws the same error');
  assert.equal(supervised, false);
  assert.equal((await run.exited).code, 0);

  const preloaded = runNode(
    t,
    ['--require', PRELOAD, '-e', `console.log('app ran', process.env.NODEGUARD_TOKEN)`],
    supervisor.env('wrong'),
  );
  assert.equal((await preloaded.exited).code, 0);
  assert.equal(
    preloaded.stdout,
    'app ran undefined\n',
    'the token is removed even after a failure',
  );
  assert.equal(
    preloaded.stderr,
    'nodeguard-monitor: the supervisor refused this process: unknown token\n',
  );
});

test('preloaded: the app runs while the hello awaits its answer; a top-level loop is still caught', async (t) => {
  // The preload sends the hello and goes on: the monitor's thread reads the answer. Before, the
  // app's first line waited for the supervisor to be scheduled and answer.
  const supervisor = await fakeSupervisor(t, () => null);
  const run = runNode(
    t,
    ['--require', PRELOAD, '-e', `${REPORT} report({ running: true }); for (;;) {}`],
    supervisor.env(),
  );
  const peer = await supervisor.accepted();
  // (Under the 10 s handshake timeout: a preload that waited for the answer never gets here.)
  await run.report('running', DEADLINE_MS / 2);
  peer.send({ type: 'welcome', version: PROTOCOL_VERSION });
  // JS spins in the entry's top level: the native thread answers probes, and no pong comes.
  peer.send({ type: 'ping', seq: 1 }, { type: 'probe', seq: 2, show_query: false });
  const reply = await peer.next('the probe reply');
  assert.equal(reply.type, 'probe_reply');
  assert.equal(reply.seq, 2);
  assert.equal(reply.queued_seq, 1, 'the ping waits for the blocked JS thread');
  await new Promise((resolve) => setTimeout(resolve, QUIET_WINDOW_MS));
  assert.equal(peer.pending(), 0, 'no pong from a blocked loop');
  run.child.kill('SIGKILL');
});

test('preloaded: a start() of the app waits for the answer the preload did not wait for', async (t) => {
  for (const answer of ['welcome', 'refused']) {
    const supervisor = await fakeSupervisor(t, () => null);
    const run = runNode(
      t,
      [
        '--require',
        PRELOAD,
        '-e',
        `${REPORT}
         report({ running: true });
         process.stdin.setEncoding('utf8').once('data', () => {
           const monitor = require(${MONITOR});
           let outcome;
           try { outcome = monitor.start(); } catch (e) { outcome = e.message; }
           report({ outcome, supervised: monitor.isSupervised() });
           process.stdin.destroy();
         });
         ${answer === 'welcome' ? 'setInterval(() => {}, 60_000);' : ''}`,
      ],
      supervisor.env(),
    );
    const peer = await supervisor.accepted();
    await run.report('running', DEADLINE_MS / 2);
    // The app's start() is called before the answer comes: it waits for it.
    run.child.stdin.write('go\n');
    const { outcome, supervised } = await (async () => {
      const report = run.report('outcome');
      await new Promise((resolve) => setTimeout(resolve, QUIET_WINDOW_MS));
      assert.ok(!run.stderr.includes('"outcome"'), 'start() returned before the answer came');
      if (answer === 'welcome') {
        peer.send({ type: 'welcome', version: PROTOCOL_VERSION });
      } else {
        peer.send({ type: 'refused', reason: 'unknown token' });
        peer.socket.end();
      }
      return report;
    })();
    if (answer === 'welcome') {
      assert.deepEqual([outcome, supervised], [true, true]);
      await peer.ping(1);
      run.child.kill('SIGKILL');
    } else {
      const line = 'nodeguard-monitor: the supervisor refused this process: unknown token';
      assert.deepEqual([outcome, supervised], [line, false]);
      assert.equal((await run.exited).code, 0);
      assert.deepEqual(
        run.lines.filter((l) => !l.startsWith('report:')),
        [line],
        'the refusal in one line on stderr, once',
      );
    }
  }
});

test('a supervisor that never answers, a missing socket or token: start() throws, one line', async (t) => {
  const silent = await fakeSupervisor(t, () => null);
  const cases = [
    [silent.env(), /^nodeguard-monitor: the supervisor did not answer the hello within 10000 ms$/],
    [
      {
        NODEGUARD_SOCKET: path.join(os.tmpdir(), 'ngm-no-such-dir', 's.sock'),
        NODEGUARD_TOKEN: 'x',
      },
      /^nodeguard-monitor: cannot connect to the supervisor socket .*ngm-no-such-dir.*: /,
    ],
    [
      { NODEGUARD_SOCKET: silent.socketPath },
      /^nodeguard-monitor: NODEGUARD_SOCKET is set but NODEGUARD_TOKEN is not$/,
    ],
  ];
  await Promise.all(
    cases.map(async ([env, expected]) => {
      const run = runNode(
        t,
        [
          '-e',
          `${REPORT} try { require(${MONITOR}).start(); report({ error: null }); } catch (e) { report({ error: e.message }); }`,
        ],
        env,
      );
      // The silent supervisor case takes the monitor's whole 10 s handshake timeout.
      const { error } = await run.report('error', 3 * DEADLINE_MS);
      assert.match(error, expected);
      assert.equal((await run.exited).code, 0);
    }),
  );
});

test('in a worker thread start() returns false and does not connect', async (t) => {
  const supervisor = await fakeSupervisor(t);
  const workerCode = `
    const { parentPort } = require('worker_threads');
    const monitor = require(${MONITOR});
    parentPort.postMessage({ result: monitor.start(), supervised: monitor.isSupervised() });`;
  const run = runNode(t, [
    '-e',
    `${REPORT}
     const { Worker } = require('worker_threads');
     const worker = new Worker(${JSON.stringify(workerCode)}, {
       eval: true,
       env: ${JSON.stringify(supervisor.env())},
     });
     worker.on('message', (m) => report({ worker: m }));
     worker.on('error', (e) => report({ worker: { error: e.message } }));`,
  ]);
  const { worker } = await run.report('worker');
  assert.deepEqual(worker, { result: false, supervised: false });
  assert.equal((await run.exited).code, 0);
  // A connection from the worker would have been made before its report.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(supervisor.peers.length, 0);
});

test('pong round trip over 1000 pings', async (t) => {
  const supervisor = await fakeSupervisor(t);
  runNode(t, ['--require', PRELOAD, '-e', 'setInterval(() => {}, 1000)'], supervisor.env());
  const peer = await supervisor.accepted();
  const samples = [];
  for (let seq = 1; seq <= 1000; seq++) {
    const sent = performance.now();
    await peer.ping(seq);
    samples.push(performance.now() - sent);
  }
  samples.sort((a, b) => a - b);
  const at = (q) => samples[Math.floor(q * (samples.length - 1))].toFixed(3);
  t.diagnostic(`pong round trip: median ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`);
});

// ---------------------------------------------------------------------------------------------
// Idle cost and loop delay without a timer (issue 17)

/** node_modules/node<major>/bin/node (devDependencies node18 … node26), which must be installed. */
function nodeBinary(major) {
  const binary = path.join(ROOT, 'node_modules', `node${major}`, 'bin', 'node');
  assert.ok(fs.existsSync(binary), `${binary} is missing: run npm install`);
  return binary;
}

/** Context switches (voluntary + nonvoluntary) of every thread of `pid` so far. */
function contextSwitches(pid) {
  let total = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    let status;
    try {
      status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    for (const match of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s*(\d+)$/gm)) total += Number(match[1]);
  }
  return total;
}

test('an idle monitored HTTP server wakes about twice per heartbeat, not on a timer', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  const supervisor = await fakeSupervisor(t);
  const run = runNode(
    t,
    [
      '--require',
      PRELOAD,
      '-e',
      `${REPORT}
       require('http').createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1', () => report({ listening: true }));`,
    ],
    supervisor.env(),
  );
  const peer = await supervisor.accepted();
  await run.report('listening');
  // Heartbeats as the supervisor sends them by default: one ping a second. The first pings settle
  // the app's startup work (GC, compilation) before the window.
  let seq = 0;
  const beat = async () => peer.ping(++seq);
  for (let i = 0; i < 2; i++) {
    await beat();
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const WINDOW_S = 5;
  const before = contextSwitches(run.child.pid);
  for (let i = 0; i < WINDOW_S; i++) {
    await beat();
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const perSecond = (contextSwitches(run.child.pid) - before) / WINDOW_S;
  // Each heartbeat wakes the monitor's thread (the ping) and the JS thread (to answer it): 2/s,
  // plus preemptions on a busy machine. A 20 ms sampling timer made it over 50/s.
  assert.ok(perSecond <= 5, `${perSecond} context switches per second while idle`);
  run.child.stdin.end();
});

for (const major of [18, 20, 22, 24, 26]) {
  test(`Node ${major}: a 300 ms stall between two pings shows in their loop delay, an idle loop's is small`, async (t) => {
    const supervisor = await fakeSupervisor(t);
    const run = runNode(
      t,
      [
        '--require',
        PRELOAD,
        '-e',
        `${REPORT}
         process.stdin.setEncoding('utf8').on('data', () => {
           const end = Date.now() + 300;
           while (Date.now() < end) {}
           report({ stalled: true });
         });
         setInterval(() => {}, 60_000);`,
      ],
      supervisor.env(),
      nodeBinary(major),
    );
    const peer = await supervisor.accepted();
    await peer.ping(1);
    // An idle interval: nothing ran but the ping's own turn.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const idle = await peer.ping(2);
    assert.ok(idle.loop_delay.max_ms < 50, `idle loop delay ${JSON.stringify(idle.loop_delay)}`);
    // A stall that begins and ends between two pings: no ping waits through it, so only a
    // measure of the loop's own turns sees it.
    run.child.stdin.write('stall\n');
    await run.report('stalled');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const after = await peer.ping(3);
    assert.ok(after.queued_ms < 200, `the ping did not wait through the stall (${after.queued_ms} ms)`);
    assert.ok(after.loop_delay.max_ms >= 290, `max ${JSON.stringify(after.loop_delay)}`);
    assert.ok(after.loop_delay.max_ms < 2000, `max ${JSON.stringify(after.loop_delay)}`);
    assert.ok(after.loop_delay.p99_ms >= 250, `p99 ${JSON.stringify(after.loop_delay)}`);
    assert.ok(after.loop_delay.mean_ms > 0 && after.loop_delay.mean_ms <= after.loop_delay.max_ms);
    // And the figures start afresh after each pong.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const next = await peer.ping(4);
    assert.ok(next.loop_delay.max_ms < 50, `after the pong ${JSON.stringify(next.loop_delay)}`);
    run.child.stdin.end();
  });
}

// ---------------------------------------------------------------------------------------------
// The monitor's memory inside an app (issue 17)

/** The names the dynamic linker looked up in process `pid`, from its LD_DEBUG=symbols log. */
function lookedUp(logPrefix, pid) {
  const text = fs.readFileSync(`${logPrefix}.${pid}`, 'utf8');
  return new Set([...text.matchAll(/symbol=([^;\s]+);/g)].map((m) => m[1]));
}

for (const major of [18, 20, 22, 24, 26]) {
  test(`Node ${major}: V8's stack functions are looked up at the first capture, not at connect`, { skip: process.platform !== 'linux' && 'LD_DEBUG is glibc' }, async (t) => {
    // Every name looked up in node's symbol tables faults in pages of them: RSS in every app.
    const supervisor = await fakeSupervisor(t);
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngm-ld-'));
    t.after(() => fs.rmSync(logDir, { recursive: true, force: true }));
    const logPrefix = path.join(logDir, 'ld');
    const run = runNode(
      t,
      [
        '--require',
        PRELOAD,
        '-e',
        `${REPORT}
         process.stdin.setEncoding('utf8').on('data', () => {
           report({ spinning: true });
           for (;;) {}
         });
         setInterval(() => {}, 60_000);`,
      ],
      { ...supervisor.env(), LD_DEBUG: 'symbols', LD_DEBUG_OUTPUT: logPrefix },
      nodeBinary(major),
    );
    const peer = await supervisor.accepted();
    assert.equal(peer.hello.stack_capture, true, 'the monitor says it can capture stacks');
    await peer.ping(1);
    const atConnect = lookedUp(logPrefix, run.child.pid);
    assert.ok(atConnect.has('_ZN2v87Isolate10GetCurrentEv'), 'the isolate was taken at connect (and LD_DEBUG logs dlsym)');
    assert.ok(!atConnect.has('_ZNK2v810StackTrace13GetFrameCountEv'), 'no stack-reading function looked up while idle');
    run.child.stdin.write('spin\n');
    await run.report('spinning');
    // The report's line can reach us while its writeSync is still returning (a busy machine
    // preempts the app there): a capture then shows fs frames on top. Ask again until the
    // stack is the loop's; every capture must answer.
    const deadline = Date.now() + 10_000;
    let stack;
    for (let seq = 7; ; seq++) {
      peer.send({ type: 'stack', seq });
      stack = await peer.next('the stack');
      assert.equal(stack.type, 'stack');
      assert.equal(stack.seq, seq);
      if ((stack.frames.length > 0 && /\[eval\]/.test(stack.frames[0])) || Date.now() > deadline) break;
    }
    assert.ok(stack.frames.length > 0 && /\[eval\]/.test(stack.frames[0]), `frames ${JSON.stringify(stack.frames)}`);
    assert.ok(lookedUp(logPrefix, run.child.pid).has('_ZNK2v810StackTrace13GetFrameCountEv'), 'looked up at the capture');
  });
}

/** VmRSS of `pid` in kB, the median of 5 readings 100 ms apart. */
async function rssKb(pid) {
  const readings = [];
  for (let i = 0; i < 5; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 100));
    readings.push(Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]));
  }
  return readings.sort((a, b) => a - b)[2];
}

test('the monitor costs an idle HTTP server under 1.0 MB of RSS over bare node', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  // The budget is 1.5 MB (bench figure 2 measures it). About 0.6 MB here: the pages of
  // node's symbol tables and of the addon that loading and connecting mapped are given back after
  // the first pings (crates/monitor/src/trim.rs), and the addon's heartbeat code lies together
  // (crates/monitor/build.rs); without the first (NODEGUARD_MONITOR_TRIM=0) about 1.35 MB, which
  // this bound fails, with room for the machine's noise either side. Also
  // guards against the 2.6 MB of before (every V8 name looked up and every Node-API function bound
  // at connect, the addon built at opt-level 3, platform.js read at start).
  const server = `${REPORT}
     require('http').createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1', () => report({ listening: true }));`;
  const supervisor = await fakeSupervisor(t);
  const monitored = runNode(t, ['--require', PRELOAD, '-e', server], supervisor.env());
  const bare = runNode(t, ['-e', server]);
  const peer = await supervisor.accepted();
  await Promise.all([monitored.report('listening'), bare.report('listening')]);
  // A few heartbeats, as the supervisor sends them, then the app settles.
  for (let seq = 1; seq <= 3; seq++) {
    await peer.ping(seq);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const [withMonitor, without] = await Promise.all([rssKb(monitored.child.pid), rssKb(bare.child.pid)]);
  const costKb = withMonitor - without;
  t.diagnostic(`monitor cost ${costKb} kB`);
  assert.ok(costKb < 1000, `monitor cost ${costKb} kB (VmRSS ${withMonitor} kB with it, ${without} kB bare)`);
});

test('an idle monitored HTTP server binds only the Node-API functions it calls', { skip: process.platform !== 'linux' && 'LD_DEBUG is glibc' }, async (t) => {
  // The addon calls Node-API through the PLT (built with partial RELRO, scripts/build.js) and Node
  // dlopens it RTLD_LAZY: a function is bound, and its name looked up in node's symbol tables (RSS
  // in every app), only when first called. Bound at load (BIND_NOW) there would be all ~40.
  const supervisor = await fakeSupervisor(t);
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ngm-ld-'));
  t.after(() => fs.rmSync(logDir, { recursive: true, force: true }));
  const logPrefix = path.join(logDir, 'ld');
  const run = runNode(
    t,
    [
      '--require',
      PRELOAD,
      '-e',
      `${REPORT}
       const server = require('http').createServer((q, s) => s.end('ok'));
       server.listen(0, '127.0.0.1', () => report({ port: server.address().port }));`,
    ],
    { ...supervisor.env(), LD_DEBUG: 'bindings', LD_DEBUG_OUTPUT: logPrefix },
  );
  const peer = await supervisor.accepted();
  const { port } = await run.report('port');
  await peer.ping(1);
  // A request (tracked in the addon's table for hang reports), then more heartbeats.
  const body = await new Promise((resolve, reject) => {
    require('node:http')
      .get({ host: '127.0.0.1', port, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk) => (text += chunk)).on('end', () => resolve(text));
      })
      .on('error', reject);
  });
  assert.equal(body, 'ok');
  await peer.ping(2);
  await peer.ping(3);
  const log = fs.readFileSync(`${logPrefix}.${run.child.pid}`, 'utf8');
  const bound = new Set(
    [...log.matchAll(/binding file \S*nodeguard-monitor\S* \[\d+\] to .*symbol `(napi_\w+)'/g)].map((m) => m[1]),
  );
  assert.ok(bound.has('napi_call_threadsafe_function'), `bound: ${[...bound].join(' ')}`);
  for (const name of ['napi_get_boolean', 'napi_create_uint32', 'napi_get_value_double', 'napi_define_class']) {
    assert.ok(!bound.has(name), `${name} bound by an idle app (all bound: ${[...bound].join(' ')})`);
  }
  assert.ok(bound.size <= 26, `${bound.size} Node-API functions bound: ${[...bound].join(' ')}`);
});
