'use strict';
// The supervisor raises its soft limit on open files to the hard limit (it holds pipes and
// sockets for every app; issue 17's fd budget), and gives its apps the limit it started with.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const h = require('./helpers');

/** The soft and hard "Max open files" of process `pid`, from /proc. */
function openFileLimits(pid) {
  const line = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/);
  return { soft, hard };
}

test('the supervisor raises its soft open-file limit to the hard one; its apps keep the limit it started with', async (t) => {
  const home = h.makeHome();
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'ng-limits-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A shell app: Node raises its own soft limit to the hard one at startup, a shell does not.
  const script = path.join(dir, 'limits.sh');
  fs.writeFileSync(script, 'echo "app limits $(ulimit -Sn) $(ulimit -Hn)"\nexec sleep 1000\n');
  const { hard } = openFileLimits(process.pid);
  assert.ok(Number(hard) > 256, `this test needs a hard limit above 256 (it is ${hard})`);
  // The shell lowers only the soft limit, then becomes the supervisor.
  const child = spawn('bash', ['-c', 'ulimit -Sn 256 && exec "$@"', 'bash', h.BIN, '--home', home, '-m', script],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  const appLine = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no limits line from the app within 30 s; output: ${out}`)), 30_000);
    const look = (chunk) => {
      out += chunk;
      const found = /app limits (\d+) (\d+)/.exec(out);
      if (found) {
        clearTimeout(timer);
        resolve(found);
      }
    };
    child.stdout.on('data', look);
    child.stderr.on('data', look);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the supervisor exited (${code ?? signal}) before the app printed its limits; output: ${out}`));
    });
  });
  assert.equal(appLine[1], '256', 'the app gets the soft limit the supervisor started with');
  assert.equal(appLine[2], hard);
  assert.deepEqual(openFileLimits(child.pid), { soft: hard, hard }, 'the supervisor runs with soft = hard');
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
});
