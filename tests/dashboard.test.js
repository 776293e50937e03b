'use strict';
// The web dashboard on --http (`/`, `/events`, `/api/...`), in Debian's headless Chromium driven
// by playwright-core: the page shows the apps, follows a crash live over server-sent events (a
// new pid and a restart, read from the DOM without a reload), loads nothing but itself, and
// offers write actions only with the token of --http-token-file. Plus, without a browser: POSTs
// are refused without a token, the security headers, and the cap on event streams that leaves
// probes served.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const CHROMIUM = '/usr/bin/chromium';
const SERVING = /serving \/healthz, \/readyz and \/metrics on http:\/\/([\d.]+):(\d+)/;
/** Where the screenshot goes (gitignored). */
const OUTPUT = process.env.NODEGUARD_TEST_OUTPUT || path.join(h.REPO, 'target', 'test-output');
/** io/dashboard.rs MAX_STREAMS. */
const MAX_STREAMS = 8;

/** The HTTP port from a log text (the daemon's log or a foreground run's output). */
function portIn(text) {
  const m = SERVING.exec(text);
  return m ? Number(m[2]) : null;
}

/** POST http://127.0.0.1:<port><path> with optional headers: { status, headers, body }. */
function post(port, urlPath, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, method: 'POST', headers, agent: false, timeout: 30_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`POST ${urlPath} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** GET with the response's headers too. */
function getFull(port, urlPath, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, headers, agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out`)));
    req.on('error', reject);
  });
}

/** Opens /events and resolves once its first bytes arrived: { res, req, first } (or the refusal). */
function openStream(port) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/events', agent: false, timeout: 5_000 }, (res) => {
      res.setEncoding('utf8');
      res.once('data', (first) => resolve({ res, req, status: res.statusCode, first }));
    });
    req.on('timeout', () => req.destroy(new Error('GET /events timed out')));
    req.on('error', reject);
  });
}

/**
 * Launches Debian's Chromium on a fresh profile directory (playwright passes it as
 * --user-data-dir). One `after` hook closes the browser and only then removes the profile: Chromium
 * writes into it until it has exited, and a removal that ran first failed with ENOTEMPTY and left
 * the browser (and so this test file's process) running.
 */
async function launchBrowser(t) {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (.ci/run does)`);
  const { chromium } = require('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-chromium-'));
  let browser = null;
  t.after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      fs.rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    }
  });
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return browser;
}

test('the dashboard shows the apps and follows a crash live; actions need the token', { timeout: 90_000 }, async (t) => {
  const t0 = performance.now();
  const mark = (what) => t.diagnostic(`${what} at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const home = new h.DaemonHome(t);
  const token = 'dash-test-token-' + Math.random().toString(36).slice(2, 12);
  const tokenFile = path.join(home.home, 'http-token');
  fs.writeFileSync(tokenFile, token + '\n', { mode: 0o600 });
  const daemon = new h.Supervisor({
    home: home.home,
    env: home.env,
    args: ['daemon', '--http', '127.0.0.1:0', '--http-token-file', tokenFile],
  });
  t.after(() => daemon.cleanup());
  const port = await home.waitFor(() => portIn(home.daemonLog()) || portIn(daemon.lines.map((l) => l.text).join('\n')), {
    what: 'the daemon to log its HTTP address',
  });
  const fast = ['--heartbeat-interval', '500ms', '--heartbeat-timeout', '500ms'];
  await home.ok(['start', path.join(h.FIXTURES, 'idle.js'), '--name', 'alpha', ...fast]);
  await home.ok(['start', path.join(h.FIXTURES, 'ticker.js'), '--name', 'beta', ...fast]);
  await home.waitForStatus((apps) => ['alpha', 'beta'].every((n) => apps.some((a) => a.name === n && a.state === 'running')), {
    what: 'alpha and beta to run',
  });

  // Write actions: refused without the token or with a wrong one.
  assert.equal((await post(port, '/api/restart/alpha')).status, 401);
  assert.equal((await post(port, '/api/restart/alpha', { Authorization: 'Bearer wrong-token-of-some-length' })).status, 401);

  mark('apps running');
  const browser = await launchBrowser(t);
  mark('browser started');
  const page = await browser.newPage();
  const origin = `http://127.0.0.1:${port}`;
  const requested = [];
  page.on('request', (request) => requested.push(request.url()));
  const consoleErrors = [];
  page.on('console', (message) => message.type() === 'error' && consoleErrors.push(message.text()));
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  await page.goto(`${origin}/`);

  const row = (name) => `tr[data-app="${name}"]`;
  const rowOf = (name) => page.evaluate((selector) => {
    const tr = document.querySelector(selector);
    return tr && { state: tr.dataset.state, pid: Number(tr.querySelector('td.pid').textContent), restarts: Number(tr.querySelector('td.restarts').textContent) };
  }, row(name));
  await page.waitForFunction((names) => names.every((n) => {
    const tr = document.querySelector(`tr[data-app="${n}"]`);
    return tr && tr.dataset.state === 'running' && /^\d+$/.test(tr.querySelector('td.pid').textContent);
  }), ['alpha', 'beta'], { timeout: 15_000 });
  mark('page shows both apps');
  const before = await rowOf('alpha');
  assert.equal(before.restarts, 0);
  // Marks this document: a reload would lose it.
  await page.evaluate(() => { window.__sameDocument = true; });

  // A crash: the page sees the restart and the new pid over its event stream.
  process.kill(before.pid, 'SIGKILL');
  await page.waitForFunction(([selector, oldPid]) => {
    const tr = document.querySelector(selector);
    if (!tr) return false;
    const pid = Number(tr.querySelector('td.pid').textContent);
    return tr.dataset.state === 'running' && pid > 0 && pid !== oldPid && Number(tr.querySelector('td.restarts').textContent) >= 1;
  }, [row('alpha'), before.pid], { timeout: 20_000 });
  mark('page shows the restart');
  const after = await rowOf('alpha');
  assert.ok(await page.evaluate(() => window.__sameDocument === true), 'the page was not reloaded');
  // The crash is listed among the recent events.
  await page.waitForFunction(() => [...document.querySelectorAll('#events li[data-app="alpha"]')].some((li) => li.dataset.kind === 'exited' || li.textContent.includes('SIGKILL')), null, { timeout: 10_000 });
  // The charts have a line per app.
  await page.waitForFunction(() => document.querySelectorAll('#chart-memory path[data-series]').length >= 2, null, { timeout: 15_000 });

  fs.mkdirSync(OUTPUT, { recursive: true });
  const shot = path.join(OUTPUT, 'dashboard-test.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);
  console.log(`dashboard screenshot: ${shot}`);
  t.diagnostic(`alpha: pid ${before.pid} -> ${after.pid}, restarts ${before.restarts} -> ${after.restarts}`);

  // Nothing but the page itself and its event stream was loaded.
  const foreign = requested.filter((url) => !url.startsWith(`${origin}/`) && !url.startsWith('data:'));
  assert.deepEqual(foreign, [], 'the page loads no external resource');
  assert.deepEqual(consoleErrors.filter((e) => !/EventSource|ERR_INCOMPLETE_CHUNKED|net::/.test(e)), [], 'no script errors (a CSP violation would show here)');

  // No buttons until the token is given; with it, restart works from the page.
  assert.equal(await page.locator('button[data-verb]').count(), 0, 'no action buttons without the token');
  await page.waitForSelector('#auth:not([hidden])');
  await page.fill('#token', token);
  await page.click('#unlock');
  mark('screenshot taken');
  const betaBefore = await rowOf('beta');
  await page.click(`${row('beta')} button[data-verb="restart"]`);
  await page.waitForFunction(([selector, oldPid]) => {
    const tr = document.querySelector(selector);
    const pid = tr && Number(tr.querySelector('td.pid').textContent);
    return tr && tr.dataset.state === 'running' && pid > 0 && pid !== oldPid;
  }, [row('beta'), betaBefore.pid], { timeout: 20_000 });
  // The button's request is answered once the new process runs, which the stream may show first.
  await page.waitForFunction(() => /restart \d+: done/.test(document.querySelector('#action-result').textContent), null, { timeout: 20_000 });

  mark('restart from the page done');
  // The same over plain HTTP with the token.
  const betaPid = (await home.byName()).beta.pid;
  const restarted = await post(port, '/api/restart/beta', { Authorization: `Bearer ${token}` });
  assert.equal(restarted.status, 200, restarted.body);
  const apps = JSON.parse(restarted.body).apps;
  assert.ok(apps[0].pid && apps[0].pid !== betaPid, restarted.body);
  assert.equal((await post(port, '/api/restart/nosuchapp', { Authorization: `Bearer ${token}` })).status, 409);
});

test('without a token every POST is refused; headers; event streams are capped and never starve probes', { timeout: 40_000 }, async (t) => {
  const sup = h.startSupervisor(t, { scripts: ['idle.js'], flags: ['--http', '127.0.0.1:0'] });
  const port = await sup.waitFor(() => portIn(sup.lines.map((l) => l.text).join('\n')), { what: 'the HTTP address' });
  await sup.waitRunning(['idle']);

  for (const verb of ['restart', 'reload', 'stop']) {
    const refused = await post(port, `/api/${verb}/idle`, { Authorization: 'Bearer anything-at-all-here' });
    assert.equal(refused.status, 403, `${verb}: ${refused.body}`);
  }
  assert.equal((await sup.waitRunning(['idle'])).idle.restarts, 0);

  const page = await getFull(port, '/');
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'], /^text\/html/);
  const csp = page.headers['content-security-policy'];
  const nonce = /'nonce-([0-9a-f]{32})'/.exec(csp);
  assert.ok(nonce, csp);
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.ok(page.body.includes(`<script nonce="${nonce[1]}">`));
  assert.equal(page.headers['x-content-type-options'], 'nosniff');
  assert.equal(page.headers['access-control-allow-origin'], undefined, 'no CORS');
  assert.notEqual(/'nonce-([0-9a-f]{32})'/.exec((await getFull(port, '/')).headers['content-security-policy'])[1], nonce[1], 'a fresh nonce each time');
  // A page on another site whose name resolves here (DNS rebinding) is refused.
  assert.equal((await getFull(port, '/', { Host: 'evil.example:80' })).status, 421);

  // Streams: a hello and a status snapshot at once; at most MAX_STREAMS at a time.
  const streams = [];
  t.after(() => streams.forEach((s) => s.req.destroy()));
  for (let i = 0; i < MAX_STREAMS; i++) {
    const s = await openStream(port);
    assert.equal(s.status, 200);
    assert.match(s.res.headers['content-type'], /^text\/event-stream/);
    streams.push(s);
  }
  const status = await new Promise((resolve) => {
    let text = '';
    streams[0].res.on('data', (c) => { text += c; if (/event: status\ndata: (.*)\n/.test(text)) resolve(JSON.parse(/event: status\ndata: (.*)\n/.exec(text)[1])); });
  });
  assert.equal(status[0].name, 'idle');
  const refused = await getFull(port, '/events');
  assert.equal(refused.status, 503, 'a stream beyond the cap is refused');
  // Probes are still served while every stream place is taken.
  assert.equal((await h.get(port, '/healthz')).status, 200);
  assert.equal((await h.get(port, '/metrics')).status, 200);
  // A place is freed when a page goes away.
  streams.pop().req.destroy();
  const deadline = Date.now() + 10_000;
  for (;;) {
    const s = await openStream(port);
    if (s.status === 200) {
      streams.push(s);
      break;
    }
    s.req.destroy();
    assert.ok(Date.now() < deadline, 'a closed stream gives its place back');
    await h.sleep(50);
  }
});

test('a token file open to others, a symlink, a short token or one without --http is refused in one line', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-token-'));
  const home = h.makeHome();
  t.after(() => [dir, home].forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  const file = (name, text, mode) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text, { mode });
    fs.chmodSync(p, mode);
    return p;
  };
  const open = file('open', 'a-long-enough-token-0123456789\n', 0o644);
  const short = file('short', 'short\n', 0o600);
  const good = file('good', 'a-long-enough-token-0123456789\n', 0o600);
  const link = path.join(dir, 'link');
  fs.symlinkSync(good, link);
  const cases = [
    [open, /open to other users \(mode 644\); chmod 600 it/],
    [link, /is a symbolic link/],
    [short, /one line of 16 to 512 visible ASCII characters/],
    [path.join(dir, 'missing'), /No such file/],
  ];
  for (const [tokenFile, message] of cases) {
    const r = await h.run(['daemon', '--http', '127.0.0.1:0', '--http-token-file', tokenFile], { env: { NODEGUARD_HOME: home } });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  const noHttp = await h.run(['daemon', '--http-token-file', good], { env: { NODEGUARD_HOME: home } });
  assert.equal(noHttp.code, 2, noHttp.stderr);
  assert.match(noHttp.stderr, /--http/);
});
