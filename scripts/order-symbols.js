#!/usr/bin/env node
'use strict';
// Regenerates crates/nodeguard/link/supervisor.order: the functions a running supervisor executes,
// which crates/nodeguard/build.rs has the linker place together at the start of .text (see there
// for why: the kernel maps a binary's pages 64 KiB around each fault, so scattered code made the
// whole binary resident in every supervisor).
//
//   node scripts/order-symbols.js [--keep DIR] [--built BINARY MAP]
//
// --built: trace this shipped binary with the link map of its build instead of building one (the
// map from `NODEGUARD_LINK_MAP=MAP node scripts/build.js`).
//
// Needs valgrind (callgrind) and curl. Steps:
//  1. builds the shipped binary (fat LTO, the [profile.release] in Cargo.toml) into
//     target/order/, with lld's link map (which function lies at which address);
//  2. runs it under callgrind doing what a supervisor does: a daemon with two idle apps (start,
//     status, status --json, ping, restart, stop, start, logs, describe, heartbeats, kill), and a
//     foreground supervisor of an HTTP server and an idle app with the monitor preloaded (a crash
//     and its restart, heartbeats, SIGTERM);
//  3. writes every function callgrind saw run in the nodeguard binary, by address, as symbol names.
// Code not listed (the CLI's verbs, `monit`, config files, the dashboard...) still works: it only
// lies further on, and costs a supervisor pages only once it is used.
//
// Run it after large changes to the supervisor's code, and after a Rust or dependency upgrade (the
// names carry hashes of the toolchain and of each crate's version); a stale list only loses some
// of the gain (lld skips names that no longer exist), never correctness. Do not export the fast-build CARGO_PROFILE_RELEASE_*
// variables: the names must be those of the shipped build.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { script, callgrindArgs, textSections, executedAddresses, sectionAt } = require('./lib/symbol-order.js');

const root = path.resolve(__dirname, '..');
const orderFile = path.join(root, 'crates', 'nodeguard', 'link', 'supervisor.order');
const { fail, run, until, sleep, work, done: cleanUp } = script('order-symbols', {
  tools: ['valgrind', 'curl'],
  tmpPrefix: 'ngorder-',
  pollMs: 300,
  waitMs: 60_000,
});

// 1. The shipped build, with its link map.
const builtAt = process.argv.indexOf('--built');
let mapFile = path.join(work, 'nodeguard.map');
let built;
if (builtAt > 0) {
  built = path.resolve(process.argv[builtAt + 1] ?? fail('--built BINARY MAP'));
  mapFile = path.resolve(process.argv[builtAt + 2] ?? fail('--built BINARY MAP'));
} else {
  const targetDir = path.join(root, 'target', 'order');
  // build.rs asks the linker for the map (NODEGUARD_LINK_MAP): same flags, same symbol names.
  // The whole workspace, as scripts/build.js builds it: features unify across its crates, and a
  // dependency built with other features has other symbol names.
  run('cargo', ['build', '--release', '--workspace'], {
    cwd: root,
    env: { ...process.env, CARGO_TARGET_DIR: targetDir, NODEGUARD_LINK_MAP: mapFile },
  });
  built = path.join(targetDir, 'release', 'nodeguard');
}
const bin = path.join(work, 'nodeguard');
fs.copyFileSync(built, bin);
fs.chmodSync(bin, 0o755);

// 2. The supervisor's work under callgrind.
const apps = path.join(root, 'bench', 'apps');
const preload = path.join(root, 'preload.js');

function cli(home, args) {
  return spawnSync(bin, args, { env: { ...process.env, NODEGUARD_HOME: home, NODEGUARD_PRELOAD: preload }, encoding: 'utf8', timeout: 120_000 });
}

function exited(child) {
  return new Promise((resolve) => child.on('exit', resolve));
}

async function traceDaemon() {
  const home = fs.mkdtempSync(path.join(work, 'd'));
  const config = path.join(home, 'apps.json');
  const idle = path.join(apps, 'idle.js');
  fs.writeFileSync(config, JSON.stringify({ apps: [{ name: 'a', script: idle }, { name: 'b', script: idle }] }));
  const daemon = spawn('valgrind', [...callgrindArgs(path.join(work, 'cg.daemon')), bin, 'daemon'], {
    env: { ...process.env, NODEGUARD_HOME: home, NODEGUARD_PRELOAD: preload },
    stdio: 'ignore',
  });
  const done = exited(daemon);
  await until('the daemon under valgrind', () => cli(home, ['ping']).status === 0);
  for (const args of [['start', config], ['status'], ['status', '--json'], ['ping'], ['restart', 'a']]) cli(home, args);
  await sleep(3000);
  for (const args of [['stop', 'b'], ['start', 'b'], ['logs', 'a', '--lines', '3'], ['describe', 'a'], ['status']]) cli(home, args);
  await sleep(8000);
  cli(home, ['kill']);
  await done;
}

async function traceForeground() {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const args = ['--preload', preload, '-m', path.join(apps, 'server.js'), '-m', path.join(apps, 'idle.js'), '--', '--port', String(port)];
  const child = spawn('valgrind', [...callgrindArgs(path.join(work, 'cg.fg')), bin, ...args], { stdio: 'ignore' });
  const done = exited(child);
  const serving = () => spawnSync('curl', ['-sf', `http://127.0.0.1:${port}/`], { stdio: 'ignore' }).status === 0;
  await until('the server under the supervisor', serving);
  await sleep(4000);
  spawnSync('curl', ['-s', `http://127.0.0.1:${port}/crash`], { stdio: 'ignore' });
  await sleep(1000);
  await until('the server after its crash', serving);
  await sleep(6000);
  child.kill('SIGTERM');
  await done;
}

// 3. Addresses seen -> the .text input sections of the map -> their symbols.

(async () => {
  await traceDaemon();
  await traceForeground();
  const sections = textSections(mapFile);
  if (sections.length === 0) fail(`no .text input sections in ${mapFile}`);
  const lo = sections[0].vma;
  const hi = sections[sections.length - 1].vma + sections[sections.length - 1].size;
  const daemonSeen = [...executedAddresses(path.join(work, 'cg.daemon'), path.basename(bin))];
  const foregroundSeen = [...executedAddresses(path.join(work, 'cg.fg'), path.basename(bin))];
  // valgrind loads a position-independent executable at 0x108000.
  const all = [...daemonSeen, ...foregroundSeen];
  const inside = (base) => all.filter((a) => a - base >= lo && a - base < hi).length;
  const base = inside(0x108000) >= inside(0) ? 0x108000 : 0;
  const sectionsOf = (addresses) => {
    const found = new Set();
    for (const address of addresses) {
      const i = sectionAt(sections, address - base);
      if (i >= 0) found.add(i);
    }
    return [...found].sort((a, b) => a - b);
  };
  // The daemon's functions first, then those only foreground mode runs (clap's parsing of its
  // flags among them: the daemon reads its command line without clap, see cli/daemon.rs), so a
  // daemon maps only the first part.
  const isClap = (i) => sections[i].name?.includes('clap') ?? false;
  const daemonPart = sectionsOf(daemonSeen).filter((i) => !isClap(i));
  const listed = new Set(daemonPart);
  const used = [...daemonPart, ...sectionsOf(foregroundSeen).filter((i) => !listed.has(i))];
  const names = used.map((i) => sections[i].name).filter(Boolean);
  if (names.length < 100) fail(`only ${names.length} functions seen: did the traced runs work?`);
  const size = (list) => list.reduce((sum, i) => sum + sections[i].size, 0);
  const bytes = size(used);
  process.stdout.write(`order-symbols: the daemon's part ${Math.round(size(daemonPart) / 1024)} KiB\n`);
  fs.mkdirSync(path.dirname(orderFile), { recursive: true });
  fs.writeFileSync(orderFile, `${names.join('\n')}\n`);
  process.stdout.write(`order-symbols: ${names.length} functions (${Math.round(bytes / 1024)} KiB of ${Math.round((hi - lo) / 1024)} KiB of .text) -> ${path.relative(root, orderFile)}\n`);
  cleanUp();
})().catch((error) => fail(error.stack || String(error)));
