'use strict';
// Example app: a plain HTTP server on port 8938.
//
//   nodeguard -m examples/main1.js -m examples/main2.js
//
// nodeguard's preload already starts the monitor in every app it runs; the explicit start() below
// shows the call for apps launched another way, and must be harmless when repeated.

const http = require('node:http');
// In your own app: require('nodeguard-monitor'). In this repository the package is the
// repository root itself, so the examples load it by path and run from a fresh clone.
const monitor = require('..');

const PORT = 8938;

monitor.start();
console.log(`init main1: pid = ${process.pid}`);

http
  .createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('Hello World, main1 \n');
  })
  .listen(PORT, () => console.log(`main1 server running at http://127.0.0.1:${PORT}`));
