// A TypeScript app using the whole JS API of nodeguard-monitor, type-checked by tests/types.test.js
// (`tsc --noEmit -p tests/types`) against index.d.ts. Never run. Every export of index.js must be
// used here (the test checks that), and the @ts-expect-error lines check that the typings are
// precise rather than `any`: each must be a type error, or tsc fails.

import * as monitor from 'nodeguard-monitor';
import { start, isSupervised, ready, listen, on, once, off } from 'nodeguard-monitor';

// start(): connects when supervised; false outside nodeguard or off the main thread.
const supervised: boolean = start();
if (monitor.start() !== supervised) {
  throw new Error('start() returns the first call’s result');
}
try {
  monitor.start();
} catch (error) {
  // Errors are plain Errors with a one-line message.
  const message: string = (error as Error).message;
  void message;
}

// isSupervised(): whether start() connected this process.
const now: boolean = isSupervised() && monitor.isSupervised();
void now;

// @ts-expect-error start() takes no arguments
start('/tmp/socket');
// @ts-expect-error start() returns a boolean, not a string
const wrong: string = start();
void wrong;
// @ts-expect-error isSupervised() takes no arguments
isSupervised(true);
// @ts-expect-error there is no such export
monitor.stop();

// Cluster mode. A server-like object (http.Server, net.Server: anything with listen and once).
declare const server: {
  listen(port?: number, callback?: () => void): unknown;
  once(event: string, listener: () => void): unknown;
  close(callback?: () => void): unknown;
};
// listen(): the explicit form of server.listen(port) on the supervisor-owned socket; returns the
// server it was given, with its own type.
const same: typeof server = listen(server);
listen(server, 3000);
listen(server, '3000', () => {});
listen(server, () => {});
void same;
// ready(): with --wait-ready, this instance may get traffic now.
const told: boolean = ready() || monitor.ready();
void told;
// on/once/off('shutdown'): chainable, returning the module.
const onShutdown = (): void => {
  server.close(() => undefined);
};
on('shutdown', onShutdown).off('shutdown', onShutdown);
once('shutdown', onShutdown);
monitor.on('shutdown', onShutdown);
off('shutdown', onShutdown);

// @ts-expect-error listen() needs a server
listen({});
// @ts-expect-error there is no 'restart' event
on('restart', onShutdown);
// @ts-expect-error ready() takes no arguments
ready(true);
