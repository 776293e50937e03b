//! Evaluates a JavaScript config file with node, bounded in time, and reads back its export as
//! JSON (CommonJS and ESM alike); or, for a `.json` file that is not strict JSON, its text as one
//! JavaScript expression, as PM2 reads it.

use super::*;

/// Marks the line that carries the evaluation's result, so output the config prints is ignored.
const RESULT_MARKER: &str = "\u{1}nodeguard-config-result\u{1}";

/// How node reads the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EvalAs {
    /// Imported as a module (CommonJS or ESM): its export is the config.
    Module,
    /// Its whole text is one expression (PM2's way with `.json`), evaluated in a fresh context.
    Expression,
}

/// Imports the file named by argv[1] (CommonJS or ESM alike), or with `NODEGUARD_CONFIG_EXPR`
/// evaluates its text as one expression, and prints its export, or the error it threw with the
/// line in the file where that happened, as one JSON envelope after the marker.
const EVAL_SCRIPT: &str = r#"
const { pathToFileURL } = require('url');
const file = process.argv[1];
const url = pathToFileURL(file).href;
const marker = process.env.NODEGUARD_CONFIG_MARKER;
const send = (envelope) => process.stdout.write('\n' + marker + JSON.stringify(envelope) + '\n', () => process.exit(0));
const where = (err) => {
  const stack = String((err && err.stack) || '');
  for (const line of stack.split('\n')) {
    for (const name of [url, file]) {
      const at = line.indexOf(name + ':');
      if (at >= 0) {
        const found = /^:(\d+)/.exec(line.slice(at + name.length));
        if (found) return Number(found[1]);
      }
    }
  }
  return null;
};
const describe = (err) => err instanceof Error ? `${err.name}: ${err.message}` : `thrown value: ${String(err)}`;
const load = process.env.NODEGUARD_CONFIG_EXPR === '1'
  ? new Promise((resolve) => {
      const text = require('fs').readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
      resolve({ default: require('vm').runInNewContext('(' + text + '\n)', Object.create(null), { filename: file }) });
    })
  : import(url);
load.then(
  (ns) => {
    let value = ns.default !== undefined ? ns.default : { ...ns };
    if (value === undefined || typeof value === 'function') value = null;
    let text;
    try { text = JSON.stringify({ ok: value }); } catch (err) { return send({ error: 'the export cannot be turned into JSON: ' + describe(err), line: null }); }
    process.stdout.write('\n' + marker + text + '\n', () => process.exit(0));
  },
  (err) => send({ error: describe(err).split('\n')[0], line: where(err) }),
);
"#;

/// SIGKILL to the evaluating node's process group (it leads one), so processes the config spawned
/// die with it; node alone where there are no process groups.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        use crate::core::machine::StopSignal;
        if crate::platform::signal_group(child.id(), StopSignal::Kill).is_ok() {
            return;
        }
    }
    let _ = child.kill();
}

pub(super) fn eval_js(
    path: &Path,
    node: &Path,
    timeout: Duration,
    how: EvalAs,
) -> Result<Value, ConfigFileError> {
    let file = path.to_path_buf();
    std::fs::File::open(path).map_err(|source| ConfigFileError::Read {
        file: file.clone(),
        source,
    })?;
    let absolute = std::path::absolute(path).map_err(|source| ConfigFileError::Read {
        file: file.clone(),
        source,
    })?;
    let mut command = Command::new(node);
    command
        .arg("-e")
        .arg(EVAL_SCRIPT)
        .arg(&absolute)
        .env("NODEGUARD_CONFIG_MARKER", RESULT_MARKER)
        .env(
            "NODEGUARD_CONFIG_EXPR",
            if how == EvalAs::Expression { "1" } else { "0" },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = absolute.parent() {
        command.current_dir(dir);
    }
    // Its own process group, so a timeout ends whatever the config started along with node.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command.spawn().map_err(|source| ConfigFileError::Node {
        file: file.clone(),
        node: node.to_path_buf(),
        source,
    })?;

    // Read both pipes on their own threads so a chatty config cannot fill one and stall.
    let (sender, receiver) = mpsc::channel();
    for (is_stdout, pipe) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = sender.send((is_stdout, bytes));
        });
    }
    drop(sender);

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => break None,
        }
    };
    let Some(status) = status else {
        kill_group(&mut child);
        let _ = child.wait();
        return Err(ConfigFileError::Timeout {
            file,
            after: timeout,
        });
    };
    // A child the config started may hold the pipes open; don't wait on it past the deadline.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        match receiver.recv_timeout(left) {
            Ok((true, bytes)) => stdout = bytes,
            Ok((false, bytes)) => stderr = bytes,
            Err(_) => break,
        }
    }

    let stdout = String::from_utf8_lossy(&stdout);
    let envelope = stdout
        .rfind(RESULT_MARKER)
        .map(|at| &stdout[at + RESULT_MARKER.len()..])
        .and_then(|rest| serde_json::from_str::<Value>(rest.lines().next().unwrap_or("")).ok());
    let Some(Value::Object(mut envelope)) = envelope else {
        let stderr = String::from_utf8_lossy(&stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .unwrap_or("no output");
        return Err(ConfigFileError::Eval {
            file,
            message: format!("node exited ({status}) without exporting a config: {first}"),
        });
    };
    if let Some(ok) = envelope.remove("ok") {
        return Ok(ok);
    }
    // Node's messages may span lines (a circular structure's explains where the circle closes):
    // the error is one line, so each line break and its indentation become one space.
    let error = match envelope.get("error") {
        Some(Value::String(error)) => error
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        _ => "unknown error".to_string(),
    };
    let message = match envelope.get("line").and_then(Value::as_u64) {
        Some(line) => format!("{error} (line {line})"),
        None => error,
    };
    Err(ConfigFileError::Eval { file, message })
}
