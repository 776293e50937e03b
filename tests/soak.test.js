'use strict';
// The fault soak (bench/soak.js), short: 30 s of random faults under HTTP load, with a fixed seed
// (so the same faults run in the same order every time), then its invariants: no orphans, every
// fault accounted for in the counters, no app log line lost, the daemon's fds and RSS flat. The
// long soak (5 minutes by default) is run by hand: node bench/soak.js.

const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');

const { soak, summaryText } = require('../bench/soak');

const BIN = path.join(__dirname, '..', 'target', 'release', 'nodeguard');
const SEED = 20261125;

test('fault soak, 30 s: no orphans, faults accounted for, no log line lost, fds and RSS flat', { timeout: 180_000 }, async (t) => {
  // Every fault kind runs, the rolling reload included (the app runs as 2 instances on a
  // supervisor-owned port); a nodeguard without `reload` fails here rather than skipping it.
  const result = await soak({ durationMs: 30_000, seed: SEED, reload: true, bin: BIN }, (m) => t.diagnostic(m));
  for (const line of summaryText(result).split('\n')) t.diagnostic(line);
  assert.deepStrictEqual(result.failures, []);
  assert.ok(result.kinds.includes('reload'), `fault kinds: ${result.kinds.join(', ')}`);
  for (const kind of result.kinds) assert.ok(result.byKind[kind].count >= 1, `no ${kind} fault ran`);
  assert.ok(result.logs.lines > 1000, `only ${result.logs.lines} log lines checked`);
  assert.ok(result.requests.ok > 1000, `only ${result.requests.ok} requests answered`);
});
