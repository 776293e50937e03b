'use strict';
// require('nodeguard-monitor/client'): a real daemon driven from Node through the control socket:
// list, start, restart (the pid changes), describe, delete, and the event stream; errors from the
// daemon reject with its message.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');
const client = require('../client'); // require('nodeguard-monitor/client') once installed

test('the Node client lists, starts, restarts and receives events', async (t) => {
  const home = new h.DaemonHome(t);
  // No daemon yet: connect says so.
  await assert.rejects(client.connect({ home: home.home }), (err) => err.code === 'NODEGUARD_NOT_RUNNING' && /no nodeguard supervisor is running on /.test(err.message));
  const dir = h.project(t, [['app.js', 'setInterval(() => {}, 1000);\n']]);
  await home.ok(['start', `${dir}/app.js`, '--name', 'first']);

  const ng = await client.connect({ home: home.home });
  t.after(() => ng.close());
  assert.equal(typeof ng.daemon.pid, 'number');
  const events = [];
  const waiters = [];
  ng.on('event', (event) => {
    events.push(event);
    for (const waiter of waiters.slice()) waiter();
  });
  const waitEvent = (predicate, what) => new Promise((resolve, reject) => {
    const check = () => {
      const found = events.find(predicate);
      if (!found) return;
      waiters.splice(waiters.indexOf(check), 1);
      clearTimeout(timer);
      resolve(found);
    };
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(events)}`)), h.DEFAULT_TIMEOUT_MS);
    waiters.push(check);
    check();
  });

  assert.deepEqual((await ng.list()).map((app) => app.name), ['first']);
  const started = await ng.start({ script: 'app.js', cwd: dir, name: 'api', env: { GREETING: 'hi' }, instances: 2 });
  assert.deepEqual(started.map((app) => [app.name, app.instance, app.state]), [['api', 0, 'running'], ['api', 1, 'running']]);
  const described = await ng.describe('api');
  assert.equal(described[0].definition.script, `${dir}/app.js`);
  assert.equal(described[0].definition.node, process.execPath);
  assert.deepEqual(described[0].definition.env, [['GREETING', 'hi']]);

  const before = (await ng.list()).find((app) => app.name === 'first').pid;
  const [restarted] = await ng.restart('first');
  assert.notEqual(restarted.pid, before);
  // The stream saw it: the old process asked to stop, a new one started.
  await waitEvent((e) => e.app === 'first' && e.kind === 'state' && e.state === 'stopping' && e.pid === before, 'the old process stopping');
  await waitEvent((e) => e.app === 'first' && e.kind === 'started' && e.pid === restarted.pid, 'the new process started');

  await ng.stop('api');
  assert.ok((await ng.list()).filter((app) => app.name === 'api').every((app) => app.state === 'stopped'));
  await ng.delete('api');
  assert.deepEqual((await ng.list()).map((app) => app.name), ['first']);

  // Errors from the daemon reject with its words; bad arguments throw before any request.
  await assert.rejects(ng.restart('nope'), { message: "no app named, numbered or in a namespace 'nope'" });
  await assert.rejects(ng.start({ script: `${dir}/missing.js` }), { message: /^missing: exited while starting/ });
  await assert.rejects(ng.stop(''), TypeError);
  await assert.rejects(ng.start({}), TypeError);
});
