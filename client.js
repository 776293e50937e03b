'use strict';
// require('nodeguard-monitor/client'): the nodeguard daemon's control socket from Node, for deploy
// scripts and tools (what PM2's programmatic API is used for). One request per connection, as the
// CLI does: a 4-byte big-endian length and a JSON `{ version, command }`, answered by one
// `{ version, outcome }` (an `events` request by one `event` outcome per event, until closed).
// Only the user who runs the daemon may connect: the daemon checks the peer's uid.

const { EventEmitter } = require('node:events');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

/** The control socket's protocol version (crates/proto/src/lib.rs PROTOCOL_VERSION). */
const PROTOCOL_VERSION = 1;
/** Largest frame accepted (crates/proto MAX_CONTROL_FRAME). */
const MAX_FRAME = 32 * 1024 * 1024;
/** Defaults of `nodeguard start` for what an app config leaves out. */
const DEFAULTS = {
  heartbeat_interval_ms: 1000,
  heartbeat_timeout_ms: 1000,
  heartbeat_misses: 3,
  start_grace_ms: 5000,
  kill_timeout_ms: 5000,
};

/** The home the CLI uses: $NODEGUARD_HOME, else ~/.nodeguard. */
function defaultHome() {
  if (process.env.NODEGUARD_HOME) return process.env.NODEGUARD_HOME;
  return path.join(process.env.HOME || os.homedir(), '.nodeguard');
}

function frame(message) {
  const payload = Buffer.from(JSON.stringify(message));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/** Splits incoming bytes into parsed frames; throws on an oversize or unparsable one. */
class Frames {
  constructor() {
    this.buffer = Buffer.alloc(0);
  }

  push(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    const out = [];
    while (this.buffer.length >= 4) {
      const len = this.buffer.readUInt32BE(0);
      if (len > MAX_FRAME) throw new Error(`nodeguard: a frame of ${len} bytes from the supervisor is over the limit`);
      if (this.buffer.length < 4 + len) break;
      const response = JSON.parse(this.buffer.subarray(4, 4 + len).toString('utf8'));
      this.buffer = this.buffer.subarray(4 + len);
      if (response.version !== PROTOCOL_VERSION) {
        throw new Error(`nodeguard: the supervisor speaks protocol version ${response.version}, this client ${PROTOCOL_VERSION}`);
      }
      out.push(response.outcome);
    }
    return out;
  }
}

function errorFrom(outcome) {
  const error = new Error(outcome.message);
  error.code = 'NODEGUARD_REFUSED';
  return error;
}

function connectError(err, socketPath, home) {
  if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
    const error = new Error(`no nodeguard supervisor is running on ${home}`);
    error.code = 'NODEGUARD_NOT_RUNNING';
    return error;
  }
  err.message = `cannot connect to ${socketPath}: ${err.message}`;
  return err;
}

/** An app config (one app of an ecosystem file) as the daemon's AppDefinition. */
function definition(config) {
  if (!config || typeof config !== 'object') throw new TypeError('start(config): config must be an object');
  if (typeof config.script !== 'string' || config.script === '') throw new TypeError('start(config): config.script must be a path');
  const cwd = path.resolve(config.cwd || process.cwd());
  const args = config.args === undefined ? [] : typeof config.args === 'string' ? config.args.split(/\s+/).filter(Boolean) : config.args;
  const nodeArgs = config.node_args === undefined ? [] : typeof config.node_args === 'string' ? config.node_args.split(/\s+/).filter(Boolean) : config.node_args;
  const env = Object.entries(config.env || {}).map(([name, value]) => [name, String(value)]);
  // The caller's environment, less what belongs to this process alone (its own supervisor's).
  const callerEnv = Object.entries(process.env)
    .filter(([name]) => !/^NODEGUARD_(SOCKET|TOKEN|APP|INSTANCE|LISTEN|WAIT_READY|KILL_SIGNAL|SHUTDOWN_MESSAGE|SHARE|KILL_TIMEOUT_MS)$/.test(name) && name !== 'NOTIFY_SOCKET');
  const instances = config.instances === undefined || config.instances === 'max' || config.instances === -1
    ? (config.instances === undefined ? 1 : os.availableParallelism())
    : Number(config.instances);
  if (!Number.isInteger(instances) || instances < 0) throw new TypeError('start(config): config.instances must be a whole number');
  const { script, name, cwd: _cwd, args: _args, node_args: _nodeArgs, env: _env, instances: _instances, exec_mode: execMode, ...rest } = config;
  return {
    ...DEFAULTS,
    ...rest,
    name: name === undefined ? null : String(name),
    script: path.resolve(cwd, script),
    args: args.map(String),
    node: config.node || process.execPath,
    node_args: nodeArgs.map(String),
    cwd,
    env,
    caller_env: callerEnv,
    instances,
    cluster: rest.cluster === undefined ? execMode === 'cluster' || execMode === 'cluster_mode' : rest.cluster,
  };
}

class Client extends EventEmitter {
  constructor(home) {
    super();
    this.home = home;
    this.socketPath = path.join(home, 'run', 'control.sock');
    this._stream = null;
    this._closed = false;
    // The event stream is opened by the first on('event') listener, and closed with the last.
    this.on('newListener', (name) => {
      if (name === 'event' && !this._stream && !this._closed) this._openStream();
    });
    this.on('removeListener', (name) => {
      if (name === 'event' && this.listenerCount('event') === 0 && this._stream) {
        this._stream.destroy();
        this._stream = null;
      }
    });
  }

  /** Sends one command; resolves with the final outcome, rejects with the daemon's error. */
  request(command) {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(this.socketPath);
      const frames = new Frames();
      let settled = false;
      const settle = (error, outcome) => {
        if (settled) return;
        settled = true;
        socket.destroy();
        if (error) reject(error);
        else resolve(outcome);
      };
      socket.on('connect', () => socket.write(frame({ version: PROTOCOL_VERSION, command })));
      socket.on('data', (chunk) => {
        let outcomes;
        try {
          outcomes = frames.push(chunk);
        } catch (err) {
          settle(err);
          return;
        }
        for (const outcome of outcomes) {
          if (outcome.type === 'event') continue;
          if (outcome.type === 'error') settle(errorFrom(outcome));
          else settle(null, outcome);
        }
      });
      socket.on('error', (err) => settle(settled ? null : connectError(err, this.socketPath, this.home)));
      socket.on('close', () => settle(new Error('the supervisor closed the connection without answering')));
    });
  }

  /** Every app (or instance) as `nodeguard status --json` shows it. */
  async list() {
    return (await this.request({ type: 'status' })).apps;
  }

  /** Starts one app (a config like one app of an ecosystem file); resolves with its instances. */
  async start(config) {
    return (await this.request({ type: 'start', apps: [definition(config)] })).apps;
  }

  async stop(target) {
    return (await this.request({ type: 'stop', target: targetOf(target) })).apps;
  }

  async restart(target, { updateEnv = false } = {}) {
    return (await this.request({ type: 'restart', target: targetOf(target), ...updateEnvOf(updateEnv) })).apps;
  }

  /** Rolling reload; resolves with { apps, notes }. */
  async reload(target, { updateEnv = false } = {}) {
    const { apps, notes } = await this.request({ type: 'reload', target: targetOf(target), ...updateEnvOf(updateEnv) });
    return { apps, notes };
  }

  async delete(target) {
    return (await this.request({ type: 'delete', target: targetOf(target) })).apps;
  }

  /** Configuration, counters and recent events of the target's apps. */
  async describe(target) {
    return (await this.request({ type: 'describe', target: targetOf(target) })).apps;
  }

  _openStream() {
    const socket = net.createConnection(this.socketPath);
    const frames = new Frames();
    this._stream = socket;
    socket.on('connect', () => socket.write(frame({ version: PROTOCOL_VERSION, command: { type: 'events' } })));
    socket.on('data', (chunk) => {
      let outcomes;
      try {
        outcomes = frames.push(chunk);
      } catch (err) {
        socket.destroy(err);
        return;
      }
      for (const outcome of outcomes) {
        if (outcome.type === 'event') this.emit('event', outcome.event);
        else if (outcome.type === 'error') socket.destroy(errorFrom(outcome));
      }
    });
    socket.on('error', (err) => {
      if (this.listenerCount('error') > 0) this.emit('error', connectError(err, this.socketPath, this.home));
    });
    socket.on('close', () => {
      if (this._stream !== socket) return;
      this._stream = null;
      // The supervisor went away (or refused the stream).
      this.emit('disconnect');
    });
  }

  /** Stops the event stream; requests already sent still complete. */
  close() {
    this._closed = true;
    if (this._stream) {
      const socket = this._stream;
      this._stream = null;
      socket.destroy();
    }
  }
}

function targetOf(target) {
  if (typeof target === 'number' && Number.isInteger(target) && target >= 0) return String(target);
  if (typeof target === 'string' && target !== '') return target;
  throw new TypeError('target must be an app name, an id, a namespace or "all"');
}

function updateEnvOf(updateEnv) {
  if (!updateEnv) return {};
  return { update_env: Object.entries(process.env).map(([name, value]) => [name, String(value)]) };
}

/**
 * A client of the daemon on `home` (default: $NODEGUARD_HOME, else ~/.nodeguard). Resolves once
 * the daemon answered a ping; rejects with code NODEGUARD_NOT_RUNNING when none runs there.
 */
async function connect({ home = defaultHome() } = {}) {
  const client = new Client(path.resolve(home));
  const pong = await client.request({ type: 'ping' });
  client.daemon = { pid: pong.pid, version: pong.version };
  return client;
}

module.exports = { connect, Client, PROTOCOL_VERSION, _definition: definition };
