'use strict';
// What nodeguard runs apps with: `node --require <package>/preload.js app.js`. Connects before the
// app's own code runs. If that fails, says so in one line on stderr and lets the app run anyway
// (unsupervised by heartbeats: the supervisor sees no monitor and treats the app accordingly).

try {
  require('./index.js').start();
} catch (error) {
  const message = require('./platform.js').oneLine(error);
  const prefix = 'nodeguard-monitor: ';
  process.stderr.write(`${message.startsWith(prefix) ? message : prefix + message}\n`);
}
