'use strict';
// Soak fixture: an HTTP server that also writes numbered log lines, so the soak can check that no
// line is lost or cut.
//
//   GET /       200 "ok <pid>"
//   GET /hang   replies "hanging <pid>", then blocks its event loop forever
//
// Every LINE_EVERY ms it writes `L <pid> <n> <padding>` to stdout, n = 1, 2, 3, … (stdout is a pipe
// under a supervisor, and writes to pipes are synchronous in Node on Linux: a line is in the pipe
// when console.log returns). On a graceful exit (the monitor's drain, on SIGTERM or a shutdown message) it writes `E <pid> <last n>`, so the whole of its
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
// A graceful stop (the supervisor's shutdown message, or SIGTERM) is the monitor's default drain:
// the server stops accepting, in-flight requests finish, kept-alive connections end with their
// next response, and the process exits 0, which writes the last line above. (An own SIGTERM
// handler that closed idle keep-alive connections at once would race with the load's next
// request on them.)

server.listen(port, '127.0.0.1', () => console.log(`listening ${port} pid=${process.pid}`));
