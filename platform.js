'use strict';
// Names the native build for this machine, shared by index.js (to load the addon), bin/nodeguard
// and install.js (to find the binary) and scripts/build.js (to name both): `<platform>-<arch>`,
// plus `-gnu` or `-musl` on Linux, as in `nodeguard-monitor.linux-x64-gnu.node` and the npm
// package `nodeguard-monitor-linux-x64-gnu` (its sources are in npm/linux-x64-gnu/).
//
// glibc or musl: a glibc addon does not load into a musl Node and vice versa, so the two are
// separate packages (npm picks one by their `libc` field). We decide the way detect-libc does:
// read /usr/bin/ldd first (one small file read: glibc's is a script naming "GNU C Library"/GLIBC,
// musl's names musl), and only when that says neither ask Node's diagnostic report whether this
// Node runs on glibc (`header.glibcVersionRuntime`, what npm itself checks for `libc`). The report
// is the last resort because it costs ~15 ms and ~1.7 MB RSS, and this runs in every supervised app.

const fs = require('node:fs');
const path = require('node:path');

/** Name of the supervisor binary inside a platform package. */
const BINARY = process.platform === 'win32' ? 'nodeguard.exe' : 'nodeguard';

function isMusl() {
  let ldd;
  try {
    ldd = fs.readFileSync('/usr/bin/ldd', 'latin1');
  } catch {
    ldd = '';
  }
  if (ldd.includes('musl')) return true;
  if (ldd.includes('GLIBC') || ldd.includes('GNU C Library')) return false;
  try {
    const previous = process.report.excludeNetwork;
    process.report.excludeNetwork = true;
    try {
      return !process.report.getReport().header.glibcVersionRuntime;
    } finally {
      process.report.excludeNetwork = previous;
    }
  } catch {
    return false;
  }
}

/** `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, `win32-x64`, ... */
function platformTriple() {
  if (process.platform === 'linux') {
    return `linux-${process.arch}-${isMusl() ? 'musl' : 'gnu'}`;
  }
  return `${process.platform}-${process.arch}`;
}

/** The npm package holding this machine's binary and addon: `nodeguard-monitor-<triple>`. */
function platformPackage(triple = platformTriple()) {
  return `nodeguard-monitor-${triple}`;
}

/**
 * The installed platform package's directory, resolved the way `require` would from this package
 * (so a hoisted or a nested install both work), or null if it is not installed.
 */
function platformPackageDir(triple = platformTriple()) {
  try {
    return path.dirname(require.resolve(`${platformPackage(triple)}/package.json`, { paths: [__dirname] }));
  } catch (error) {
    if (error.code === 'MODULE_NOT_FOUND') return null;
    throw error;
  }
}

/**
 * The native `nodeguard` binary: the local build in a checkout (target/release), else the one in
 * the platform package. Throws a one-line Error naming the package to install if there is neither.
 */
function binaryPath() {
  const triple = platformTriple();
  const candidates = [path.join(__dirname, 'target', 'release', BINARY)];
  const dir = platformPackageDir(triple);
  if (dir) candidates.push(path.join(dir, BINARY));
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (found) return found;
  throw new Error(
    `nodeguard: no nodeguard binary for ${triple}: the package ${platformPackage(triple)} is not ` +
      `installed${dir ? ' completely' : ''} (reinstall nodeguard-monitor without --omit=optional, ` +
      `or run "npm install ${platformPackage(triple)}")`,
  );
}

/** `error` (an Error or anything else) as one line: newlines and the space around them folded. */
function oneLine(error) {
  return String(error && error.message ? error.message : error).replace(/\s*\n\s*/g, ' ');
}

module.exports = { BINARY, oneLine, platformTriple, platformPackage, platformPackageDir, binaryPath };
