// A TypeScript app using the whole JS API of nodeguard-monitor, type-checked by tests/types.test.js
// (`tsc --noEmit -p tests/types`) against index.d.ts. Never run. Every export of index.js must be
// used here (the test checks that), and the @ts-expect-error lines check that the typings are
// precise rather than `any`: each must be a type error, or tsc fails.

import * as monitor from 'nodeguard-monitor';
import { start, isSupervised } from 'nodeguard-monitor';

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
