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
 * Synchronous: the handshake is done (or has failed, within about 2 s) when it returns.
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
