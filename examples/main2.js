'use strict';
// Example app: a plain HTTP server on port 8937 that answers in two writes.
//
//   nodeguard -m examples/main1.js -m examples/main2.js

const http = require('node:http');
// In your own app: require('nodeguard-monitor'). In this repository the package is the
// repository root itself, so the examples load it by path and run from a fresh clone.
const monitor = require('..');

const PORT = 8937;

monitor.start();
console.log(`init main2: pid = ${process.pid}`);

http
  .createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.write('afdfadfdafdas');
    res.end('Hello World main 2\n');
  })
  .listen(PORT, () => console.log(`main2 server running at http://127.0.0.1:${PORT}`));
