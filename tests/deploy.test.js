'use strict';
// examples/deploy/ cannot run here (no Docker, no Kubernetes, no systemd as PID 1), so this keeps
// it in step with the binary: the manifest's probes point at the endpoints, its arguments really
// start nodeguard with those endpoints answering, the Dockerfile runs the binary directly, and the
// unit is a notify service with a watchdog.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const DEPLOY = path.join(h.REPO, 'examples', 'deploy');
const read = (file) => fs.readFileSync(path.join(DEPLOY, file), 'utf8');
const SERVING = /serving \/healthz, \/readyz and \/metrics on http:\/\/[\d.]+:(\d+)/;

test('k8s.yaml: probes on /healthz and /readyz of the --http port, metrics annotated', () => {
  const yaml = read('k8s.yaml');
  assert.doesNotMatch(yaml, /\t/, 'YAML forbids tabs for indentation');
  const probe = (kind) => new RegExp(`${kind}:\\n\\s+httpGet:\\n\\s+path: (\\S+)\\n\\s+port: (\\S+)`).exec(yaml);
  assert.deepEqual(probe('livenessProbe').slice(1), ['/healthz', 'nodeguard']);
  assert.deepEqual(probe('readinessProbe').slice(1), ['/readyz', 'nodeguard']);
  assert.match(yaml, /- name: nodeguard\n\s+containerPort: 9615\n/);
  assert.match(yaml, /prometheus\.io\/scrape: "true"\n\s+prometheus\.io\/port: "9615"\n\s+prometheus\.io\/path: \/metrics\n/);
  const args = JSON.parse(/^\s+args: (\[.*\])$/m.exec(yaml)[1]);
  assert.deepEqual(args, ['--http', '0.0.0.0:9615', '-m', '/app/server.js']);
});

test('the manifest\'s command line runs the example app with the endpoints answering', async (t) => {
  const port = await h.freePort();
  const args = JSON.parse(/^\s+args: (\[.*\])$/m.exec(read('k8s.yaml'))[1]);
  // Same flags; a loopback address and an ephemeral port here, and the app from the checkout.
  const flags = args.slice(0, 2).map((a) => (a === '0.0.0.0:9615' ? '127.0.0.1:0' : a));
  const sup = h.startSupervisor(t, {
    scripts: [path.join(DEPLOY, 'server.js')],
    flags,
    env: { PORT: String(port) },
  });
  await sup.waitForLine('server', /^listening on \d+, pid \d+$/);
  const match = await sup.waitFor(() => sup.lines.map((l) => SERVING.exec(l.text)).find(Boolean) || false, {
    what: 'the HTTP endpoint',
  });
  const admin = Number(match[1]);
  assert.match((await h.get(port, '/')).body, /^hello from pid \d+\n$/);
  await sup.waitRunning(['server']);
  assert.equal((await h.get(admin, '/healthz')).status, 200);
  assert.equal((await h.get(admin, '/readyz')).status, 200);
  sup.signal('SIGTERM');
  assert.equal((await sup.waitExit()).code, 0);
});

test('Dockerfile: multi-stage, the binary itself as the exec-form entrypoint', () => {
  const dockerfile = read('Dockerfile');
  assert.equal(dockerfile.match(/^FROM /gm).length, 2);
  assert.match(dockerfile, /^FROM rust:\S+ AS build$/m);
  assert.match(dockerfile, /^ENTRYPOINT \["\/opt\/nodeguard\/nodeguard"\]$/m);
  assert.match(dockerfile, /^CMD \["--http", "0\.0\.0\.0:9615", "-m", "\/app\/server\.js"\]$/m);
  for (const line of dockerfile.split('\n').filter((l) => /^(ENTRYPOINT|CMD) /.test(l))) {
    assert.doesNotMatch(line, /npm|sh -c/, `no wrapper in front of nodeguard: ${line}`);
  }
});

test('nodeguard.service: a notify service with a watchdog that resurrects the saved apps', () => {
  const unit = read('nodeguard.service');
  for (const line of ['Type=notify', 'WatchdogSec=30s', 'Restart=on-failure', 'KillMode=mixed']) {
    assert.match(unit, new RegExp(`^${line}$`, 'm'));
  }
  assert.match(unit, /^ExecStart=\/usr\/local\/bin\/nodeguard daemon --resurrect --home \/var\/lib\/nodeguard --http 127\.0\.0\.1:9615$/m);
});
