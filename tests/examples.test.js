'use strict';
// The examples run under nodeguard from a fresh clone, and the hang demo does what it says.
// They listen on fixed ports (8937-8939): if one is taken the demo cannot run, and this test fails
// saying which port.

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const h = require('./helpers');

const PORTS = { main1: 8938, main2: 8937, hang: 8939 };
const EXAMPLES = path.join(h.REPO, 'examples');

function portFree(port) {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, () => probe.close(() => resolve(true)));
  });
}

/** GET that resolves once the app answers on its fixed port (it may still be booting). */
async function answered(port, urlPath = '/') {
  try {
    return await h.get(port, urlPath);
  } catch {
    return false;
  }
}

test('examples: main1, main2 and the hang demo', async (t) => {
  for (const port of Object.values(PORTS)) {
    assert.ok(await portFree(port), `port ${port} is in use: the examples need it; free it and rerun`);
  }
  const sup = h.startSupervisor(t, {
    scripts: ['main1.js', 'main2.js', 'hang.js'].map((f) => path.join(EXAMPLES, f)),
    flags: ['--heartbeat-interval', '200ms', '--heartbeat-timeout', '200ms'],
  });
  await sup.waitRunning(['main1', 'main2', 'hang']);

  const one = await sup.waitFor(() => answered(PORTS.main1), { what: 'main1 to answer' });
  assert.deepEqual(one, { status: 200, body: 'Hello World, main1 \n' });
  const two = await sup.waitFor(() => answered(PORTS.main2), { what: 'main2 to answer' });
  assert.deepEqual(two, { status: 200, body: 'afdfadfdafdasHello World main 2\n' });

  const hello = await sup.waitFor(() => answered(PORTS.hang), { what: 'hang demo to answer' });
  assert.match(hello.body, /^hello from pid \d+\n$/);
  await h.get(PORTS.hang, '/hang');
  await sup.waitForStatus((apps) => apps.find((a) => a.name === 'hang').hangs === 1, { what: 'the hang demo to be restarted for hanging' });
  await sup.waitRunning(['hang']);
  const again = await sup.waitFor(() => answered(PORTS.hang), { what: 'hang demo to answer again' });
  assert.notEqual(again.body, hello.body, 'same pid after a hang restart');

  await h.get(PORTS.hang, '/crash').catch(() => {});
  const row = await sup.waitForStatus((apps) => {
    const r = apps.find((a) => a.name === 'hang');
    return r.restarts === 2 && r.state === 'running' ? r : false;
  }, { what: 'the hang demo to be restarted after /crash' });
  assert.equal(row.hangs, 1);
  await sup.waitFor(() => answered(PORTS.hang), { what: 'hang demo to answer after the crash' });
});
