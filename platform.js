'use strict';
// Names the native build for this machine, shared by index.js (to load it) and scripts/build.js (to
// name it): `<platform>-<arch>`, plus `-gnu` or `-musl` on Linux, as in
// `nodeguard-monitor.linux-x64-gnu.node` and the npm package `nodeguard-monitor-linux-x64-gnu`.

const fs = require('node:fs');

function isMusl() {
  // The cheap check first: on musl systems `ldd` is musl's own script or binary.
  try {
    return fs.readFileSync('/usr/bin/ldd', 'latin1').includes('musl');
  } catch {
    // No ldd: ask Node, which knows the glibc it runs on (none on musl).
  }
  try {
    return !process.report.getReport().header.glibcVersionRuntime;
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

module.exports = { platformTriple };
