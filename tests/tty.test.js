'use strict';
// App names are coloured only when stdout is a terminal, and --no-color turns that off. Runs the
// supervisor under script(1) for a pseudo-terminal; skipped where script(1) is not installed.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');

const hasScript = spawnSync('script', ['--version']).status === 0;
const quote = (arg) => `'${arg.replace(/'/g, `'\\''`)}'`;

/** Runs the supervisor on a pty until `idle` printed its line; returns the raw terminal output. */
async function runOnTty(t, extraFlags) {
  h.checkPreconditions();
  const home = h.makeHome();
  const command = [h.BIN, '--home', home, ...extraFlags, '-m', path.join(h.FIXTURES, 'idle.js')].map(quote).join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  t.after(() => {
    for (const pid of [...h.processesMatching(home), child.pid]) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // not a group leader, or gone
      }
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    fs.rmSync(home, { recursive: true, force: true });
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  const deadline = performance.now() + h.DEFAULT_TIMEOUT_MS;
  while (!/idle pid=\d+/.test(output.replace(/\x1b\[[0-9;]*m/g, ''))) {
    if (performance.now() > deadline || child.exitCode !== null) {
      throw new Error(`no "idle pid=" line on the terminal; output so far: ${JSON.stringify(output)}`);
    }
    await new Promise((resolve) => child.stdout.once('data', resolve).once('end', resolve));
  }
  return output;
}

test('app names are coloured on a terminal, and not with --no-color', { skip: !hasScript && 'script(1) not installed' }, async (t) => {
  const coloured = await runOnTty(t, []);
  const line = coloured.split(/\r?\n/).find((l) => l.includes('idle pid='));
  assert.match(line, /\x1b\[[0-9;]*m/, `no colour on a terminal: ${JSON.stringify(line)}`);

  const plain = await runOnTty(t, ['--no-color']);
  const plainLine = plain.split(/\r?\n/).find((l) => l.includes('idle pid='));
  assert.equal(plainLine, `idle | ${plainLine.slice('idle | '.length)}`, `unexpected prefix: ${JSON.stringify(plainLine)}`);
  assert.ok(!plainLine.includes('\x1b'), `colour despite --no-color: ${JSON.stringify(plainLine)}`);
});
