'use strict';
// The module-graph check (scripts/check-layers.js) on the real source tree, and on small trees that
// break each rule, so the check itself is known to fail when it should.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const SCRIPT = path.join(__dirname, '..', 'scripts', 'check-layers.js');

function check(dir) {
  return spawnSync(process.execPath, [SCRIPT, ...(dir ? [dir] : [])], { encoding: 'utf8' });
}

/** Writes `files` (relative path → text) into a fresh temporary source tree. */
function tree(t, files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-layers-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

test('the real source tree has no cycle and keeps the layer order', () => {
  const run = check();
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /no cycle, layers in order/);
});

test('a cycle between two modules of one layer fails the check', (t) => {
  const dir = tree(t, {
    'lib.rs': 'pub mod io;\n',
    'io/mod.rs': 'pub mod a;\npub mod b;\n',
    'io/a.rs': 'use crate::io::b::B;\npub struct A;\n',
    'io/b.rs': 'use crate::io::{a::A, self};\npub struct B;\n',
  });
  const run = check(dir);
  assert.equal(run.status, 1);
  assert.match(run.stderr, /cycle between modules: \{io::a, io::b\}/);
});

test('an import against the layer order fails; io may use supervisor::api alone', (t) => {
  const dir = tree(t, {
    'lib.rs': 'pub mod core;\npub mod io;\npub mod supervisor;\n',
    'core/mod.rs': 'use crate::io::x;\n',
    'io/mod.rs': 'pub mod x;\n',
    'io/x.rs': 'use crate::supervisor::api::Inbox;\nfn f() { crate::supervisor::actor::run(); }\n',
    'supervisor/mod.rs': 'pub mod actor;\npub mod api;\n',
    'supervisor/api.rs': 'pub struct Inbox;\n',
    'supervisor/actor.rs': 'pub fn run() {}\n',
  });
  const run = check(dir);
  assert.equal(run.status, 1);
  const lines = run.stderr.trim().split('\n');
  assert.ok(lines.some((l) => /core \(layer core\) uses io::x \(layer io\)/.test(l)), run.stderr);
  assert.ok(lines.some((l) => /io::x \(layer io\) uses supervisor::actor/.test(l)), run.stderr);
  assert.ok(!lines.some((l) => /supervisor::api/.test(l)), run.stderr);
});

test('test code may reach anywhere: inline test modules and tests/ files are not counted', (t) => {
  const dir = tree(t, {
    'lib.rs': 'pub mod core;\npub mod cli;\n',
    'core/mod.rs':
      '#[cfg(test)]\nmod tests;\npub fn pure() {}\n#[cfg(test)]\nmod inline {\n    use crate::cli::run;\n}\n',
    'core/tests/mod.rs': 'use crate::cli::run;\n',
    'cli/mod.rs': 'pub fn run() { crate::core::pure(); }\n',
  });
  const run = check(dir);
  assert.equal(run.status, 0, run.stderr);
});
