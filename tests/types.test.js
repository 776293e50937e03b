'use strict';
// index.d.ts against the JS API: `tsc --noEmit -p tests/types` type-checks tests/types/usage.ts, a
// TypeScript app using every export (typescript is a devDependency: `npm install` first), and
// every export of index.js must be declared in index.d.ts and used in usage.ts.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const TYPES = path.join(__dirname, 'types');
const TSC_TIMEOUT_MS = 120_000;

/** The tsc script of the typescript devDependency (found through its package.json `bin`). */
function resolveTsc() {
  let manifest;
  try {
    manifest = require.resolve('typescript/package.json', { paths: [ROOT] });
  } catch {
    throw new Error('typescript is not installed: run "npm install" at the repo root (it is a devDependency)');
  }
  const { bin } = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  return path.join(path.dirname(manifest), typeof bin === 'string' ? bin : bin.tsc);
}

test('tsc --noEmit accepts tests/types/usage.ts against index.d.ts', async () => {
  const tsc = resolveTsc();
  const result = await new Promise((resolve) => {
    execFile(
      process.execPath,
      [tsc, '--noEmit', '--pretty', 'false', '-p', TYPES],
      { cwd: ROOT, timeout: TSC_TIMEOUT_MS, encoding: 'utf8' },
      (error, stdout, stderr) => resolve({ error, stdout, stderr }),
    );
  });
  assert.equal(
    result.error,
    null,
    `tsc failed (${result.error && (result.error.signal || `exit ${result.error.code}`)}):\n${result.stdout}${result.stderr}`,
  );
});

test('every export of index.js is declared in index.d.ts and used in usage.ts', () => {
  const exported = Object.keys(require('../index.js')).filter((name) => !name.startsWith('_'));
  assert.ok(exported.length > 0, 'index.js exports nothing');
  const declarations = fs.readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8');
  const usage = fs.readFileSync(path.join(TYPES, 'usage.ts'), 'utf8');
  const word = (name) => new RegExp(`\\b${name}\\b`);
  const undeclared = exported.filter((name) => !new RegExp(`export\\s+declare\\s+\\w+\\s+${name}\\b`).test(declarations));
  assert.deepEqual(undeclared, [], `exported by index.js but not declared in index.d.ts: ${undeclared.join(', ')}`);
  const unused = exported.filter((name) => !word(name).test(usage));
  assert.deepEqual(unused, [], `exported by index.js but not used in tests/types/usage.ts: ${unused.join(', ')}`);
});
