#!/usr/bin/env node
'use strict';
// Builds everything the one way (`cargo build --release --workspace`, so features unify the same
// every time and nothing is rebuilt twice), then installs the monitor addon at the package root as
// nodeguard-monitor.<platform-triple>.node, where index.js looks first.
//
// The .node is written to a temporary file and renamed into place: copying over a .node that
// running processes have mapped crashes them; a rename leaves their mapping intact.
//
// Output: cargo's own (on stderr) and one line on success. Any failure exits non-zero.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { platformTriple } = require('../platform.js');

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
const built = path.join(targetDir, 'release', libraryFileName());
const dest = path.join(root, `nodeguard-monitor.${platformTriple()}.node`);
const temp = `${dest}.${process.pid}.tmp`;

try {
  fs.copyFileSync(built, temp);
  fs.renameSync(temp, dest);
} catch (error) {
  fs.rmSync(temp, { force: true });
  fail(`cannot install ${built} as ${dest}: ${error.message}`);
}

const kib = Math.round(fs.statSync(dest).size / 1024);
process.stdout.write(`build: ${path.relative(root, dest)} (${kib} KiB)\n`);
