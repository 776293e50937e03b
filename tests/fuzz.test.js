'use strict';
// Fuzz-style tests against the real binary, bounded in cases and time:
//
// 1. Random and mutated frames into both sockets of a running daemon: the control socket (length +
//    JSON `Request`) and the worker socket (unauthenticated garbage and hellos, then whole sessions
//    as an app's monitor, with the one-use token of a "puppet" app that does not connect itself).
//    Afterwards the daemon is the same process, answers `status`, its apps still run (the witness
//    app keeps its pid and its heartbeats, apps a fuzzed start brought up can be deleted) and
//    `stop all` leaves every app at rest; daemon.log has no panic.
// 2. `nodeguard start <mutated config.json or .yml>`: exit 0, 1 or 2 with one error line (a config's
//    problems one line each, naming the file), never a panic, in the CLI or in the daemon.
// 3. Mutated dump.json: `nodeguard resurrect` against a running daemon, and `nodeguard daemon
//    --resurrect` from scratch: a clean result or one line, never a panic, ids stay unique, and
//    the daemon keeps answering `status` while it resurrects.
//
// Every input comes from a seed: NODEGUARD_FUZZ_SEED, or a random one. A failure names the seed
// and the inputs that led to it; `NODEGUARD_FUZZ_SEED=<seed> node --test tests/fuzz.test.js`
// replays the same inputs (their timing against the daemon may differ).
//
// The frame codec here is the test's own (helpers.js `frame`), independent of crates/proto.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const SEED = process.env.NODEGUARD_FUZZ_SEED !== undefined
  ? Number(process.env.NODEGUARD_FUZZ_SEED)
  : Math.floor(Math.random() * 0xffffffff);
if (!Number.isSafeInteger(SEED) || SEED < 0) throw new Error(`NODEGUARD_FUZZ_SEED must be an unsigned integer, got ${process.env.NODEGUARD_FUZZ_SEED}`);

const IDLE = path.join(h.FIXTURES, 'idle.js');
const FUZZ_PRELOAD = path.join(h.FIXTURES, 'fuzz-preload.js');

/** Cases per phase, and the most time a phase may take (it stops early past that, and says so). */
const CONTROL_CASES = 150;
const WORKER_RAW_CASES = 80;
const WORKER_SESSIONS = 14;
const CONFIG_CASES = 60;
const RESURRECT_CASES = 40;
const DAEMON_RESURRECT_CASES = 4;
const PHASE_BUDGET_MS = 9_000;
/** How long one exchange on a socket may take before the peer counts as holding it open. */
const CONTROL_ANSWER_MS = 6_000; // the daemon waits 5 s for a request
const WORKER_CLOSE_MS = 3_000; // and 2 s for a hello
/** A start whose app is mutated may wait out a start grace or a listen timeout: not a hang. */
const START_ANSWER_MS = 2_500;
/** A daemon resurrecting from its dump.json still answers `status` within this (it takes
 * milliseconds: resurrect waits for its apps without holding up other requests). */
const RESPONSIVE_MS = 5_000;
/** How long `daemon --resurrect` may take to say how resurrecting went (its apps take well under
 * a second to run). */
const RESURRECT_ANSWER_MS = 15_000;
/** How old the witness's latest pong may be after the run (heartbeats every 500 ms). */
const FRESH_PONG_MS = 4_000;
const MAX_CONTROL_FRAME = 32 * 1024 * 1024;
const MAX_WORKER_FRAME = 64 * 1024;
const PANIC = /panicked/;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

/** sfc32, seeded from (SEED, stream, index) so each case's input does not depend on the others. */
function rngFor(stream, index) {
  let a = SEED >>> 0;
  let b = Math.floor(SEED / 0x100000000) >>> 0;
  let c = (stream * 0x9e3779b1) >>> 0;
  let d = (index * 0x85ebca6b + 1) >>> 0;
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (a + b + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  for (let i = 0; i < 15; i++) next();
  const rng = {
    below: (n) => next() % n,
    chance: (oneIn) => next() % oneIn === 0,
    pick: (items) => items[next() % items.length],
    bytes: (max) => Buffer.from(Array.from({ length: next() % max }, () => next() & 0xff)),
  };
  return rng;
}

// Raw JSON text that JSON.stringify cannot produce (NaN, out-of-range numbers, exact u64 limits):
// a marker string in the tree, swapped for the raw text after stringifying.
const RAW = '\u0001raw:';
const raw = (text) => `${RAW}${text}\u0001`;
function toJson(value, pretty = false) {
  const text = JSON.stringify(value, null, pretty ? 2 : 0);
  return text.replace(/"\\u0001raw:(.*?)\\u0001"/g, (_, inner) => JSON.parse(`"${inner}"`));
}

const ODD_NUMBERS = [0, -1, 0.5, 1e300, -1e300, 4294967295, 4294967296, Number.MAX_SAFE_INTEGER,
  raw('18446744073709551615'), raw('18446744073709551616'), raw('9223372036854775807'),
  raw('-9223372036854775808'), raw('1e309'), raw('-0'), raw('5e-324'), raw('NaN'), raw('Infinity'),
  raw('123456789012345678901234567890')];
const ODD_STRINGS = ['', ' ', '-1', 'NaN', '1e300', '4000000000000000h', '18446744073709551616ms',
  '1e309s', '99999999999999T', 'a\u0000b', 'line\nbreak', '\u001b[31mred', 'all', '0', 'a/b', '/',
  '💥', 'x'.repeat(300)];

/** A value that breaks assumptions: huge, negative, fractional, out of range, wrong type. */
function oddValue(rng) {
  switch (rng.below(9)) {
    case 0: case 1: case 2: case 3: return rng.pick(ODD_NUMBERS);
    case 4: case 5: return rng.pick(ODD_STRINGS);
    case 6: return rng.pick([null, true, false]);
    case 7: return [1, 'two', null];
    default: return { nested: { deeper: [true, 1e300] } };
  }
}

/** Returns `value` with one spot changed: a value replaced, a field dropped, added or copied. */
function mutateValue(value, rng, extraFields = []) {
  if (value && typeof value === 'object' && !Array.isArray(value) && !rng.chance(8)) {
    const keys = Object.keys(value);
    if (keys.length === 0) return oddValue(rng);
    const key = rng.pick(keys);
    const copy = { ...value };
    const choice = rng.below(8);
    if (choice === 0) delete copy[key];
    else if (choice === 1 && extraFields.length) copy[rng.pick(extraFields)] = oddValue(rng);
    else copy[key] = mutateValue(value[key], rng, extraFields);
    return copy;
  }
  if (Array.isArray(value) && value.length && !rng.chance(8)) {
    const copy = [...value];
    const at = rng.below(copy.length);
    const choice = rng.below(6);
    if (choice === 0) copy.splice(at, 1);
    else if (choice === 1) copy.push(copy[at]);
    else copy[at] = mutateValue(copy[at], rng, extraFields);
    return copy;
  }
  return oddValue(rng);
}

function mutateMany(value, rng, extraFields) {
  let out = value;
  for (let i = rng.below(4); i >= 0; i--) out = mutateValue(out, rng, extraFields);
  return out;
}

/** Byte-level damage: flips, truncation, insertions, duplicated stretches. */
function mutateBytes(input, rng) {
  let bytes = Buffer.from(input);
  for (let i = rng.below(4); i >= 0; i--) {
    if (bytes.length === 0) {
      bytes = rng.bytes(17);
      continue;
    }
    const at = rng.below(bytes.length);
    switch (rng.below(5)) {
      case 0: bytes[at] ^= 1 << rng.below(8); break;
      case 1: bytes = bytes.subarray(0, at); break;
      case 2: bytes = Buffer.concat([bytes.subarray(0, at), rng.bytes(9), bytes.subarray(at)]); break;
      case 3: bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at, at + 1 + rng.below(32)), bytes.subarray(at)]); break;
      default: bytes[at] = rng.pick(Buffer.from('{}[]",:0-.e\\')); break;
    }
  }
  return bytes;
}

/** Length prefix + payload (helpers.frame for a message, this for raw bytes or a lying length). */
function framed(payload, announced = payload.length) {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(announced >>> 0);
  return Buffer.concat([header, payload]);
}

// ---------------------------------------------------------------------------------------------
// Sockets

/**
 * Connects to a Unix socket, writes `bytes` (then half-closes unless `keepOpen`), and collects the
 * reply until the peer closes or `timeout`: { closed, frames, ms }.
 */
function exchange(socketPath, bytes, { timeout, keepOpen = false } = {}) {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const chunks = [];
    const socket = net.createConnection(socketPath);
    let settled = false;
    const finish = (closed) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ closed, frames: h.decodeFrames(Buffer.concat(chunks)), ms: performance.now() - start });
    };
    const timer = setTimeout(() => finish(false), timeout);
    socket.on('connect', () => {
      socket.write(bytes, () => {});
      if (!keepOpen) socket.end();
    });
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', (err) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true);
      else if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(new Error(`cannot reach ${socketPath}: ${err.message}`));
      }
    });
  });
}

/** A short description of bytes sent, for failure messages: the first 4 bytes in hex (a length
 * prefix, if the input has one), then the rest as text. */
function show(bytes) {
  bytes = Buffer.from(bytes);
  if (bytes.length >= 4) return `[${bytes.subarray(0, 4).toString('hex')}] ${showText(bytes.subarray(4))}`;
  return showText(bytes);
}

/** A whole document (a config, a dump.json) for failure messages: indentation folded, 3000 chars. */
function showDocument(bytes) {
  const text = Buffer.from(bytes).toString('utf8').replace(/\n\s*/g, ' ');
  return JSON.stringify(text.length > 3000 ? `${text.slice(0, 3000)}… (${bytes.length} bytes)` : text);
}

function showText(bytes) {
  const text = bytes.toString('utf8');
  const shown = text.length > 400 ? `${text.slice(0, 400)}… (${bytes.length} bytes)` : text;
  return JSON.stringify(shown);
}

/** Keeps the latest inputs and says which ones, with the seed, when something goes wrong. */
class Journal {
  constructor(name, keep = 12) {
    this.name = name;
    this.keep = keep;
    this.entries = [];
  }

  add(entry) {
    this.entries.push(entry);
    if (this.entries.length > this.keep) this.entries.shift();
  }

  report(problem) {
    return [
      `${this.name}: ${problem}`,
      `replay with NODEGUARD_FUZZ_SEED=${SEED} node --test tests/fuzz.test.js`,
      `latest inputs, oldest first:`,
      ...this.entries.map((e) => `  ${e}`),
    ].join('\n');
  }
}

function panicLines(text) {
  return text.split('\n').filter((line) => PANIC.test(line));
}

/** Fails naming the inputs if the daemon logged a panic. */
function assertNoPanic(d, journal) {
  const panics = panicLines(d.daemonLog());
  if (panics.length) assert.fail(journal.report(`the daemon panicked:\n  ${panics.join('\n  ')}\n${d.describe()}`));
}

/** The Rust parse of a u32 (what matches a target to an app id): digits with an optional '+'. */
function rustU32(text) {
  if (!/^\+?[0-9]+$/.test(text)) return null;
  const n = BigInt(text);
  return n <= 0xffffffffn ? Number(n) : null;
}

/**
 * Keeps an app's log files in `dir` whatever the mutations did to them (a relative path under a
 * mutated cwd could land anywhere, and the tests run as root). Every other field stays as mutated.
 */
function confine(apps, dir) {
  if (!Array.isArray(apps)) return apps;
  return apps.map((app) => {
    if (!app || typeof app !== 'object' || Array.isArray(app)) return app;
    const copy = { ...app };
    for (const field of ['out_file', 'error_file']) {
      const value = copy[field];
      if (typeof value === 'string' && !(path.isAbsolute(value) && path.normalize(value).startsWith(`${dir}/`))) {
        copy[field] = path.join(dir, `${field}.log`);
      }
    }
    return copy;
  });
}

/** Writes a file the daemon may insist is private. */
function writePrivate(file, bytes) {
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, bytes, { mode: 0o600 });
}

/** A scratch directory for the test's own files, removed after it. */
function scratch(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-fz-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------------------------------------
// 1. Both sockets

/** A start request's app, as the CLI would send it (crates/proto AppDefinition). */
function definition(name) {
  return {
    name, script: IDLE, args: [], node: process.execPath, node_args: [], cwd: h.FIXTURES, env: [],
    out_file: null, error_file: null, log_timestamps: false, autorestart: 'always', max_restarts: 3,
    restart_window_ms: 60000, max_memory: null, clean_exit_codes: [0], min_uptime_ms: 1000,
    restart_delay_ms: 0, backoff_base_ms: 100, heartbeat_interval_ms: 1000, heartbeat_timeout_ms: 1000,
    heartbeat_misses: 3, start_grace_ms: 2000, kill_timeout_ms: 2000, instances: 1, listen: [],
    wait_ready: false, listen_timeout_ms: 2000, watch: [], ignore_watch: [], watch_delay_ms: null,
    cron_restart: null, kill_signal: null, shutdown_with_message: false, hang_show_query: false, interpreter: null,
    interpreter_args: [], instance_var: null, increment_var: null, namespace: null, uid: null, gid: null, caller_env: null, cluster: false,
    filter_env: null, log_date_format: null, log_file: null, pid_file: null, on_event: [], log_json: false,
    heap_snapshot_on_memory_restart: false, profile_on_stall_ms: null, disable_logs: false,
  };
}

const DEFINITION_FIELDS = Object.keys(definition('x'));
const U64_FIELDS = ['restart_window_ms', 'max_memory', 'min_uptime_ms', 'restart_delay_ms', 'backoff_base_ms',
  'heartbeat_interval_ms', 'heartbeat_timeout_ms', 'start_grace_ms', 'kill_timeout_ms', 'listen_timeout_ms',
  'profile_on_stall_ms'];
const U32_FIELDS = ['max_restarts', 'heartbeat_misses', 'instances'];
const U64_EDGES = [0, 1, 4294967295, 4294967296, Number.MAX_SAFE_INTEGER, raw('9223372036854775807'),
  raw('18446744073709551615')];
const U32_EDGES = [0, 1, 2, 4294967295];
/** Instance counts: 0, 1, one past the limit, the u32 limit (never a real cluster of idle apps,
 * which would wait out its listen timeout). */
const INSTANCE_EDGES = [0, 1, 257, 4294967295];
const edgesOf = (field) => (field === 'instances' ? INSTANCE_EDGES : U32_FIELDS.includes(field) ? U32_EDGES : U64_EDGES);
const TARGET_COMMANDS = ['stop', 'restart', 'reload', 'delete', 'describe', 'flush', 'reset'];

/** One input for the control socket: { what, bytes, answerBy } (answerBy: ms, or null if none is due). */
function controlInput(rng, index, isProtected, logDir) {
  const request = (command) => h.frame({ version: 1, command });
  // Targets that name no app (so every answer is due at once): never 'all', a protected name or
  // anything that reads as an id; the apps this fuzz starts are stopped all together at the end.
  const target = () => {
    for (;;) {
      const text = rng.pick([...ODD_STRINGS, 'fz-x', '+', '-7', '4294967296', '99999999999999999999', 'nope']);
      if (!isProtected(text) && rustU32(text) === null) return text;
    }
  };
  const kind = rng.below(12);
  switch (kind) {
    case 0: return { what: 'random bytes', bytes: rng.bytes(300), answerBy: CONTROL_ANSWER_MS };
    case 1: {
      const len = rng.pick([MAX_CONTROL_FRAME + 1, 0xffffffff, 0x80000000, 0]);
      return { what: `a header announcing ${len} bytes`, bytes: framed(rng.bytes(64), len), answerBy: CONTROL_ANSWER_MS };
    }
    case 2: {
      const whole = request({ type: rng.pick(['status', 'ping', 'save']) });
      return { what: 'a truncated frame', bytes: whole.subarray(0, 1 + rng.below(whole.length - 1)), answerBy: CONTROL_ANSWER_MS };
    }
    case 3: {
      const payload = mutateBytes(toJson({ version: 1, command: { type: rng.pick(['status', 'ping', 'describe']), target: target() } }), rng);
      return { what: 'a damaged request', bytes: framed(payload), answerBy: CONTROL_ANSWER_MS };
    }
    case 4: {
      const command = rng.pick(['status', 'ping', 'save', 'resurrect']);
      return { what: `a valid ${command}`, bytes: request({ type: command }), answerBy: CONTROL_ANSWER_MS, wantAnswer: true };
    }
    case 5: case 6: {
      const command = { type: rng.pick([...TARGET_COMMANDS, 'scale']), target: target() };
      if (command.type === 'scale') {
        command.count = rng.pick([0, 1, -1, 257, -257, raw('9223372036854775807'), raw('-9223372036854775808'),
          raw('18446744073709551615')]);
        command.relative = rng.chance(2);
      }
      return { what: `a valid ${command.type} of a target that is no protected app`, bytes: request(command), answerBy: CONTROL_ANSWER_MS, wantAnswer: true };
    }
    case 7: case 8: {
      // A request with odd fields: version, command type, target, extra fields.
      let value = { version: 1, command: { type: rng.pick(['status', 'ping', 'describe', 'flush']), target: target() } };
      value = mutateMany(value, rng, ['version', 'command', 'type', 'target', 'apps']);
      // Never a kill, and never a command that would reach a protected app.
      const command = value && value.command;
      if (command && typeof command === 'object' && (command.type === 'kill' || (typeof command.target === 'string' && isProtected(command.target)))) {
        return { what: 'a valid ping', bytes: request({ type: 'ping' }), answerBy: CONTROL_ANSWER_MS };
      }
      return { what: 'a mutated request', bytes: framed(Buffer.from(toJson(value))), answerBy: CONTROL_ANSWER_MS };
    }
    case 9: case 10: {
      // A start whose numbers have the right type but sit at its edges (0, u32 and u64 limits).
      const app = definition(`fz-${index}`);
      for (let i = rng.below(3); i >= 0; i--) {
        const field = rng.pick(U64_FIELDS.concat(U32_FIELDS));
        app[field] = rng.pick(edgesOf(field));
      }
      return { what: 'a start with edge numbers', bytes: framed(Buffer.from(toJson({ version: 1, command: { type: 'start', apps: [app] } }))), answerBy: null };
    }
    default: {
      // A start with odd app fields; its name stays unique and unprotected.
      let app = definition(`fz-${index}`);
      for (let i = rng.below(3); i >= 0; i--) app = { ...app, [rng.pick(DEFINITION_FIELDS)]: oddValue(rng) };
      if (typeof app.name === 'string' && isProtected(app.name)) app.name = `fz-${index}`;
      const apps = confine(rng.chance(6) ? mutateMany([app], rng, DEFINITION_FIELDS) : [app], logDir);
      return { what: 'a start with odd fields', bytes: framed(Buffer.from(toJson({ version: 1, command: { type: 'start', apps } }))), answerBy: null };
    }
  }
}

/** Numbers at the edges of what an f64 field may carry (and of what a duration can hold). */
const FLOAT_EDGES = [1e300, 1.7976931348623157e308, 1e20, raw('123456789012345678901234567890'), -1, -1e300,
  5e-324, 0, raw('-0'), 1e15, raw('1e309'), 18446744073709551615];

/** Where the numbers are in each monitor message (paths into the message). */
const NUMERIC_LEAVES = {
  pong: [['seq'], ['queued_ms'], ['memory', 'rss'], ['memory', 'heap_total'], ['memory', 'heap_used'],
    ['memory', 'external'], ['memory', 'array_buffers'], ['loop_delay', 'mean_ms'], ['loop_delay', 'p50_ms'],
    ['loop_delay', 'p99_ms'], ['loop_delay', 'max_ms']],
  probe_reply: [['seq'], ['queued_seq'], ['queued_ms'], ['last_ping_seq']],
  hello: [['version'], ['pid']],
  ready: [],
  share: [['id'], ['port']],
  listened_elsewhere: [['port']],
};

function withLeaf(message, leaf, value) {
  const copy = JSON.parse(JSON.stringify(message));
  let node = copy;
  for (const key of leaf.slice(0, -1)) node = node[key];
  node[leaf[leaf.length - 1]] = value;
  return copy;
}

/**
 * A message from an app's monitor as frame bytes: valid; valid but with one number at an edge
 * (huge, negative, subnormal, out of range); mutated in shape; damaged; or random bytes.
 */
function monitorMessage(rng, lastPing, token, pid) {
  const templates = [
    () => ({
      type: 'pong', seq: lastPing, queued_ms: 0.2, stack_on_sigint: false,
      memory: { rss: 50e6, heap_total: 9e6, heap_used: 5e6, external: 1e6, array_buffers: 1e4 },
      loop_delay: { mean_ms: 0.1, p50_ms: 0.1, p99_ms: 1.2, max_ms: 4 },
    }),
    () => ({ type: 'probe_reply', seq: lastPing, queued_seq: lastPing, queued_ms: 120.5, last_ping_seq: lastPing }),
    () => ({ type: 'ready' }),
    () => ({ type: 'hello', version: 1, token, pid }),
    // The puppet runs one instance: a share request is answered with an error, nothing is bound.
    () => ({ type: 'share', id: 1, host: rng.pick(['127.0.0.1', '::', 'localhost', '', null]), port: rng.pick([3000, 0, 65536]) }),
    () => ({ type: 'listened_elsewhere', port: 3721 }),
  ];
  const message = templates[rng.pick([0, 0, 0, 1, 1, 1, 2, 3, 4, 5])]();
  const choice = rng.below(10);
  if (choice < 3) return { what: `a valid ${message.type}`, bytes: h.frame(message) };
  const leaves = NUMERIC_LEAVES[message.type];
  if (choice < 7 && leaves.length) {
    const leaf = rng.pick(leaves);
    const edged = withLeaf(message, leaf, rng.chance(3) ? rng.pick(ODD_NUMBERS) : rng.pick(FLOAT_EDGES));
    return { what: `a ${message.type} with an edge value in ${leaf.join('.')}`, bytes: framed(Buffer.from(toJson(edged))) };
  }
  if (choice < 9) {
    const mutated = mutateMany(message, rng, ['seq', 'queued_ms', 'queued_seq', 'memory', 'loop_delay', 'rss', 'type', 'version', 'host', 'port', 'id']);
    return { what: `a mutated ${message.type}`, bytes: framed(Buffer.from(toJson(mutated))) };
  }
  if (rng.chance(2)) return { what: `a damaged ${message.type}`, bytes: framed(mutateBytes(toJson(message), rng)) };
  return { what: 'random bytes', bytes: rng.bytes(200) };
}

/** One input for the worker socket before any hello: { what, bytes }. */
function workerRawInput(rng) {
  const hello = { type: 'hello', version: 1, token: '0123456789abcdef0123456789abcdef', pid: process.pid };
  switch (rng.below(6)) {
    case 0: return { what: 'random bytes', bytes: rng.bytes(300) };
    case 1: {
      const len = rng.pick([MAX_WORKER_FRAME + 1, 0xffffffff, 0]);
      return { what: `a header announcing ${len} bytes`, bytes: framed(rng.bytes(64), len) };
    }
    case 2: {
      const whole = h.frame(hello);
      return { what: 'a truncated hello', bytes: whole.subarray(0, 1 + rng.below(whole.length - 1)) };
    }
    case 3: return { what: 'a damaged hello', bytes: framed(mutateBytes(toJson(hello), rng)) };
    case 4: return { what: 'a mutated hello', bytes: framed(Buffer.from(toJson(mutateMany(hello, rng, ['token', 'pid', 'version', 'type'])))) };
    default: return { what: 'a monitor message before any hello', bytes: monitorMessage(rng, 1, hello.token, process.pid).bytes };
  }
}

/**
 * Speaks as the puppet's monitor: hello with its real token, then `count` messages (valid,
 * mutated, damaged) while answering some pings. Resolves once the supervisor closed the
 * connection or the messages are out.
 */
async function monitorSession(socketPath, rng, token, pid, journal) {
  const socket = net.createConnection(socketPath);
  let buffer = Buffer.alloc(0);
  let lastPing = 0;
  let closed = false;
  let welcomed = null;
  const welcome = new Promise((resolve) => { welcomed = resolve; });
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    const { frames, rest } = h.decodeFrames(buffer);
    buffer = buffer.subarray(buffer.length - rest);
    for (const f of frames) {
      if (f.type === 'welcome' || f.type === 'refused') welcomed(f);
      if (f.type === 'ping' && Number.isInteger(f.seq)) lastPing = f.seq;
    }
  });
  const gone = new Promise((resolve) => socket.on('close', () => { closed = true; welcomed({ type: 'closed' }); resolve(); }));
  socket.on('error', () => {});
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(h.frame({ type: 'hello', version: 1, token, pid }));
  const answer = await Promise.race([welcome, h.sleep(WORKER_CLOSE_MS).then(() => ({ type: 'no answer' }))]);
  journal.add(`worker session for pid ${pid}: hello -> ${answer.type}${answer.reason ? ` (${answer.reason})` : ''}`);
  if (answer.type !== 'welcome') {
    socket.destroy();
    return answer.type;
  }
  const count = 4 + rng.below(20);
  for (let i = 0; i < count && !closed; i++) {
    const message = monitorMessage(rng, lastPing, token, pid);
    journal.add(`worker session message ${i}: ${message.what}: ${show(message.bytes)}`);
    socket.write(message.bytes);
    await h.sleep(rng.below(80));
  }
  socket.end();
  await Promise.race([gone, h.sleep(WORKER_CLOSE_MS)]);
  socket.destroy();
  return 'welcome';
}

test('random and mutated frames on the control and worker sockets: the daemon and its apps carry on', async (t) => {
  const d = new h.DaemonHome(t, { env: { NODEGUARD_PRELOAD: FUZZ_PRELOAD } });
  const dir = scratch(t);
  const config = path.join(dir, 'apps.json');
  fs.writeFileSync(config, JSON.stringify({
    apps: [
      { name: 'witness', script: IDLE, heartbeat_interval: '500ms', heartbeat_timeout: '500ms' },
      {
        name: 'puppet', script: IDLE, env: { NODEGUARD_FUZZ_PUPPET: '1' }, start_grace: '300ms',
        heartbeat_interval: '200ms', heartbeat_timeout: '200ms', heartbeat_misses: 3, max_restarts: 0,
      },
    ],
  }));
  await d.ok(['start', config]);
  const before = await d.waitForStatus((apps) => {
    const witness = apps.find((a) => a.name === 'witness');
    return witness && witness.state === 'running' && witness.monitored ? apps : false;
  }, { what: 'the witness app to run with its monitor connected' });
  const witness = before.find((a) => a.name === 'witness');
  const daemonPid = d.daemonPid();
  const protectedIds = before.map((a) => a.id);
  const isProtected = (text) => ['all', 'witness', 'puppet'].includes(text) || protectedIds.includes(rustU32(text));
  const { control, worker } = h.sockets(d.home);

  // Control socket.
  const journal = new Journal('control socket');
  let deletedApps = 0;
  let started = performance.now();
  let ran = 0;
  for (let i = 0; i < CONTROL_CASES && performance.now() - started < PHASE_BUDGET_MS; i++, ran++) {
    const input = controlInput(rngFor(1, i), i, isProtected, dir);
    journal.add(`case ${i}: ${input.what}: ${show(input.bytes)}`);
    const reply = await exchange(control, input.bytes, { timeout: input.answerBy ?? START_ANSWER_MS });
    if (input.answerBy !== null && !reply.closed) {
      assert.fail(journal.report(`the daemon held the connection open for ${input.answerBy} ms\n${d.describe()}`));
    }
    if (input.wantAnswer && reply.frames.frames.length !== 1) {
      assert.fail(journal.report(`a valid request got ${JSON.stringify(reply.frames)} instead of one answer\n${d.describe()}`));
    }
    assertNoPanic(d, journal);
    // An app a start brought up goes again at once (dozens of idle apps would crowd a small
    // machine), which also shows that an app with odd settings can be deleted.
    const done = reply.frames.frames.find((f) => f.outcome && f.outcome.type === 'done');
    if (input.answerBy === null && done) {
      for (const name of new Set(done.outcome.apps.map((a) => a.name))) {
        journal.add(`case ${i}: delete ${JSON.stringify(name)}`);
        const deleted = await exchange(control, h.frame({ version: 1, command: { type: 'delete', target: name } }), { timeout: CONTROL_ANSWER_MS });
        const outcome = deleted.frames.frames[0] && deleted.frames.frames[0].outcome;
        if (!outcome || outcome.type !== 'done') {
          assert.fail(journal.report(`deleting an app a start brought up failed: ${JSON.stringify(deleted)}\n${d.describe()}`));
        }
        assertNoPanic(d, journal);
        deletedApps++;
      }
    }
  }
  t.diagnostic(`control socket: ${ran} cases, ${deletedApps} apps started and deleted, in ${Math.round(performance.now() - started)} ms (seed ${SEED})`);

  // Worker socket, before any hello.
  const workerJournal = new Journal('worker socket');
  started = performance.now();
  ran = 0;
  for (let i = 0; i < WORKER_RAW_CASES && performance.now() - started < PHASE_BUDGET_MS; i++, ran++) {
    const input = workerRawInput(rngFor(2, i));
    workerJournal.add(`case ${i}: ${input.what}: ${show(input.bytes)}`);
    const reply = await exchange(worker, input.bytes, { timeout: WORKER_CLOSE_MS });
    if (!reply.closed) assert.fail(workerJournal.report(`the supervisor held the connection open\n${d.describe()}`));
    if (reply.frames.frames.some((f) => f.type === 'welcome')) {
      assert.fail(workerJournal.report(`welcomed without a valid token: ${JSON.stringify(reply.frames)}`));
    }
    assertNoPanic(d, workerJournal);
  }
  t.diagnostic(`worker socket: ${ran} raw cases in ${Math.round(performance.now() - started)} ms`);

  // Worker socket, as the puppet's monitor: each session with the token of a fresh spawn.
  started = performance.now();
  let sessions = 0;
  let welcomes = 0;
  for (let i = 0; i < WORKER_SESSIONS && performance.now() - started < PHASE_BUDGET_MS; i++, sessions++) {
    await d.ok(['restart', 'puppet'], { timeout: 15_000 });
    const puppet = (await d.status()).find((a) => a.name === 'puppet');
    const token = puppet && Number.isInteger(puppet.pid) ? h.procEnv(puppet.pid).NODEGUARD_TOKEN : undefined;
    if (!token) assert.fail(workerJournal.report(`no token for the puppet: ${JSON.stringify(puppet)}\n${d.describe()}`));
    const outcome = await monitorSession(worker, rngFor(3, i), token, puppet.pid, workerJournal);
    if (outcome === 'welcome') welcomes++;
    assertNoPanic(d, workerJournal);
  }
  t.diagnostic(`worker socket: ${sessions} monitor sessions (${welcomes} welcomed) in ${Math.round(performance.now() - started)} ms`);
  assert.ok(welcomes > 0, 'no monitor session was welcomed: the puppet token path does not work');

  // The daemon carries on: same process, answers, the witness runs with fresh heartbeats.
  const everything = new Journal('after the fuzzing', 0);
  assert.equal(d.daemonPid(), daemonPid, 'another daemon took over');
  assert.ok(!h.isGone(daemonPid), `the daemon (pid ${daemonPid}) is gone\n${d.describe()}`);
  const row = await d.waitForStatus((apps) => {
    const w = apps.find((a) => a.name === 'witness');
    return w && w.state === 'running' && w.last_pong_ms !== null && w.last_pong_ms < FRESH_PONG_MS ? w : false;
  }, { what: 'the witness to run with a fresh pong' });
  assert.equal(row.pid, witness.pid, 'the witness was restarted');
  assert.equal(row.restarts, 0);
  // Every app, the fuzz's own included, can be stopped.
  const stop = await d.cli(['stop', 'all'], { timeout: 30_000 });
  assert.equal(stop.code, 0, everything.report(`stop all failed: ${stop.stderr}\n${d.describe()}`));
  const after = await d.status();
  t.diagnostic(`after stop all: ${after.length} apps`);
  // At rest: stopped, or errored (given up on before, which stop leaves as it is); no process.
  const notStopped = after.filter((a) => !['stopped', 'errored'].includes(a.state) || a.pid !== null);
  assert.deepEqual(notStopped, [], 'apps still running after stop all');
  assertNoPanic(d, everything);
});

// ---------------------------------------------------------------------------------------------
// 2. Config files

const DURATION_FIELDS = ['kill_timeout', 'min_uptime', 'restart_delay', 'exp_backoff_restart_delay', 'listen_timeout',
  'heartbeat_interval', 'heartbeat_timeout', 'start_grace'];
/** Durations past what an Instant, a u64 of milliseconds or an f64 holds, and below a millisecond. */
const DURATION_EDGES = ['4000000000000000h', '18446744073709551616ms', '5124095576030431h', '1e309s', '0.5ms', '0ms',
  '99999999999999999999', 1e300, 18446744073709551615, 0.5, 0, raw('18446744073709551615')];

/** One error line, or a config's problems one line each naming the file; warnings one line each. */
function assertOneLineErrors(stderr, file, journal) {
  const lines = stderr.split('\n').filter((line) => line.length > 0);
  let errors = 0;
  let inProblems = false;
  for (const line of lines) {
    if (line.startsWith('nodeguard: warning: ')) continue;
    if (line.startsWith('nodeguard: error: ')) {
      errors++;
      inProblems = true;
      continue;
    }
    if (inProblems && line.startsWith(file)) continue;
    assert.fail(journal.report(`a stray stderr line: ${JSON.stringify(line)}\nwhole stderr: ${stderr}`));
  }
  if (errors > 1) assert.fail(journal.report(`${errors} error lines: ${stderr}`));
  return errors;
}

test('nodeguard start with mutated JSON and YAML config files: a clean start or one line per problem, never a panic', async (t) => {
  const d = new h.DaemonHome(t);
  const dir = scratch(t);
  const base = {
    apps: [{
      name: 'cfg', script: IDLE, args: '--flag value', cwd: h.FIXTURES, env: { A: '1', N: 2 },
      instances: 1, node_args: ['--max-old-space-size=128'], max_memory_restart: '200M', kill_timeout: 2000,
      autorestart: true, max_restarts: 3, min_uptime: '1s', restart_delay: 100, exp_backoff_restart_delay: 100,
      stop_exit_codes: [0], wait_ready: false, listen_timeout: '2s', listen: [],
      out_file: path.join(dir, 'out.log'), error_file: path.join(dir, 'err.log'), time: true,
      heartbeat_interval: '1s', heartbeat_timeout: '500ms', heartbeat_misses: 3, start_grace: '2s',
    }],
  };
  const fields = Object.keys(base.apps[0]);
  const journal = new Journal('start <config>');
  const codes = {};
  const started = performance.now();
  let ran = 0;
  for (let i = 0; i < CONFIG_CASES && performance.now() - started < 3 * PHASE_BUDGET_MS; i++, ran++) {
    const rng = rngFor(4, i);
    const choice = rng.below(10);
    // Damaged text is also read as YAML (JSON is YAML), half the time.
    const file = path.join(dir, `c${i}.${choice < 2 && rng.chance(2) ? 'yml' : 'json'}`);
    let bytes;
    if (choice < 2) {
      // Damaged text, from a base whose log paths a flipped bit cannot move out of the scratch dir.
      bytes = mutateBytes(toJson({ apps: [{ ...base.apps[0], out_file: undefined, error_file: undefined }] }, true), rng);
    } else if (choice < 4) {
      // Any part of the tree changed.
      const mutated = mutateMany(base, rng, fields);
      if (mutated && typeof mutated === 'object' && !Array.isArray(mutated)) mutated.apps = confine(mutated.apps, dir);
      bytes = Buffer.from(toJson(Array.isArray(mutated) ? confine(mutated, dir) : mutated, true));
    } else {
      // A well-formed app with a field or two at an edge: a duration, a count or anything odd.
      const app = { ...base.apps[0] };
      for (let n = rng.below(2); n >= 0; n--) {
        const field = rng.pick(fields);
        app[field] = DURATION_FIELDS.includes(field) && !rng.chance(4) ? rng.pick(DURATION_EDGES) : oddValue(rng);
      }
      bytes = Buffer.from(toJson({ apps: confine([app], dir) }, true));
    }
    fs.writeFileSync(file, bytes);
    journal.add(`case ${i}: ${showDocument(bytes)}`);
    const result = await d.cli(['start', file], { timeout: 30_000 });
    codes[result.code] = (codes[result.code] || 0) + 1;
    const said = `exit ${result.code}, signal ${result.signal}, timed out ${result.timedOut}; stderr: ${result.stderr}`;
    assert.ok(!result.timedOut && result.signal === null, journal.report(`start did not finish: ${said}\n${d.describe()}`));
    assert.ok(!PANIC.test(result.stderr), journal.report(`start panicked: ${said}`));
    assert.ok([0, 1, 2].includes(result.code), journal.report(`exit code ${result.code}: ${said}`));
    const errors = assertOneLineErrors(result.stderr, file, journal);
    assert.equal(errors, result.code === 0 ? 0 : 1, journal.report(`exit code and error lines disagree: ${said}`));
    assertNoPanic(d, journal);
    if (d.daemonPid() && !h.isGone(d.daemonPid())) {
      const apps = await d.status();
      if (apps.length) {
        const gone = await d.cli(['delete', 'all'], { timeout: 30_000 });
        assert.equal(gone.code, 0, journal.report(`delete all failed: ${gone.stderr}\n${d.describe()}`));
      }
    }
    assertNoPanic(d, journal);
  }
  t.diagnostic(`start <config>: ${ran} cases (exit codes ${JSON.stringify(codes)}) in ${Math.round(performance.now() - started)} ms (seed ${SEED})`);
});

// ---------------------------------------------------------------------------------------------
// 3. dump.json

function dumpBase() {
  const app = (name, instances) => ({ ...definition(name), instances, listen: [] });
  return {
    version: 1,
    apps: [
      { id: 0, definition: app('api', 1), restarts: 2, hangs: 1, stopped: false },
      { id: 1, definition: app('web', 2), restarts: 1, hangs: 0, stopped: true,
        instances: [{ restarts: 1, hangs: 0 }, { restarts: 0, hangs: 0 }] },
    ],
  };
}

const DUMP_FIELDS = ['version', 'apps', 'id', 'definition', 'restarts', 'hangs', 'stopped', 'instances', ...DEFINITION_FIELDS];

/** A dump.json: damaged text, a mutated tree, or numbers of the right type at their edges. */
function mutatedDump(rng, logDir) {
  const base = dumpBase();
  const choice = rng.below(10);
  if (choice < 2) return mutateBytes(toJson(base, true), rng);
  if (choice < 5) {
    const mutated = mutateMany(base, rng, DUMP_FIELDS);
    if (mutated && typeof mutated === 'object' && Array.isArray(mutated.apps)) {
      mutated.apps = mutated.apps.map((app) => (app && typeof app === 'object' && app.definition && typeof app.definition === 'object'
        ? { ...app, definition: confine([app.definition], logDir)[0] } : app));
    }
    return Buffer.from(toJson(mutated, true));
  }
  for (let i = rng.below(3); i >= 0; i--) {
    const app = rng.pick(base.apps);
    const field = rng.pick(['id', 'restarts', 'hangs', 'instances_counts', ...U64_FIELDS, ...U32_FIELDS]);
    if (field === 'id') app.id = rng.pick(U32_EDGES);
    else if (field === 'restarts' || field === 'hangs') app[field] = rng.pick(U64_EDGES);
    else if (field === 'instances_counts') app.instances = [{ restarts: rng.pick(U64_EDGES), hangs: 0 }];
    else app.definition[field] = rng.pick(edgesOf(field));
  }
  return Buffer.from(toJson(base, true));
}

/** Status rows must not share an id (an id that wrapped would). */
function assertUniqueIds(apps, journal) {
  const ids = apps.map((a) => a.id);
  assert.equal(new Set(ids).size, ids.length, journal.report(`apps share an id: ${JSON.stringify(apps.map((a) => [a.name, a.id, a.instance]))}`));
}

test('resurrect from mutated dump.json files: a clean result or one line, never a panic', async (t) => {
  // `nodeguard resurrect` against one running daemon.
  const d = new h.DaemonHome(t);
  const logDir = scratch(t);
  const seedFile = path.join(d.home, 'seed.json');
  fs.writeFileSync(seedFile, JSON.stringify({ apps: [{ name: 'seed', script: IDLE }] }));
  await d.ok(['start', seedFile]);
  await d.ok(['delete', 'all']);
  const journal = new Journal('resurrect');
  let started = performance.now();
  let ran = 0;
  const outcomes = { resurrected: 0, refused: 0 };
  for (let i = 0; i < RESURRECT_CASES && performance.now() - started < PHASE_BUDGET_MS; i++, ran++) {
    const bytes = mutatedDump(rngFor(5, i), logDir);
    writePrivate(path.join(d.home, 'dump.json'), bytes);
    journal.add(`case ${i}: dump.json ${showDocument(bytes)}`);
    // While it resurrects, the daemon keeps answering others.
    let finished = false;
    const resurrecting = d.cli(['resurrect'], { timeout: 30_000 }).then((r) => {
      finished = true;
      return r;
    });
    while (!finished) {
      const probe = await h.run(['status', '--json'], { env: d.env, timeout: RESPONSIVE_MS });
      if (probe.timedOut && !finished) {
        assert.fail(journal.report(`the daemon did not answer status within ${RESPONSIVE_MS} ms while resurrecting\n${d.describe()}`));
      }
    }
    const result = await resurrecting;
    const said = `exit ${result.code}, signal ${result.signal}, timed out ${result.timedOut}; stderr: ${result.stderr}`;
    assert.ok(!result.timedOut && result.signal === null, journal.report(`resurrect did not finish: ${said}\n${d.describe()}`));
    assert.ok(!PANIC.test(result.stderr), journal.report(`resurrect panicked: ${said}`));
    assert.ok([0, 1].includes(result.code), journal.report(`exit code ${result.code}: ${said}`));
    const lines = result.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, result.code === 0 ? 0 : 1, journal.report(`want ${result.code === 0 ? 'no' : 'one'} stderr line: ${said}`));
    assertNoPanic(d, journal);
    outcomes[result.code === 0 ? 'resurrected' : 'refused']++;
    const apps = await d.status();
    assertUniqueIds(apps, journal);
    if (apps.length) {
      const gone = await d.cli(['delete', 'all'], { timeout: 30_000 });
      assert.equal(gone.code, 0, journal.report(`delete all failed: ${gone.stderr}\n${d.describe()}`));
    }
    assertNoPanic(d, journal);
  }
  t.diagnostic(`resurrect: ${ran} cases (${outcomes.resurrected} resurrected, ${outcomes.refused} refused) in ${Math.round(performance.now() - started)} ms (seed ${SEED})`);

  // `nodeguard daemon --resurrect` (what the systemd unit runs) in a fresh home each time.
  const daemonJournal = new Journal('daemon --resurrect');
  const daemonOutcomes = [];
  started = performance.now();
  ran = 0;
  for (let i = 0; i < DAEMON_RESURRECT_CASES && performance.now() - started < PHASE_BUDGET_MS; i++, ran++) {
    const home = h.makeHome();
    const bytes = mutatedDump(rngFor(6, i), logDir);
    writePrivate(path.join(home, 'dump.json'), bytes);
    daemonJournal.add(`case ${i}: dump.json ${showDocument(bytes)}`);
    const sup = new h.Supervisor({ home, args: ['daemon', '--resurrect'], env: {} });
    try {
      // It resurrects (or says why not) and serves, or exits with one line.
      await sup.waitFor(
        () => sup.exit || sup.lines.some((l) => /resurrect/.test(l.text)),
        { what: 'the daemon to say how resurrect went', exitOk: true, timeout: RESURRECT_ANSWER_MS },
      );
      const output = sup.lines.map((l) => l.text).join('\n');
      if (PANIC.test(output)) assert.fail(daemonJournal.report(`the daemon panicked:\n${sup.describe()}`));
      if (sup.exit) {
        assert.ok([1, 2].includes(sup.exit.code), daemonJournal.report(`the daemon exited ${sup.exit.code}:\n${sup.describe()}`));
        assert.equal(sup.lines.filter((l) => l.stream === 'stderr').length, 1, daemonJournal.report(`want one line:\n${sup.describe()}`));
        continue;
      }
      const apps = await sup.status();
      daemonOutcomes.push(`${apps.length} apps`);
      assertUniqueIds(apps, daemonJournal);
      const killed = await h.run(['kill'], { env: { NODEGUARD_HOME: home }, timeout: 30_000 });
      assert.equal(killed.code, 0, daemonJournal.report(`kill failed: ${killed.stderr}\n${sup.describe()}`));
      await sup.waitExit({ timeout: 30_000 });
      const all = sup.lines.map((l) => l.text).join('\n');
      if (PANIC.test(all)) assert.fail(daemonJournal.report(`the daemon panicked:\n${sup.describe()}`));
      assert.equal(sup.exit.code, 0, daemonJournal.report(`the daemon exited ${sup.exit.code} after kill:\n${sup.describe()}`));
    } finally {
      await sup.cleanup();
    }
  }
  t.diagnostic(`daemon --resurrect: ${ran} cases (${daemonOutcomes.join(', ')}) in ${Math.round(performance.now() - started)} ms`);
});
