'use strict';
// Idle and half-sent connections must not starve the supervisor (issue 12): 64 idle TCP
// connections to --http leave /healthz answering; 100 control connections each half-way through
// an 8 MiB frame neither take the daemon's memory up by hundreds of MB nor lock out `status`.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const h = require('./helpers');

const SERVING = /serving \/healthz, \/readyz and \/metrics on http:\/\/([\d.]+):(\d+)/;

/** Opens a connection and resolves once it is connected; the socket is destroyed after the test. */
function connect(t, options) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options);
    socket.on('error', () => {});
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
    t.after(() => socket.destroy());
  });
}

function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(match, `no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

test('64 idle TCP connections do not starve /healthz', async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['idle.js'], flags: ['--http', '127.0.0.1:0'] });
  const match = await sup.waitFor(
    () => sup.lines.map((l) => SERVING.exec(l.text)).find(Boolean),
    { what: 'the "serving /healthz" log line' },
  );
  const port = Number(match[2]);
  await sup.waitRunning(['idle']);

  const idle = [];
  for (let i = 0; i < 64; i++) idle.push(await connect(t, { host: '127.0.0.1', port }));
  const started = performance.now();
  const probe = await h.get(port, '/healthz', { timeout: 2_000 });
  assert.equal(probe.status, 200, `probe answered ${probe.status}`);
  t.diagnostic(`/healthz answered in ${(performance.now() - started).toFixed(0)} ms with 64 idle connections open`);
  assert.equal(sup.exit, null, 'the supervisor is still running');
});

test('100 half-sent 8 MiB control frames neither balloon the daemon nor lock out status', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', path.join(h.FIXTURES, 'idle.js'), '--name', 'idle']);
  const daemon = d.daemonPid();
  assert.ok(daemon, `no daemon pid\n${d.describe()}`);
  const before = rssKiB(daemon);

  const FRAME = 8 * 1024 * 1024;
  const SENT = 3 * 1024 * 1024;
  const header = Buffer.alloc(4);
  header.writeUInt32BE(FRAME - 16);
  const body = Buffer.alloc(SENT, 'a');
  // Each connection announces an 8 MiB frame and sends 3 MiB of it; each is done once the daemon
  // took those bytes (the write's callback) or closed the connection.
  const sent = [];
  for (let i = 0; i < 100; i++) {
    const socket = await connect(t, { path: d.paths.control });
    sent.push(new Promise((resolve) => {
      socket.once('close', resolve);
      socket.write(Buffer.concat([header, body]), () => resolve());
    }));
  }
  await Promise.all(sent);
  const during = rssKiB(daemon);
  const grownMiB = (during - before) / 1024;
  t.diagnostic(`daemon RSS ${before} kB before, ${during} kB with 100 half-sent frames (+${grownMiB.toFixed(1)} MiB)`);
  assert.ok(grownMiB < 100, `the daemon's RSS grew by ${grownMiB.toFixed(1)} MiB`);

  const status = await d.cli(['status', '--json']);
  assert.equal(status.code, 0, `status failed with 100 half-sent frames open: ${status.stderr}`);
  assert.equal(JSON.parse(status.stdout)[0].name, 'idle');
});
