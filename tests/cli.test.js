'use strict';
// Bad input is refused up front: one clear line on stderr, a non-zero exit, and nothing started.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

/** A refusal is immediate; anything this slow means the supervisor started running. */
const REFUSAL_BOUND_MS = 5_000;

/** A home holding its own copy of a valid app, so any process it spawns can be found by path. */
function setup(t) {
  const home = h.makeHome();
  const app = path.join(home, 'app.js');
  fs.copyFileSync(path.join(h.FIXTURES, 'idle.js'), app);
  t.after(() => {
    // A `start` that was wrongly accepted launched a daemon: it inherited NODEGUARD_HOME.
    for (const pid of new Set([...h.processesMatching(home), ...h.processesWithEnv('NODEGUARD_HOME', home)])) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    fs.rmSync(home, { recursive: true, force: true });
  });
  return { home, app };
}

const cases = [
  { name: 'a missing script', args: ({ home }) => ['-m', path.join(home, 'nope.js')], mentions: /nope\.js/ },
  {
    name: 'a missing script next to a valid one',
    args: ({ home, app }) => ['-m', app, '-m', path.join(home, 'nope.js')],
    mentions: /nope\.js/,
  },
  { name: '--node /does/not/exist', args: ({ app }) => ['--node', '/does/not/exist', '-m', app], mentions: /\/does\/not\/exist/ },
  { name: 'an unknown flag', args: ({ app }) => ['--frobnicate', '-m', app], mentions: /--frobnicate/ },
  {
    name: 'a malformed duration',
    args: ({ app }) => ['--heartbeat-interval', '5parsecs', '-m', app],
    mentions: /5parsecs/,
  },
  {
    name: 'a heartbeat timeout longer than the interval',
    args: ({ app }) => ['--heartbeat-interval', '1s', '--heartbeat-timeout', '2s', '-m', app],
    mentions: /timeout/i,
  },
  // No arguments at all print the usage (exit 2), as PM2 does: tests/pm2-cli.test.js.
  { name: 'options but no -m', args: () => ['--no-color'], mentions: /(-m|main|script)/i },
  {
    name: '--listen shared by two apps',
    args: ({ app }) => ['--listen', '127.0.0.1:1', '-m', app, '-m', app],
    mentions: /--listen would give all 2 apps the same address/,
  },
  { name: '-i 0', args: ({ app }) => ['-i', '0', '-m', app], mentions: /'0' is not an instance count/ },
  { name: 'a malformed --listen', args: ({ app }) => ['--listen', 'nowhere:x', '-m', app], mentions: /nowhere:x/ },
  // Durations and sizes are bounded (30 days, 1024T): huge ones used to panic or wrap.
  ...[
    ['--start-grace', '4000000000000000h'],
    ['--kill-timeout', '18446744073709551616ms'],
    ['--heartbeat-interval', '4000000000000000h'],
    ['--heartbeat-timeout', '721h'],
    ['--restart-delay', '4000000000000000h'],
    ['--listen-timeout', '4000000000000000h'],
    ['--min-uptime', '99999999999999999999999h'],
    ['--restart-window', '4000000000000000h'],
    ['--backoff-base', '4000000000000000h'],
  ].flatMap(([flag, value]) => [
    { name: `${flag} ${value}`, args: ({ app }) => [flag, value, '-m', app], mentions: /too long \(at most 720h/, code: 2 },
    { name: `start ${flag} ${value}`, args: ({ app }) => ['start', app, flag, value], mentions: /too long \(at most 720h/, code: 2 },
  ]),
  { name: '--max-memory 2000T', args: ({ app }) => ['--max-memory', '2000T', '-m', app], mentions: /too large \(at most 1024T\)/, code: 2 },
  // App names: the config file's rules hold for --name too, in one line that quotes the name safely.
  ...[
    ['a newline', 'web\nnodeguard: forged line', /control characters/],
    ['an escape sequence', 'web\x1b[2J', /control characters/],
    ['only spaces', '   ', /empty or only spaces/],
    ['all', 'all', /'all' is reserved/],
    ['a number', '42', /must not be a number/],
    ['300 bytes', 'n'.repeat(300), /300 bytes long \(at most 64\)/],
  ].map(([what, name, mentions]) => ({
    name: `start --name with ${what}`,
    args: ({ app }) => ['start', app, '--name', name],
    mentions,
    code: 2,
  })),
  {
    name: 'a script that is a directory',
    args: ({ home }) => ['-m', home],
    mentions: /is a directory, not a script/,
    code: 2,
  },
  {
    name: 'a config file that cannot be read (the OS error once)',
    args: ({ home }) => ['start', path.join(home, 'nope.json')],
    mentions: /^nodeguard: error: cannot read config file \S*nope\.json: No such file or directory \(os error 2\)$/,
  },
  {
    name: 'a JS config whose export is cyclic',
    args: ({ home }) => {
      const file = path.join(home, 'cyclic.config.js');
      fs.writeFileSync(file, "const c = { apps: [{ script: 'app.js' }] }; c.apps[0].self = c; module.exports = c;\n");
      return ['start', file];
    },
    mentions: /cyclic\.config\.js: .*circular/i,
  },
];

for (const c of cases) {
  test(`refuses ${c.name}`, async (t) => {
    const env = setup(t);
    const args = c.args(env);
    const result = await h.run(args, { env: { NODEGUARD_HOME: env.home }, timeout: REFUSAL_BOUND_MS });
    const command = `nodeguard ${args.join(' ')}`;
    assert.ok(!result.timedOut, `${command} was still running after ${REFUSAL_BOUND_MS} ms; stderr: ${result.stderr}`);
    assert.ok(Number.isInteger(result.code) && result.code !== 0, `${command} exited ${result.code}`);
    if (c.code !== undefined) assert.equal(result.code, c.code, `${command} exited ${result.code}; stderr: ${result.stderr}`);
    const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
    assert.equal(lines.length, 1, `${command}: want one stderr line, got ${lines.length}:\n${result.stderr}`);
    assert.match(lines[0], c.mentions, `${command}: the error does not name the problem`);
    assert.equal(result.stdout, '', `${command} printed on stdout`);
    assert.deepEqual(h.processesMatching(env.home), [], `${command} left processes running`);
    const status = await h.statusRaw(env.home);
    assert.notEqual(status.code, 0, `a supervisor answers in ${env.home} after ${command}`);
  });
}

test('status without a running supervisor: one clear line, exit 1', async (t) => {
  const { home } = setup(t);
  for (const args of [['status', '--home', home, '--json'], ['status', '--home', home]]) {
    const result = await h.run(args);
    const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
    assert.equal(result.code, 1, `nodeguard ${args.join(' ')} exited ${result.code}`);
    assert.equal(lines.length, 1, `want one stderr line, got:\n${result.stderr}`);
    assert.match(lines[0], /supervisor|not running|control\.sock|connect/i);
    assert.equal(result.stdout, '');
  }
});
