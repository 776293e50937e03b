'use strict';
// Hang forensics: before a hung app is killed, nodeguard asks it for the JS stack of its blocked
// main thread (SIGINT under --trace-sigint) and writes where it was stuck to the app's output,
// e.g. "[nodeguard] hung 0.8s in blockForever (server.js:21:3) < processImmediate (…)". When no
// stack can be had, the line says why instead of guessing.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const FAST = [
  '--heartbeat-interval', '200ms',
  '--heartbeat-timeout', '200ms',
  '--heartbeat-misses', '3',
  '--start-grace', '5s',
];
/** The supervisor's note about a hang, in the app's stderr. */
const HANG_NOTE = /^\[nodeguard\] (hung \S+.*)$/;

test("a hung app's stack names the blocking function", async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['server.js'], flags: FAST });
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  assert.equal((await h.get(first.port, '/hang')).body, 'hanging\n');

  const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
  t.diagnostic(note);
  // server.js blocks in blockForever, called from a setImmediate callback.
  assert.match(note, /^hung \d+(\.\d+)?m?s in blockForever \(\S*server\.js:\d+:\d+\)/, note);
  assert.match(note, / < processImmediate \(node:internal\/timers:\d+:\d+\)/, note);
  // Node's own trace went to the app's stderr too, so nothing of it is lost.
  await sup.waitForLine('server', /^KEYBOARD_INTERRUPT: Script execution was interrupted/, { stream: 'stderr' });
  await sup.waitForLine('server', /^\s+at blockForever \(/, { stream: 'stderr' });

  // And the app came back, counted as a hang.
  const second = await sup.waitListening('server', { notPids: [first.pid] });
  const rows = await sup.waitRunning(['server']);
  assert.equal(rows.server.pid, second.pid);
  assert.equal(rows.server.hangs, 1);
  assert.ok(h.isGone(first.pid), `hung pid ${first.pid} is still alive`);
});

test('an app that listens for SIGINT is killed without a stack, and the note says why', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['server.js'], flags: FAST, env: { FIXTURE_LISTEN_SIGINT: '1' } });
  const first = await sup.waitListening('server');
  await sup.waitRunning(['server']);
  await h.get(first.port, '/hang');
  const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
  assert.match(note, /; no stack: the app listens for SIGINT, which turns off Node's --trace-sigint \(or runs on Bun or Deno, which print no stack on SIGINT\)$/, note);
  await sup.waitListening('server', { notPids: [first.pid] });
  // Its SIGINT handler never ran: nodeguard did not send SIGINT to it.
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
