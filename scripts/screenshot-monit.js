#!/usr/bin/env node
'use strict';
// Renders a `nodeguard monit` screen to a PNG for the README (docs/monit.png by default):
// a daemon in a temporary home runs three small apps (a cluster of two and one that hangs once, so
// the events pane shows a hang and its stack), `monit` runs in a detached tmux session of fixed
// size, its pane is captured with colours (`tmux capture-pane -e -p`), turned into HTML by the
// small ANSI converter below, and shot by Debian's headless Chromium.
//
//   node scripts/screenshot-monit.js [out.png]
//
// Needs the release binary (node scripts/build.js), tmux and chromium. Nothing listens on the
// network: Chromium opens a file:// page with its background networking off.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const BIN = process.env.NODEGUARD_BIN || path.join(REPO, 'target', 'release', 'nodeguard');
const OUT = path.resolve(process.argv[2] || path.join(REPO, 'docs', 'monit.png'));
const COLS = 150;
const ROWS = 40;
const CELL_W = 8.4;
const CELL_H = 17;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-shot-'));
const home = path.join(work, 'home');
fs.mkdirSync(home, { mode: 0o700 });
const env = { ...process.env, NODEGUARD_HOME: home, TERM: 'xterm-256color' };
delete env.NO_COLOR;
delete env.TMUX;
const socket = path.join(work, 'tmux.sock');

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, { encoding: 'utf8', env, ...options });
  if (result.error || result.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${result.error || result.stderr}`);
  }
  return result.stdout;
}
const tmux = (...args) => run('tmux', ['-S', socket, ...args]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const APP = `'use strict';
// A small web app for the screenshot: serves, logs each request, and (HANG_ONCE) blocks once.
const http = require('node:http');
const fs = require('node:fs');
let n = 0;
const server = http.createServer((req, res) => res.end('ok'));
server.listen(0, '127.0.0.1', () => console.log('listening on', server.address().port));
const keep = [];
setInterval(() => {
  n++;
  keep.push(Buffer.alloc(64 * 1024, n)); // memory that grows a little
  if (keep.length > 200) keep.splice(0, 100);
  console.log('GET /api/orders ' + (200) + ' ' + (3 + (n % 7)) + 'ms');
  if (n % 9 === 0) console.error('warn: slow upstream (' + (120 + n) + 'ms)');
  if (process.env.HANG_ONCE && n === 4) {
    const mark = process.env.HANG_ONCE;
    if (!fs.existsSync(mark)) { fs.writeFileSync(mark, ''); computeReport(); }
  }
}, 400);
function computeReport() { for (;;) { /* a stuck loop */ } }
`;

async function main() {
  if (!fs.existsSync(BIN)) throw new Error(`no ${BIN}: build it first (node scripts/build.js)`);
  const app = path.join(work, 'orders.js');
  fs.writeFileSync(app, APP);
  const mark = path.join(work, 'hung-once');
  run(BIN, ['start', app, '--name', 'api', '-i', '2']);
  run(BIN, ['start', app, '--name', 'worker', '--heartbeat-interval', '500ms'], { env: { ...env, HANG_ONCE: mark } });
  // Let the worker hang once and come back, and the sparklines fill a little.
  const deadline = Date.now() + 60_000;
  for (;;) {
    const apps = JSON.parse(run(BIN, ['status', '--json']));
    const worker = apps.find((a) => a.name === 'worker');
    if (worker && worker.hangs > 0 && worker.state === 'running') break;
    if (Date.now() > deadline) throw new Error(`the worker did not hang and come back: ${JSON.stringify(apps)}`);
    await sleep(250);
  }
  fs.writeFileSync(path.join(work, 'tmux.conf'), 'set -g status off\n');
  tmux('-f', path.join(work, 'tmux.conf'), 'new-session', '-d', '-s', 'shot', '-x', String(COLS), '-y', String(ROWS), `'${BIN}' monit`);
  await sleep(1500);
  tmux('send-keys', '-t', 'shot', 'Down', 'Down');
  await sleep(12_000);
  const ansi = tmux('capture-pane', '-e', '-p', '-t', 'shot');
  tmux('send-keys', '-t', 'shot', 'q');
  const html = path.join(work, 'monit.html');
  fs.writeFileSync(html, page(ansi));
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  const width = Math.ceil(COLS * CELL_W + 24);
  const height = Math.ceil(ROWS * CELL_H + 24);
  const chrome = spawn(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--hide-scrollbars', `--user-data-dir=${path.join(work, 'chromium')}`,
    `--window-size=${width},${height}`, `--screenshot=${OUT}`, `file://${html}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  chrome.stderr.on('data', (d) => { stderr += d; });
  const code = await new Promise((resolve) => chrome.on('exit', resolve));
  if (code !== 0 || !fs.existsSync(OUT)) throw new Error(`chromium exited ${code}: ${stderr}`);
  console.log(`wrote ${OUT}`);
}

// ---------------------------------------------------------------------------------------------
// ANSI (as tmux capture-pane -e writes it: SGR sequences only) to HTML.

const PALETTE = ['#1e1e1e', '#e06c75', '#98c379', '#e5c07b', '#61afef', '#c678dd', '#56b6c2', '#d0d0d0',
  '#5c6370', '#ff7b86', '#b5e890', '#ffd68a', '#82c4ff', '#e099ff', '#7fdbe6', '#ffffff'];

function color256(n) {
  if (n < 16) return PALETTE[n];
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  const steps = [0, 95, 135, 175, 215, 255];
  return `rgb(${steps[Math.floor(i / 36)]},${steps[Math.floor(i / 6) % 6]},${steps[i % 6]})`;
}

function ansiToHtml(text) {
  const escape = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  let state = {};
  let out = '';
  const style = () => {
    let fg = state.fg;
    let bg = state.bg;
    if (state.reverse) [fg, bg] = [bg || '#1e1e1e', fg || '#d0d0d0'];
    const css = [];
    if (fg) css.push(`color:${fg}`);
    if (bg) css.push(`background:${bg}`);
    if (state.bold) css.push('font-weight:bold');
    if (state.dim) css.push('opacity:0.6');
    if (state.underline) css.push('text-decoration:underline');
    return css.join(';');
  };
  const re = /\x1b\[([0-9;]*)m/g;
  let last = 0;
  const flush = (chunk) => {
    if (!chunk) return;
    const css = style();
    out += css ? `<span style="${css}">${escape(chunk)}</span>` : escape(chunk);
  };
  for (let m; (m = re.exec(text));) {
    flush(text.slice(last, m.index));
    last = re.lastIndex;
    const codes = m[1] === '' ? [0] : m[1].split(';').map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) state = {};
      else if (c === 1) state.bold = true;
      else if (c === 2) state.dim = true;
      else if (c === 4) state.underline = true;
      else if (c === 7) state.reverse = true;
      else if (c === 22) { state.bold = false; state.dim = false; }
      else if (c === 24) state.underline = false;
      else if (c === 27) state.reverse = false;
      else if (c >= 30 && c <= 37) state.fg = PALETTE[c - 30];
      else if (c >= 90 && c <= 97) state.fg = PALETTE[c - 90 + 8];
      else if (c === 39) delete state.fg;
      else if (c >= 40 && c <= 47) state.bg = PALETTE[c - 40];
      else if (c >= 100 && c <= 107) state.bg = PALETTE[c - 100 + 8];
      else if (c === 49) delete state.bg;
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        state[c === 38 ? 'fg' : 'bg'] = color256(codes[i + 2]);
        i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
        state[c === 38 ? 'fg' : 'bg'] = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
        i += 4;
      }
    }
  }
  flush(text.slice(last));
  return out;
}

function page(ansi) {
  return `<!doctype html><html><head><meta charset="utf-8"><style>
html,body{margin:0;background:#1e1e1e}
pre{margin:12px;color:#d0d0d0;font:14px/${CELL_H}px "DejaVu Sans Mono",monospace;white-space:pre}
</style></head><body><pre>${ansiToHtml(ansi)}</pre></body></html>`;
}

main()
  .catch((error) => {
    console.error(`screenshot-monit: ${error.message}`);
    process.exitCode = 1;
  })
  .finally(() => {
    spawnSync('tmux', ['-S', socket, 'kill-server']);
    spawnSync(BIN, ['kill'], { env });
    fs.rmSync(work, { recursive: true, force: true });
  });
