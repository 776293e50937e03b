'use strict';
// PM2's log and pid flags on `start` (issue 14): --log-date-format in the user's own
// moment/dayjs tokens (local time, the daemon's TZ), -l/--log (stdout and stderr interleaved in
// one more file, no line split or lost), -p/--pid (one file per instance with -i, 0600, removed
// when the process ends), and bad input refused with one line.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const LINES = 3000;
/** Prints `out <i>` on stdout and `err <i>` on stderr, LINES each, then idles. */
const FLOOD = `
for (let i = 0; i < ${LINES}; i++) {
  process.stdout.write('out ' + i + '\\n');
  process.stderr.write('err ' + i + '\\n');
}
console.log('flood done');
setInterval(() => {}, 1000);
`;

function dirFor(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ng-pm2logs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'flood.js'), FLOOD);
  return dir;
}

function lines(file) {
  try {
    const text = fs.readFileSync(file, 'utf8');
    assert.ok(text === '' || text.endsWith('\n'), `${file} ends mid-line`);
    return text.split('\n').slice(0, -1);
  } catch (error) {
    if (error.code === 'ENOENT') return [];
    throw error;
  }
}

test('--log-date-format, -l and -p with -i 2: stamped lines in local time, a combined log with every line whole, a pid file per instance', async (t) => {
  const dir = dirFor(t);
  const d = new h.DaemonHome(t, { env: { TZ: 'XYZ+3' } }); // UTC-03:00, a POSIX TZ string
  await d.ok(['start', 'flood.js', '--name', 'flood', '-i', '2',
    '--log-date-format', '[at] DD/MM/YYYY HH:mm:ss.SSS ZZ', '-l', 'all.log', '-p', 'run/flood.pid'], { cwd: dir });
  const combined = path.join(dir, 'all.log');
  // Both instances' lines: 2 x (LINES out + LINES err + 'flood done').
  const total = 2 * (2 * LINES + 1);
  await d.waitFor(() => lines(combined).length >= total, { what: `${total} lines in ${combined}` });
  const all = lines(combined);
  assert.equal(all.length, total);
  const stamp = /^at (\d\d)\/(\d\d)\/(\d{4}) (\d\d):(\d\d):(\d\d)\.(\d{3}) -0300 (.*)$/;
  const seen = { out: new Map(), err: new Map() };
  for (const line of all) {
    const m = stamp.exec(line);
    assert.ok(m, `not stamped as asked: ${JSON.stringify(line)}`);
    const [, da, mo, y, hh, mi, ss] = m.map(Number);
    const at = Date.UTC(y, mo - 1, da, hh, mi, ss) + 3 * 3600_000;
    assert.ok(Math.abs(at - Date.now()) < 300_000, `${line}: not the local time in UTC-03:00`);
    const body = /^(out|err) (\d+)$/.exec(m[8]);
    if (!body) {
      assert.equal(m[8], 'flood done');
      continue;
    }
    const [, stream, i] = body;
    seen[stream].set(i, (seen[stream].get(i) || 0) + 1);
  }
  for (const stream of ['out', 'err']) {
    assert.equal(seen[stream].size, LINES, `every ${stream} line is in the combined log`);
    assert.ok([...seen[stream].values()].every((n) => n === 2), `each ${stream} line once per instance`);
  }
  // The separate files still get their own stream, stamped alike.
  const outLines = lines(path.join(d.home, 'logs', 'flood-out.log'));
  const errLines = lines(path.join(d.home, 'logs', 'flood-err.log'));
  assert.equal(outLines.length, 2 * (LINES + 1));
  assert.equal(errLines.length, 2 * LINES);
  assert.ok(errLines.every((line) => stamp.test(line) && / err \d+$/.test(line)));

  // -p with -i 2: run/flood-<id>.pid per instance (run/ created), each holding its pid, 0600.
  const apps = (await d.status()).filter((a) => a.name.startsWith('flood'));
  assert.equal(apps.length, 2, JSON.stringify(apps));
  for (const app of apps) {
    const file = path.join(dir, 'run', `flood-${app.id}.pid`);
    assert.equal(fs.readFileSync(file, 'utf8'), `${app.pid}\n`, file);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  }
  assert.equal(fs.existsSync(path.join(dir, 'run', 'flood.pid')), false);
  await d.ok(['stop', 'flood']);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'run')), [], 'the pid files are removed on stop');
});

test('-l without a path writes <home>/logs/<name>-combined.log', async (t) => {
  const dir = dirFor(t);
  const d = new h.DaemonHome(t);
  await d.ok(['start', 'flood.js', '--name', 'solo', '-l'], { cwd: dir });
  const combined = path.join(d.home, 'logs', 'solo-combined.log');
  await d.waitFor(() => lines(combined).length >= 2 * LINES + 1, { what: `every line in ${combined}` });
  const all = lines(combined);
  assert.equal(all.filter((l) => /^out \d+$/.test(l)).length, LINES);
  assert.equal(all.filter((l) => /^err \d+$/.test(l)).length, LINES);
  assert.equal(fs.statSync(combined).mode & 0o777, 0o600);
});

test('bad log and pid options are refused with one line: an unknown date token, a symlinked pid file, -l naming the -o file', async (t) => {
  const dir = dirFor(t);
  const target = path.join(dir, 'precious');
  fs.writeFileSync(target, 'keep');
  fs.symlinkSync(target, path.join(dir, 'link.pid'));
  fs.mkdirSync(path.join(dir, 'adir'));
  const d = new h.DaemonHome(t);
  const cases = [
    [['--log-date-format', 'Do MMM YYYY'], /unknown token 'Do'/],
    [['--log-date-format', 'YYYY-MM-DD [open'], /'\[' without its '\]'/],
    [['-p', 'link.pid'], /link\.pid is a symbolic link; refusing/],
    [['-p', 'adir'], /adir is not a regular file; refusing/],
    [['-l', 'same.log', '-o', 'same.log'], /-l\/--log is the -o or -e file too/],
  ];
  for (const [flags, message] of cases) {
    const r = await d.cli(['start', 'flood.js', ...flags], { cwd: dir });
    assert.equal(r.code, 2, `${flags.join(' ')}: exit ${r.code}\n${r.stderr}`);
    const said = r.stderr.trim().split('\n');
    assert.equal(said.length, 1, r.stderr);
    assert.match(said[0], message);
  }
  assert.equal(fs.readFileSync(target, 'utf8'), 'keep');
  // A config file's log_date_format with an unknown token is refused at start too.
  fs.writeFileSync(path.join(dir, 'bad.config.js'),
    "module.exports = { apps: [{ name: 'x', script: 'flood.js', log_date_format: 'YYYY-MM-DD dddd' }] };");
  const r = await d.cli(['start', 'bad.config.js'], { cwd: dir });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /app 'x': log_date_format.*unknown token 'dddd'/);
});

test("log_type: 'json' (and --log-type json): every log line is PM2's JSON object, whole, with its instance's id", async (t) => {
  const dir = dirFor(t);
  fs.writeFileSync(path.join(dir, 'ecosystem.config.js'), `module.exports = { apps: [{
    name: 'jsonlog', script: './flood.js', instances: 2, log_type: 'json',
    log_date_format: 'YYYY-MM-DD HH:mm:ss', out_file: './o.log', error_file: './e.log',
  }] };\n`);
  const d = new h.DaemonHome(t);
  const started = await d.ok(['start', 'ecosystem.config.js'], { cwd: dir });
  assert.doesNotMatch(started.stderr, /log_type/, 'log_type is applied, not warned about');
  const total = 2 * (LINES + 1);
  await d.waitFor(() => lines(path.join(dir, 'o.log')).length >= total, { what: `${total} JSON lines in o.log` });
  const ids = new Set((await d.status()).filter((a) => a.name === 'jsonlog').map((a) => a.id));
  for (const [file, type, prefix] of [['o.log', 'out', 'out '], ['e.log', 'err', 'err ']]) {
    const perId = new Map();
    for (const line of lines(path.join(dir, file))) {
      const record = JSON.parse(line);
      assert.deepEqual(Object.keys(record), ['message', 'timestamp', 'type', 'process_id', 'app_name'], line);
      assert.equal(record.type, type);
      assert.equal(record.app_name, 'jsonlog');
      assert.match(record.timestamp, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
      assert.ok(ids.has(record.process_id), `process_id ${record.process_id} is not an instance's id (${[...ids]})`);
      if (!record.message.startsWith(prefix)) continue;
      const seen = perId.get(record.process_id) || [];
      seen.push(Number(record.message.slice(prefix.length)));
      perId.set(record.process_id, seen);
    }
    assert.equal(perId.size, 2, `${file}: lines from both instances`);
    for (const [id, seen] of perId) {
      assert.deepEqual(seen, Array.from({ length: LINES }, (_, i) => i), `${file}: instance ${id}'s lines, each once, in order`);
    }
  }
  // The CLI spelling; a value other than json or raw is one line and exit 2.
  await d.ok(['start', 'flood.js', '--name', 'cli-json', '--log-type', 'json'], { cwd: dir });
  const cliOut = path.join(d.home, 'logs', 'cli-json-out.log');
  await d.waitFor(() => lines(cliOut).some((l) => l.includes('flood done')), { what: 'cli-json lines' });
  assert.equal(JSON.parse(lines(cliOut)[0]).type, 'out');
  const bad = await d.cli(['start', 'flood.js', '--name', 'bad', '--log-type', 'xml'], { cwd: dir });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr.trim(), /expected json or raw, got 'xml'/);
});
