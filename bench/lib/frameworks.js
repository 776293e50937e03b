'use strict';
// Figure 14 (issue 15): real frameworks with their own shutdown handlers, 2 instances, 3 reloads
// under autocannon (real HTTP/1.1 keep-alive, 50 connections), nodeguard (`start -i 2 --listen`,
// `nodeguard reload`) beside PM2 cluster mode (`pm2 start -i 2`, `pm2 reload`) in the same run;
// and one `restart` of the Express app under the same load. Failed requests = autocannon's errors
// (resets, refused, timeouts) + non-2xx answers.
//
// The frameworks are installed by npm into the run's temp dir (latest versions, recorded in the
// report); the Next.js app is built there with `next build` first. Each app handles both SIGTERM
// (nodeguard's kill signal) and SIGINT (PM2's), the way its docs show:
//   express  `process.on(sig, () => server.close(() => process.exit(0)))`
//   fastify  an `onClose` hook, and `process.on(sig, () => fastify.close().then(() => exit(0)))`
//   nest     `app.enableShutdownHooks()` (NestJS closes the server, runs its hooks, re-raises)
//   next     `next start` as it is (it exits on SIGTERM and SIGINT)

const fs = require('node:fs');
const path = require('node:path');
const u = require('./util');
const { NodeguardDaemon } = require('./nodeguard');

const CONNECTIONS = 50;
const RELOADS = 3;
/** Load before the first action and after the last, in ms. */
const SETTLE_MS = 2_000;
/**
 * nodeguard's --listen-timeout: a NestJS or Next.js instance starting beside two busy ones on a
 * 2-core machine takes longer than the default 8 s to listen (PM2 waits 3 s, then counts it
 * online regardless).
 */
const LISTEN_TIMEOUT = '60s';
/** autocannon's per-request timeout, in seconds. */
const TIMEOUT_S = 10;
const PACKAGES = [
  'express@latest',
  'fastify@latest',
  '@nestjs/core@latest',
  '@nestjs/common@latest',
  '@nestjs/platform-express@latest',
  'reflect-metadata@latest',
  'rxjs@latest',
  'next@latest',
  'react@latest',
  'react-dom@latest',
];

const APPS = {
  express: `
const express = require('express');
const port = Number(process.argv[2]);
const app = express();
app.get('/', (req, res) => res.type('text').send(process.pid + '\\n'));
const server = app.listen(port, '127.0.0.1');
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
`,
  fastify: `
const fastify = require('fastify')({ logger: false });
const port = Number(process.argv[2]);
fastify.addHook('onClose', async () => {
  // Where an app closes its database pool.
});
fastify.get('/', async () => process.pid + '\\n');
fastify.listen({ port, host: '127.0.0.1' });
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => fastify.close().then(() => process.exit(0)));
}
`,
  nest: `
require('reflect-metadata');
const { NestFactory } = require('@nestjs/core');
const { Module, Controller, Get } = require('@nestjs/common');
const port = Number(process.argv[2]);
class AppController {
  pid() {
    return process.pid + '\\n';
  }
}
Controller()(AppController);
Get()(AppController.prototype, 'pid', Object.getOwnPropertyDescriptor(AppController.prototype, 'pid'));
class AppModule {}
Module({ controllers: [AppController] })(AppModule);
(async () => {
  const app = await NestFactory.create(AppModule, { logger: false });
  app.enableShutdownHooks();
  await app.listen(port, '127.0.0.1');
})();
`,
};

const NEXT_ROUTE = `
export default function handler(req, res) {
  res.status(200).send(process.pid + '\\n');
}
`;

/** The scenarios of figure 14, in table order. */
const SCENARIOS = [
  { id: 'express', label: 'Express, SIGTERM/SIGINT handler calling server.close()', action: 'reload' },
  { id: 'fastify', label: 'Fastify, onClose hook + handler calling fastify.close()', action: 'reload' },
  { id: 'nest', label: 'NestJS, enableShutdownHooks()', action: 'reload' },
  { id: 'next', label: 'Next.js, next start', action: 'reload' },
  { id: 'express', label: 'Express (as above), one restart', action: 'restart' },
];

/**
 * npm install of the frameworks into <tmp>/fw, the apps written there, the Next.js app built.
 * Returns { dir, versions, installMs, buildMs }.
 */
async function install(ctx) {
  const dir = path.join(ctx.tmp, 'fw');
  fs.mkdirSync(path.join(dir, 'nextapp', 'pages', 'api'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), '{"private": true}\n');
  const env = { ...ctx.env, NEXT_TELEMETRY_DISABLED: '1' };
  const npm = await u.runCmd('npm', ['install', ...PACKAGES, '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, env, timeout: 600_000 });
  if (npm.code !== 0) throw new Error(`npm install of the frameworks failed (exit ${npm.code}):\n${npm.stderr.slice(-2000)}`);
  const versions = {};
  for (const name of ['express', 'fastify', '@nestjs/core', 'next', 'react']) {
    versions[name] = JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', name, 'package.json'), 'utf8')).version;
  }
  for (const [name, source] of Object.entries(APPS)) fs.writeFileSync(path.join(dir, `${name}.js`), `'use strict';${source}`);
  fs.writeFileSync(path.join(dir, 'nextapp', 'pages', 'api', 'pid.js'), NEXT_ROUTE);
  const next = path.join(dir, 'node_modules', 'next', 'dist', 'bin', 'next');
  const build = await u.runCmd(process.execPath, [next, 'build', 'nextapp'], { cwd: dir, env, timeout: 600_000 });
  if (build.code !== 0) throw new Error(`next build failed (exit ${build.code}):\n${(build.stdout + build.stderr).slice(-2000)}`);
  return { dir, versions, installMs: npm.ms, buildMs: build.ms };
}

/** Script, its arguments and the URL path for `framework` on `port`. */
function command(fw, framework, port) {
  if (framework === 'next') {
    return {
      script: path.join(fw.dir, 'node_modules', 'next', 'dist', 'bin', 'next'),
      args: ['start', path.join(fw.dir, 'nextapp'), '-p', String(port), '-H', '127.0.0.1'],
      urlPath: '/api/pid',
    };
  }
  return { script: path.join(fw.dir, `${framework}.js`), args: [String(port)], urlPath: '/' };
}

/** Polls GET `urlPath` until it answers 200. */
function waitAnswering(port, urlPath) {
  return u.waitUntil(async () => (await u.get(port, urlPath, { timeout: 2_000 })).status === 200, {
    timeout: 60_000,
    every: 100,
    what: `GET ${urlPath} on ${port} to answer 200`,
  });
}

/** autocannon (the repo's devDependency) around `actions()`; returns { ok, failed, errors, ... }. */
async function underLoad(port, urlPath, actions) {
  const autocannon = require('autocannon');
  let ok = 0;
  const errors = {};
  const instance = autocannon({ url: `http://127.0.0.1:${port}${urlPath}`, connections: CONNECTIONS, duration: 3600, timeout: TIMEOUT_S });
  instance.on('response', (client, status) => {
    if (status >= 200 && status < 300) ok += 1;
  });
  instance.on('reqError', (error) => {
    const kind = error.code || String(error.message).slice(0, 40);
    errors[kind] = (errors[kind] || 0) + 1;
  });
  const finished = new Promise((resolve, reject) => {
    instance.on('done', resolve);
    instance.on('error', reject);
  });
  let info;
  try {
    await u.sleep(SETTLE_MS);
    if (ok === 0) throw new Error(`no request succeeded before the action (${JSON.stringify(errors)})`);
    const t0 = u.now();
    info = await actions();
    info.actionMs = u.now() - t0;
    await u.sleep(SETTLE_MS);
  } finally {
    instance.stop();
  }
  const result = await finished;
  if (result.non2xx) errors[`non-2xx`] = result.non2xx;
  // autocannon counts a timeout in `errors` too (and reports it as 'request timed out').
  return { ok, failed: result.errors + result.non2xx, errors, requests: result.requests.total, ...info };
}

/** nodeguard: `start -i 2 --listen`, then 3 reloads (or a restart) under load. */
async function nodeguardScenario(ctx, fw, { id, action }) {
  const d = new NodeguardDaemon(ctx);
  d.env.NEXT_TELEMETRY_DISABLED = '1';
  const port = await u.freePort();
  const { script, args, urlPath } = command(fw, id, port);
  const pids = [];
  try {
    const r = await d.cli(['start', script, '--name', 'web', '-i', '2', '--listen', `127.0.0.1:${port}`, '--listen-timeout', LISTEN_TIMEOUT, '--cwd', fw.dir, '--', ...args], { timeout: 120_000 });
    if (r.code !== 0) throw new Error(`nodeguard start failed (exit ${r.code}): ${r.stderr}\n${d.logTail()}`);
    d.pid = await d.ping();
    await waitAnswering(port, urlPath);
    pids.push(...(await d.status()).map((a) => a.pid).filter(Boolean));
    return await underLoad(port, urlPath, async () => {
      const times = action === 'reload' ? RELOADS : 1;
      for (let i = 0; i < times; i++) {
        const rr = await d.cli([action, 'web'], { timeout: 180_000 });
        if (rr.code !== 0) throw new Error(`nodeguard ${action} failed: ${rr.stderr}\n${d.logTail()}`);
        pids.push(...(await d.status()).map((a) => a.pid).filter(Boolean));
      }
      return { actions: times };
    });
  } finally {
    await d.kill(pids);
  }
}

/** PM2 cluster mode with the same app, port and load. */
async function pm2Scenario(ctx, pm2, fw, { id, action }) {
  const port = await u.freePort();
  const { script, args, urlPath } = command(fw, id, port);
  try {
    await pm2.cli(['start', script, '--name', 'web', '-i', '2', '--cwd', fw.dir, '--', ...args], { timeout: 120_000 });
    await waitAnswering(port, urlPath);
    return await underLoad(port, urlPath, async () => {
      const times = action === 'reload' ? RELOADS : 1;
      for (let i = 0; i < times; i++) await pm2.cli([action, 'web'], { timeout: 180_000 });
      return { actions: times };
    });
  } finally {
    await pm2.cli(['delete', 'all'], { check: false });
  }
}

module.exports = { SCENARIOS, CONNECTIONS, RELOADS, SETTLE_MS, TIMEOUT_S, LISTEN_TIMEOUT, install, nodeguardScenario, pm2Scenario };
