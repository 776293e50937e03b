'use strict';
// After an answer about many apps (a listing, the end of a start: 256 apps or more), the daemon
// hands the heap pages of its rows and frame back to the kernel (io/control_server.rs,
// malloc_trim). glibc returns freed memory on its own only from the top of the heap and only past
// a threshold that grows with the largest block freed: without the trim, a listing of 500 apps
// left about 540 kB more anonymous memory in the daemon than before it (2.5 times the JSON frame),
// for good; with it, the same as before to within a few pages.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const { execFileSync } = require('node:child_process');
const h = require('./helpers');

const SLEEP = execFileSync('sh', ['-c', 'command -v sleep'], { encoding: 'utf8' }).trim();
/** Above the daemon's 256-app threshold, and a frame (about 215 kB) large enough to see. */
const APPS = 500;
/**
 * How long the trim after the answer may take to show: it runs once the frame is written, maybe
 * after the CLI has read it and exited. Without the trim, the memory never goes.
 */
const SETTLE_MS = 10_000;

/** A process's anonymous memory (heap, stacks), in kB, from /proc. */
function anonymousKb(pid) {
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = Number((rollup.match(/^Anonymous:\s+(\d+) kB/m) || [])[1]);
  assert.ok(Number.isFinite(kb), `no Anonymous line in /proc/${pid}/smaps_rollup`);
  return kb;
}

test(`a listing of ${APPS} apps leaves the daemon's anonymous memory where it was`, { timeout: 120_000 }, async (t) => {
  const d = new h.DaemonHome(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-listing-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const apps = Array.from({ length: APPS }, (_, i) => ({ name: `sleeper${i}`, script: SLEEP, args: '100000', interpreter: 'none', start_grace: '200ms' }));
  const config = path.join(dir, 'apps.json');
  fs.writeFileSync(config, JSON.stringify({ apps }));
  await d.ok(['start', config], { timeout: 90_000 });
  const daemon = d.daemonPid();
  // A first listing: whatever glibc keeps for good after one (its grown thresholds) is kept now.
  await d.ok(['status', '--json']);

  // A stop writes the state file, after which the daemon trims its heap (supervisor/persist.rs)
  // before it answers: the reference, with none of a listing's freed pages in it.
  await d.ok(['stop', 'sleeper0']);
  const before = anonymousKb(daemon);
  const listing = await d.ok(['status', '--json']);
  assert.equal(JSON.parse(listing.stdout).length, APPS);
  // Half the frame's size: a listing's rows and frame left resident are 2.5 times it; with the
  // trim, what stays is the few pages the daemon's own work between the readings touched.
  const boundKb = Math.round(listing.stdout.length / 1024 / 2);
  let grownKb = anonymousKb(daemon) - before;
  const deadline = performance.now() + SETTLE_MS;
  while (grownKb >= boundKb && performance.now() < deadline) {
    await h.sleep(20);
    grownKb = anonymousKb(daemon) - before;
  }
  t.diagnostic(`daemon anonymous memory: ${before} kB before the listing (frame ${listing.stdout.length} B), ${grownKb >= 0 ? '+' : ''}${grownKb} kB after it`);
  assert.ok(grownKb < boundKb, `the daemon kept ${grownKb} kB more anonymous memory after a listing of ${APPS} apps (bound ${boundKb} kB)`);
});
