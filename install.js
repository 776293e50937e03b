'use strict';
// postinstall: makes node_modules/.bin/nodeguard the native binary itself, the way esbuild does.
//
// npm links the `nodeguard` bin to bin/nodeguard, a Node script. Here that file is replaced by the
// binary from the platform package (nodeguard-monitor-<platform>): a hard link, or a copy where
// a link is impossible, written beside it and renamed over it. From then on `nodeguard` runs with
// no Node process in front of it: signals reach the supervisor directly and it costs no memory.
//
// Never fails the install: when anything is missing or wrong it prints one line and leaves the
// script, which then runs the binary as a child (or says which package to install). Does nothing
// in a source checkout (Cargo.toml present), where bin/nodeguard is a tracked file.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = __dirname;
const SHIM = path.join(ROOT, 'bin', 'nodeguard');

function note(message) {
  process.stderr.write(`nodeguard-monitor: ${message}\n`);
}

function main() {
  if (fs.existsSync(path.join(ROOT, 'Cargo.toml'))) return;
  if (process.platform === 'win32') return; // npm's .cmd wrappers run the script through node.

  const platform = require('./platform.js');
  const dir = platform.platformPackageDir();
  const name = platform.platformPackage();
  if (!dir) {
    note(`${name} is not installed, so there is no native nodeguard binary (install it, or reinstall without --omit=optional)`);
    return;
  }
  const ownVersion = require('./package.json').version;
  const theirVersion = require(path.join(dir, 'package.json')).version;
  if (theirVersion !== ownVersion) {
    note(`${name} is version ${theirVersion}, not ${ownVersion}; leaving bin/nodeguard as a script`);
    return;
  }
  const binary = path.join(dir, platform.BINARY);
  const probe = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  if (probe.error || probe.status !== 0 || !probe.stdout.includes(ownVersion)) {
    const why = probe.error ? probe.error.message : `exit ${probe.status ?? probe.signal}: ${probe.stderr.trim()}`;
    note(`${binary} --version failed (${why}); leaving bin/nodeguard as a script`);
    return;
  }

  const temp = `${SHIM}.${process.pid}.tmp`;
  try {
    try {
      fs.linkSync(binary, temp);
    } catch {
      fs.copyFileSync(binary, temp);
    }
    fs.chmodSync(temp, 0o755);
    fs.renameSync(temp, SHIM);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    note(`cannot put the native binary at ${SHIM} (${error.message}); leaving it as a script`);
  }
}

try {
  main();
} catch (error) {
  note(`postinstall: ${require('./platform.js').oneLine(error)}`);
}
