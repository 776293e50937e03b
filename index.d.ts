/**
 * nodeguard-monitor: the in-app half of the nodeguard supervisor.
 *
 * A native thread answers the supervisor's heartbeats through the JS thread (so a blocked event
 * loop goes silent) and ends the process with exit code 69 as soon as the supervisor's end of the
 * connection closes.
 */

/**
 * Connects to the nodeguard supervisor that spawned this process, found through the
 * `NODEGUARD_SOCKET` and `NODEGUARD_TOKEN` environment variables. Both are removed from
 * `process.env` by the first call, successful or not, so child processes do not inherit them.
 *
 * Synchronous: the handshake is done (or has failed, within 10 s at most) when it returns.
 *
 * @returns `true` if connected (now or by an earlier call, from any copy of this package in the
 *   process), `false` if the process is not supervised (then it did nothing) or this is not the
 *   main thread.
 * @throws {Error} with a one-line message starting with `"nodeguard-monitor: "` if the supervisor
 *   cannot be reached, refuses this process, or no native addon exists for this platform. Later
 *   calls throw the same error again.
 */
export declare function start(): boolean;

/** Whether `start()` connected this process to a nodeguard supervisor. */
export declare function isSupervised(): boolean;

/**
 * Tells the supervisor that this instance is ready for traffic. With `--wait-ready` this is what
 * makes an instance ready (a reload waits for it); otherwise listening on the supervisor-owned
 * socket already does. Sent once; later calls do nothing more.
 *
 * @returns `true` if the supervisor was told (now or earlier), `false` if the process is not
 *   supervised.
 */
export declare function ready(): boolean;

/**
 * Listens `server` on the supervisor-owned socket of `port` (`--listen`), the explicit form of
 * what the monitor does for an unchanged `server.listen(port)`. `port` may be left out when the
 * app has exactly one listen address. Outside nodeguard, with a port, this is plain
 * `server.listen(port, callback)`.
 *
 * @throws {Error} (message starting with `"nodeguard-monitor: "`) if the port is not one the
 *   supervisor owns, or is left out while it owns none or several.
 */
export declare function listen<S extends ListenableServer>(
  server: S,
  port?: number | string,
  callback?: () => void,
): S;
export declare function listen<S extends ListenableServer>(server: S, callback: () => void): S;

/**
 * What `listen()` needs of a server: any `net.Server` (so `http`, `https` and frameworks' servers
 * too). Structural, so these typings do not require `@types/node`.
 */
interface ListenableServer {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- net.Server's overloads
  listen(...args: any[]): unknown;
  once(event: 'listening' | 'close', listener: () => void): unknown;
}

/**
 * `'shutdown'`: the supervisor (a stop, restart or reload) or a SIGTERM asks this process to stop
 * gracefully. The monitor first drains the servers (they stop accepting, in-flight requests
 * finish, each kept-alive connection ends with its next response, which says
 * `Connection: close`, or after 1 s idle; upgraded connections such as WebSockets are left open),
 * for at most half the kill timeout; then the event comes: close what you need and exit. Without
 * a listener, the app's own SIGTERM (or kill_signal) handler gets a SIGTERM after the drain, or,
 * with none, the process exits 0 once its connections have ended. The supervisor sends SIGKILL
 * after its kill timeout either way.
 */
export declare function on(event: 'shutdown', listener: () => void): Monitor;
export declare function once(event: 'shutdown', listener: () => void): Monitor;
export declare function off(event: 'shutdown', listener: () => void): Monitor;

/** The module itself, returned by `on`, `once` and `off` for chaining. */
type Monitor = typeof import('./index');
