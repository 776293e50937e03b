#!/usr/bin/env node
'use strict';
// Makes docs/dashboard.png, the README's picture of the web dashboard: starts a daemon of its own
// (a fresh home in a temporary folder, `--http` on a free loopback port) with three demo apps (an
// HTTP API, a worker whose event loop is sometimes slow, a cache whose memory grows and is freed),
// opens the dashboard in Debian's headless Chromium (playwright-core), lets it collect ~20 s of
// data, makes the API hang once (so a hang and its stack show among the events), and takes the
// picture. Everything it started is stopped and removed at the end.
//
// Usage: node scripts/screenshot-dashboard.js [output.png]   (needs a built target/release/nodeguard,
// the monitor addon from `node scripts/build.js`, and /usr/bin/chromium)

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const BIN = process.env.NODEGUARD_BIN || path.join(ROOT, 'target', 'release', 'nodeguard');
const CHROMIUM = '/usr/bin/chromium';
const OUT = path.resolve(process.argv[2] || path.join(ROOT, 'docs', 'dashboard.png'));
const RUN_MS = 20_000;

const APPS = {
  'api.js': `'use strict';
const http = require('node:http');
function renderReport() { for (;;) {} }
http.createServer((req, res) => {
  if (req.url === '/hang') { res.end('hanging\\n'); setImmediate(renderReport); return; }
  let sum = 0; for (let i = 0; i < 2e5; i++) sum += i;
  res.end('ok ' + sum + '\\n');
}).listen(Number(process.env.PORT), '127.0.0.1');
`,
  'worker.js': `'use strict';
// A queue worker: every 200 ms a batch, sometimes a heavy one that holds the loop for a while.
let n = 0;
setInterval(() => {
  const heavy = ++n % 15 < 3 ? 40 : 2;
  const end = Date.now() + heavy * Math.random();
  while (Date.now() < end) {}
}, 200);
`,
  'cache.js': `'use strict';
// A cache that fills up and is flushed every 8 s.
let entries = [];
setInterval(() => entries.push(Buffer.alloc(3 * 1024 * 1024, 1)), 250);
setInterval(() => { entries = []; if (global.gc) global.gc(); }, 8000);
`,
};

function fail(message) {
  process.stderr.write(`screenshot-dashboard: ${message}\n`);
  process.exitCode = 1;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer().on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function get(port, urlPath) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  for (const [what, file] of [['nodeguard binary', BIN], ['chromium', CHROMIUM]]) {
    if (!fs.existsSync(file)) throw new Error(`${what} not found at ${file}`);
  }
  const { chromium } = require('playwright-core');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-dashboard-shot-'));
  const home = path.join(work, 'home');
  fs.mkdirSync(home, { mode: 0o700 });
  for (const [name, text] of Object.entries(APPS)) fs.writeFileSync(path.join(work, name), text);
  const env = { ...process.env, NODEGUARD_HOME: home };
  const cli = (args, extra = {}) => {
    const r = spawnSync(BIN, args, { env: { ...env, ...extra }, cwd: work, encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) throw new Error(`nodeguard ${args.join(' ')}: ${r.stderr || r.error}`);
  };
  const httpPort = await freePort();
  const apiPort = await freePort();
  const daemon = spawn(BIN, ['daemon', '--http', `127.0.0.1:${httpPort}`], { env, stdio: 'ignore', detached: true });
  let browser;
  try {
    for (let i = 0; (await get(httpPort, '/healthz')) !== 200; i++) {
      if (i > 100) throw new Error('the daemon did not serve /healthz');
      await sleep(100);
    }
    const beat = ['--heartbeat-interval', '1s', '--heartbeat-timeout', '1s'];
    // Apps get the environment `start` is run with.
    cli(['start', 'api.js', '--name', 'api', ...beat], { PORT: String(apiPort) });
    cli(['start', 'worker.js', '--name', 'worker', ...beat]);
    cli(['start', 'cache.js', '--name', 'cache', ...beat, '--node-arg=--expose-gc']);

    const profile = path.join(work, 'chromium');
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 860 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${httpPort}/`);
    const started = Date.now();
    // Some traffic for the API, and one hang two thirds of the way.
    let hung = false;
    while (Date.now() - started < RUN_MS) {
      if (!hung && Date.now() - started > RUN_MS * 0.6) {
        hung = true;
        await get(apiPort, '/hang');
      } else {
        await Promise.all(Array.from({ length: 5 }, () => get(apiPort, '/')));
      }
      await sleep(100);
    }
    await page.waitForFunction(() => document.querySelector('#events li[data-kind="stack"]'), null, { timeout: 15_000 });
    fs.mkdirSync(path.dirname(OUT), { recursive: true });
    await page.screenshot({ path: OUT, fullPage: true });
    console.log(`wrote ${path.relative(process.cwd(), OUT)}`);
  } finally {
    if (browser) await browser.close().catch(() => {});
    spawnSync(BIN, ['kill'], { env, timeout: 20_000 });
    try {
      process.kill(-daemon.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error) => fail(error.stack || String(error)));
