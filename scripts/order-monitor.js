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
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const orderFile = path.join(root, 'crates', 'monitor', 'link', 'monitor.order');
const keepAt = process.argv.indexOf('--keep');
const work = keepAt > 0 ? path.resolve(process.argv[keepAt + 1]) : fs.mkdtempSync(path.join(os.tmpdir(), 'ngmorder-'));
fs.mkdirSync(work, { recursive: true });

function fail(message) {
  process.stderr.write(`order-monitor: ${message}\n`);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options });
  if (result.error) fail(`cannot run ${cmd}: ${result.error.message}`);
  if (result.status !== 0) fail(`${cmd} ${args.join(' ')} failed (${result.signal ?? `exit code ${result.status}`})`);
  return result;
}

for (const tool of ['valgrind', 'callgrind_control', 'curl']) {
  if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) fail(`${tool} is needed`);
}
for (const name of Object.keys(process.env)) {
  if (name.startsWith('CARGO_PROFILE_RELEASE_')) fail(`unset ${name}: the list must come from the shipped build`);
}
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const out = path.join(work, 'cg.out');
const nodeWrapper = path.join(work, 'node-under-callgrind');
fs.writeFileSync(
  nodeWrapper,
  `#!/bin/sh\nexec valgrind --tool=callgrind --dump-instr=yes --compress-strings=no --compress-pos=no --callgrind-out-file=${out} ${process.execPath} "$@"\n`,
  { mode: 0o755 },
);

async function until(what, check, ms = 120_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return;
    await sleep(500);
  }
  fail(`timed out waiting for ${what}`);
}

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

/** The linker map's .text input sections: { vma, size, name } in address order. */
function textSections() {
  const sections = [];
  let inText = false;
  for (const line of fs.readFileSync(mapFile, 'utf8').split('\n')) {
    const m = /^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (\s*)(\S.*)$/.exec(line);
    if (!m) continue;
    const [vma, size, indent, name] = [parseInt(m[1], 16), parseInt(m[2], 16), m[3].length, m[4]];
    if (indent === 0) {
      inText = name === '.text';
    } else if (inText && indent === 8) {
      const section = /:\(\.text\.(?:unlikely\.|hot\.|startup\.|exit\.)?(.+)\)$/.exec(name);
      if (section) sections.push({ vma, size, name: section[1] });
    }
  }
  return sections.sort((a, b) => a.vma - b.vma);
}

/** Addresses (relative to the addon's load address, as callgrind writes them) that ran in it. */
function executedAddresses(file) {
  const seen = new Set();
  let ours = false;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('ob=')) ours = line.endsWith(`/${addonName}`);
    else if (ours && line.startsWith('0x')) seen.add(parseInt(line.slice(2).split(' ')[0], 16));
  }
  return seen;
}

(async () => {
  await trace();
  // callgrind_control's dump is `${out}.1`; the final one, at exit, holds what ran after it.
  if (!fs.existsSync(`${out}.1`)) fail('callgrind wrote no intermediate dump: did callgrind_control reach the app?');
  const sections = textSections();
  if (sections.length === 0) fail(`no .text input sections in ${mapFile}`);
  const used = new Set();
  for (const address of executedAddresses(out)) {
    let low = 0;
    let high = sections.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (sections[mid].vma <= address) low = mid;
      else high = mid - 1;
    }
    const s = sections[low];
    if (address >= s.vma && address < s.vma + s.size) used.add(low);
  }
  const list = [...used].sort((a, b) => a - b);
  if (list.length < 20) fail(`only ${list.length} functions seen: did the traced run work?`);
  const bytes = list.reduce((sum, i) => sum + sections[i].size, 0);
  fs.mkdirSync(path.dirname(orderFile), { recursive: true });
  fs.writeFileSync(orderFile, `${list.map((i) => sections[i].name).join('\n')}\n`);
  process.stdout.write(`order-monitor: ${list.length} functions (${Math.round(bytes / 1024)} KiB) -> ${path.relative(root, orderFile)}\n`);
  if (keepAt < 0) fs.rmSync(work, { recursive: true, force: true });
})().catch((error) => fail(error.stack || String(error)));
