'use strict';
// Bench fixture: prints its pid, then blocks its event loop forever from the start.
console.log(`busy pid=${process.pid}`);
while (true) {
  // spin
}
