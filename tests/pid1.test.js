'use strict';
// Foreground mode as PID 1 of a container: in a new PID namespace (`unshare --pid --fork`),
// nodeguard is PID 1, so every orphan in the namespace becomes its child. It must reap them (a PID 1
// that does not fills the process table with zombies), stop its apps on SIGTERM and exit with a
// code that says how they ended.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const h = require('./helpers');

/** How to get a PID namespace here: as root directly, otherwise in a user namespace. */
function unsharePrefix() {
  const tries = [
    ['unshare', '--pid', '--fork', '--mount-proc'],
    ['unshare', '--user', '--map-root-user', '--pid', '--fork', '--mount-proc'],
  ];
  const errors = [];
  for (const prefix of tries) {
    const r = spawnSync(prefix[0], [...prefix.slice(1), 'true'], { encoding: 'utf8' });
    if (r.status === 0) return prefix;
    errors.push(`${prefix.join(' ')}: ${r.error ? r.error.message : `exit ${r.status}: ${r.stderr.trim()}`}`);
  }
  throw new Error(`cannot create a PID namespace for this test (util-linux unshare, and root or user namespaces, are needed):\n${errors.join('\n')}`);
}

/** { pid, ppid, state, comm } of every process. */
function processTable() {
  const table = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    const open = stat.indexOf('(');
    const close = stat.lastIndexOf(')');
    const rest = stat.slice(close + 2).split(' ');
    table.push({ pid: Number(name), comm: stat.slice(open + 1, close), state: rest[0], ppid: Number(rest[1]) });
  }
  return table;
}

test('as PID 1 in a PID namespace, nodeguard reaps adopted orphans and exits 0 on SIGTERM', async (t) => {
  const prefix = unsharePrefix();
  const home = h.makeHome();
  const child = spawn(prefix[0], [...prefix.slice(1), h.BIN, '--home', home, '-m', path.join(h.FIXTURES, 'orphans.js')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ORPHANS: '5', ORPHAN_SECONDS: '2' },
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  t.after(() => {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const waitFor = async (predicate, what, timeout = h.DEFAULT_TIMEOUT_MS) => {
    const start = Date.now();
    for (;;) {
      const value = predicate();
      if (value) return value;
      if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}; output:\n${output}`);
      await h.sleep(20);
    }
  };

  await waitFor(() => /orphaned 5/.test(output), 'the app to leave 5 orphans');
  // unshare's child is nodeguard, PID 1 inside the namespace.
  const nodeguard = await waitFor(() => processTable().find((p) => p.ppid === child.pid), 'nodeguard under unshare');
  const sleepsOf = () => processTable().filter((p) => p.ppid === nodeguard.pid && p.comm === 'sleep');
  const adopted = sleepsOf();
  assert.ok(adopted.length >= 1, 'the orphaned sleeps were not re-parented to nodeguard (PID 1)');
  t.diagnostic(`${adopted.length} orphans adopted by nodeguard (host pid ${nodeguard.pid})`);
  // They exit after 2 s; a PID 1 that does not reap would keep them as zombies ('Z') for good.
  await waitFor(() => sleepsOf().length === 0, 'nodeguard to reap the orphans once they exit (no zombies left)');

  process.kill(nodeguard.pid, 'SIGTERM');
  const exit = await exited;
  assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}; output:\n${output}`);
});

test('as PID 1 in a PID namespace that still shows the host /proc, nodeguard reaps 30 orphans', async (t) => {
  // `unshare --pid --fork` without --mount-proc (as some sandboxes do): /proc is the host's, so its
  // pids and parent pids are not the namespace's. Reaping must not depend on reading it.
  const prefix = unsharePrefix().filter((arg) => arg !== '--mount-proc');
  const home = h.makeHome();
  const child = spawn(prefix[0], [...prefix.slice(1), h.BIN, '--home', home, '-m', path.join(h.FIXTURES, 'orphans.js')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ORPHANS: '30', ORPHAN_SECONDS: '1' },
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let nodeguardPid = null;
  t.after(() => {
    // unshare's death does not end nodeguard: SIGKILL to PID 1 ends its whole namespace.
    for (const pid of [nodeguardPid, child.pid]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    fs.rmSync(home, { recursive: true, force: true });
  });
  const waitFor = async (predicate, what, timeout = h.DEFAULT_TIMEOUT_MS) => {
    const start = Date.now();
    for (;;) {
      const value = predicate();
      if (value) return value;
      if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}; output:\n${output}`);
      await h.sleep(20);
    }
  };

  await waitFor(() => /orphaned 30/.test(output), 'the app to leave 30 orphans');
  const nodeguard = await waitFor(() => processTable().find((p) => p.ppid === child.pid), 'nodeguard under unshare');
  nodeguardPid = nodeguard.pid;
  const sleepsOf = () => processTable().filter((p) => p.ppid === nodeguard.pid && p.comm === 'sleep');
  // They exit after 1 s; a PID 1 that does not reap them keeps them as zombies ('Z') for good.
  try {
    await waitFor(() => sleepsOf().length === 0, 'nodeguard to reap the orphans once they exit');
  } catch (error) {
    const left = sleepsOf();
    throw new Error(`${left.length} orphans left (states ${[...new Set(left.map((p) => p.state))].join(',')}): ${error.message}`);
  }

  process.kill(nodeguard.pid, 'SIGTERM');
  const exit = await exited;
  assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}; output:\n${output}`);
});
