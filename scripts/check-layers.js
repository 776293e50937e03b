#!/usr/bin/env node
'use strict';
// Checks the module graph of crates/nodeguard/src: every `crate::` path in non-test code is an
// edge from the file's module to the module it names. Fails (exit 1, one line per problem) on
//   - a cycle between modules (files), and
//   - an import against the layer order: core → platform → config → io → supervisor → cli, where a layer may
//     use itself and the layers before it only; `io` may also use `supervisor::api` (the actor's
//     inbox types), nothing else of `supervisor`.
// lib.rs and the binary (main.rs, or main/ with its modules) sit above every layer. Test code (inline `#[cfg(test)] mod … {` blocks, modules
// named `tests` and their files, and crates/nodeguard/tests) is not counted: tests may reach anywhere.
//
// Usage: node scripts/check-layers.js [src-dir]   (prints the graph's size on success)

const fs = require('node:fs');
const path = require('node:path');

const LAYERS = ['core', 'platform', 'config', 'io', 'supervisor', 'cli'];
/** Imports allowed against the order: [from layer, module path prefix]. */
const ALLOWED_UPWARD = [['io', 'supervisor::api']];

const srcDir = path.resolve(process.argv[2] || path.join(__dirname, '..', 'crates', 'nodeguard', 'src'));

function listRustFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listRustFiles(full));
    else if (entry.name.endsWith('.rs')) out.push(full);
  }
  return out;
}

/** `core/machine.rs` → `core::machine`; `core/mod.rs` → `core`; `lib.rs` → `lib`. */
function moduleOf(file) {
  const parts = path.relative(srcDir, file).replace(/\.rs$/, '').split(path.sep);
  if (parts.length > 1 && parts[parts.length - 1] === 'mod') parts.pop();
  return parts.join('::');
}

/** The file's text without its trailing test module(s) and without comments. */
function productionText(text) {
  const cut = text.search(/^#\[cfg\(test\)\]\s*\n\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{/m);
  const body = cut === -1 ? text : text.slice(0, cut);
  return body.replace(/\/\/[^\n]*/g, '').replace(/\/\*[\s\S]*?\*\//g, '');
}

/**
 * Expands the use tree that starts at `text[pos]` (just after `crate::`) into full paths.
 * Handles `a::b::C`, `a::{b, c::{d, e}}`, `self`, `*` and `as` renames.
 */
function expand(text, pos, prefix) {
  const paths = [];
  let segments = prefix.slice();
  let i = pos;
  const skipSpace = () => {
    while (i < text.length && /\s/.test(text[i])) i += 1;
  };
  for (;;) {
    skipSpace();
    if (text[i] === '{') {
      i += 1;
      for (;;) {
        skipSpace();
        if (text[i] === '}') {
          i += 1;
          break;
        }
        const [inner, next] = expand(text, i, segments);
        paths.push(...inner);
        i = next;
        skipSpace();
        if (text[i] === ',') i += 1;
      }
      return [paths, i];
    }
    const ident = /^[A-Za-z_][A-Za-z0-9_]*|^\*/.exec(text.slice(i, i + 200));
    if (!ident) break;
    if (ident[0] !== 'self' && ident[0] !== '*') segments.push(ident[0]);
    i += ident[0].length;
    skipSpace();
    if (text.startsWith('::', i)) {
      i += 2;
      continue;
    }
    break;
  }
  skipSpace();
  const rename = /^as\s+[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i, i + 200));
  if (rename) i += rename[0].length;
  paths.push(segments);
  return [paths, i];
}

function main() {
  if (!fs.existsSync(srcDir)) {
    console.error(`check-layers: no source folder at ${srcDir}`);
    process.exit(1);
  }
  const files = listRustFiles(srcDir);
  // Test modules kept in files of their own (`machine/tests/…`) are test code too.
  const modules = new Map(
    files.map((file) => [moduleOf(file), file]).filter(([name]) => !/(^|::)tests(::|$)/.test(name)),
  );
  /** Longest known module that prefixes `segments`. */
  const resolve = (segments) => {
    for (let n = segments.length; n > 0; n -= 1) {
      const name = segments.slice(0, n).join('::');
      if (modules.has(name)) return name;
    }
    return null;
  };

  const edges = new Map();
  const problems = [];
  for (const [from, file] of modules) {
    const text = productionText(fs.readFileSync(file, 'utf8'));
    const targets = new Set();
    const re = /\bcrate::/g;
    let match;
    while ((match = re.exec(text))) {
      const [paths] = expand(text, match.index + match[0].length, []);
      for (const segments of paths) {
        const to = resolve(segments);
        if (to && to !== from && !from.startsWith(`${to}::`)) targets.add(to);
      }
    }
    edges.set(from, targets);
    const fromLayer = LAYERS.indexOf(from.split('::')[0]);
    if (fromLayer === -1) continue;
    for (const to of targets) {
      const toLayer = LAYERS.indexOf(to.split('::')[0]);
      if (toLayer === -1) {
        problems.push(`${from} uses ${to}, which belongs to no layer (${LAYERS.join(' → ')})`);
      } else if (toLayer > fromLayer) {
        const allowed = ALLOWED_UPWARD.some(
          ([layer, prefix]) => layer === LAYERS[fromLayer] && (to === prefix || to.startsWith(`${prefix}::`)),
        );
        if (!allowed) {
          problems.push(`${from} (layer ${LAYERS[fromLayer]}) uses ${to} (layer ${LAYERS[toLayer]}): against the layer order`);
        }
      }
    }
  }
  for (const [name] of modules) {
    const layer = name.split('::')[0];
    if (!LAYERS.includes(layer) && layer !== 'lib' && layer !== 'main') {
      problems.push(`${name} is outside every layer folder (${LAYERS.join(', ')})`);
    }
  }

  // Tarjan's strongly connected components: any component of two or more modules is a cycle.
  let index = 0;
  const stack = [];
  const info = new Map();
  const strongConnect = (v) => {
    info.set(v, { index, low: index, onStack: true });
    index += 1;
    stack.push(v);
    for (const w of edges.get(v) || []) {
      if (!info.has(w)) {
        strongConnect(w);
        info.get(v).low = Math.min(info.get(v).low, info.get(w).low);
      } else if (info.get(w).onStack) {
        info.get(v).low = Math.min(info.get(v).low, info.get(w).index);
      }
    }
    if (info.get(v).low === info.get(v).index) {
      const component = [];
      let w;
      do {
        w = stack.pop();
        info.get(w).onStack = false;
        component.push(w);
      } while (w !== v);
      if (component.length > 1) problems.push(`cycle between modules: {${component.sort().join(', ')}}`);
    }
  };
  for (const v of edges.keys()) if (!info.has(v)) strongConnect(v);

  if (problems.length > 0) {
    for (const problem of problems) console.error(`check-layers: ${problem}`);
    process.exit(1);
  }
  const edgeCount = [...edges.values()].reduce((sum, set) => sum + set.size, 0);
  console.log(`check-layers: ${modules.size} modules, ${edgeCount} imports, no cycle, layers in order`);
}

main();
