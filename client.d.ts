/**
 * `require('nodeguard-monitor/client')`: the nodeguard daemon's control socket from Node, for
 * deploy scripts and tools (what PM2's programmatic API is used for). Only the user running the
 * daemon can connect. Errors from the daemon reject with an Error carrying its message.
 */
export type AppState = 'starting' | 'running' | 'stopping' | 'stopped' | 'backoff' | 'errored';

/** One app (or cluster instance), as `nodeguard status --json` shows it. */
export interface AppStatus {
  name: string;
  id: number;
  instance?: number | null;
  script: string;
  pid: number | null;
  state: AppState;
  restarts: number;
  hangs: number;
  uptime_ms: number | null;
  monitored: boolean;
  memory: { rss: number; heap_total: number; heap_used: number; external: number } | null;
  tree_rss?: number | null;
  processes?: number | null;
  loop_delay_ms: number | null;
  last_pong_ms: number | null;
  pong_rtt_ms: number | null;
  last_exit: string | null;
  [field: string]: unknown;
}

/** One event of the stream, as `nodeguard events --json` prints it. */
export interface EventRecord {
  /** RFC 3339, UTC. */
  at: string;
  app: string;
  id: number;
  instance?: number;
  /** `state`, `started`, `exited`, `hung`, `stack`, `memory`, `errored`, `stopped`, `ready`, `not_ready`, `reloaded`, `reload_aborted`, `lagged`, ... */
  kind: string;
  pid?: number;
  state?: AppState;
  code?: number;
  signal?: string;
  restarts?: number;
  hangs?: number;
  message?: string;
  /** For `stack`: the hung loop's frames, innermost first. */
  stack?: string[];
  /** For `lagged`: how many events this stream missed. */
  missed?: number;
}

/** One app, as in an ecosystem file; relative paths are resolved against `cwd` (default: process.cwd()). */
export interface AppConfig {
  script: string;
  name?: string;
  args?: string[] | string;
  node_args?: string[] | string;
  cwd?: string;
  env?: Record<string, string | number | boolean>;
  instances?: number | 'max';
  exec_mode?: 'fork' | 'cluster';
  /** The node binary (default: process.execPath). */
  node?: string;
  /** Any other AppDefinition field, by its wire name (e.g. `max_memory`, `listen`, `wait_ready`). */
  [field: string]: unknown;
}

/** A target: an app name, an id, a namespace, or `'all'`. */
export type Target = string | number;

/** A client; an EventEmitter (on, once, off) for `event`, `disconnect` and `error`. */
export declare class Client {
  readonly home: string;
  /** The daemon that answered `connect`. */
  daemon: { pid: number; version: string };
  list(): Promise<AppStatus[]>;
  start(config: AppConfig): Promise<AppStatus[]>;
  stop(target: Target): Promise<AppStatus[]>;
  restart(target: Target, options?: { updateEnv?: boolean }): Promise<AppStatus[]>;
  reload(target: Target, options?: { updateEnv?: boolean }): Promise<{ apps: AppStatus[]; notes: string[] }>;
  delete(target: Target): Promise<AppStatus[]>;
  describe(target: Target): Promise<Array<{ status: AppStatus; definition: Record<string, unknown>; events: Array<{ at: string; kind: string; message: string }> }>>;
  /** The first `event` listener opens the event stream; `disconnect` when the daemon goes away. */
  on(event: 'event', listener: (event: EventRecord) => void): this;
  on(event: 'disconnect', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  once(event: 'event', listener: (event: EventRecord) => void): this;
  once(event: 'disconnect', listener: () => void): this;
  off(event: 'event' | 'disconnect' | 'error', listener: (...args: any[]) => void): this;
  /** Ends the event stream. */
  close(): void;
}

/** Connects to the daemon on `home` (default: $NODEGUARD_HOME, else ~/.nodeguard). Rejects with code `NODEGUARD_NOT_RUNNING` if none runs there. */
export declare function connect(options?: { home?: string }): Promise<Client>;
export declare const PROTOCOL_VERSION: number;
