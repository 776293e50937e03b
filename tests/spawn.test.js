'use strict';
// Apps are spawned without fork() (clone(CLONE_VM | CLONE_VFORK), issue 17's start of 2,000):
// what the old fork-and-pre_exec path guaranteed still holds for a real app of a real daemon.
// The supervisor's own signal handlers (tokio's), its ignored SIGPIPE and the all-blocked mask
// it spawns under must not reach the app; the app leads its own process group under the daemon.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const h = require('./helpers');

test('a spawned app starts with no signal blocked, ignored or caught, in its own process group', async (t) => {
  const home = h.makeHome();
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'ng-spawn-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'signals.sh');
  // cat prints its own status and stat: it catches, blocks and ignores nothing itself.
  fs.writeFileSync(script, 'exec cat /proc/self/status /proc/self/stat\n');
  const child = spawn(h.BIN, ['--home', home, '-m', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no status lines from the app within 30 s; output: ${out}`)), 30_000);
    const look = (chunk) => {
      out += chunk;
      if (/\d+ \(cat\) \S+ \d+ \d+/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', look);
    child.stderr.on('data', look);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the supervisor exited (${code ?? signal}) early; output: ${out}`));
    });
  });
  for (const field of ['SigBlk:', 'SigIgn:', 'SigCgt:']) {
    const found = new RegExp(`${field}\\s+([0-9a-f]+)`).exec(out);
    assert.ok(found, `no ${field} line in: ${out}`);
    assert.equal(found[1], '0000000000000000', `${field} of the app`);
  }
  const [, pid, ppid, pgid] = /(\d+) \(cat\) \S+ (\d+) (\d+)/.exec(out);
  assert.equal(Number(ppid), child.pid, 'the app is the supervisor\'s child');
  assert.equal(pgid, pid, 'the app leads its own process group');
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
});
