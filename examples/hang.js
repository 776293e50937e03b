'use strict';
// Demo app for the two failures nodeguard exists for, on port 8939:
//
//   nodeguard --heartbeat-interval 500ms --heartbeat-timeout 500ms -m examples/hang.js
//   curl localhost:8939/        -> answers
//   curl localhost:8939/hang    -> the event loop blocks forever; the process stays alive and keeps
//                                  its port, but stops answering heartbeats, so nodeguard kills it
//                                  and starts a fresh one (see `nodeguard status`, column hangs)
//   curl localhost:8939/crash   -> an uncaught exception ends the process; nodeguard restarts it

const http = require('node:http');
// In your own app: require('nodeguard-monitor'). In this repository the package is the
// repository root itself, so the examples load it by path and run from a fresh clone.
const monitor = require('..');

const PORT = 8939;

monitor.start();

const routes = {
  '/': (req, res) => res.end(`hello from pid ${process.pid}\n`),
  '/hang': (req, res) => {
    res.end(`pid ${process.pid} is about to block its event loop\n`, () => {
      console.log('blocking the event loop now');
      for (;;) {
        // An accidental infinite loop: nothing else in this process runs again.
      }
    });
  },
  '/crash': () => {
    throw new Error('crash requested on /crash');
  },
};

http
  .createServer((req, res) => {
    const route = routes[req.url];
    if (route) {
      route(req, res);
    } else {
      res.writeHead(404).end('try /, /hang or /crash\n');
    }
  })
  .listen(PORT, () => console.log(`hang demo listening on http://127.0.0.1:${PORT} (pid ${process.pid})`));
