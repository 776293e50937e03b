'use strict';
// Hang forensics: before a hung app is killed, nodeguard gets the JS stack of its blocked main
// thread and writes where it was stuck to the app's output, e.g. "[nodeguard] hung 0.8s in
// blockForever (server.js:21:3) < processImmediate (…) while handling GET /search". The monitor
// captures the stack itself through V8's interrupt (no signal, no inspector port), so apps with
// their own SIGINT or shutdown handling get one too, and so does a hang while starting; where the
// monitor cannot (another runtime, NODEGUARD_STACK_CAPTURE=0), SIGINT under --trace-sigint is the
// fallback. When no stack can be had, the line says why instead of guessing.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const FAST = [
  '--heartbeat-interval', '200ms',
  '--heartbeat-timeout', '200ms',
  '--heartbeat-misses', '3',
  '--start-grace', '5s',
];
/** The supervisor's note about a hang, in the app's stderr. */
const HANG_NOTE = /^\[nodeguard\] (hung \S+.*)$/;
/** What Node prints when SIGINT interrupts JavaScript under --trace-sigint. */
const KEYBOARD_INTERRUPT = /KEYBOARD_INTERRUPT/;

/** Every output line of the supervisor run (its own log and the apps'), raw. */
function allLines(sup) {
  return sup.lines.map((line) => line.raw);
}

test("a hung app's stack names the blocking function, printed once, with no KEYBOARD_INTERRUPT", async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['server.js'], flags: FAST });
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  assert.equal((await h.get(first.port, '/hang')).body, 'hanging\n');

  const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
  t.diagnostic(note);
  // server.js blocks in blockForever, called from a setImmediate callback.
  assert.match(note, /^hung \d+(\.\d+)?m?s in blockForever \(\S*server\.js:\d+:\d+\)/, note);
  assert.match(note, / < processImmediate \(node:internal\/timers:\d+:\d+\)/, note);
  // The /hang request was answered before the loop blocked: it is no longer in flight.
  assert.doesNotMatch(note, /while handling/, note);

  // And the app came back, counted as a hang.
  const second = await sup.waitListening('server', { notPids: [first.pid] });
  const rows = await sup.waitRunning(['server']);
  assert.equal(rows.server.pid, second.pid);
  assert.equal(rows.server.hangs, 1);
  assert.ok(h.isGone(first.pid), `hung pid ${first.pid} is still alive`);
  // Foreground mode: the stack is on the terminal once (not also as the supervisor's log line, nor
  // as Node's own trace), and nothing looks as if someone pressed Ctrl-C.
  const stacks = allLines(sup).filter((line) => /blockForever/.test(line));
  assert.equal(stacks.length, 1, stacks.join('\n'));
  assert.ok(!allLines(sup).some((line) => KEYBOARD_INTERRUPT.test(line)), sup.describe());
});

test('an app that listens for SIGINT gets a named stack, and no SIGINT', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['server.js'], flags: FAST, env: { FIXTURE_LISTEN_SIGINT: '1' } });
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  await h.get(first.port, '/hang');
  const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
  t.diagnostic(note);
  assert.match(note, /^hung \d+(\.\d+)?m?s in blockForever \(\S*server\.js:\d+:\d+\)/, note);
  await sup.waitListening('server', { notPids: [first.pid] });
  // Its SIGINT handler never ran: nodeguard did not send SIGINT to it.
  assert.ok(!sup.appLines('server').includes('got SIGINT'), 'the app got a SIGINT');
});

test("an app with a monitor 'shutdown' listener gets a named stack, without SIGINT", async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['stuck.js'], flags: FAST, env: { FIXTURE_HANDLER: 'shutdown' } });
  const [, note] = await sup.waitForLine('stuck', HANG_NOTE, { stream: 'stderr' });
  t.diagnostic(note);
  assert.match(note, /^hung \d+(\.\d+)?m?s in spinForever \(\S*stuck\.js:\d+:\d+\) < listOnTimeout /, note);
  assert.ok(!allLines(sup).some((line) => KEYBOARD_INTERRUPT.test(line)), sup.describe());
  assert.ok(!sup.appLines('stuck').includes('got shutdown'), 'the app was asked to shut down');
});

test("daemon: a hung app with a SIGINT handler gets a stack event in describe and in its error log", async (t) => {
  const home = new h.DaemonHome(t, { env: { FIXTURE_HANDLER: 'sigint' } });
  await home.ok(['start', path.join(h.FIXTURES, 'stuck.js'), ...FAST]);
  const row = await home.waitForStatus((apps) => apps.find((a) => a.name === 'stuck' && a.hangs >= 1 && a.state === 'running'),
    { what: 'the hang to be detected and the app restarted' });
  assert.ok(row.hangs >= 1);
  const described = JSON.parse((await home.ok(['describe', 'stuck', '--json'])).stdout);
  const app = Array.isArray(described) ? described[0] : described;
  const stack = (app.events || []).find((event) => event.kind === 'stack');
  assert.ok(stack, JSON.stringify(app.events));
  assert.match(stack.message, /^hung \S+ in spinForever \(\S*stuck\.js:\d+:\d+\)/, stack.message);
  const errLog = fs.readFileSync(path.join(home.home, 'logs', 'stuck-err.log'), 'utf8');
  assert.match(errLog, /^\[nodeguard\] hung \S+ in spinForever \(/m, errLog);
  assert.doesNotMatch(errLog, /KEYBOARD_INTERRUPT/, errLog);
});

test('a hang while starting (top-level loop, before the first heartbeat) is a hang with its stack', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['stuck.js'],
    flags: [...FAST.slice(0, -2), '--start-grace', '1s'],
    env: { FIXTURE_HANG: 'startup' },
  });
  const [, note] = await sup.waitForLine('stuck', HANG_NOTE, { stream: 'stderr' });
  t.diagnostic(note);
  assert.match(note, /^hung \d+(\.\d+)?m?s in startupLoop \(\S*stuck\.js:\d+:\d+\) < <anonymous> \(\S*stuck\.js:\d+:\d+\)/, note);
  const rows = await sup.waitForStatus((apps) => {
    const app = apps.find((a) => a.name === 'stuck');
    return app && app.hangs >= 1 ? app : false;
  }, { what: 'the startup hang counted as a hang' });
  assert.ok(rows.hangs >= 1);
});

test('a hang inside a request handler names the request; the query only with --hang-show-query', async (t) => {
  for (const showQuery of [false, true]) {
    const flags = showQuery ? [...FAST, '--hang-show-query'] : FAST;
    const sup = h.startSupervisor(t, { scripts: ['stuck.js'], flags, env: { FIXTURE_HANG: 'request' } });
    const { port } = await sup.waitListening('stuck');
    await sup.waitRunning(['stuck']);
    // The request never gets an answer: the process is killed while handling it.
    const pending = h.get(port, '/search?q=hunter2', { timeout: 15_000 }).catch((error) => error);
    const [, note] = await sup.waitForLine('stuck', HANG_NOTE, { stream: 'stderr' });
    t.diagnostic(note);
    const target = showQuery ? 'GET /search\\?q=hunter2' : 'GET /search';
    assert.match(note, new RegExp(`^hung \\S+ in parseQuery \\(\\S*stuck\\.js:\\d+:\\d+\\) < .* while handling ${target}$`), note);
    if (!showQuery) assert.doesNotMatch(note, /hunter2/, note);
    await pending;
    await sup.cleanup();
  }
});

test('a process blocked outside JavaScript (a sync read of a FIFO) gets no stack, and the line says so', async (t) => {
  const home = h.makeHome();
  const sup = h.startSupervisor(t, {
    scripts: ['stuck.js'],
    flags: FAST,
    home,
    env: { FIXTURE_HANG: 'native', FIXTURE_FIFO: path.join(home, 'fifo') },
  });
  await sup.waitForLine('stuck', /^reading the fifo$/);
  const [, note] = await sup.waitForLine('stuck', HANG_NOTE, { stream: 'stderr' });
  assert.match(note, /; no stack: blocked outside JavaScript \(in a native or synchronous call: the JS thread took no interrupt within 1\.0s\)$/, note);
});

test('where the monitor cannot capture (NODEGUARD_STACK_CAPTURE=0), SIGINT with --trace-sigint gives the stack', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['server.js'], flags: FAST, env: { NODEGUARD_STACK_CAPTURE: '0' } });
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  await h.get(first.port, '/hang');
  const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
  assert.match(note, /^hung \d+(\.\d+)?m?s in blockForever \(\S*server\.js:\d+:\d+\)/, note);
  // Node's own trace went to the app's stderr: this was the SIGINT path.
  await sup.waitForLine('server', /^KEYBOARD_INTERRUPT: Script execution was interrupted/, { stream: 'stderr' });
});

test('with neither (SIGINT listener, NODEGUARD_STACK_CAPTURE=0) the app is killed without a stack, and the note says why', async (t) => {
  const sup = h.startSupervisor(t, {
    scripts: ['server.js'],
    flags: FAST,
    env: { FIXTURE_LISTEN_SIGINT: '1', NODEGUARD_STACK_CAPTURE: '0' },
  });
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  await h.get(first.port, '/hang');
  const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
  assert.match(note, /; no stack: the app listens for SIGINT, which turns off Node's --trace-sigint \(or runs on Bun or Deno, which print no stack on SIGINT\)$/, note);
  await sup.waitListening('server', { notPids: [first.pid] });
  assert.ok(!sup.appLines('server').includes('got SIGINT'), 'the app got a SIGINT');
});

test('a frozen app (SIGSTOP) answers no probe: hung, killed, and the note says so', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['server.js'], flags: FAST });
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  process.kill(first.pid, 'SIGSTOP');
  t.after(() => {
    try {
      process.kill(first.pid, 'SIGKILL');
    } catch {
      // already gone, as it should be
    }
  });
  const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
  assert.match(note, /; no stack: the process did not answer at all/, note);
  await sup.waitListening('server', { notPids: [first.pid] });
  await h.waitGone([first.pid], { what: `the frozen pid ${first.pid} to be killed` });
});
