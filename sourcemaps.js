'use strict';
// Source maps for hang stacks, the monitor's half. A hung app's stack is printed with positions
// in the code V8 ran. For a file on disk with a `//# sourceMappingURL=` comment (tsc --sourceMap,
// bundles) the supervisor finds the map itself. Code transformed in memory has its map only in
// memory: tsx turns `app.ts` into JavaScript with an inline `data:` map, and the `.ts` on disk
// has none. So while modules load, this records, for each of the app's own modules (never under
// node_modules) whose compiled code ends with an inline map, one line
// `<absolute path>\t<the data: URL>` in a private file the supervisor reads after a hang:
// `<run dir>/maps/<pid>` (the run dir holds NODEGUARD_SOCKET; the supervisor makes `maps/` and
// removes our file when the process ends). Nothing is kept in memory but the paths recorded.
//
// Seen where code is compiled:
// - CommonJS: Module.prototype._compile gets the transformed code (tsx's require hook, and on
//   Node 22+ with module.registerHooks the loaded source, pass through it).
// - ES modules: a module.registerHooks load hook (Node 22.15+/23.5+, synchronous and in-thread)
//   sees what the other hooks returned. Hooks run last-registered first, so ours is registered
//   again, on top, each time someone (tsx) registers theirs. Where tsx loads ES modules through
//   module.register (Node 20, older 22 and 24) the transform runs in a loader thread this cannot
//   see, and those frames keep tsx's positions.
// Costs when no module carries an inline map: one search through each compiled file (preload.js's
// hook); this file is then never loaded.

const COMMENT = '//# sourceMappingURL=';
const INLINE = 'data:application/json';
/** Longest map URL recorded (the supervisor reads no more of a line). */
const MAX_URL_CHARS = 12 * 1024 * 1024;
/** Most bytes recorded per process (the supervisor reads no larger a file). */
const MAX_TOTAL_BYTES = 64 * 1024 * 1024;

// String searches rather than regular expressions: a regular expression's compilation is paid in
// every supervised process's start, and these run on the first module compiled.
function hasLineBreakOrTab(text) {
  return text.includes('\t') || text.includes('\n') || text.includes('\r');
}

/** A path with a `node_modules` directory in it (either separator). */
function inNodeModules(file) {
  const isSeparator = (c) => c === '/' || c === '\\';
  for (let at = file.indexOf('node_modules'); at !== -1; at = file.indexOf('node_modules', at + 1)) {
    if (isSeparator(file[at - 1]) && isSeparator(file[at + 'node_modules'.length])) return true;
  }
  return false;
}

/**
 * The recorder of this process, writing to `<dir of socket>/maps/<pid>`: `record(filename, code)`
 * for a module compiled with `code`, and `hooked(registerHooks, Module)` after someone registered
 * module hooks (ours goes on top again). preload.js sets up the cheap part, the hooks that call
 * these, and loads this file only at the first module with an inline map (or the first
 * registerHooks): most apps never load it.
 */
function recorder(socket) {
  const path = require('node:path');
  const fs = require('node:fs');
  const target = path.join(path.dirname(socket), 'maps', String(process.pid));
  const seen = new Set();
  let fd = null;
  let failed = false;
  let written = 0;

  /** The inline map URL that ends `code` (a string or bytes), if any. */
  function inlineUrl(code) {
    if (typeof code === 'string') {
      const at = code.lastIndexOf(COMMENT);
      if (at === -1 || !code.startsWith(INLINE, at + COMMENT.length)) return null;
      const end = code.indexOf('\n', at);
      return code.slice(at + COMMENT.length, end === -1 ? code.length : end).trim();
    }
    if (ArrayBuffer.isView(code)) {
      const bytes = Buffer.from(code.buffer, code.byteOffset, code.byteLength);
      const at = bytes.lastIndexOf(COMMENT);
      if (at === -1 || bytes.indexOf(INLINE, at + COMMENT.length) !== at + COMMENT.length) return null;
      const end = bytes.indexOf(10, at);
      return bytes.toString('latin1', at + COMMENT.length, end === -1 ? bytes.length : end).trim();
    }
    return null;
  }

  function record(filename, code) {
    if (failed || typeof filename !== 'string' || seen.has(filename)) return;
    if (!path.isAbsolute(filename) || hasLineBreakOrTab(filename) || inNodeModules(filename)) return;
    const url = inlineUrl(code);
    if (!url || url.length > MAX_URL_CHARS || /\s/.test(url)) return;
    const line = `${filename}\t${url}\n`;
    const size = Buffer.byteLength(line);
    if (written + size > MAX_TOTAL_BYTES) return;
    try {
      if (fd === null) {
        const { O_WRONLY, O_CREAT, O_TRUNC, O_APPEND, O_NOFOLLOW } = fs.constants;
        // A file left by an earlier process with this pid is emptied: ours starts now.
        fd = fs.openSync(target, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW, 0o600);
      }
      fs.writeSync(fd, line);
      written += size;
      seen.add(filename);
    } catch {
      // No maps directory (an older supervisor), or no room: stacks stay unmapped.
      failed = true;
    }
  }

  let load = null;
  let ours = null;
  /** Registers our load hook again, on top of the ones just registered (they run last first). */
  function hooked(original, Module) {
    if (load === null) {
      const { fileURLToPath } = require('node:url');
      load = (url, context, nextLoad) => {
        const result = nextLoad(url, context);
        try {
          if (typeof url === 'string' && url.startsWith('file:') && result && result.source != null) {
            record(fileURLToPath(url), result.source);
          }
        } catch {}
        return result;
      };
    }
    if (ours !== null) ours.deregister();
    ours = original.call(Module, { load });
  }

  return { record, hooked };
}

module.exports = { recorder };
