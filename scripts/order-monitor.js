#!/usr/bin/env node
'use strict';
// Regenerates crates/monitor/link/monitor.order: the addon's functions an idle monitored app runs
// (heartbeats, the event-loop hook, an HTTP request, a graceful stop), which
// crates/monitor/build.rs has the linker place together at the start of the addon's .text (see
// there for why; scripts/order-symbols.js does the same for the supervisor).
//
//   node scripts/order-monitor.js [--keep DIR]
//
// Needs valgrind (callgrind, callgrind_control) and curl, and a built target/release/nodeguard.
// Steps:
//  1. builds the shipped addon (fat LTO, partial RELRO, as scripts/build.js does) into
//     target/order-monitor/, with lld's link map (which function lies at which address);
//  2. runs bench/apps/server.js under that nodeguard with the monitor preloaded, node under
//     callgrind; once the app serves and has answered a few heartbeats, the counts so far
//     (loading, registration, connect: given back after the first pings anyway, see
//     crates/monitor/src/trim.rs) are dumped and dropped; then more heartbeats, one request and a
//     graceful stop;
//  3. writes every function of the addon that ran after that point, in address order.
// Run it after changes to the monitor's code and after a Rust or dependency upgrade (the names
// carry hashes of the toolchain and of each crate's version); a stale list only loses part of the
// gain (lld skips names that no longer exist). Do not export the fast-build
// CARGO_PROFILE_RELEASE_* variables: the names must be those of the shipped build.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { script, callgrindArgs, textSections, executedAddresses, sectionAt } = require('./lib/symbol-order.js');

const root = path.resolve(__dirname, '..');
const orderFile = path.join(root, 'crates', 'monitor', 'link', 'monitor.order');
const { fail, run, until, sleep, work, done: cleanUp } = script('order-monitor', {
  tools: ['valgrind', 'callgrind_control', 'curl'],
  tmpPrefix: 'ngmorder-',
  pollMs: 500,
  waitMs: 120_000,
});
const supervisor = path.join(root, 'target', 'release', 'nodeguard');
if (!fs.existsSync(supervisor)) fail(`no ${path.relative(root, supervisor)}: run node scripts/build.js first`);

// 1. The shipped addon build, with its link map.
const mapFile = path.join(work, 'monitor.map');
const targetDir = path.join(root, 'target', 'order-monitor');
run('cargo', ['build', '--release', '-p', 'nodeguard-monitor', '--target-dir', targetDir], {
  cwd: root,
  env: {
    ...process.env,
    RUSTFLAGS: [process.env.RUSTFLAGS, '-C relro-level=partial'].filter(Boolean).join(' '),
    NODEGUARD_MONITOR_LINK_MAP: mapFile,
  },
});

// The monitor package as the bench runs it: the shipped .js files beside this addon.
const pkg = path.join(work, 'pkg');
fs.mkdirSync(pkg, { recursive: true });
const shipped = require(path.join(root, 'package.json')).files.filter((f) => /^[^/]+\.js$/.test(f) && f !== 'install.js');
for (const file of shipped) fs.copyFileSync(path.join(root, file), path.join(pkg, file));
const triple = require(path.join(root, 'platform.js')).platformTriple();
const addonName = `nodeguard-monitor.${triple}.node`;
fs.copyFileSync(path.join(targetDir, 'release', 'libnodeguard_monitor.so'), path.join(pkg, addonName));

const out = path.join(work, 'cg.out');
const nodeWrapper = path.join(work, 'node-under-callgrind');
fs.writeFileSync(
  nodeWrapper,
  `#!/bin/sh\nexec valgrind ${callgrindArgs(out).join(' ')} ${process.execPath} "$@"\n`,
  { mode: 0o755 },
);

// 2. The traced run. Heartbeats every 2 s, with room for valgrind's slowness.
async function trace() {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const home = fs.mkdtempSync(path.join(work, 'home-'));
  const args = ['--node', nodeWrapper, '--heartbeat-interval', '2s', '--heartbeat-timeout', '2s', '--heartbeat-misses', '50'];
  args.push('--preload', path.join(pkg, 'preload.js'), '-m', path.join(root, 'bench', 'apps', 'server.js'), '--', '--port', String(port));
  const child = spawn(supervisor, args, { env: { ...process.env, NODEGUARD_HOME: home }, stdio: 'ignore' });
  const done = new Promise((resolve) => child.on('exit', resolve));
  const get = (url) => spawnSync('curl', ['-sf', url], { stdio: 'ignore' }).status === 0;
  await until('the server under callgrind', () => get(`http://127.0.0.1:${port}/`));
  await sleep(12_000);
  const app = spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
  if (!app) fail('no app process under the supervisor');
  run('callgrind_control', ['--dump', app], { stdio: 'ignore' });
  await sleep(10_000);
  get(`http://127.0.0.1:${port}/`);
  await sleep(5_000);
  child.kill('SIGTERM');
  await done;
}

(async () => {
  await trace();
  // callgrind_control's dump is `${out}.1`; the final one, at exit, holds what ran after it.
  if (!fs.existsSync(`${out}.1`)) fail('callgrind wrote no intermediate dump: did callgrind_control reach the app?');
  // Function sections only: the list is of names.
  const sections = textSections(mapFile).filter((s) => s.name);
  if (sections.length === 0) fail(`no .text input sections in ${mapFile}`);
  const used = new Set();
  // Addresses relative to the addon's load address, as callgrind writes them for a library.
  for (const address of executedAddresses(out, addonName)) {
    const i = sectionAt(sections, address);
    if (i >= 0) used.add(i);
  }
  const list = [...used].sort((a, b) => a - b);
  if (list.length < 20) fail(`only ${list.length} functions seen: did the traced run work?`);
  const bytes = list.reduce((sum, i) => sum + sections[i].size, 0);
  fs.mkdirSync(path.dirname(orderFile), { recursive: true });
  fs.writeFileSync(orderFile, `${list.map((i) => sections[i].name).join('\n')}\n`);
  process.stdout.write(`order-monitor: ${list.length} functions (${Math.round(bytes / 1024)} KiB) -> ${path.relative(root, orderFile)}\n`);
  cleanUp();
})().catch((error) => fail(error.stack || String(error)));
