'use strict';
// Daemon-mode logs: each app's stdout and stderr go to <home>/logs/<name>-out.log and
// <name>-err.log as whole lines and nothing else; `nodeguard logs` prints the last N lines as
// `<name> | <line>`, `--follow` streams, `flush` empties the files.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./helpers');
const burst = require('./fixtures/burst.js');

const fixture = (name) => path.join(h.FIXTURES, name);
const DEFAULT_LOG_LINES = 15;

function logFile(d, name, stream) {
  return path.join(d.home, 'logs', `${name}-${stream}.log`);
}

function readOr(file, fallback = null) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
}

function countNewlines(file) {
  let data;
  try {
    data = fs.readFileSync(file);
  } catch {
    return 0;
  }
  let n = 0;
  for (let at = data.indexOf(10); at !== -1; at = data.indexOf(10, at + 1)) n++;
  return n;
}

/** Lines of `text` (which must end with a newline, or be empty). */
function linesOf(text, what) {
  if (text === '') return [];
  assert.ok(text.endsWith('\n'), `${what} does not end with a newline (a split or partial line)`);
  return text.slice(0, -1).split('\n');
}

/** Compares line arrays and names the first difference, rather than dumping megabytes. */
function assertSameLines(actual, expected, what) {
  const clip = (s) => (s === undefined ? '(none)' : s.length > 120 ? `${JSON.stringify(s.slice(0, 120))}… (${s.length} chars)` : JSON.stringify(s));
  const n = Math.max(actual.length, expected.length);
  for (let i = 0; i < n; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: ${actual.length} lines, want ${expected.length}; first difference at line ${i}:\n` +
        `  got  ${clip(actual[i])}\n  want ${clip(expected[i])}`);
    }
  }
}

const prefixed = (name, lines) => lines.map((l) => `${name} | ${l}`);

test('10,000 lines in a burst reach <name>-out.log whole and in order; logs, --err, --out, flush', async (t) => {
  const d = new h.DaemonHome(t);
  const { out, err } = burst.expected();
  await d.ok(['start', fixture('burst.js'), '--name', 'burst']);
  const outLog = logFile(d, 'burst', 'out');
  const errLog = logFile(d, 'burst', 'err');

  await d.waitFor(() => countNewlines(outLog) >= out.length, {
    what: `${outLog} to hold ${out.length} lines (has ${countNewlines(outLog)})`,
  });
  await d.waitFor(() => countNewlines(errLog) >= err.length, { what: `${errLog} to hold ${err.length} lines` });
  assertSameLines(linesOf(readOr(outLog), outLog), out, outLog);
  assertSameLines(linesOf(readOr(errLog), errLog), err, errLog);

  // --lines 5 --out: exactly the last 5 stdout lines, prefixed.
  const last5 = await d.ok(['logs', 'burst', '--lines', '5', '--out']);
  assertSameLines(linesOf(last5.stdout, 'logs --lines 5 --out'), prefixed('burst', out.slice(-5)), 'logs burst --lines 5 --out');

  // --lines 5, both streams: every line prefixed; the stdout part is the last 5 stdout lines.
  const both = linesOf((await d.ok(['logs', 'burst', '--lines', '5'])).stdout, 'logs --lines 5');
  for (const l of both) assert.ok(l.startsWith('burst | '), `logs --lines 5: line without the prefix: ${l.slice(0, 120)}`);
  const outPart = both.filter((l) => l.startsWith('burst | out '));
  assertSameLines(outPart, prefixed('burst', out.slice(-5)), 'stdout lines of logs burst --lines 5');
  assert.ok(both.length <= 10, `logs --lines 5 printed ${both.length} lines`);

  // Default count, and no target (every app).
  const dflt = linesOf((await d.ok(['logs', '--out'])).stdout, 'logs --out');
  assertSameLines(dflt, prefixed('burst', out.slice(-DEFAULT_LOG_LINES)), `logs --out (default ${DEFAULT_LOG_LINES} lines)`);

  // --err: only stderr lines (there are fewer than asked for).
  const errOnly = linesOf((await d.ok(['logs', 'burst', '--err', '--lines', '100'])).stdout, 'logs --err');
  assertSameLines(errOnly, prefixed('burst', err), 'logs burst --err --lines 100');

  // flush empties both files; logs then prints no lines; the app's next line starts the file afresh.
  await d.ok(['flush', 'burst']);
  for (const file of [outLog, errLog]) {
    const size = fs.existsSync(file) ? fs.statSync(file).size : 0;
    assert.equal(size, 0, `${file} holds ${size} bytes after flush`);
  }
  const empty = await d.ok(['logs', 'burst']);
  assert.equal(empty.stdout, '', `logs after flush printed: ${empty.stdout.slice(0, 300)}`);

  const pid = (await d.byName()).burst.pid;
  process.kill(pid, 'SIGUSR2');
  await d.waitFor(() => countNewlines(outLog) >= 1, { what: 'the line written after flush to reach the log' });
  const afterFlush = fs.readFileSync(outLog);
  assert.equal(afterFlush.includes(0), false, `${outLog} has NUL bytes after flush (written at the old offset): ${afterFlush.length} bytes`);
  assert.equal(afterFlush.toString('utf8'), 'after flush 0\n');
});

test('logs --follow streams new lines as they are written', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('burst.js'), '--name', 'burst']);
  const { out } = burst.expected();
  await d.waitFor(() => countNewlines(logFile(d, 'burst', 'out')) >= out.length, { what: 'the burst to be logged' });

  const follower = spawn(h.BIN, ['logs', 'burst', '--out', '--lines', '1', '--follow'], {
    env: { ...process.env, ...d.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => follower.kill('SIGKILL'));
  let seen = '';
  let errText = '';
  follower.stdout.setEncoding('utf8').on('data', (c) => (seen += c));
  follower.stderr.setEncoding('utf8').on('data', (c) => (errText += c));
  const exited = new Promise((resolve) => follower.on('exit', (code, signal) => resolve({ code, signal })));
  let exit = null;
  exited.then((e) => (exit = e));

  await d.waitFor(() => exit || seen.includes(`burst | ${out.at(-1)}\n`), { what: `logs --follow to print the last line (stderr ${errText})` });
  assert.equal(exit, null, `logs --follow exited (${JSON.stringify(exit)}) instead of following; stderr ${errText}`);

  const pid = (await d.byName()).burst.pid;
  for (let i = 0; i < 3; i++) {
    process.kill(pid, 'SIGUSR2');
    await d.waitFor(() => exit || seen.includes(`burst | after flush ${i}\n`), { what: `logs --follow to stream "after flush ${i}"` });
  }
  assertSameLines(linesOf(seen, 'logs --follow output'), prefixed('burst', [out.at(-1), 'after flush 0', 'after flush 1', 'after flush 2']), 'logs --follow output');
});

test('a partial last line reaches the log when the app exits; restarts append', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', fixture('partial.js')]);
  await d.ok(['start', fixture('idle.js')]);
  const outLog = logFile(d, 'partial', 'out');
  await d.waitFor(() => countNewlines(outLog) >= 1, { what: 'partial\'s first line to be logged' });
  await d.ok(['stop', 'partial']);
  await d.waitFor(() => (readOr(outLog, '') || '').includes('partial last line'), { what: 'the partial line to be logged after the app stopped' });
  assert.equal(readOr(outLog), 'first line\npartial last line\n');

  // A restart appends to the same files.
  const idleLog = logFile(d, 'idle', 'out');
  await d.waitFor(() => countNewlines(idleLog) >= 1, { what: 'idle\'s line to be logged' });
  await d.ok(['restart', 'idle']);
  await d.waitFor(() => countNewlines(idleLog) >= 2, { what: 'idle\'s second run to be logged' });
  const idleLines = linesOf(readOr(idleLog), idleLog);
  assert.equal(idleLines.length, 2, `idle-out.log: ${JSON.stringify(idleLines)}`);
  for (const l of idleLines) assert.match(l, /^idle pid=\d+ args=\[\]$/);
  assert.match(readOr(logFile(d, 'idle', 'err'), ''), /^idle stderr pid=\d+\n/);

  // logs with no target prints every app, each line with its own name.
  const all = linesOf((await d.ok(['logs', '--lines', '50'])).stdout, 'logs --lines 50');
  assert.ok(all.includes('partial | partial last line'), `logs: ${JSON.stringify(all)}`);
  assert.ok(all.some((l) => /^idle \| idle pid=\d+/.test(l)), `logs: ${JSON.stringify(all)}`);
  for (const l of all) assert.match(l, /^(partial|idle) \| /);

  const unknown = await d.cli(['logs', 'nope']);
  assert.equal(unknown.code, 1, `logs nope: exit ${unknown.code}, ${unknown.stderr}`);
});
