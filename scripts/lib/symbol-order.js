'use strict';
// What the code-layout scripts share (see build-support/symbol_order.rs for the layout itself):
// scripts/order-symbols.js and scripts/order-monitor.js make the order lists from callgrind traces
// of a build and lld's map of its link; scripts/build.js counts the list's names the linker found
// in that map.
//
//   const { script, callgrindArgs, textSections, executedAddresses, sectionAt } = require('./lib/symbol-order.js');

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The frame of an order script named `name`: its `fail` (one line `name: message` on stderr, exit
 * 1), `run` (a command that must succeed), `until` (polls a check under a deadline), and its work
 * folder (`--keep DIR`, or a temporary one under `tmpPrefix`, removed by `done`). Fails at once
 * when one of `tools` does not run, or when the fast-build CARGO_PROFILE_RELEASE_* variables are
 * set: the list's names must be those of the shipped build.
 */
function script(name, { tools, tmpPrefix, pollMs, waitMs }) {
  function fail(message) {
    process.stderr.write(`${name}: ${message}\n`);
    process.exit(1);
  }

  function run(cmd, args, options = {}) {
    const result = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options });
    if (result.error) fail(`cannot run ${cmd}: ${result.error.message}`);
    if (result.status !== 0) fail(`${cmd} ${args.join(' ')} failed (${result.signal ?? `exit code ${result.status}`})`);
    return result;
  }

  async function until(what, check, ms = waitMs) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (check()) return;
      await sleep(pollMs);
    }
    fail(`timed out waiting for ${what}`);
  }

  for (const tool of tools) {
    const result = spawnSync(tool, ['--version'], { stdio: 'ignore' });
    if (result.error || result.status !== 0) fail(`${tool} is needed`);
  }
  for (const variable of Object.keys(process.env)) {
    if (variable.startsWith('CARGO_PROFILE_RELEASE_')) fail(`unset ${variable}: the list must come from the shipped build`);
  }
  const keepAt = process.argv.indexOf('--keep');
  const work = keepAt > 0 ? path.resolve(process.argv[keepAt + 1]) : fs.mkdtempSync(path.join(os.tmpdir(), tmpPrefix));
  fs.mkdirSync(work, { recursive: true });
  const done = () => {
    if (keepAt < 0) fs.rmSync(work, { recursive: true, force: true });
  };
  return { fail, run, until, sleep, work, done };
}

/** valgrind's arguments for a callgrind trace that executedAddresses reads, written to `out`. */
function callgrindArgs(out) {
  return ['--tool=callgrind', '--dump-instr=yes', '--compress-strings=no', '--compress-pos=no', `--callgrind-out-file=${out}`];
}

/**
 * lld's map of a link (`-Wl,-Map=`): `outputs`, its output sections (name -> { addr, size }), and
 * `text`, the input sections of `.text` in address order, { vma, size, name }, where `name` is the
 * mangled symbol a function section carries in its own name (the map's symbol lines are demangled,
 * an ordering file needs the mangled name), null for other input sections.
 */
function readLinkMap(file) {
  const outputs = new Map();
  const text = [];
  let inText = false;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (\s*)(\S.*)$/.exec(line);
    if (!m) continue;
    const [vma, size, indent, name] = [parseInt(m[1], 16), parseInt(m[2], 16), m[3].length, m[4]];
    if (indent === 0) {
      outputs.set(name, { addr: vma, size });
      inText = name === '.text';
    } else if (inText && indent === 8) {
      // `file.o:(.text.<mangled symbol>)`
      const section = /:\(\.text\.(?:unlikely\.|hot\.|startup\.|exit\.)?(.+)\)$/.exec(name);
      text.push({ vma, size, name: section ? section[1] : null });
    }
  }
  text.sort((a, b) => a.vma - b.vma);
  return { outputs, text };
}

/** readLinkMap(file).text. */
function textSections(file) {
  return readLinkMap(file).text;
}

/** The addresses callgrind saw run in the object whose file is named `objectName` (its `ob=` lines). */
function executedAddresses(file, objectName) {
  const seen = new Set();
  let ours = false;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('ob=')) ours = line.endsWith(`/${objectName}`);
    else if (ours && line.startsWith('0x')) seen.add(parseInt(line.slice(2).split(' ')[0], 16));
  }
  return seen;
}

/** The index of the section of `sections` (sorted by vma) that holds `address`, or -1. */
function sectionAt(sections, address) {
  let low = 0;
  let high = sections.length - 1;
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if (sections[mid].vma <= address) low = mid;
    else high = mid - 1;
  }
  const s = sections[low];
  return s && address >= s.vma && address < s.vma + s.size ? low : -1;
}

module.exports = { script, sleep, callgrindArgs, readLinkMap, textSections, executedAddresses, sectionAt };
