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
const { readLinkMap } = require('./lib/symbol-order.js');

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

// JSON messages on stdout (diagnostics still rendered on stderr): where the build script put the
// link map, and which binary this build made (checkLayout).
const messages = cargo(['build', '--release', '--workspace', '--message-format=json-render-diagnostics'], {
  stdio: ['ignore', 'pipe', 'inherit'],
  encoding: 'utf8',
  maxBuffer: 256 * 1024 * 1024,
})
  .stdout.split('\n')
  .filter((line) => line.startsWith('{'))
  .map((line) => JSON.parse(line));

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

/** The section headers of an ELF file: name -> { addr, size } (64-bit little-endian only). */
function elfSections(file) {
  const elf = fs.readFileSync(file);
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return null;
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const size = elf.readUInt16LE(0x3a);
  const count = elf.readUInt16LE(0x3c);
  const strndx = elf.readUInt16LE(0x3e);
  const header = (i) => shoff + i * size;
  const strtab = Number(elf.readBigUInt64LE(header(strndx) + 0x18));
  const sections = new Map();
  for (let i = 0; i < count; i++) {
    const h = header(i);
    const nameAt = strtab + elf.readUInt32LE(h);
    const name = elf.toString('latin1', nameAt, elf.indexOf(0, nameAt));
    sections.set(name, { addr: Number(elf.readBigUInt64LE(h + 0x10)), size: Number(elf.readBigUInt64LE(h + 0x20)) });
  }
  return sections;
}

/**
 * The supervisor's RSS depends on the layout crates/nodeguard/build.rs asks of the linker: the
 * functions in crates/nodeguard/link/supervisor.order first in .text. The linker silently skips
 * names it does not find (another toolchain, Cargo.lock, feature set or code than the list's), so
 * this counts them in the link map of the binary just built and says loudly when many are missing.
 * Exits 0 either way: the binary works, it only costs more memory.
 */
function checkLayout() {
  const orderFile = path.join(root, 'crates', 'nodeguard', 'link', 'supervisor.order');
  const script = messages.find((m) => m.reason === 'build-script-executed' && /\/crates\/nodeguard#/.test(m.package_id));
  const binary = path.join(targetDir, 'release', BINARY);
  if (!script || !fs.existsSync(orderFile) || !fs.existsSync(binary)) return;
  const mapFile = path.join(script.out_dir, 'nodeguard.map');
  if (!fs.existsSync(mapFile)) return; // no ordering in this build (see build.rs: linker, target)
  const wanted = fs.readFileSync(orderFile, 'utf8').split('\n').filter(Boolean);
  const { outputs, text } = readLinkMap(mapFile);
  const names = new Set(text.map((section) => section.name).filter(Boolean));
  // The map is of the last link of the binary, which may be another build of it (cargo test links
  // its own, with the dev-dependencies' features): only a map whose sections are the binary's counts.
  const elf = elfSections(binary);
  const same = elf && ['.text', '.rodata', '.data.rel.ro'].every((name) => {
    const a = elf.get(name);
    const b = outputs.get(name);
    return a && b && a.addr === b.addr && a.size === b.size;
  });
  if (!same) {
    process.stdout.write(`build: layout not checked: ${path.relative(root, mapFile)} is of another link than ${path.relative(root, binary)}\n`);
    return;
  }
  const found = wanted.filter((name) => names.has(name)).length;
  const line = `${found} of ${wanted.length} functions of ${path.relative(root, orderFile)} found by the linker`;
  if (found >= 0.9 * wanted.length) {
    process.stdout.write(`build: layout: ${line}\n`);
    return;
  }
  const fast = Object.keys(process.env).filter((name) => name.startsWith('CARGO_PROFILE_RELEASE_'));
  process.stderr.write(
    [
      '',
      `build: WARNING: only ${line}: the supervisor's code is not laid out`,
      'build: together, and a supervisor has about 1 MB more RSS (bench figures 1 and 8).',
      fast.length
        ? `build: This build is not the shipped one (${fast.join(', ')} set): its symbol names differ.`
        : 'build: The list is stale (toolchain, Cargo.lock or code changed): regenerate it with `node scripts/order-symbols.js`.',
      '',
    ].join('\n'),
  );
}

checkLayout();

// Which binary this build left in <target>/release (its inode: `cargo test` replaces the file with
// its own build, of other features and symbol names): bench/run.js --no-build measures only this one.
{
  const binary = path.join(targetDir, 'release', BINARY);
  const { ino, size, mtimeMs } = fs.statSync(binary);
  fs.writeFileSync(`${binary}.built.json`, `${JSON.stringify({ ino, size, mtimeMs })}\n`);
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
