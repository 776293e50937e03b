'use strict';
// Live views: `nodeguard monit` driven in a real terminal (a detached tmux session of fixed size):
// it shows both apps running, restarts the selected one from its `r` key, and restores the
// terminal on `q`. Also `status` in colour on a terminal (a tmux pane) and plain when piped, the
// CPU figure of a whole process tree, and `logs` of a cluster app printing each line once.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const COLS = 160;
const ROWS = 45;
const ESC = '\x1b';

/** A tmux server of this test's own (its own socket), killed after `t`. */
function tmuxServer(t, env) {
  const probe = spawnSync('tmux', ['-V'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(`tmux is needed for this test (.ci/run installs it): ${probe.error || probe.stderr}`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-tmux-'));
  const socket = path.join(dir, 'sock');
  const conf = path.join(dir, 'tmux.conf');
  // A pane stays after its program exits, so the test can read its exit status and screen.
  fs.writeFileSync(conf, 'set -g remain-on-exit on\nset -g status off\n');
  const tmuxEnv = { ...process.env, ...env, TERM: 'xterm-256color' };
  delete tmuxEnv.NO_COLOR;
  delete tmuxEnv.TMUX;
  const tmux = (...args) => {
    const result = spawnSync('tmux', ['-S', socket, '-f', conf, ...args], { encoding: 'utf8', env: tmuxEnv });
    if (result.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${result.stderr}`);
    return result.stdout;
  };
  t.after(() => {
    spawnSync('tmux', ['-S', socket, 'kill-server']);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    tmux,
    /** Starts `command` (argv) in a new detached session `name` of COLS x ROWS. */
    start(name, command) {
      const line = command.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
      tmux('new-session', '-d', '-s', name, '-x', String(COLS), '-y', String(ROWS), line);
    },
    /** The pane's screen; with `history`, the lines scrolled off it too (tmux's "Pane is dead"
     * line scrolls a finished pane by one). */
    capture(name, { escapes = false, history = false } = {}) {
      return tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), ...(history ? ['-S', '-'] : []), '-t', name);
    },
    format(name, format) {
      return tmux('display-message', '-p', '-t', name, format).trim();
    },
    keys(name, ...keys) {
      tmux('send-keys', '-t', name, ...keys);
    },
  };
}

/** Polls `probe()` until truthy under a generous deadline; `describe()` goes in the failure. */
async function until(probe, what, describe, timeout = h.DEFAULT_TIMEOUT_MS) {
  const deadline = performance.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}\n${describe()}`);
    await h.sleep(100);
  }
}

/**
 * Runs `command` in a new pane `name` until it exits and returns the pane's text with escapes
 * (history included). A pane of a command that printed and exited at once was once seen by
 * tmux as dead before it had drawn the output (the capture held only "Pane is dead"): then
 * the same read-only command runs again in a fresh pane, up to three times.
 */
async function paneOutput(term, name, command, printed = /\S/) {
  let text = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    const pane = attempt === 1 ? name : `${name}-${attempt}`;
    term.start(pane, command);
    await until(() => term.format(pane, '#{pane_dead}') === '1', `${command.slice(1).join(' ')} in pane ${pane} to exit`, () => term.capture(pane));
    const drawn = () => term.capture(pane, { escapes: true, history: true });
    const shows = (screen) => printed.test(screen.replace(/^Pane is dead.*$/m, ''));
    // Output tmux reads after it saw the exit still lands: give it a moment to appear.
    await until(() => shows(drawn()), `output in pane ${pane}`, () => term.capture(pane), 2_000).catch(() => {});
    text = drawn();
    if (shows(text)) return text;
  }
  return text;
}

async function twoApps(t) {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'server.js', '--name', 'alpha']);
  await d.ok(['start', 'server.js', '--name', 'beta']);
  await d.waitForStatus((apps) => apps.length === 2 && apps.every((a) => a.state === 'running'),
    { what: 'alpha and beta running' });
  return d;
}

const row = (screen, name) => screen.split('\n').find((l) => new RegExp(`\\b${name}\\s+\\d+\\s+\\w+`).test(l)) || '';

/**
 * Runs `monit` in tmux session `name` through a shell that, once monit exits, writes the
 * terminal's settings (`stty -a`) to a file: raw mode left on would show there as -icanon -echo.
 */
async function startMonit(t, d, term, name) {
  const stty = path.join(d.home, `${name}.stty`);
  term.start(name, ['sh', '-c', '"$0" monit; code=$?; stty -a > "$1"; exit $code', h.BIN, stty]);
  const pane = () => term.capture(name);
  const shown = () => `pane:\n${pane()}\n${d.describe()}`;
  await until(() => {
    const screen = pane();
    return /running/.test(row(screen, 'alpha')) && /running/.test(row(screen, 'beta')) && /r restart/.test(screen);
  }, 'monit to show alpha and beta running', shown);
  return { pane, shown, stty };
}

/** Checks the terminal after monit exited: normal screen, cooked mode with echo. */
async function assertRestored(term, name, stty, shown) {
  await until(() => term.format(name, '#{pane_dead}') === '1', `monit in ${name} to exit`, shown);
  assert.equal(term.format(name, '#{alternate_on}'), '0', 'the alternate screen was left');
  const settings = await until(() => fs.existsSync(stty) && fs.readFileSync(stty, 'utf8'), 'stty -a after monit', shown);
  assert.match(settings, /(^|\s)icanon(\s|$)/, `canonical mode again:\n${settings}`);
  assert.match(settings, /(^|\s)echo(\s|$)/, `echo again:\n${settings}`);
  assert.doesNotMatch(term.capture(name), /r restart/, 'the view is gone from the screen');
  return Number(term.format(name, '#{pane_dead_status}'));
}

test('monit in a terminal shows both apps, restarts the selected one with r, and restores the terminal on q', async (t) => {
  const d = await twoApps(t);
  const term = tmuxServer(t, d.env);
  const { pane, shown, stty } = await startMonit(t, d, term, 'monit');

  const before = await d.byName();
  term.keys('monit', 'Down');
  await until(() => row(pane(), 'beta').includes('›'), 'beta to be selected', shown);
  term.keys('monit', 'r');
  const after = await d.waitForStatus((apps) => {
    const beta = apps.find((a) => a.name === 'beta');
    return beta && beta.state === 'running' && beta.pid !== before.beta.pid && beta.pid !== null ? apps : false;
  }, { what: 'beta restarted from monit (a new pid)' });
  const alpha = after.find((a) => a.name === 'alpha');
  assert.equal(alpha.pid, before.alpha.pid, 'only the selected app was restarted');
  // The new pid shows up in the view.
  const newPid = after.find((a) => a.name === 'beta').pid;
  await until(() => row(pane(), 'beta').includes(String(newPid)), `monit to show beta's new pid ${newPid}`, shown);
  console.log(`monit pane after the restart:\n${pane()}`);

  assert.equal(term.format('monit', '#{alternate_on}'), '1', 'monit runs on the alternate screen');
  term.keys('monit', 'q');
  assert.equal(await assertRestored(term, 'monit', stty, shown), 0, 'monit exits 0 on q');
});

test('monit restores the terminal on SIGTERM', async (t) => {
  const d = await twoApps(t);
  const term = tmuxServer(t, d.env);
  const { shown, stty } = await startMonit(t, d, term, 'term');
  const shell = Number(term.format('term', '#{pane_pid}'));
  const monit = Number(fs.readFileSync(`/proc/${shell}/task/${shell}/children`, 'utf8').trim().split(/\s+/)[0]);
  assert.match(h.procArgv(monit).join(' '), /monit/);
  process.kill(monit, 'SIGTERM');
  await assertRestored(term, 'term', stty, shown);
});

test('monit exits when its terminal hangs up (the tmux server killed), rather than spinning on a dead terminal', async (t) => {
  const d = await twoApps(t);
  const term = tmuxServer(t, d.env);
  await startMonit(t, d, term, 'hup');
  const shell = Number(term.format('hup', '#{pane_pid}'));
  const monit = Number(fs.readFileSync(`/proc/${shell}/task/${shell}/children`, 'utf8').trim().split(/\s+/)[0]);
  assert.match(h.procArgv(monit).join(' '), /monit/);
  term.tmux('kill-server');
  // Before the fix it stayed, reading end-of-file from the hung-up terminal in a loop.
  await until(() => !fs.existsSync(`/proc/${monit}`) || /^State:\s+Z/m.test(fs.readFileSync(`/proc/${monit}/status`, 'utf8')),
    'monit to exit after its terminal hung up', () => fs.readFileSync(`/proc/${monit}/status`, 'utf8'));
});

test('monit refuses without a terminal, in one line', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'server.js', '--name', 'alpha']);
  const result = await d.cli(['monit']);
  assert.notEqual(result.code, 0);
  assert.equal(result.stdout, '');
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  assert.match(result.stderr, /needs a terminal/);
});

test('status is in colour on a terminal (state, and restarts when not zero), plain when piped or with --no-color', async (t) => {
  const d = await twoApps(t);
  // One restart of beta after a crash: its restarts cell gets highlighted.
  const { beta } = await d.byName();
  const port = Number(/listening (\d+)/.exec(fs.readFileSync(path.join(d.home, 'logs', 'beta-out.log'), 'utf8'))[1]);
  await h.get(port, '/crash').catch(() => {});
  await d.waitForStatus((apps) => apps.some((a) => a.name === 'beta' && a.restarts === 1 && a.state === 'running' && a.pid !== beta.pid),
    { what: 'beta restarted after its crash' });

  const term = tmuxServer(t, d.env);
  const coloured = await paneOutput(term, 'status', [h.BIN, 'status'], /\bstate\b/);
  console.log(`status on a terminal (escapes shown as \\e):\n${coloured.replaceAll(ESC, '\\e')}`);
  const lines = coloured.split('\n');
  const alphaLine = lines.find((l) => l.startsWith('alpha'));
  const betaLine = lines.find((l) => l.startsWith('beta'));
  assert.match(alphaLine, /\x1b\[32mrunning/, 'running is green');
  // tmux re-encodes what it was sent: bold and yellow may come as one sequence or two.
  assert.match(betaLine, /(\x1b\[1;33m|\x1b\[1m\x1b\[33m)1\x1b\[/, "beta's restart count is highlighted");
  assert.match(lines[0], /\bcpu\b/, 'a cpu column');
  const plain = await paneOutput(term, 'plain', [h.BIN, 'status', '--no-color'], /\bstate\b/);
  assert.match(plain, /^name\s+id\s+pid\s+state/m, plain);
  assert.doesNotMatch(plain.split('\n').filter((l) => /^(alpha|beta|name)\b/.test(l)).join('\n'), /\x1b\[/, '--no-color on a terminal');

  const piped = await d.ok(['status']);
  assert.ok(!piped.stdout.includes(ESC), `no escapes when piped:\n${piped.stdout}`);
  assert.match(piped.stdout.split('\n')[0], /\buptime\s+cpu\s+rss\b/);
  const described = await d.ok(['describe', 'beta']);
  assert.ok(!described.stdout.includes(ESC), 'describe is plain when piped');
  assert.match(await paneOutput(term, 'describe', [h.BIN, 'describe', 'beta']), /state\s+\x1b\[32mrunning/, 'describe colours the state');
});

test("cpu_percent counts an app's whole process tree", async (t) => {
  const dir = h.project(t, [
    ['spinner.js', `'use strict';
// The main process idles; a child process it forks spins one core.
const { spawn } = require('node:child_process');
spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
setInterval(() => {}, 60_000);
console.log('spinner up');
`],
  ]);
  const d = new h.DaemonHome(t);
  await d.ok(['start', path.join(dir, 'spinner.js'), '--name', 'spinner']);
  await d.ok(['start', 'idle.js', '--name', 'quiet']);
  // Two scans a second apart make the first figure; wait for a busy one.
  const apps = await d.waitForStatus((rows) => {
    const spinner = rows.find((a) => a.name === 'spinner');
    const quiet = rows.find((a) => a.name === 'quiet');
    // A loaded 2-core box (a load of 30 was seen here) gives the spinning child a share of a
    // core, maybe a small one; the main processes of both apps idle once booted, so the spinner
    // reading clearly above the idle app is its child's time.
    return spinner?.processes === 2 && spinner.cpu_percent > 3 &&
      typeof quiet?.cpu_percent === 'number' && quiet.cpu_percent < 2 ? rows : false;
  }, { what: 'spinner over 3% of a core (its child spins) and the idle app under 2%' });
  const spinner = apps.find((a) => a.name === 'spinner');
  assert.ok(spinner.cpu_percent < 150, `one spinning core reads at most about 100: ${spinner.cpu_percent}`);
  const table = (await d.ok(['status'])).stdout;
  assert.match(table, /spinner\s.*\s\d+\.\d%\s/, table);
});

test('logs of a cluster app (-i 2) print each line once', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'pair', '-i', '2']);
  const apps = await d.waitForStatus((rows) => rows.length === 2 && rows.every((a) => a.state === 'running') ? rows : false,
    { what: 'both instances running' });
  const pids = apps.map((a) => a.pid);
  // Both instances' first lines are in the shared files.
  const lines = await d.waitFor(async () => {
    const out = (await d.ok(['logs', 'pair', '--lines', '50'])).stdout.split('\n').filter(Boolean);
    return pids.every((pid) => out.some((l) => l.includes(`idle stderr pid=${pid}`))) ? out : false;
  }, { what: 'both instances\' lines in `logs pair`' });
  console.log(`logs pair:\n${lines.join('\n')}`);
  for (const pid of pids) {
    for (const text of [`idle pid=${pid} `, `idle stderr pid=${pid}`]) {
      const hits = lines.filter((l) => l.includes(text));
      assert.equal(hits.length, 1, `"${text}" once, not once per instance:\n${lines.join('\n')}`);
      assert.match(hits[0], /^pair \| /);
    }
  }
});
