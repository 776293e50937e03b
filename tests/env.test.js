'use strict';
// What environment an app sees, against real daemons and real node apps (read from
// /proc/<pid>/environ, or printed by the app itself): the caller's environment of `start` (not the
// daemon's), saved in dump.json and given back by `resurrect` and `daemon --resurrect`; the one
// order of precedence (caller < env_file < env < env_<name> < --env-file); `restart|reload
// --update-env`; `nodeguard env` with secrets masked; --env-file in foreground mode.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const IDLE = path.join(h.FIXTURES, 'idle.js');

function scratch(t, files = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-env-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

async function running(d, name) {
  return d.waitForStatus((apps) => {
    const app = apps.find((a) => a.name === name);
    return app && app.state === 'running' && app.pid ? app : null;
  }, { what: `${name} running` });
}

function savedApp(d, name) {
  const dump = JSON.parse(fs.readFileSync(path.join(d.home, 'dump.json'), 'utf8'));
  const app = dump.apps.find((a) => a.definition.name === name);
  assert.ok(app, `${name} is not in dump.json`);
  return app.definition;
}

const savedVar = (definition, name) => (definition.caller_env || []).find(([k]) => k === name)?.[1];

test('start gives the app its caller\'s environment, not the daemon\'s; dump.json keeps it for resurrect and daemon --resurrect', async (t) => {
  const d = new h.DaemonHome(t);
  // The first start launches the daemon with this environment.
  await d.ok(['start', IDLE, '--name', 'first'], { env: { FOO: 'first', NODE_ENV: 'production', ONLY_FIRST: '1' } });
  // The second, with the daemon already running, from a caller with other values and some
  // variables that belong to the caller alone.
  const other = scratch(t);
  await d.ok(['start', IDLE, '--name', 'second'], {
    cwd: other,
    env: { FOO: 'second', NODE_ENV: 'staging', _: '/usr/bin/env', OLDPWD: '/nowhere', NODE_CHANNEL_FD: '99', NODEGUARD_LISTEN: '3:3000' },
  });
  const apps = await d.byName();
  const first = h.procEnv(apps.first.pid);
  const second = h.procEnv(apps.second.pid);
  assert.equal(first.FOO, 'first');
  assert.equal(first.NODE_ENV, 'production');
  assert.equal(second.FOO, 'second', 'the second start\'s FOO, not the daemon\'s');
  assert.equal(second.NODE_ENV, 'staging');
  assert.equal(second.ONLY_FIRST, undefined, 'the daemon\'s own environment does not reach apps started later');
  for (const name of ['_', 'OLDPWD', 'NODE_CHANNEL_FD', 'NODEGUARD_LISTEN']) {
    assert.equal(second[name], undefined, `${name} of the caller is not passed`);
  }
  assert.equal(second.PWD, other, 'PWD is the app\'s working directory');
  assert.equal(second.PATH, process.env.PATH, 'the rest of the caller\'s environment is passed');
  assert.ok(second.NODEGUARD_TOKEN, 'the monitor\'s own variables are still set');

  assert.equal(savedVar(savedApp(d, 'second'), 'FOO'), 'second', 'dump.json saves the caller\'s environment');

  // resurrect from a shell with yet other values: each app gets what it was started with.
  await d.ok(['kill']);
  await d.ok(['resurrect'], { env: { FOO: 'third', NODE_ENV: 'development' } });
  let after = await d.byName();
  assert.equal(h.procEnv(after.first.pid).FOO, 'first');
  assert.equal(h.procEnv(after.second.pid).FOO, 'second');
  assert.equal(h.procEnv(after.second.pid).NODE_ENV, 'staging');
  assert.equal(h.procEnv(after.second.pid).ONLY_FIRST, undefined);

  // At boot: `daemon --resurrect` under a service manager's bare environment.
  await d.ok(['kill']);
  const daemon = spawn(h.BIN, ['daemon', '--resurrect'], {
    env: { PATH: process.env.PATH, ...d.env, FOO: 'boot' },
    stdio: 'ignore',
    detached: true,
  });
  t.after(() => { try { process.kill(daemon.pid, 'SIGKILL'); } catch {} });
  await running(d, 'first');
  after = await running(d, 'second').then(() => d.byName());
  assert.equal(h.procEnv(after.first.pid).FOO, 'first');
  assert.equal(h.procEnv(after.second.pid).FOO, 'second');
  assert.equal(h.procEnv(after.second.pid).NODE_ENV, 'staging');
  await d.ok(['kill']);
});

test('precedence: caller < env_file < env < env_<name> (--env) < --env-file, one variable per level', async (t) => {
  const d = new h.DaemonHome(t);
  // L<n> is set at every level up to the n-th: the n-th must win.
  const dir = scratch(t, {
    'file.env': 'L2=env_file\nL3=env_file\nL4=env_file\nL5=env_file\n',
    'cli.env': 'L5=--env-file\n',
    'ecosystem.config.json': JSON.stringify({
      apps: [{
        name: 'levels', script: IDLE, env_file: 'file.env',
        env: { L3: 'env', L4: 'env', L5: 'env' },
        env_production: { L4: 'env_production', L5: 'env_production' },
        env_staging: { L4: 'env_staging' },
      }],
    }),
  });
  const caller = { L1: 'caller', L2: 'caller', L3: 'caller', L4: 'caller', L5: 'caller' };
  const started = await d.ok(['start', 'ecosystem.config.json', '--env', 'production', '--env-file', 'cli.env'], { cwd: dir, env: caller });
  assert.doesNotMatch(started.stderr, /env_production|warn/, `env_<name> blocks draw no warning: ${started.stderr}`);
  const env = h.procEnv((await d.byName()).levels.pid);
  assert.deepEqual(
    ['L1', 'L2', 'L3', 'L4', 'L5'].map((name) => `${name}=${env[name]}`),
    ['L1=caller', 'L2=env_file', 'L3=env', 'L4=env_production', 'L5=--env-file'],
  );

  // Without --env the blocks are not used.
  await d.ok(['delete', 'levels']);
  await d.ok(['start', 'ecosystem.config.json'], { cwd: dir, env: caller });
  assert.equal(h.procEnv((await d.byName()).levels.pid).L4, 'env');

  // A block no app has is a typo: refused, naming the blocks there are.
  await d.ok(['delete', 'levels']);
  const typo = await d.cli(['start', 'ecosystem.config.json', '--env', 'prod'], { cwd: dir });
  assert.equal(typo.code, 2, typo.stderr);
  assert.match(typo.stderr, /--env prod: no app in .* has an env_prod block \(blocks there: env_production, env_staging\)/);
  const script = await d.cli(['start', IDLE, '--env', 'production'], { cwd: dir });
  assert.equal(script.code, 2, script.stderr);
  assert.match(script.stderr, /chooses the env_production block of a config file/);
  const missing = await d.cli(['start', IDLE, '--env-file', 'nope.env'], { cwd: dir });
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /^nodeguard: error: cannot read env file .*nope\.env/);
  assert.equal(missing.stderr.trim().split('\n').length, 1, missing.stderr);
});

test('restart --update-env takes the caller\'s environment now, keeps the app\'s own env over it, and says what changed', async (t) => {
  const d = new h.DaemonHome(t);
  const dir = scratch(t, { 'app.env': 'PINNED=from-file\n' });
  await d.ok(['start', IDLE, '--name', 'api', '--env-file', 'app.env'], {
    cwd: dir,
    env: { FOO: 'one', GONE: 'soon', API_TOKEN: 'tok-old-123', PINNED: 'shell' },
  });
  const before = await d.byName();

  // Without --update-env a restart keeps the environment the app was started with.
  await d.ok(['restart', 'api'], { env: { FOO: 'ignored' } });
  let app = (await d.byName()).api;
  assert.notEqual(app.pid, before.api.pid);
  assert.equal(h.procEnv(app.pid).FOO, 'one');

  const env = { ...process.env, ...d.env, FOO: 'two', NEW: 'x', API_TOKEN: 'tok-new-456', PINNED: 'shell-2' };
  delete env.GONE;
  const updated = await h.run(['restart', 'api', '--update-env'], { env, cwd: dir });
  assert.equal(updated.code, 0, updated.stderr);
  const lines = updated.stdout.split('\n');
  for (const line of ['api: FOO changed (one -> two)', 'api: NEW added (x)', 'api: GONE removed', 'api: API_TOKEN changed (values hidden)']) {
    assert.ok(lines.includes(line), `no line "${line}" in:\n${updated.stdout}`);
  }
  assert.ok(lines.some((l) => l.startsWith('api: PINNED is set by the app\'s own env')), updated.stdout);
  assert.doesNotMatch(updated.stdout, /tok-(old|new)/, 'secret values are not printed');
  app = (await d.byName()).api;
  const seen = h.procEnv(app.pid);
  assert.equal(seen.FOO, 'two');
  assert.equal(seen.NEW, 'x');
  assert.equal(seen.GONE, undefined);
  assert.equal(seen.API_TOKEN, 'tok-new-456');
  assert.equal(seen.PINNED, 'from-file', '--env-file still wins over the caller');
  assert.equal(savedVar(savedApp(d, 'api'), 'FOO'), 'two', 'the update is saved for resurrect');

  // reload --update-env too; the same environment again changes nothing.
  const reloaded = await h.run(['reload', 'api', '--update-env'], { env: { ...env, FOO: 'three' }, cwd: dir });
  assert.equal(reloaded.code, 0, reloaded.stderr);
  assert.match(reloaded.stdout, /^api: FOO changed \(two -> three\)$/m);
  assert.equal(h.procEnv((await running(d, 'api')).pid).FOO, 'three');
  const same = await h.run(['restart', 'api', '--update-env'], { env: { ...env, FOO: 'three' }, cwd: dir });
  assert.match(same.stdout, /^api: environment unchanged$/m, same.stdout);
});

test('PM2\'s filter_env: prefixes of the caller\'s variables, or true for the system basics only, at start and at --update-env', async (t) => {
  const d = new h.DaemonHome(t);
  const dir = scratch(t, {
    'ecosystem.config.json': JSON.stringify({
      apps: [
        { name: 'prefixes', script: IDLE, filter_env: ['AWS_', 'npm_'] },
        { name: 'basics', script: IDLE, filter_env: true, env: { KEEP: '1' } },
      ],
    }),
  });
  const started = await d.ok(['start', 'ecosystem.config.json'], { cwd: dir, env: { AWS_SECRET: 'a', npm_config_x: 'y', NODE_ENV: 'dev', LC_ALL: 'C' } });
  assert.doesNotMatch(started.stderr, /filter_env/, started.stderr);
  let apps = await d.byName();
  let prefixes = h.procEnv(apps.prefixes.pid);
  let basics = h.procEnv(apps.basics.pid);
  assert.equal(prefixes.AWS_SECRET, undefined);
  assert.equal(prefixes.npm_config_x, undefined);
  assert.equal(prefixes.NODE_ENV, 'dev');
  assert.equal(basics.NODE_ENV, undefined, 'filter_env: true passes no other variable of the caller');
  assert.equal(basics.PATH, process.env.PATH);
  assert.equal(basics.LC_ALL, 'C');
  assert.equal(basics.KEEP, '1', 'the app\'s own env is not filtered');
  assert.ok(basics.NODEGUARD_TOKEN, 'nor are the monitor\'s variables');

  await d.ok(['restart', 'all', '--update-env'], { cwd: dir, env: { AWS_SECRET: 'b', NODE_ENV: 'prod' } });
  apps = await d.byName();
  prefixes = h.procEnv(apps.prefixes.pid);
  basics = h.procEnv(apps.basics.pid);
  assert.equal(prefixes.AWS_SECRET, undefined, 'the filter holds at --update-env');
  assert.equal(prefixes.NODE_ENV, 'prod');
  assert.equal(basics.NODE_ENV, undefined);

  const bad = scratch(t, { 'c.json': JSON.stringify({ apps: [{ name: 'x', script: IDLE, filter_env: 3 }] }) });
  const refused = await d.cli(['start', 'c.json'], { cwd: bad });
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /filter_env: expected true, false, a prefix or a list of prefixes/);
});

test('nodeguard env shows what an app was started with, secrets masked unless --reveal', async (t) => {
  const d = new h.DaemonHome(t);
  await d.ok(['start', IDLE, '--name', 'web'], {
    env: { PLAIN: 'visible', API_TOKEN: 'tok-secret-789', DATABASE_URL: 'postgres://app:hunter2@db:5432/app', DB_PASSWORD: 'pw-42' },
  });
  const shown = await d.ok(['env', 'web']);
  const lines = shown.stdout.split('\n');
  for (const line of ['PLAIN=visible', 'API_TOKEN=****', 'DATABASE_URL=postgres://app:****@db:5432/app', 'DB_PASSWORD=****']) {
    assert.ok(lines.includes(line), `no line "${line}" in:\n${shown.stdout}`);
  }
  assert.doesNotMatch(shown.stdout, /tok-secret|hunter2|pw-42/);
  const sorted = lines.filter(Boolean).map((l) => l.split('=')[0]);
  assert.deepEqual(sorted, [...sorted].sort(), 'sorted by name');
  for (const flag of ['--reveal', '--show-secrets']) {
    const revealed = await d.ok(['env', 'web', flag]);
    assert.match(revealed.stdout, /^API_TOKEN=tok-secret-789$/m, flag);
    assert.match(revealed.stdout, /^DATABASE_URL=postgres:\/\/app:hunter2@db:5432\/app$/m, flag);
  }
  const describe = await d.ok(['describe', 'web', '--json']);
  assert.doesNotMatch(describe.stdout, /tok-secret|hunter2|pw-42/, 'describe --json masks them too');
  const none = await d.cli(['env', 'nope']);
  assert.equal(none.code, 1, none.stderr);
  assert.match(none.stderr, /no app named, numbered or in a namespace 'nope'/);
});

test('foreground mode: --env-file gives every app the file\'s variables over the process environment', async (t) => {
  const dir = scratch(t, {
    'print.js': "console.log(`FROM_FILE=${process.env.FROM_FILE} FROM_SHELL=${process.env.FROM_SHELL}`);\n",
    'vars.env': '# dotenv\nexport FROM_FILE="file value"\n',
  });
  const home = h.makeHome();
  t.after(() => fs.rmSync(home, { recursive: true, force: true }));
  const result = await h.run(['--home', home, '--autorestart', 'never', '--env-file', 'vars.env', '-m', 'print.js'], {
    cwd: dir,
    env: { FROM_FILE: 'shell', FROM_SHELL: 'shell' },
  });
  assert.equal(result.code, 0, `exit ${result.code}: ${result.stderr}`);
  assert.match(result.stdout, /FROM_FILE=file value FROM_SHELL=shell/);
});
