'use strict';
// Bench fixture: a small HTTP server on 127.0.0.1 that crashes or hangs on request.
//
//   GET /       200 "ok <pid>"
//   GET /pid    200 "<pid>"
//   GET /crash  replies, then process.exit(1)
//   GET /hang   replies, then blocks its event loop forever (while (true) {})
//   GET /started 200 "<listening> <first line>": performance.now() (ms since the process
//               started) when the server began to listen and when this file's first line ran
//
// Port: --port <n> (or $PORT, or an ephemeral one). Prints `listening <port> pid=<pid>` once it
// accepts connections. Every reply says `Connection: close` unless --keep-alive is given. Other
// arguments (the bench's run tag) are ignored.

// Before anything else: what ran before this line (node's boot, a preload) shows here.
const firstLineAt = performance.now();
let listeningAt = null;
const http = require('node:http');

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const port = Number(argValue('--port') || process.env.PORT) || 0;
const keepAlive = process.argv.includes('--keep-alive');

const routes = {
  '/': (req, res) => res.end(`ok ${process.pid}\n`),
  '/pid': (req, res) => res.end(`${process.pid}\n`),
  '/started': (req, res) => res.end(`${listeningAt.toFixed(3)} ${firstLineAt.toFixed(3)}\n`),
  // Exit only once the reply is flushed, so the client's "reply received" is when the crash begins.
  '/crash': (req, res) => res.end('crashing\n', () => process.exit(1)),
  '/hang': (req, res) =>
    res.end('hanging\n', () =>
      setImmediate(() => {
        while (true) {
          // A stuck event loop: no timer, no I/O, no heartbeat answer ever again.
        }
      }),
    ),
};

const server = http.createServer((req, res) => {
  const route = routes[req.url];
  if (!keepAlive) res.setHeader('connection', 'close');
  if (!route) {
    res.statusCode = 404;
    res.end('not found\n');
    return;
  }
  route(req, res);
});

server.listen(port, '127.0.0.1', () => {
  listeningAt = performance.now();
  console.log(`listening ${server.address().port} pid=${process.pid}`);
});
