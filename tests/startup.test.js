'use strict';
// `nodeguard startup systemd [--install]`: the user unit's content (a notify service running the
// daemon in the foreground with --resurrect, a watchdog, restart on failure, this binary and this
// home), and where --install writes it. systemctl itself is never run here.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

/** The unit's [Section] -> { key: [values] } (comments and blank lines dropped). */
function parseUnit(text) {
  const sections = {};
  let current = null;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const section = /^\[(\w+)\]$/.exec(line);
    if (section) {
      current = sections[section[1]] = {};
      continue;
    }
    const at = line.indexOf('=');
    assert.ok(current && at > 0, `not a unit line: ${line}`);
    const key = line.slice(0, at);
    (current[key] ||= []).push(line.slice(at + 1));
  }
  return sections;
}

test('startup systemd prints a notify unit that resurrects the saved apps of this home', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'idle.js', '--name', 'api']);
  await d.ok(['start', 'idle.js', '--name', 'jobs']);

  const result = await d.ok(['startup', 'systemd', '--http', '127.0.0.1:9615']);
  const unit = parseUnit(result.stdout);
  const bin = fs.realpathSync(h.BIN);
  assert.deepEqual(unit.Service.Type, ['notify']);
  assert.deepEqual(unit.Service.NotifyAccess, ['main']);
  assert.deepEqual(unit.Service.ExecStart, [`${bin} daemon --resurrect --home ${d.home} --http 127.0.0.1:9615`]);
  assert.deepEqual(unit.Service.Restart, ['on-failure']);
  assert.deepEqual(unit.Service.WatchdogSec, ['30s']);
  assert.deepEqual(unit.Service.KillMode, ['mixed']);
  assert.deepEqual(unit.Service.Environment, [`PATH=${process.env.PATH}`]);
  assert.deepEqual(unit.Install.WantedBy, ['default.target']);
  assert.match(result.stdout, new RegExp(`^# Brings back the 2 app\\(s\\) saved in ${d.home}/dump\\.json: api, jobs\\.$`, 'm'));

  // Without --http the daemon serves no HTTP.
  const plain = parseUnit((await d.ok(['startup', 'systemd'])).stdout);
  assert.deepEqual(plain.Service.ExecStart, [`${bin} daemon --resurrect --home ${d.home}`]);
});

test('startup systemd --install writes the unit under the user config dir and says what to run', async (t) => {
  const fakeHome = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-user-'));
  t.after(() => fs.rmSync(fakeHome, { recursive: true, force: true }));
  const home = path.join(fakeHome, '.nodeguard');
  const env = { HOME: fakeHome, XDG_CONFIG_HOME: '', NODEGUARD_HOME: '' };

  const printed = await h.run(['startup', 'systemd'], { env });
  assert.equal(printed.code, 0, printed.stderr);
  assert.match(printed.stdout, /^# No apps are saved in .*\.nodeguard\/dump\.json yet/m);
  assert.match(printed.stdout, new RegExp(`^ExecStart=.* daemon --resurrect --home ${home}$`, 'm'));

  const installed = await h.run(['startup', 'systemd', '--install'], { env });
  assert.equal(installed.code, 0, installed.stderr);
  const file = path.join(fakeHome, '.config', 'systemd', 'user', 'nodeguard.service');
  assert.equal(fs.readFileSync(file, 'utf8'), printed.stdout);
  assert.match(installed.stdout, new RegExp(`^wrote ${file}$`, 'm'));
  assert.match(installed.stdout, /systemctl --user daemon-reload && systemctl --user enable --now nodeguard\.service/);
  assert.match(installed.stdout, /loginctl enable-linger/);

  // XDG_CONFIG_HOME wins when set.
  const xdg = path.join(fakeHome, 'xdg');
  const again = await h.run(['startup', 'systemd', '--install'], { env: { ...env, XDG_CONFIG_HOME: xdg } });
  assert.equal(again.code, 0, again.stderr);
  assert.ok(fs.existsSync(path.join(xdg, 'systemd', 'user', 'nodeguard.service')));
});

test('startup refuses an init system it does not know, in one line', async () => {
  const result = await h.run(['startup', 'upstart', '--home', h.makeHome()]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /^nodeguard: error: invalid value 'upstart' .*systemd/);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
});

test('startup systemd refuses a home whose path holds a newline: no unit line can be injected', async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-inject-'));
  t.after(() => fs.rmSync(base, { recursive: true, force: true }));
  const home = path.join(base, 'home\nExecStartPre=/bin/touch /tmp/nodeguard-injected\n#');
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  const env = { HOME: base, XDG_CONFIG_HOME: '', NODEGUARD_HOME: '' };
  for (const args of [['startup', 'systemd', '--home', home], ['startup', 'systemd', '--install', '--home', home]]) {
    const result = await h.run(args, { env });
    assert.equal(result.code, 2, `nodeguard ${JSON.stringify(args)} exited ${result.code}; stdout: ${result.stdout}`);
    assert.doesNotMatch(result.stdout, /ExecStartPre/, 'an injected line was printed');
    const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
    assert.equal(lines.length, 1, `want one stderr line, got:\n${result.stderr}`);
    assert.match(lines[0], /home path .* holds a control character/);
  }
  assert.ok(!fs.existsSync(path.join(base, '.config', 'systemd', 'user', 'nodeguard.service')), 'a unit was installed');
});
