//! Config files: PM2-style `apps` lists in JSON or JavaScript (`nodeguard.config.js`,
//! `ecosystem.config.js`), validated as a whole so that every problem is reported at once.
//!
//! JSON is parsed directly. A JS file (`.js`, `.cjs`, `.mjs`) is evaluated by node, bounded by
//! [`EVAL_TIMEOUT`], and whatever it exports (`module.exports`, or an ESM default export) is read
//! back as JSON. Either way the top level is `{ "apps": [...] }` or a bare array of apps.
//!
//! Fields that nodeguard knows but does not act on yet, and fields it does not know at all, are
//! reported as warnings that name the file, the app and the field; nothing is dropped silently.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::AppSpec;
use crate::duration::parse_duration;
use crate::exit::human;
use crate::machine::{ExitCodes, Timing};

/// The longest a JS config file may take to evaluate before it is killed.
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What an app gets for each field its entry leaves out.
#[derive(Debug, Clone)]
pub struct AppDefaults {
    /// The node binary; also the one that evaluates JS config files.
    pub node: PathBuf,
    pub timing: Timing,
}

/// How many processes an app asks for, as written; [`Instances::resolve`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// A fixed count (at least 1).
    Count(u32),
    /// One per CPU (`"max"` or `0`).
    Max,
    /// One per CPU but this many (`-1` is CPUs - 1, as in PM2).
    AllBut(u32),
}

impl Instances {
    /// The process count on a host with `cpus` CPUs; never below 1.
    pub fn resolve(self, cpus: u32) -> u32 {
        match self {
            Instances::Count(count) => count,
            Instances::Max => cpus,
            Instances::AllBut(fewer) => cpus.saturating_sub(fewer),
        }
        .max(1)
    }
}

impl fmt::Display for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instances::Count(count) => write!(f, "{count}"),
            Instances::Max => f.write_str("max"),
            Instances::AllBut(fewer) => write!(f, "-{fewer}"),
        }
    }
}

/// One validated app from a config file. Paths are absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    pub name: String,
    pub script: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// `node_args` followed by `interpreter_args`.
    pub node_args: Vec<String>,
    pub instances: Instances,
    /// The defaults' timing with this app's heartbeat, grace and kill-timeout fields applied.
    pub timing: Timing,
    /// `max_memory_restart` in bytes.
    pub max_memory: Option<u64>,
    pub autorestart: bool,
    pub max_restarts: Option<u32>,
    pub min_uptime: Option<Duration>,
    pub restart_delay: Option<Duration>,
    pub exp_backoff_restart_delay: Option<Duration>,
    /// PM2's `stop_exit_codes`: exits with these codes do not restart the app.
    pub stop_exit_codes: Option<ExitCodes>,
    pub wait_ready: bool,
    pub listen_timeout: Option<Duration>,
    /// nodeguard's own field: `[host:]port` addresses the supervisor binds for the instances.
    pub listen: Vec<String>,
    pub out_file: Option<PathBuf>,
    pub error_file: Option<PathBuf>,
    /// PM2's `time`: prefix each log line with its time.
    pub log_timestamps: bool,
}

impl AppConfig {
    /// The supervisor's view of this app.
    pub fn to_spec(&self, id: u32, node: &Path) -> AppSpec {
        AppSpec {
            id,
            name: self.name.clone(),
            script: self.script.clone(),
            args: self.args.clone(),
            node: node.to_path_buf(),
            node_args: self.node_args.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            timing: self.timing,
            out_file: self.out_file.clone(),
            error_file: self.error_file.clone(),
            log_timestamps: self.log_timestamps,
            instances: self.instances.resolve(cpu_count()),
            instance: 0,
            listen: self
                .listen
                .iter()
                .filter_map(|text| crate::config::ListenAddress::parse(text).ok())
                .collect(),
            wait_ready: self.wait_ready,
            listen_timeout: self
                .listen_timeout
                .unwrap_or(crate::config::DEFAULT_LISTEN_TIMEOUT),
        }
    }
}

/// The CPUs this process may use (what `instances: "max"` and `-i max` mean); 1 if unknown.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// A config file's apps, plus a warning for every field that was ignored.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub apps: Vec<AppConfig>,
    pub warnings: Vec<String>,
}

/// Which app a problem or warning is about: its name, or its index in the list when it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRef {
    Name(String),
    Index(usize),
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppRef::Name(name) => write!(f, "app '{name}'"),
            AppRef::Index(index) => write!(f, "app #{index}"),
        }
    }
}

/// One thing wrong with one app's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub app: AppRef,
    /// `None` when the entry as a whole is wrong (e.g. not an object).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = format!("{}: {}: ", self.file.display(), self.app);
        if let Some(field) = &self.field {
            line.push_str(field);
            line.push_str(": ");
        }
        line.push_str(&self.message);
        // Values from the file (a path, a name) may hold a newline: escaped, a problem stays one
        // line.
        for ch in line.chars() {
            if ch.is_control() {
                write!(f, "{}", ch.escape_default())?;
            } else {
                f.write_char(ch)?;
            }
        }
        Ok(())
    }
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: unsupported config file type (use .json, .js, .cjs or .mjs)",
        file.display()
    )]
    UnsupportedType { file: PathBuf },
    #[error("{}:{line}:{column}: invalid JSON: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot run {} to evaluate {}: {source}", node.display(), file.display())]
    Node {
        file: PathBuf,
        node: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: evaluating the config failed: {message}", file.display())]
    Eval { file: PathBuf, message: String },
    #[error("{}: evaluating the config did not finish within {}", file.display(), human(*after))]
    Timeout { file: PathBuf, after: Duration },
    #[error("{}: {message}", file.display())]
    Shape { file: PathBuf, message: String },
    #[error("{}: no apps: the apps list is empty", file.display())]
    NoApps { file: PathBuf },
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

/// True for paths that name a config file rather than a script, by PM2's rule: `*.json`, or
/// `*.config.js` / `*.config.cjs` / `*.config.mjs`.
pub fn looks_like_config(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".json")
        || [".config.js", ".config.cjs", ".config.mjs"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// Loads, validates and resolves every app in the config file at `path`.
pub fn load(path: &Path, defaults: &AppDefaults) -> Result<LoadedConfig, ConfigFileError> {
    load_with_timeout(path, defaults, EVAL_TIMEOUT)
}

fn load_with_timeout(
    path: &Path,
    defaults: &AppDefaults,
    timeout: Duration,
) -> Result<LoadedConfig, ConfigFileError> {
    let file = path.to_path_buf();
    let extension = path
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let value = match extension.as_str() {
        "json" => read_json(path)?,
        "js" | "cjs" | "mjs" => eval_js(path, &defaults.node, timeout)?,
        _ => return Err(ConfigFileError::UnsupportedType { file }),
    };
    let absolute = std::path::absolute(path).map_err(|source| ConfigFileError::Read {
        file: file.clone(),
        source,
    })?;
    let base = absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    build(&file, &base, value, defaults)
}

fn read_json(path: &Path) -> Result<Value, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str(text).map_err(|err| {
        let full = err.to_string();
        let message = match full.rfind(" at line ") {
            Some(at) => full[..at].to_string(),
            None => full,
        };
        ConfigFileError::Syntax {
            file: path.to_path_buf(),
            line: err.line(),
            column: err.column(),
            message,
        }
    })
}

/// Marks the line that carries the evaluation's result, so output the config prints is ignored.
const RESULT_MARKER: &str = "\u{1}nodeguard-config-result\u{1}";

/// Imports the file named by argv[1] (CommonJS or ESM alike), and prints its export, or the error
/// it threw with the line in the file where that happened, as one JSON envelope after the marker.
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
import(url).then(
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
        use crate::machine::StopSignal;
        if crate::platform::signal_group(child.id(), StopSignal::Kill).is_ok() {
            return;
        }
    }
    let _ = child.kill();
}

fn eval_js(path: &Path, node: &Path, timeout: Duration) -> Result<Value, ConfigFileError> {
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

/// Turns the parsed top level into validated apps.
fn build(
    file: &Path,
    base: &Path,
    value: Value,
    defaults: &AppDefaults,
) -> Result<LoadedConfig, ConfigFileError> {
    let mut warnings = Vec::new();
    let entries = match value {
        Value::Array(entries) => entries,
        Value::Object(mut top) => {
            let apps = top.remove("apps");
            for key in top.keys() {
                warnings.push(format!(
                    "{}: top-level field '{key}' is not supported and is ignored",
                    file.display()
                ));
            }
            match apps {
                Some(Value::Array(entries)) => entries,
                Some(other) => {
                    return Err(ConfigFileError::Shape {
                        file: file.to_path_buf(),
                        message: format!("apps: expected an array of apps, got {}", show(&other)),
                    })
                }
                None => {
                    return Err(ConfigFileError::Shape {
                        file: file.to_path_buf(),
                        message:
                            "no \"apps\" field: expected { \"apps\": [...] } or an array of apps"
                                .to_string(),
                    })
                }
            }
        }
        other => {
            return Err(ConfigFileError::Shape {
                file: file.to_path_buf(),
                message: format!(
                    "expected {{ \"apps\": [...] }} or an array of apps, got {}",
                    show(&other)
                ),
            })
        }
    };
    if entries.is_empty() {
        return Err(ConfigFileError::NoApps {
            file: file.to_path_buf(),
        });
    }

    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    let mut seen = HashMap::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let mut checker = Checker {
            file,
            app: AppRef::Index(index),
            problems: &mut problems,
            warnings: &mut warnings,
            seen: &mut seen,
        };
        if let Some(app) = checker.app(entry, base, defaults) {
            parsed.push(app);
        }
    }

    if !problems.is_empty() {
        return Err(ConfigFileError::Invalid { problems });
    }
    // A missing name comes from the script's file stem, with a `-1`, `-2`, ... suffix when that
    // is taken by an explicit name or an earlier default (or is reserved: `all`, or a number).
    let mut taken: Vec<String> = seen.into_keys().collect();
    let apps = parsed
        .into_iter()
        .map(|app| {
            let name = app.name.clone().unwrap_or_else(|| {
                let name = crate::config::unique_name(&app.config.script, &taken);
                taken.push(name.clone());
                name
            });
            AppConfig { name, ..app.config }
        })
        .collect();
    Ok(LoadedConfig { apps, warnings })
}

/// An app whose fields all checked out; `name` is `None` until a default is chosen.
struct ParsedApp {
    name: Option<String>,
    config: AppConfig,
}

/// Fields nodeguard knows from PM2 but does not act on, with what to tell the user.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    (
        "exec_mode",
        "cluster mode is not supported yet; the app runs as one process",
    ),
    ("watch", "restarting on file changes is not supported"),
    (
        "ignore_watch",
        "restarting on file changes is not supported",
    ),
    (
        "watch_options",
        "restarting on file changes is not supported",
    ),
    ("cron_restart", "scheduled restarts are not supported"),
    (
        "merge_logs",
        "per-instance logs do not apply (one process runs)",
    ),
    (
        "combine_logs",
        "per-instance logs do not apply (one process runs)",
    ),
    (
        "log_date_format",
        "timestamps (with `time: true`) are always RFC 3339 UTC",
    ),
    (
        "log_file",
        "a combined log file is not supported; use out_file and error_file",
    ),
    ("log_type", "JSON log lines are not supported"),
    (
        "pid_file",
        "pid files are not written; use `nodeguard status`",
    ),
    (
        "interpreter",
        "apps always run with node (choose it with --node)",
    ),
    (
        "exec_interpreter",
        "apps always run with node (choose it with --node)",
    ),
    (
        "instance_var",
        "the instance number is in NODEGUARD_INSTANCE",
    ),
    ("increment_var", ""),
    ("source_map_support", ""),
    ("filter_env", ""),
    ("namespace", ""),
    ("vizion", ""),
    ("post_update", ""),
    ("force", ""),
    ("append_env_to_name", ""),
    ("treekill", ""),
    ("shutdown_with_message", ""),
    ("kill_retry_time", ""),
    ("port", ""),
    ("automation", ""),
    ("pmx", ""),
    ("disable_trace", ""),
    ("max_memory_restart_interval", ""),
];

/// Every field this module reads, for "did you mean" hints.
const SUPPORTED: &[&str] = &[
    "name",
    "script",
    "args",
    "cwd",
    "env",
    "instances",
    "node_args",
    "interpreter_args",
    "max_memory_restart",
    "kill_timeout",
    "autorestart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "exp_backoff_restart_delay",
    "stop_exit_codes",
    "wait_ready",
    "listen_timeout",
    "listen",
    "out_file",
    "error_file",
    "time",
    "heartbeat_interval",
    "heartbeat_timeout",
    "heartbeat_misses",
    "start_grace",
];

/// Checks one app's fields, recording problems and warnings as it goes.
struct Checker<'a> {
    file: &'a Path,
    app: AppRef,
    problems: &'a mut Vec<Problem>,
    warnings: &'a mut Vec<String>,
    /// Explicit names so far, with the index of the app that has each.
    seen: &'a mut HashMap<String, usize>,
}

impl Checker<'_> {
    fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            app: self.app.clone(),
            field: (!field.is_empty()).then(|| field.to_string()),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: &str, message: &str) {
        self.warnings.push(format!(
            "{}: {}: field '{field}' {message}",
            self.file.display(),
            self.app
        ));
    }

    fn app(&mut self, entry: Value, base: &Path, defaults: &AppDefaults) -> Option<ParsedApp> {
        let mut fields = match entry {
            Value::Object(fields) => fields,
            other => {
                self.problem("", format!("expected an object, got {}", show(&other)));
                return None;
            }
        };
        let before = self.problems.len();
        // `null` is read as "not set", as JSON writers and JS spreads often produce it.
        fields.retain(|_, value| !value.is_null());

        let name = fields.remove("name").and_then(|value| self.name(value));
        if let Some(name) = &name {
            self.app = AppRef::Name(name.clone());
        }
        let (cwd, cwd_ok) = match fields.remove("cwd") {
            None => (base.to_path_buf(), true),
            Some(value) => match self.path("cwd", value, base) {
                Some(dir) if dir.is_dir() => (dir, true),
                Some(dir) => {
                    self.problem("cwd", format!("{} is not a directory", dir.display()));
                    (dir, false)
                }
                None => (base.to_path_buf(), false),
            },
        };
        let script = match fields.remove("script") {
            None => {
                self.problem("script", "missing: every app needs the script to run");
                None
            }
            Some(value) => self.path("script", value, &cwd).filter(|script| {
                if !cwd_ok || script.is_file() {
                    return true;
                }
                let message = if script.is_dir() {
                    format!("{} is a directory, not a script", script.display())
                } else {
                    format!("{} not found", script.display())
                };
                self.problem("script", message);
                false
            }),
        };
        let args = self.words_field(&mut fields, "args");
        let mut node_args = self.words_field(&mut fields, "node_args");
        node_args.extend(self.words_field(&mut fields, "interpreter_args"));
        let env = fields
            .remove("env")
            .map(|value| self.env(value))
            .unwrap_or_default();
        let instances = match fields.remove("instances") {
            None => Instances::Count(1),
            Some(value) => self.instances(value).unwrap_or(Instances::Count(1)),
        };
        let max_memory = fields
            .remove("max_memory_restart")
            .and_then(|value| self.size("max_memory_restart", value));

        let mut timing = defaults.timing;
        if let Some(kill) = self.duration_field(&mut fields, "kill_timeout") {
            timing.kill_timeout = kill;
        }
        if let Some(grace) = self.duration_field(&mut fields, "start_grace") {
            timing.start_grace = grace;
        }
        let interval = self.duration_field(&mut fields, "heartbeat_interval");
        let timeout = self.duration_field(&mut fields, "heartbeat_timeout");
        let misses = fields
            .remove("heartbeat_misses")
            .and_then(|value| self.count("heartbeat_misses", value));
        if let Some(interval) = interval {
            timing.heartbeat_interval = interval;
            if interval.is_zero() {
                self.problem("heartbeat_interval", "must be greater than zero");
            }
        }
        match (interval, timeout) {
            (_, Some(timeout)) => timing.heartbeat_timeout = timeout,
            // The default timeout follows a shorter interval (only an explicit timeout longer
            // than the interval is a mistake).
            (Some(interval), None) => {
                timing.heartbeat_timeout = timing.heartbeat_timeout.min(interval);
            }
            (None, None) => {}
        }
        if let Some(misses) = misses {
            timing.heartbeat_misses = misses;
            if misses == 0 {
                self.problem("heartbeat_misses", "must be at least 1");
            }
        }
        if (interval.is_some() || timeout.is_some())
            && timing.heartbeat_timeout > timing.heartbeat_interval
        {
            let from = |set: bool| if set { "" } else { "default " };
            self.problem(
                if timeout.is_some() {
                    "heartbeat_timeout"
                } else {
                    "heartbeat_interval"
                },
                format!(
                    "the {}heartbeat_timeout ({}) must not exceed the {}heartbeat_interval ({})",
                    from(timeout.is_some()),
                    human(timing.heartbeat_timeout),
                    from(interval.is_some()),
                    human(timing.heartbeat_interval),
                ),
            );
        }

        let autorestart = self.bool_field(&mut fields, "autorestart").unwrap_or(true);
        let max_restarts = fields
            .remove("max_restarts")
            .and_then(|value| self.count("max_restarts", value));
        let min_uptime = self.duration_field(&mut fields, "min_uptime");
        let restart_delay = self.duration_field(&mut fields, "restart_delay");
        let exp_backoff_restart_delay =
            self.duration_field(&mut fields, "exp_backoff_restart_delay");
        let stop_exit_codes = self.exit_codes_field(&mut fields, "stop_exit_codes");
        let wait_ready = self.bool_field(&mut fields, "wait_ready").unwrap_or(false);
        let listen_timeout = self.duration_field(&mut fields, "listen_timeout");
        let listen = self.listen_field(&mut fields);
        let out_file = fields
            .remove("out_file")
            .and_then(|value| self.path("out_file", value, &cwd));
        let error_file = fields
            .remove("error_file")
            .and_then(|value| self.path("error_file", value, &cwd));
        let log_timestamps = self.bool_field(&mut fields, "time").unwrap_or(false);

        self.leftovers(fields);

        let script = script?;
        if self.problems.len() > before {
            return None;
        }
        Some(ParsedApp {
            name,
            config: AppConfig {
                name: String::new(),
                script,
                args,
                cwd,
                env,
                node_args,
                instances,
                timing,
                max_memory,
                autorestart,
                max_restarts,
                min_uptime,
                restart_delay,
                exp_backoff_restart_delay,
                stop_exit_codes,
                wait_ready,
                listen_timeout,
                listen,
                out_file,
                error_file,
                log_timestamps,
            },
        })
    }

    /// Warns about every field that was not taken.
    fn leftovers(&mut self, fields: Map<String, Value>) {
        for key in fields.keys() {
            if key == "exec_mode"
                && matches!(fields.get(key), Some(Value::String(mode)) if mode == "fork" || mode == "fork_mode")
            {
                continue;
            }
            if key.starts_with("env_") {
                self.warn(
                    key,
                    "is not supported and is ignored (per-environment env blocks are not \
                     supported; put the variables in env)",
                );
            } else if let Some((_, why)) = NOT_SUPPORTED.iter().find(|(known, _)| known == key) {
                let message = if why.is_empty() {
                    "is not supported and is ignored".to_string()
                } else {
                    format!("is not supported and is ignored ({why})")
                };
                self.warn(key, &message);
            } else {
                let message = match SUPPORTED
                    .iter()
                    .find(|known| edit_distance(key, known) <= 2)
                {
                    Some(near) => {
                        format!("is not a known field and is ignored (did you mean '{near}'?)")
                    }
                    None => "is not a known field and is ignored".to_string(),
                };
                self.warn(key, &message);
            }
        }
    }

    fn name(&mut self, value: Value) -> Option<String> {
        let Value::String(name) = value else {
            self.problem("name", format!("expected a string, got {}", show(&value)));
            return None;
        };
        let message = if let Some(problem) = crate::config::name_problem(&name) {
            problem
        } else if let Some(first) = self.seen.get(&name) {
            let message = format!("'{name}' is already the name of {}", AppRef::Index(*first));
            self.problem("name", message);
            return None;
        } else {
            if let AppRef::Index(index) = self.app {
                self.seen.insert(name.clone(), index);
            }
            return Some(name);
        };
        let shown = crate::config::shown_name(&name);
        self.problem("name", format!("{message}, got \"{shown}\""));
        None
    }

    /// A non-empty string path, resolved against `base`.
    fn path(&mut self, field: &str, value: Value, base: &Path) -> Option<PathBuf> {
        match value {
            Value::String(text) if !text.trim().is_empty() && !text.contains('\0') => {
                Some(normalize(&base.join(text)))
            }
            Value::String(_) => {
                self.problem(field, "expected a path, got an empty string");
                None
            }
            other => {
                self.problem(
                    field,
                    format!("expected a path (a string), got {}", show(&other)),
                );
                None
            }
        }
    }

    /// A string split like a shell would, or an array of strings (numbers are taken as text).
    fn words_field(&mut self, fields: &mut Map<String, Value>, field: &str) -> Vec<String> {
        let Some(value) = fields.remove(field) else {
            return Vec::new();
        };
        let words = match value {
            Value::String(text) => match shell_words::split(&text) {
                Ok(words) => words,
                Err(err) => {
                    self.problem(
                        field,
                        format!("cannot split {}: {err}", show(&Value::String(text))),
                    );
                    return Vec::new();
                }
            },
            Value::Array(items) => {
                let mut words = Vec::new();
                for (index, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(word) => words.push(word),
                        Value::Number(number) => words.push(number.to_string()),
                        other => self.problem(
                            &format!("{field}[{index}]"),
                            format!("expected a string, got {}", show(&other)),
                        ),
                    }
                }
                words
            }
            other => {
                self.problem(
                    field,
                    format!(
                        "expected a string or an array of strings, got {}",
                        show(&other)
                    ),
                );
                return Vec::new();
            }
        };
        if words.iter().any(|word| word.contains('\0')) {
            self.problem(field, "must not contain NUL characters");
        }
        words
    }

    fn env(&mut self, value: Value) -> Vec<(String, String)> {
        let Value::Object(vars) = value else {
            self.problem(
                "env",
                format!("expected an object of variables, got {}", show(&value)),
            );
            return Vec::new();
        };
        let mut env = Vec::new();
        for (key, value) in vars {
            let field = format!("env.{key}");
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                self.problem(
                    "env",
                    format!("invalid variable name {}", show(&Value::String(key))),
                );
                continue;
            }
            let text = match value {
                Value::String(text) => text,
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                other => {
                    self.problem(
                        &field,
                        format!("expected a string, number or boolean, got {}", show(&other)),
                    );
                    continue;
                }
            };
            if text.contains('\0') {
                self.problem(&field, "must not contain NUL characters");
                continue;
            }
            env.push((key, text));
        }
        env
    }

    fn instances(&mut self, value: Value) -> Option<Instances> {
        let number = match &value {
            Value::Number(number) => number.as_i64(),
            Value::String(text) if text.trim().eq_ignore_ascii_case("max") => {
                return Some(Instances::Max)
            }
            Value::String(text) => text.trim().parse::<i64>().ok(),
            _ => None,
        };
        let instances = match number {
            Some(0) => Some(Instances::Max),
            Some(count) if count > 0 => u32::try_from(count).ok().map(Instances::Count),
            Some(fewer) => u32::try_from(fewer.unsigned_abs())
                .ok()
                .map(Instances::AllBut),
            None => None,
        };
        if instances.is_none() {
            self.problem(
                "instances",
                format!(
                    "expected a positive integer or \"max\", got {}",
                    show(&value)
                ),
            );
        }
        instances
    }

    /// A non-negative integer that fits in a u32.
    fn count(&mut self, field: &str, value: Value) -> Option<u32> {
        let count = value.as_u64().and_then(|count| u32::try_from(count).ok());
        if count.is_none() {
            self.problem(
                field,
                format!("expected a non-negative integer, got {}", show(&value)),
            );
        }
        count
    }

    /// `listen`: a port, a `"host:port"`, or a list of them.
    fn listen_field(&mut self, fields: &mut Map<String, Value>) -> Vec<String> {
        let Some(value) = fields.remove("listen") else {
            return Vec::new();
        };
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        let mut addresses = Vec::new();
        for item in items {
            let text = match &item {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                other => {
                    self.problem(
                        "listen",
                        format!("expected a port or \"host:port\", got {}", show(other)),
                    );
                    continue;
                }
            };
            match crate::config::ListenAddress::parse(&text) {
                Ok(_) => addresses.push(text),
                Err(error) => self.problem("listen", error.to_string()),
            }
        }
        addresses
    }

    /// An exit code, or an array of them (PM2 accepts both).
    fn exit_codes_field(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &str,
    ) -> Option<ExitCodes> {
        let value = fields.remove(field)?;
        let items = match &value {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let codes: Option<Vec<i64>> = items.iter().map(|item| item.as_i64()).collect();
        let parsed = match codes {
            Some(codes) => ExitCodes::from_codes(codes),
            None => Err(format!(
                "expected an exit code or an array of them, got {}",
                show(&value)
            )),
        };
        match parsed {
            Ok(codes) => Some(codes),
            Err(message) => {
                self.problem(field, message);
                None
            }
        }
    }

    fn bool_field(&mut self, fields: &mut Map<String, Value>, field: &str) -> Option<bool> {
        match fields.remove(field)? {
            Value::Bool(flag) => Some(flag),
            other => {
                self.problem(
                    field,
                    format!("expected true or false, got {}", show(&other)),
                );
                None
            }
        }
    }

    /// Milliseconds as a number (or a string of digits), or a duration string such as `"5s"`.
    fn duration_field(&mut self, fields: &mut Map<String, Value>, field: &str) -> Option<Duration> {
        let value = fields.remove(field)?;
        let parsed = match &value {
            Value::Number(number) => number
                .as_f64()
                .filter(|ms| *ms >= 0.0)
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1_000.0).ok())
                .ok_or_else(|| {
                    format!("expected a non-negative number of milliseconds, got {number}")
                }),
            Value::String(text)
                if !text.trim().is_empty() && text.trim().bytes().all(|b| b.is_ascii_digit()) =>
            {
                text.trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{} is out of range", show(&value)))
            }
            Value::String(text) => parse_duration(text),
            other => Err(format!(
                "expected milliseconds (a number) or a duration such as \"5s\", got {}",
                show(other)
            )),
        };
        match parsed.and_then(crate::duration::bounded) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.problem(field, message);
                None
            }
        }
    }

    /// Bytes as a number, or a size such as `"200M"`, `"1G"`, `"512K"` (1024-based, as in PM2).
    fn size(&mut self, field: &str, value: Value) -> Option<u64> {
        let parsed = match &value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => parse_size(text),
            _ => None,
        };
        match parsed {
            Some(0) => {
                self.problem(field, "must be greater than zero");
                None
            }
            Some(bytes) if bytes > crate::config::MAX_MEMORY => {
                self.problem(
                    field,
                    format!("{} is too large (at most 1024T)", show(&value)),
                );
                None
            }
            Some(bytes) => Some(bytes),
            None => {
                self.problem(
                    field,
                    format!(
                        "expected bytes or a size such as \"200M\" or \"1G\", got {}",
                        show(&value)
                    ),
                );
                None
            }
        }
    }
}

/// `"200M"`, `"1.5G"`, `"512K"`, `"300MB"`, `"1024"` → bytes; 1024-based.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let multiplier: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    let bytes = (number * multiplier as f64).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Removes `.` and resolves `..` without touching the file system (symlinks are kept as named).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A value as it reads in a message: scalars as JSON (strings quoted, long ones cut), containers
/// by kind.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        Value::String(text) if text.chars().count() > 60 => {
            let cut: String = text.chars().take(57).collect();
            format!("{}...", Value::String(cut))
        }
        other => other.to_string(),
    }
}

/// Levenshtein distance, for "did you mean" hints on short field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(current)
            };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_MISSES, DEFAULT_HEARTBEAT_TIMEOUT,
        DEFAULT_KILL_TIMEOUT, DEFAULT_START_GRACE,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn defaults() -> AppDefaults {
        AppDefaults {
            node: PathBuf::from("node"),
            timing: Timing {
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
                heartbeat_misses: DEFAULT_HEARTBEAT_MISSES,
                start_grace: DEFAULT_START_GRACE,
                kill_timeout: DEFAULT_KILL_TIMEOUT,
                policy: crate::machine::RestartPolicy::default(),
            },
        }
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/configs")
    }

    fn fixture(name: &str) -> PathBuf {
        normalize(&fixtures().join(name))
    }

    /// A fresh directory holding `files`, plus a script `app.js`.
    fn temp_dir(files: &[(&str, &str)]) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nodeguard-config-file-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("app.js"), "").expect("app.js");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("fixture file");
        }
        dir
    }

    fn problems(result: Result<LoadedConfig, ConfigFileError>) -> Vec<Problem> {
        match result {
            Err(ConfigFileError::Invalid { problems }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn json_with_two_apps() {
        let loaded = load(&fixture("two-apps.json"), &defaults()).expect("loads");
        assert_eq!(loaded.warnings, Vec::<String>::new());
        let [api, worker] = &loaded.apps[..] else {
            panic!("two apps: {:?}", loaded.apps)
        };
        assert_eq!(api.name, "api");
        assert_eq!(api.script, fixture("apps/api.js"));
        assert_eq!(
            api.cwd,
            fixtures().canonicalize().map(|_| fixture("")).unwrap()
        );
        assert_eq!(
            api.args,
            ["--port", "3000", "--greeting", "hello world"].map(String::from)
        );
        assert_eq!(
            api.env,
            [
                ("DEBUG", "false"),
                ("NODE_ENV", "production"),
                ("PORT", "3000")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(api.node_args, ["--max-old-space-size=256"]);
        assert_eq!(api.max_memory, Some(200 * 1024 * 1024));
        assert_eq!(api.timing.kill_timeout, Duration::from_secs(3));
        assert_eq!(api.timing.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(api.timing.heartbeat_timeout, Duration::from_millis(1500));
        assert_eq!(api.timing.start_grace, DEFAULT_START_GRACE);
        assert_eq!(api.out_file, Some(fixture("logs/api.out.log")));
        assert!(api.autorestart);

        assert_eq!(worker.name, "worker", "named after the script's stem");
        assert_eq!(worker.cwd, fixture("apps"));
        assert_eq!(worker.script, fixture("apps/worker.js"));
        assert_eq!(worker.args, ["--queue", "jobs"]);
        assert!(!worker.autorestart);
        assert_eq!(worker.min_uptime, Some(Duration::from_secs(5)));
        assert_eq!(worker.restart_delay, Some(Duration::from_millis(250)));
        assert_eq!(worker.max_restarts, Some(10));
        assert_eq!(worker.timing, defaults().timing);

        let spec = worker.to_spec(7, Path::new("/usr/bin/node"));
        assert_eq!((spec.id, spec.name.as_str()), (7, "worker"));
        assert_eq!(spec.node, Path::new("/usr/bin/node"));
        assert_eq!(spec.script, worker.script);
    }

    #[test]
    fn ecosystem_js_with_two_apps_is_evaluated_by_node() {
        let loaded = load(&fixture("ecosystem.config.js"), &defaults()).expect("loads");
        let [api, worker] = &loaded.apps[..] else {
            panic!("two apps: {:?}", loaded.apps)
        };
        assert_eq!(api.name, "api");
        assert_eq!(api.args, ["--port", "3001"]);
        assert_eq!(api.instances, Instances::Max);
        assert!(api.wait_ready);
        assert_eq!(api.listen_timeout, Some(Duration::from_secs(8)));
        assert_eq!(
            api.exp_backoff_restart_delay,
            Some(Duration::from_millis(100))
        );
        assert_eq!(worker.script, fixture("apps/worker.js"));
        assert_eq!(worker.node_args, ["--enable-source-maps"]);
        assert_eq!(worker.error_file, Some(fixture("logs/worker.err.log")));
        assert_eq!(worker.timing.heartbeat_misses, 5);
        assert_eq!(worker.timing.start_grace, Duration::from_secs(10));

        let file = fixture("ecosystem.config.js").display().to_string();
        assert_eq!(
            loaded.warnings,
            [
                format!("{file}: app 'api': field 'watch' is not supported and is ignored (restarting on file changes is not supported)"),
            ]
        );
    }

    #[test]
    fn esm_default_export_is_read() {
        let loaded = load(&fixture("esm.config.mjs"), &defaults()).expect("loads");
        assert_eq!(loaded.apps.len(), 1);
        assert_eq!(loaded.apps[0].name, "esm-api");
        assert_eq!(loaded.apps[0].script, fixture("apps/api.js"));
    }

    #[test]
    fn a_js_config_that_throws_is_one_clear_error() {
        let err = load(&fixture("throws.config.js"), &defaults()).expect_err("throws");
        let text = err.to_string();
        assert!(matches!(err, ConfigFileError::Eval { .. }), "{err:?}");
        assert!(text.contains("throws.config.js"), "{text}");
        assert!(
            text.ends_with("Error: cannot read secrets for port 3000 (line 3)"),
            "{text}"
        );
    }

    #[test]
    fn a_js_syntax_error_names_the_line() {
        let dir = temp_dir(&[("broken.config.js", "module.exports = {\n  apps: [\n")]);
        let err = load(&dir.join("broken.config.js"), &defaults()).expect_err("broken");
        let text = err.to_string();
        assert!(text.contains("SyntaxError"), "{text}");
        assert!(text.contains("(line "), "{text}");
    }

    #[test]
    fn a_hanging_js_config_times_out() {
        let dir = temp_dir(&[("hang.config.js", "while (true) {}")]);
        let started = Instant::now();
        let err = load_with_timeout(
            &dir.join("hang.config.js"),
            &defaults(),
            Duration::from_millis(500),
        )
        .expect_err("hangs");
        assert!(matches!(err, ConfigFileError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[cfg(unix)]
    #[test]
    fn a_timed_out_js_config_takes_the_processes_it_spawned_with_it() {
        let dir = temp_dir(&[(
            "spawner.config.js",
            "const { spawn } = require('child_process');\n\
             const child = spawn('sleep', ['1000'], { stdio: 'ignore' });\n\
             require('fs').writeFileSync(__dirname + '/child.pid', String(child.pid));\n\
             while (true) {}\n",
        )]);
        let err = load_with_timeout(
            &dir.join("spawner.config.js"),
            &defaults(),
            Duration::from_secs(5),
        )
        .expect_err("never finishes");
        assert!(matches!(err, ConfigFileError::Timeout { .. }), "{err:?}");
        let pid: u32 = std::fs::read_to_string(dir.join("child.pid"))
            .expect("the config wrote its child's pid before the timeout")
            .trim()
            .parse()
            .expect("a pid");
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::platform::process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let alive = crate::platform::process_alive(pid);
        if alive {
            let _ = crate::platform::kill_process(pid);
        }
        assert!(!alive, "the config's child {pid} outlived the timeout");
    }

    #[test]
    fn instances_lots_is_an_error_naming_instances() {
        let dir = temp_dir(&[(
            "c.json",
            r#"{"apps":[{"name":"api","script":"app.js","instances":"lots"}]}"#,
        )]);
        let file = dir.join("c.json");
        let problems = problems(load(&file, &defaults()));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field.as_deref(), Some("instances"));
        assert_eq!(
            problems[0].to_string(),
            format!(
                "{}: app 'api': instances: expected a positive integer or \"max\", got \"lots\"",
                file.display()
            )
        );
    }

    #[test]
    fn durations_sizes_and_names_are_bounded() {
        let dir = temp_dir(&[
            ("app.js", ""),
            (
                "huge.json",
                r#"{"apps":[{"name":"api","script":"app.js","kill_timeout":"4000000000000000h",
                    "start_grace":99999999999999,"restart_delay":"99999999999999",
                    "max_memory_restart":"2000T"},
                   {"name":"web\nforged","script":"app.js"},
                   {"name":"a/b","script":"app.js","heartbeat_interval":"100ms"}]}"#,
            ),
        ]);
        let err = load(&dir.join("huge.json"), &defaults()).expect_err("refused");
        let text = err.to_string();
        let fields: Vec<_> = problems(Err(err))
            .into_iter()
            .map(|p| (p.app.to_string(), p.field))
            .collect();
        let expected = [
            ("app 'api'", "max_memory_restart"),
            ("app 'api'", "kill_timeout"),
            ("app 'api'", "start_grace"),
            ("app 'api'", "restart_delay"),
            ("app #1", "name"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(app, field)| (app.to_string(), Some(field.to_string())))
            .collect();
        assert_eq!(fields, expected, "{text}");
        assert!(text.contains("too long (at most 720h"), "{text}");
        assert!(text.contains("control characters"), "{text}");
        assert!(text.contains(r#"got "web\nforged""#), "{text}");
    }

    #[test]
    fn a_problem_quoting_a_value_with_a_newline_stays_one_line() {
        let problem = Problem {
            file: PathBuf::from("/etc/app.json"),
            app: AppRef::Name("cfg".into()),
            field: Some("script".into()),
            message: "/srv/line\nbreak not found".into(),
        };
        assert_eq!(
            problem.to_string(),
            "/etc/app.json: app 'cfg': script: /srv/line\\nbreak not found"
        );
    }

    #[test]
    fn a_short_heartbeat_interval_alone_takes_the_timeout_down_with_it() {
        let dir = temp_dir(&[
            ("app.js", ""),
            (
                "quick.json",
                r#"[{"name":"a/b","script":"app.js","heartbeat_interval":"100ms"}]"#,
            ),
        ]);
        let loaded = load(&dir.join("quick.json"), &defaults()).expect("loads");
        let timing = loaded.apps[0].timing;
        assert_eq!(timing.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(timing.heartbeat_timeout, Duration::from_millis(100));
        assert_eq!(loaded.apps[0].name, "a/b");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let file = fixture("invalid.json");
        let err = load(&file, &defaults()).expect_err("invalid");
        let text = err.to_string();
        let problems = problems(Err(err));
        let found: Vec<(String, Option<&str>)> = problems
            .iter()
            .map(|p| (p.app.to_string(), p.field.as_deref()))
            .collect();
        let expected = [
            ("app 'api'", Some("instances")),
            ("app 'api'", Some("kill_timeout")),
            ("app #1", Some("name")),
            ("app #1", Some("script")),
            ("app #2", Some("script")),
            ("app #2", Some("args")),
            ("app 'hb'", Some("max_memory_restart")),
            ("app 'hb'", Some("heartbeat_misses")),
            ("app 'hb'", Some("heartbeat_timeout")),
        ];
        let expected: Vec<(String, Option<&str>)> = expected
            .iter()
            .map(|(app, field)| (app.to_string(), *field))
            .collect();
        assert_eq!(found, expected, "{text}");
        assert_eq!(text.lines().count(), problems.len());
        assert!(text.contains("apps/missing.js not found"), "{text}");
        assert!(
            text.contains("'api' is already the name of app #0"),
            "{text}"
        );
        assert!(
            text.contains("missing: every app needs the script"),
            "{text}"
        );
        assert!(
            text.contains(
                "the heartbeat_timeout (2.0s) must not exceed the heartbeat_interval (1.0s)"
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_and_unsupported_fields_warn() {
        let dir = temp_dir(&[(
            "c.json",
            r#"{"deploy":{},"apps":[{"name":"api","script":"app.js","scirpt_x":1,"kill_timout":5,"cron_restart":"0 * * * *","exec_mode":"fork","env_production":{}}]}"#,
        )]);
        let file = dir.join("c.json");
        let loaded = load(&file, &defaults()).expect("loads");
        let file = file.display();
        assert_eq!(
            loaded.warnings,
            [
                format!("{file}: top-level field 'deploy' is not supported and is ignored"),
                format!("{file}: app 'api': field 'cron_restart' is not supported and is ignored (scheduled restarts are not supported)"),
                format!("{file}: app 'api': field 'env_production' is not supported and is ignored (per-environment env blocks are not supported; put the variables in env)"),
                format!("{file}: app 'api': field 'kill_timout' is not a known field and is ignored (did you mean 'kill_timeout'?)"),
                format!("{file}: app 'api': field 'scirpt_x' is not a known field and is ignored"),
            ]
        );
    }

    #[test]
    fn args_strings_are_split_like_a_shell() {
        let dir = temp_dir(&[(
            "c.json",
            r#"[{"script":"app.js","args":"a 'b c' \"d e\" f\\ g","node_args":"--inspect --trace-warnings"}]"#,
        )]);
        let loaded = load(&dir.join("c.json"), &defaults()).expect("loads");
        assert_eq!(loaded.apps[0].args, ["a", "b c", "d e", "f g"]);
        assert_eq!(loaded.apps[0].node_args, ["--inspect", "--trace-warnings"]);

        let dir = temp_dir(&[("c.json", r#"[{"script":"app.js","args":"'unclosed"}]"#)]);
        let problems = problems(load(&dir.join("c.json"), &defaults()));
        assert_eq!(problems[0].field.as_deref(), Some("args"));
    }

    #[test]
    fn relative_cwd_and_script_resolve_against_the_config_file() {
        let dir = temp_dir(&[]);
        std::fs::create_dir_all(dir.join("srv/bin")).expect("dirs");
        std::fs::write(dir.join("srv/bin/main.js"), "").expect("script");
        std::fs::create_dir_all(dir.join("conf")).expect("conf dir");
        std::fs::write(
            dir.join("conf/c.json"),
            r#"{"apps":[{"script":"bin/main.js","cwd":"../srv","out_file":"out.log"},{"script":"../app.js"}]}"#,
        )
        .expect("config");
        // A relative path to the config file works too.
        let config = dir.join("conf/./c.json");
        let loaded = load(&config, &defaults()).expect("loads");
        let [main, app] = &loaded.apps[..] else {
            panic!("two apps")
        };
        assert_eq!(main.cwd, dir.join("srv"));
        assert_eq!(main.script, dir.join("srv/bin/main.js"));
        assert_eq!(main.out_file, Some(dir.join("srv/out.log")));
        assert_eq!((main.name.as_str(), app.name.as_str()), ("main", "app"));
        assert_eq!(app.cwd, dir.join("conf"));
        assert_eq!(app.script, dir.join("app.js"));
    }

    #[test]
    fn default_names_come_from_script_stems_with_suffixes() {
        let dir = temp_dir(&[(
            "c.json",
            r#"[{"name":"app","script":"app.js"},{"script":"app.js"},{"script":"./app.js"}]"#,
        )]);
        let loaded = load(&dir.join("c.json"), &defaults()).expect("loads");
        let names: Vec<_> = loaded.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["app", "app-1", "app-2"]);
    }

    #[test]
    fn file_level_errors_have_their_own_messages() {
        let dir = temp_dir(&[
            (
                "syntax.json",
                "{\n  \"apps\": [\n    {\"script\": \"app.js\",}\n  ]\n}",
            ),
            ("empty.json", r#"{"apps": []}"#),
            ("noapps.json", r#"{"app": []}"#),
            ("config.yaml", "apps: []"),
        ]);
        let err = load(&dir.join("syntax.json"), &defaults()).expect_err("syntax");
        assert!(
            matches!(err, ConfigFileError::Syntax { line: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("syntax.json:3:"), "{err}");
        let err = load(&dir.join("empty.json"), &defaults()).expect_err("empty");
        assert!(matches!(err, ConfigFileError::NoApps { .. }), "{err:?}");
        let err = load(&dir.join("noapps.json"), &defaults()).expect_err("no apps");
        assert!(matches!(err, ConfigFileError::Shape { .. }), "{err:?}");
        let err = load(&dir.join("missing.json"), &defaults()).expect_err("missing");
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err:?}");
        let err = load(&dir.join("config.yaml"), &defaults()).expect_err("yaml");
        assert!(
            matches!(err, ConfigFileError::UnsupportedType { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn values_of_every_kind_parse() {
        assert_eq!(parse_size("200M"), Some(200 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("512kb"), Some(512 << 10));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5X"), None);
        assert_eq!(Instances::AllBut(1).resolve(8), 7);
        assert_eq!(Instances::AllBut(1).resolve(1), 1);
        assert_eq!(Instances::Max.resolve(4), 4);

        let dir = temp_dir(&[(
            "c.json",
            r#"[{"script":"app.js","instances":-1,"kill_timeout":"1500","min_uptime":"2s"},{"script":"app.js","instances":"3"},{"script":"app.js","instances":0}]"#,
        )]);
        let loaded = load(&dir.join("c.json"), &defaults()).expect("loads");
        assert_eq!(loaded.apps[0].instances, Instances::AllBut(1));
        assert_eq!(
            loaded.apps[0].timing.kill_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(loaded.apps[0].min_uptime, Some(Duration::from_secs(2)));
        assert_eq!(loaded.apps[1].instances, Instances::Count(3));
        assert_eq!(loaded.apps[2].instances, Instances::Max);
    }

    #[test]
    fn config_files_are_told_from_scripts() {
        for yes in [
            "ecosystem.config.js",
            "a/nodeguard.config.mjs",
            "apps.json",
            "x.config.cjs",
        ] {
            assert!(looks_like_config(Path::new(yes)), "{yes}");
        }
        for no in ["app.js", "server.mjs", "config.js"] {
            assert!(!looks_like_config(Path::new(no)), "{no}");
        }
    }
}
