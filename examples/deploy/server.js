'use strict';
// The app the deploy examples run: a plain HTTP server on $PORT (default 3000). It needs nothing
// from nodeguard: the monitor is preloaded into it (node --require), which answers heartbeats.

const http = require('node:http');

const port = Number(process.env.PORT) || 3000;

http
  .createServer((req, res) => res.end(`hello from pid ${process.pid}\n`))
  .listen(port, () => console.log(`listening on ${port}, pid ${process.pid}`));

// Finish in-flight requests on SIGTERM (nodeguard's stop), then exit.
process.on('SIGTERM', () => process.exit(0));
