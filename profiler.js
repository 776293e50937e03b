'use strict';
// Profiles on demand (`nodeguard profile`, --heap-snapshot-on-memory-restart, --profile-on-stall),
// taken inside the app through Node's own `inspector` module: an in-process session
// (`session.connect()`), which opens no port. Loaded by index.js only when the supervisor first
// asks for a profile, so an app never profiled pays nothing for it.
//
// The result goes back to the supervisor through the monitor's socket in chunks of at most
// CHUNK_UNITS UTF-16 units (a frame stays under the worker socket's limit even when every
// character is escaped), never split inside a surrogate pair. A heap snapshot is streamed as V8
// produces it (`HeapProfiler.addHeapSnapshotChunk`), so it is never held whole in the app either.

const inspector = require('node:inspector');

/** UTF-16 units per chunk (nodeguard_proto::worker::PROFILE_CHUNK_UNITS). */
const CHUNK_UNITS = 8 * 1024;

/** Call frames that are not the app's code: never named as the hottest function. */
const NOT_CODE = new Set(['(root)', '(program)', '(idle)', '(garbage collector)']);

let busy = false;

function sendText(addon, id, text) {
  for (let start = 0; start < text.length; ) {
    let end = Math.min(start + CHUNK_UNITS, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end -= 1;
    addon.profileChunk(id, text.slice(start, end));
    start = end;
  }
}

/**
 * The function with the most self time in a CPU profile, as `name (file:line) 62%`, or null.
 * Samples of one function at several call sites are added up.
 */
function hottest(profile) {
  const self = new Map();
  let total = 0;
  for (const node of profile.nodes || []) {
    const hits = node.hitCount || 0;
    total += hits;
    const frame = node.callFrame || {};
    if (hits === 0 || NOT_CODE.has(frame.functionName)) continue;
    const name = frame.functionName || '(anonymous)';
    const where = frame.url ? ` (${frame.url.replace(/^file:\/\//, '')}:${frame.lineNumber + 1})` : '';
    const key = name + where;
    self.set(key, (self.get(key) || 0) + hits);
  }
  let best = null;
  let bestHits = 0;
  for (const [key, hits] of self) {
    if (hits > bestHits) {
      best = key;
      bestHits = hits;
    }
  }
  return best === null ? null : `${best} ${Math.round((bestHits * 100) / Math.max(total, 1))}%`;
}

/** Answers one request from the supervisor: `{ id, kind: 'cpu' | 'heap', durationMs }`. */
function run(addon, request) {
  const { id, kind, durationMs } = request;
  const done = (error, top) => {
    try {
      addon.profileDone(id, error == null ? null : String(error), top == null ? null : top);
    } catch {
      // The connection is gone: the supervisor sees that for itself.
    }
  };
  if (busy) return done('a profile is already being taken in this process');
  busy = true;
  let session;
  try {
    session = new inspector.Session();
    session.connect();
  } catch (error) {
    busy = false;
    return done(`cannot open an inspector session: ${error.message}`);
  }
  const finish = (error, top) => {
    try {
      session.disconnect();
    } catch {}
    busy = false;
    done(error, top);
  };
  if (kind === 'heap') {
    let failed = null;
    session.on('HeapProfiler.addHeapSnapshotChunk', (message) => {
      if (failed !== null) return;
      try {
        sendText(addon, id, message.params.chunk);
      } catch (error) {
        failed = error.message;
      }
    });
    // An empty chunk first: the supervisor then knows the JS thread is inside the snapshot
    // (busy for as long as V8 takes) and holds the heartbeat for it, bounded.
    addon.profileChunk(id, '');
    session.post('HeapProfiler.takeHeapSnapshot', { reportProgress: false }, (error) => {
      finish(failed !== null ? failed : error ? error.message : null);
    });
    return undefined;
  }
  if (kind !== 'cpu') return finish(`unknown profile kind ${kind}`);
  const startCpu = () =>
    session.post('Profiler.start', (error) => {
      if (error) return finish(error.message);
      const timer = setTimeout(() => {
        session.post('Profiler.stop', (error, result) => {
          if (error) return finish(error.message);
          try {
            sendText(addon, id, JSON.stringify(result.profile));
            finish(null, hottest(result.profile));
          } catch (error) {
            finish(error.message);
          }
        });
      }, Math.max(1, durationMs));
      // A profile never keeps the app alive; if the app ends first, the supervisor says so.
      timer.unref();
    });
  session.post('Profiler.enable', (error) => {
    if (error) return finish(error.message);
    // Code V8 optimized before the profiler listened has its inlined functions' samples counted
    // in the caller (a timer's `listOnTimeout` instead of the app's `burnCpu`). Turning precise
    // coverage on and off at once deoptimizes every function (once), so what runs hot during
    // the profile is recompiled under the profiler and named right.
    session.post('Profiler.startPreciseCoverage', { callCount: false, detailed: false }, () => {
      session.post('Profiler.stopPreciseCoverage', () => startCpu());
    });
  });
  return undefined;
}

module.exports = { run, hottest };
