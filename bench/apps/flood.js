'use strict';
// Bench fixture: writes --lines numbered lines to stdout as fast as it can, then idles.
//
// Line i (1-based) is `F <i> <padding>`, 100 bytes with its newline. The first line is preceded by
// `flood start <Date.now()>`, the time the writing began. stdout is a pipe under a supervisor,
// where Node writes synchronously (on Linux): the loop goes as fast as the reader drains the pipe.
// Lines are written 64 to a write() call.

const count = Number(process.argv[process.argv.indexOf('--lines') + 1]) || 100_000;
const PER_WRITE = 64;
const LINE_BYTES = 100;

function line(i) {
  const head = `F ${i} `;
  return head + 'x'.repeat(LINE_BYTES - 1 - head.length) + '\n';
}

process.stdout.write(`flood start ${Date.now()}\n`);
for (let i = 1; i <= count; i += PER_WRITE) {
  let chunk = '';
  for (let j = i; j < i + PER_WRITE && j <= count; j++) chunk += line(j);
  process.stdout.write(chunk);
}
setInterval(() => {}, 60 * 60 * 1000);
