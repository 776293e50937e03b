'use strict';
// Soak fixture: an HTTP server that also writes numbered log lines, so the soak can check that no
// line is lost or cut.
//
//   GET /       200 "ok <pid>"
//   GET /hang   replies "hanging <pid>", then blocks its event loop forever
//
// Every LINE_EVERY ms it writes `L <pid> <n> <padding>` to stdout, n = 1, 2, 3, … (stdout is a pipe
// under a supervisor, and writes to pipes are synchronous in Node on Linux: a line is in the pipe
// when console.log returns). On a graceful exit (SIGTERM included) it writes `E <pid> <last n>`, so the whole of its
// output can be checked.
//
// Port: --port <n>. Under cluster mode (a supervisor-owned --listen port) the monitor maps the
// listen onto the shared socket.

const http = require('node:http');

const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
const LINE_EVERY = 10;
const PAD = 'x'.repeat(40);
let n = 0;

const ticker = setInterval(() => {
  n += 1;
  console.log(`L ${process.pid} ${n} ${PAD}`);
}, LINE_EVERY);

const server = http.createServer((req, res) => {
  if (req.url === '/hang') {
    res.setHeader('connection', 'close');
    res.end(`hanging ${process.pid}\n`, () =>
      setImmediate(() => {
        clearInterval(ticker);
        while (true) {
          // a stuck event loop
        }
      }),
    );
    return;
  }
  res.end(`ok ${process.pid}\n`);
});

let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  clearInterval(ticker);
  console.log(`E ${process.pid} ${n}`);
}
process.on('exit', finish);
// A graceful stop: last line, then close the server (in-flight requests finish) and exit.
process.on('SIGTERM', () => {
  finish();
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 1_000).unref();
});

server.listen(port, '127.0.0.1', () => console.log(`listening ${port} pid=${process.pid}`));
