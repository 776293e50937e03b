#!/usr/bin/env node
'use strict';
// Builds everything the one way (`cargo build --release --workspace`, so features unify the same
// every time and nothing is rebuilt twice; on Linux the addon once more on its own, see
// buildLazyAddon), then installs the monitor addon at the package root as
// nodeguard-monitor.<platform-triple>.node, where index.js looks first. Also places the binary
// and the addon in this machine's platform package, npm/<platform-triple>/ (for `npm pack`; both
// gitignored), if the repo has one for this machine; otherwise says so and carries on.
//
// Every file is written to a temporary file and renamed into place: copying over a .node that
// running processes have mapped crashes them; a rename leaves their mapping intact.
//
// Output: cargo's own (on stderr) and one line on success. Any failure exits non-zero.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { BINARY, platformTriple } = require('../platform.js');

const root = path.resolve(__dirname, '..');

function fail(message) {
  process.stderr.write(`build: ${message}\n`);
  process.exit(1);
}

function cargo(args, options) {
  const result = spawnSync('cargo', args, { cwd: root, ...options });
  if (result.error) fail(`cannot run cargo ${args[0]}: ${result.error.message}`);
  if (result.status !== 0) {
    fail(`cargo ${args.join(' ')} failed (${result.signal ?? `exit code ${result.status}`})`);
  }
  return result;
}

function libraryFileName() {
  switch (process.platform) {
    case 'darwin':
      return 'libnodeguard_monitor.dylib';
    case 'win32':
      return 'nodeguard_monitor.dll';
    default:
      return 'libnodeguard_monitor.so';
  }
}

cargo(['build', '--release', '--workspace'], { stdio: ['ignore', 'inherit', 'inherit'] });

const metadata = cargo(['metadata', '--format-version', '1', '--no-deps'], {
  stdio: ['ignore', 'pipe', 'inherit'],
  encoding: 'utf8',
  maxBuffer: 64 * 1024 * 1024,
});
const targetDir = JSON.parse(metadata.stdout).target_directory;

/**
 * On Linux the monitor addon is built a second time, on its own (in <target>/monitor, so neither
 * build invalidates the other), with partial RELRO: rustc then calls the Node-API functions
 * through the PLT, and the dynamic linker binds each one at its first call (Node dlopens addons
 * RTLD_LAZY) instead of all of them when the addon loads. Every name bound is looked up in
 * node's symbol tables (about 7 MB, in 64 kB chunks faulted in whole), so the ~20 an idle app
 * never calls cost nothing: 0.2 MB less RSS in every supervised app (issue 17). The workspace
 * build above keeps full RELRO for the nodeguard binary.
 */
function buildLazyAddon() {
  const monitorTarget = path.join(targetDir, 'monitor');
  const rustflags = [process.env.RUSTFLAGS, '-C relro-level=partial'].filter(Boolean).join(' ');
  cargo(['build', '--release', '-p', 'nodeguard-monitor', '--target-dir', monitorTarget], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, RUSTFLAGS: rustflags },
  });
  return path.join(monitorTarget, 'release', libraryFileName());
}

const built = process.platform === 'linux' ? buildLazyAddon() : path.join(targetDir, 'release', libraryFileName());
const triple = platformTriple();
const addonName = `nodeguard-monitor.${triple}.node`;

/** Copies `from` to `dest` through a temporary file renamed into place; returns `dest`. */
function install(from, dest) {
  const temp = `${dest}.${process.pid}.tmp`;
  try {
    fs.copyFileSync(from, temp);
    fs.renameSync(temp, dest);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    fail(`cannot install ${from} as ${dest}: ${error.message}`);
  }
  return dest;
}

function describe(file) {
  const kib = Math.round(fs.statSync(file).size / 1024);
  return `${path.relative(root, file)} (${kib} KiB)`;
}

const installed = [install(built, path.join(root, addonName))];
const packageDir = path.join(root, 'npm', triple);
if (fs.existsSync(path.join(packageDir, 'package.json'))) {
  installed.push(install(built, path.join(packageDir, addonName)));
  installed.push(install(path.join(targetDir, 'release', BINARY), path.join(packageDir, BINARY)));
} else {
  process.stdout.write(`build: no npm package for ${triple} (npm/${triple}/): only the local build\n`);
}
process.stdout.write(`build: ${installed.map(describe).join(', ')}\n`);
