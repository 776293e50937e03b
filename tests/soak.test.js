'use strict';
// The fault soak (bench/soak.js), short: 30 s of random faults under HTTP load, with a fixed seed
// (so the same faults run in the same order every time), then its invariants: no orphans, every
// fault accounted for in the counters, no app log line lost, the daemon's fds and RSS flat. The
// long soak (5 minutes by default) is run by hand: node bench/soak.js.

const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const { soak, summaryText } = require('../bench/soak');

const BIN = path.join(__dirname, '..', 'target', 'release', 'nodeguard');
const SEED = 20261125;

// The reload fault needs `nodeguard reload` (cluster mode). Without it the soak runs without that
// fault, and a todo test says so in the results: it is never left out silently.
const hasReload = spawnSync(BIN, ['reload', '--help'], { stdio: 'ignore' }).status === 0;

test('fault soak, 30 s: no orphans, faults accounted for, no log line lost, fds and RSS flat', { timeout: 180_000 }, async (t) => {
  const result = await soak({ durationMs: 30_000, seed: SEED, reload: hasReload, bin: BIN }, (m) => t.diagnostic(m));
  for (const line of summaryText(result).split('\n')) t.diagnostic(line);
  assert.deepStrictEqual(result.failures, []);
  for (const kind of result.kinds) assert.ok(result.byKind[kind].count >= 1, `no ${kind} fault ran`);
  assert.ok(result.logs.lines > 1000, `only ${result.logs.lines} log lines checked`);
  assert.ok(result.requests.ok > 1000, `only ${result.requests.ok} requests answered`);
});

test('fault soak: the reload fault', { todo: hasReload ? false : 'this nodeguard has no `reload` verb yet (cluster mode): the soak above ran without the reload fault' }, () => {
  assert.ok(hasReload, 'nodeguard reload is missing');
});
