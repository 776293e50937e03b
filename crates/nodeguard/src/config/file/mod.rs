//! Config files: PM2-style `apps` lists in JSON, YAML or JavaScript (`nodeguard.config.js`,
//! `ecosystem.config.js`, `process.yml`), validated as a whole so that every problem is reported
//! at once.
//!
//! JSON is parsed directly; JSON that is not strict JSON (comments, trailing commas, which PM2
//! accepts because it evaluates `.json` files as JavaScript) is evaluated by node as one
//! expression, as PM2 does. YAML (`.yml`, `.yaml`) is parsed directly. A JS file (`.js`, `.cjs`,
//! `.mjs`) is evaluated by node, bounded by [`EVAL_TIMEOUT`], and whatever it exports
//! (`module.exports`, or an ESM default export) is read back as JSON. Either way the top level is
//! `{ "apps": [...] }`, a bare array of apps, or one bare app object (with a `script`).
//!
//! Fields that nodeguard knows but does not act on yet, and fields it does not know at all, are
//! reported as warnings that name the file, the app and the field; nothing is dropped silently.

mod catalogue;
mod checker;
mod env_fields;
mod eval_js;

pub use crate::core::units::parse_size;
use checker::Checker;
use eval_js::{eval_js, EvalAs};

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::AppCommand;
use crate::core::duration::parse_duration;
use crate::core::exit::human;
use crate::core::machine::{Autorestart, ExitCodes, StopSignal, Timing};
use nodeguard_proto::control::AppDefinition;

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
    /// PM2's `env_<name>` blocks, by name (`production` for `env_production`), for `--env`.
    pub env_blocks: Vec<(String, Vec<(String, String)>)>,
    /// The variables of the `env_file` files, later files winning.
    pub env_file: Vec<(String, String)>,
    /// PM2's `filter_env` as prefixes of the caller's variables not passed (`true`: `[""]`).
    pub filter_env: Option<Vec<String>>,
    /// `node_args`, and `interpreter_args` when node runs the app.
    pub node_args: Vec<String>,
    /// What runs the script (see [`AppDefinition::interpreter`]); `None` is node.
    pub interpreter: Option<String>,
    /// `interpreter_args` for an interpreter other than node.
    pub interpreter_args: Vec<String>,
    pub instances: Instances,
    /// `exec_mode: 'cluster'`: the port is shared even with one instance.
    pub cluster: bool,
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
    /// PM2's `disable_logs`: stdout and stderr go to /dev/null.
    pub disable_logs: bool,
    /// PM2's `time`: prefix each log line with its time.
    pub log_timestamps: bool,
    /// PM2's `log_type: 'json'`.
    pub log_json: bool,
    /// nodeguard's own field: a hang's report shows the in-flight requests' query strings.
    pub hang_show_query: bool,
    /// nodeguard's own field: a heap snapshot before a memory restart.
    pub heap_snapshot_on_memory_restart: bool,
    /// nodeguard's own field: a CPU profile when the loop delay p99 reaches this.
    pub profile_on_stall: Option<Duration>,
    /// PM2's `log_date_format`, checked.
    pub log_date_format: Option<String>,
    /// PM2's `log_file`: absolute, or empty for the default place.
    pub log_file: Option<PathBuf>,
    /// PM2's `pid_file`, absolute.
    pub pid_file: Option<PathBuf>,
    /// `watch`, `cron_restart`, `kill_signal` and company.
    pub triggers: Triggers,
    /// PM2's `instance_var` and `increment_var`.
    pub instance_vars: crate::config::InstanceVars,
    /// PM2's `namespace`.
    pub namespace: Option<String>,
    /// PM2's `uid` (`user`, `username`) and `gid`, as written.
    pub uid: Option<String>,
    pub gid: Option<String>,
}

/// An app's restart triggers and stop contract, from PM2's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Triggers {
    /// Absolute paths; empty for `watch: false` or none.
    pub watch: Vec<PathBuf>,
    pub ignore_watch: Vec<String>,
    pub watch_delay: Option<Duration>,
    pub cron_restart: Option<String>,
    /// PM2's default, SIGINT, when the file does not say.
    pub kill_signal: StopSignal,
    pub shutdown_with_message: bool,
    /// nodeguard's `on_event` hooks, checked, as written (`KINDS=TARGET`).
    pub on_event: Vec<String>,
}

impl AppConfig {
    /// The wire form of this app, PM2's fields mapped onto nodeguard's; `node` runs it, and
    /// `log_timestamps` (the command line's `--log-timestamps`) adds to the file's `time`.
    pub fn definition(&self, node: &Path, log_timestamps: bool) -> AppDefinition {
        let mut definition = AppCommand {
            name: Some(self.name.clone()),
            script: &self.script,
            args: self.args.clone(),
            node,
            node_args: self.node_args.clone(),
            cwd: &self.cwd,
            env: self.env_for(None),
            timing: &self.timing,
        }
        .definition();
        let path_text = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
        definition.out_file = path_text(&self.out_file);
        definition.interpreter = self.interpreter.clone();
        definition.interpreter_args = self.interpreter_args.clone();
        definition.error_file = path_text(&self.error_file);
        definition.disable_logs = self.disable_logs;
        definition.log_timestamps = self.log_timestamps || log_timestamps;
        definition.log_json = self.log_json;
        definition.hang_show_query = self.hang_show_query;
        definition.heap_snapshot_on_memory_restart = self.heap_snapshot_on_memory_restart;
        definition.profile_on_stall_ms = self.profile_on_stall.map(crate::core::duration::millis);
        definition.log_date_format.clone_from(&self.log_date_format);
        definition.log_file = path_text(&self.log_file);
        definition.pid_file = path_text(&self.pid_file);
        definition.instance_var = self.instance_vars.instance_var.clone();
        definition.increment_var = self.instance_vars.increment_var.clone();
        definition.namespace = self.namespace.clone();
        definition.uid.clone_from(&self.uid);
        definition.gid.clone_from(&self.gid);
        definition.filter_env.clone_from(&self.filter_env);
        if let Some(codes) = &self.stop_exit_codes {
            // PM2's stop_exit_codes: those exits do not restart the app.
            definition.clean_exit_codes = Some(codes.codes());
            definition.autorestart = Some(Autorestart::OnFailure.as_str().to_string());
        }
        if !self.autorestart {
            definition.autorestart = Some(Autorestart::Never.as_str().to_string());
        }
        let millis = crate::core::duration::millis;
        if let Some(min_uptime) = self.min_uptime {
            definition.min_uptime_ms = Some(millis(min_uptime));
        }
        if let Some(restart_delay) = self.restart_delay {
            definition.restart_delay_ms = Some(millis(restart_delay));
        }
        if let Some(backoff_base) = self.exp_backoff_restart_delay {
            definition.backoff_base_ms = Some(millis(backoff_base));
        }
        if let Some(max_restarts) = self.max_restarts {
            definition.max_restarts = Some(max_restarts);
        }
        if let Some(max_memory) = self.max_memory {
            definition.max_memory = Some(max_memory);
        }
        definition.instances = self.instances.resolve(cpu_count());
        definition.cluster = self.cluster;
        definition.listen = self.listen.clone();
        definition.wait_ready = self.wait_ready;
        definition.listen_timeout_ms = self.listen_timeout.map(millis);
        let triggers = &self.triggers;
        definition.watch = triggers
            .watch
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        definition.ignore_watch = triggers.ignore_watch.clone();
        definition.watch_delay_ms = triggers.watch_delay.map(millis);
        definition.cron_restart = triggers.cron_restart.clone();
        definition.kill_signal = Some(triggers.kill_signal.name().to_string());
        definition.shutdown_with_message = triggers.shutdown_with_message;
        definition.on_event = triggers.on_event.clone();
        definition
    }
}

impl AppConfig {
    /// The variables this app sets over its caller's environment, in their order of precedence:
    /// `env_file`, then `env`, then the `env_<name>` block `name` chooses (if the app has one).
    pub fn env_for(&self, name: Option<&str>) -> Vec<(String, String)> {
        let block = name
            .and_then(|name| self.env_blocks.iter().find(|(known, _)| known == name))
            .map(|(_, vars)| vars.as_slice())
            .unwrap_or_default();
        crate::config::env::layered([&self.env_file[..], &self.env[..], block])
    }

    /// Whether the app has an `env_<name>` block.
    pub fn has_env_block(&self, name: &str) -> bool {
        self.env_blocks.iter().any(|(known, _)| known == name)
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
        f.write_str(&one_line(&line))
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): values from the file (a path, a
/// name, a field's key) may hold a newline, and a problem or a warning stays one line.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() {
            line.extend(ch.escape_default());
        } else {
            line.push(ch);
        }
    }
    line
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
        "{}: unsupported config file type (use .json, .yml, .yaml, .js, .cjs or .mjs)",
        file.display()
    )]
    UnsupportedType { file: PathBuf },
    /// `at` is `:line:column`, or empty when the parser gives no place.
    #[error("{}{at}: invalid YAML: {message}", file.display())]
    Yaml {
        file: PathBuf,
        at: String,
        message: String,
    },
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

/// True for paths that name a config file rather than a script, by PM2's rule: `*.json`,
/// `*.yml`, `*.yaml`, or `*.config.js` / `*.config.cjs` / `*.config.mjs`.
pub fn looks_like_config(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".json")
        || name.ends_with(".yml")
        || name.ends_with(".yaml")
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
        "json" => read_json(path, &defaults.node, timeout)?,
        "yml" | "yaml" => read_yaml(path)?,
        "js" | "cjs" | "mjs" => eval_js(path, &defaults.node, timeout, EvalAs::Module)?,
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

/// Strict JSON directly; anything else PM2 would accept (it evaluates a `.json` file as a
/// JavaScript expression: comments, trailing commas, unquoted keys) through node, as PM2 does.
/// A file node cannot read either is reported as node saw it.
fn read_json(path: &Path, node: &Path, timeout: Duration) -> Result<Value, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let strict = serde_json::from_str(text).map_err(|err| {
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
    });
    match strict {
        Ok(value) => Ok(value),
        Err(syntax) => match eval_js(path, node, timeout, EvalAs::Expression) {
            Ok(value) => Ok(value),
            // Without node, the JSON parser's own message is the best there is.
            Err(ConfigFileError::Node { .. }) => Err(syntax),
            Err(err) => Err(err),
        },
    }
}

/// The YAML parser's own nesting limit; deeper flow collections are refused before parsing,
/// because its scanner slows down quadratically with their depth (100k `[` take over a minute).
const MAX_YAML_NESTING: usize = 128;

/// True if `[`/`{` nest deeper than `limit` outside quotes and comments (quotes are tracked per
/// line: an approximation that can only err on the side of parsing).
fn flow_nesting_exceeds(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    for line in text.lines() {
        let mut quote = None;
        let mut previous = ' ';
        for ch in line.chars() {
            match quote {
                Some(open) if ch == open => quote = None,
                Some(_) => {}
                None => match ch {
                    '\'' | '"' => quote = Some(ch),
                    '#' if previous.is_whitespace() => break,
                    '[' | '{' => {
                        depth += 1;
                        if depth > limit {
                            return true;
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            previous = ch;
        }
    }
    false
}

/// A YAML file (as PM2 reads `process.yml`), merge keys (`<<: *defaults`) applied, as JSON.
fn read_yaml(path: &Path) -> Result<Value, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    if flow_nesting_exceeds(&text, MAX_YAML_NESTING) {
        return Err(ConfigFileError::Yaml {
            file: path.to_path_buf(),
            at: String::new(),
            message: format!("nested deeper than {MAX_YAML_NESTING} levels of [ ] or {{ }}"),
        });
    }
    let syntax = |err: serde_norway::Error| {
        let at = err
            .location()
            .map_or_else(String::new, |at| format!(":{}:{}", at.line(), at.column()));
        let full = err.to_string();
        let message = match full.find(" at line ") {
            Some(at) => full[..at].to_string(),
            None => full,
        };
        ConfigFileError::Yaml {
            file: path.to_path_buf(),
            at,
            message,
        }
    };
    let mut yaml: serde_norway::Value = serde_norway::from_str(&text).map_err(syntax)?;
    yaml.apply_merge().map_err(syntax)?;
    serde_json::to_value(yaml).map_err(|err| ConfigFileError::Shape {
        file: path.to_path_buf(),
        message: format!("cannot be read as a config: {err}"),
    })
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
        // One bare app object, as PM2 accepts it (`pm2 start app.json` holding `{ "script": … }`).
        Value::Object(top) if !top.contains_key("apps") && top.contains_key("script") => {
            vec![Value::Object(top)]
        }
        Value::Object(mut top) => {
            let apps = top.remove("apps");
            for key in top.keys() {
                if key == "deploy" {
                    // Said once per file, not per app.
                    warnings.push(format!(
                        "{}: 'deploy' is ignored: nodeguard does no remote deployment (`pm2 \
                         deploy`); ship the code with your own tooling (git pull, rsync, CI), \
                         then run `nodeguard start {}` or `nodeguard reload all` on the host",
                        file.display(),
                        file.file_name().map_or_else(
                            || file.display().to_string(),
                            |name| name.to_string_lossy().into_owned()
                        )
                    ));
                    continue;
                }
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
                        message: "no \"apps\" field: expected { \"apps\": [...] }, an array of \
                                  apps, or one app (an object with a \"script\")"
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
    let mut taken: std::collections::HashSet<String> = seen.into_keys().collect();
    let apps = parsed
        .into_iter()
        .map(|app| {
            let name = app.name.clone().unwrap_or_else(|| {
                let name =
                    crate::config::unique_name(&app.config.script, |name| taken.contains(name));
                taken.insert(name.clone());
                name
            });
            AppConfig { name, ..app.config }
        })
        .collect();
    let warnings = warnings.iter().map(|warning| one_line(warning)).collect();
    Ok(LoadedConfig { apps, warnings })
}

/// An app whose fields all checked out; `name` is `None` until a default is chosen.
struct ParsedApp {
    name: Option<String>,
    config: AppConfig,
}

/// A value as it reads in a message: scalars as JSON (strings quoted, long ones cut), containers
/// by kind.
pub(super) fn show(value: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::checker::normalize;
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
                policy: crate::core::machine::RestartPolicy::default(),
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

        let definition = worker.definition(Path::new("/usr/bin/node"), false);
        assert_eq!(definition.name.as_deref(), Some("worker"));
        assert_eq!(definition.node, "/usr/bin/node");
        assert_eq!(definition.script, worker.script.display().to_string());
        assert_eq!(definition.autorestart.as_deref(), Some("never"));
        assert_eq!(definition.min_uptime_ms, Some(5_000));
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

        // `watch: false` changes nothing and draws no warning; PM2's kill_signal default.
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert!(api.triggers.watch.is_empty());
        assert_eq!(api.triggers.kill_signal, StopSignal::Interrupt);
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
    fn a_warning_quoting_a_key_with_a_newline_stays_one_line() {
        let dir = temp_dir(&[("apps.json", r#"[{"script":"app.js","bad\nkey":1}]"#)]);
        let loaded = load(&dir.join("apps.json"), &defaults()).expect("loads");
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(!loaded.warnings[0].contains('\n'), "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("bad\\nkey"),
            "{:?}",
            loaded.warnings
        );
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
            r#"{"deploy":{},"apps":[{"name":"api","script":"app.js","scirpt_x":1,"kill_timout":5,"watch_options":{"usePolling":true},"exec_mode":"fork","env_production":{}}]}"#,
        )]);
        let file = dir.join("c.json");
        let loaded = load(&file, &defaults()).expect("loads");
        let file = file.display();
        assert_eq!(
            loaded.warnings,
            [
                format!("{file}: 'deploy' is ignored: nodeguard does no remote deployment (`pm2 deploy`); ship the code with your own tooling (git pull, rsync, CI), then run `nodeguard start c.json` or `nodeguard reload all` on the host"),
                format!("{file}: app 'api': field 'kill_timout' is not a known field and is ignored (did you mean 'kill_timeout'?)"),
                format!("{file}: app 'api': field 'scirpt_x' is not a known field and is ignored"),
                format!("{file}: app 'api': field 'watch_options' is not supported and is ignored (chokidar options do not apply (nodeguard watches with inotify); use ignore_watch and watch_delay)"),
            ]
        );
    }

    #[test]
    fn profile_fields_are_read_checked_and_reach_the_definition() {
        let dir = temp_dir(&[
            (
                "ok.json",
                r#"[{"name":"a","script":"app.js","heap_snapshot_on_memory_restart":true,"profile_on_stall":"250ms"},{"name":"b","script":"app.js"}]"#,
            ),
            (
                "bad.json",
                r#"[{"name":"a","script":"app.js","profile_on_stall":"soon"}]"#,
            ),
        ]);
        let loaded = load(&dir.join("ok.json"), &defaults()).expect("loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let definition = loaded.apps[0].definition(Path::new("/usr/bin/node"), false);
        assert!(definition.heap_snapshot_on_memory_restart);
        assert_eq!(definition.profile_on_stall_ms, Some(250));
        let other = loaded.apps[1].definition(Path::new("/usr/bin/node"), false);
        assert!(!other.heap_snapshot_on_memory_restart);
        assert_eq!(other.profile_on_stall_ms, None);
        let error = load(&dir.join("bad.json"), &defaults()).expect_err("refused");
        assert!(error.to_string().contains("profile_on_stall"), "{error}");
    }

    #[test]
    fn hang_show_query_is_read_checked_and_reaches_the_definition() {
        let dir = temp_dir(&[
            (
                "ok.json",
                r#"[{"name":"a","script":"app.js","hang_show_query":true},{"name":"b","script":"app.js"}]"#,
            ),
            (
                "bad.json",
                r#"[{"name":"a","script":"app.js","hang_show_query":"yes"}]"#,
            ),
        ]);
        let loaded = load(&dir.join("ok.json"), &defaults()).expect("loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert!(loaded.apps[0].hang_show_query);
        assert!(!loaded.apps[1].hang_show_query);
        let definition = loaded.apps[0].definition(Path::new("/usr/bin/node"), false);
        assert!(definition.hang_show_query);
        assert!(load(&dir.join("bad.json"), &defaults()).is_err());
    }

    #[test]
    fn watch_cron_and_kill_signal_fields_are_read_and_checked() {
        let dir = temp_dir(&[
            ("lib.js", ""),
            (
                "ok.json",
                r#"[{"name":"a","script":"app.js","watch":["lib.js","app.js"],"ignore_watch":["logs","*.tmp"],"watch_delay":250,"cron_restart":"*/5 * * * * *","kill_signal":"SIGUSR2","shutdown_with_message":true},
                    {"name":"b","script":"app.js","watch":true}]"#,
            ),
            (
                "bad.json",
                r#"[{"script":"app.js","watch":3,"cron_restart":"* * *","kill_signal":"SIGFOO"},{"script":"app.js","watch":["nowhere"]}]"#,
            ),
        ]);
        let loaded = load(&dir.join("ok.json"), &defaults()).expect("loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let a = &loaded.apps[0].triggers;
        assert_eq!(a.watch, [dir.join("lib.js"), dir.join("app.js")]);
        assert_eq!(a.ignore_watch, ["logs", "*.tmp"]);
        assert_eq!(a.watch_delay, Some(Duration::from_millis(250)));
        assert_eq!(a.cron_restart.as_deref(), Some("*/5 * * * * *"));
        assert_eq!(a.kill_signal, StopSignal::User2);
        assert!(a.shutdown_with_message);
        assert_eq!(loaded.apps[1].triggers.watch, vec![dir.clone()]);
        let definition = loaded.apps[0].definition(Path::new("/usr/bin/node"), false);
        assert_eq!(definition.kill_signal.as_deref(), Some("SIGUSR2"));
        assert_eq!(definition.watch_delay_ms, Some(250));

        let err = load(&dir.join("bad.json"), &defaults()).expect_err("bad fields");
        let text = err.to_string();
        assert!(
            text.contains("watch") && text.contains("expected true, false or a list of paths"),
            "{text}"
        );
        assert!(text.contains("'* * *' has 3 fields"), "{text}");
        assert!(text.contains("unknown signal 'SIGFOO'"), "{text}");
        assert!(
            text.contains("watch[0]: ") && text.contains("nowhere does not exist"),
            "{text}"
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
    fn scripts_are_commands_files_or_interpreted_as_pm2_resolves_them() {
        let dir = temp_dir(&[
            ("worker.py", ""),
            (
                "c.json",
                r#"[{"name":"web","script":"npm run start"},
                    {"name":"py","script":"worker.py","interpreter":"python3","interpreter_args":"-u"},
                    {"name":"js","script":"app.js","exec_interpreter":"node","interpreter_args":"--trace-warnings"},
                    {"name":"gone","script":"no-such-program-here --flag"},
                    {"name":"odd","script":"app.js","interpreter":7}]"#,
            ),
        ]);
        let found = problems(load(&dir.join("c.json"), &defaults()));
        let fields: Vec<_> = found.iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 2, "{fields:?}");
        assert!(
            fields[0]
                .contains("no-such-program-here --flag not found (as a file or a command on PATH)"),
            "{fields:?}"
        );
        assert!(
            fields[1].contains("interpreter: expected a program name or path, got 7"),
            "{fields:?}"
        );
        std::fs::write(
            dir.join("c.json"),
            r#"[{"name":"web","script":"npm run start"},
                {"name":"py","script":"worker.py","interpreter":"python3","interpreter_args":"-u"},
                {"name":"js","script":"app.js","exec_interpreter":"node","interpreter_args":"--trace-warnings"}]"#,
        )
        .expect("config");
        let loaded = load(&dir.join("c.json"), &defaults()).expect("loads");
        assert_eq!(
            loaded.warnings,
            Vec::<String>::new(),
            "interpreter is applied, not warned"
        );
        let [web, py, js] = &loaded.apps[..] else {
            panic!("three apps")
        };
        assert_eq!(web.interpreter.as_deref(), Some("none"));
        assert!(web.script.ends_with("npm"), "{:?}", web.script);
        assert_eq!(web.args, ["run", "start"]);
        assert!(py
            .interpreter
            .as_deref()
            .is_some_and(|i| i.contains("python3")));
        assert_eq!(py.interpreter_args, ["-u"]);
        assert_eq!(py.script, dir.join("worker.py"));
        assert_eq!(js.interpreter, None);
        assert_eq!(js.node_args, ["--trace-warnings"]);
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
                "{\n  \"apps\": [\n    {\"script\": \"app.js\" \"name\"}\n  ]\n}",
            ),
            ("empty.json", r#"{"apps": []}"#),
            ("noapps.json", r#"{"app": []}"#),
            ("config.yaml", "apps: []"),
            ("config.toml", "[apps]"),
            ("broken.yml", "apps:\n  - script: app.js\n   name: [x\n"),
        ]);
        // Not JSON, and not a JavaScript expression either: node's reason, with the line.
        let err = load(&dir.join("syntax.json"), &defaults()).expect_err("syntax");
        assert!(matches!(err, ConfigFileError::Eval { .. }), "{err:?}");
        assert!(err.to_string().contains("SyntaxError"), "{err}");
        assert!(err.to_string().ends_with("(line 3)"), "{err}");
        let err = load(&dir.join("broken.yml"), &defaults()).expect_err("yaml syntax");
        assert!(matches!(err, ConfigFileError::Yaml { .. }), "{err:?}");
        assert!(err.to_string().contains("broken.yml:3:"), "{err}");
        // Deep nesting and alias bombs are refused at once, in one line.
        let deep = format!("apps: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let refs = vec![format!("*a{}", level - 1); 10].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        bomb.push_str("apps: *a11\n");
        let bombs = temp_dir(&[("deep.yml", &deep), ("bomb.yaml", &bomb)]);
        let started = Instant::now();
        for (name, says) in [
            ("deep.yml", "nested deeper than 128 levels"),
            ("bomb.yaml", "repetition limit exceeded"),
        ] {
            let err = load(&bombs.join(name), &defaults()).expect_err(name);
            assert!(matches!(err, ConfigFileError::Yaml { .. }), "{err:?}");
            assert!(err.to_string().contains(says), "{err}");
            assert_eq!(err.to_string().lines().count(), 1, "{err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let err = load(&dir.join("empty.json"), &defaults()).expect_err("empty");
        assert!(matches!(err, ConfigFileError::NoApps { .. }), "{err:?}");
        let err = load(&dir.join("noapps.json"), &defaults()).expect_err("no apps");
        assert!(matches!(err, ConfigFileError::Shape { .. }), "{err:?}");
        let err = load(&dir.join("missing.json"), &defaults()).expect_err("missing");
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err:?}");
        let err = load(&dir.join("config.yaml"), &defaults()).expect_err("yaml");
        assert!(matches!(err, ConfigFileError::NoApps { .. }), "{err:?}");
        let err = load(&dir.join("config.toml"), &defaults()).expect_err("toml");
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
    fn pm2_shapes_load_yaml_json_with_comments_and_one_bare_app() {
        let dir = temp_dir(&[
            (
                "process.yml",
                "defaults: &defaults\n  script: app.js\n  time: true\napps:\n  - <<: *defaults\n    name: api\n    output: logs/api.out\n    error: logs/api.err\n    instances: 2\n    env:\n      PORT: 3000\n      DEBUG: false\n",
            ),
            (
                "commented.json",
                "// PM2 evaluates .json as JavaScript\n{\n  apps: [\n    { name: 'web', script: 'app.js', /* inline */ args: ['--port', 8080], interpreterArgs: '--no-warnings', },\n  ],\n}\n",
            ),
            ("bare.json", r#"{"name":"solo","script":"app.js","port":4000,"watch":false}"#),
        ]);
        let loaded = load(&dir.join("process.yml"), &defaults()).expect("yaml loads");
        let file = dir.join("process.yml").display().to_string();
        assert_eq!(
            loaded.warnings,
            [format!(
                "{file}: top-level field 'defaults' is not supported and is ignored"
            )]
        );
        let api = &loaded.apps[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.script, dir.join("app.js"));
        assert!(api.log_timestamps);
        assert_eq!(api.out_file, Some(dir.join("logs/api.out")));
        assert_eq!(api.error_file, Some(dir.join("logs/api.err")));
        assert_eq!(api.instances, Instances::Count(2));
        assert_eq!(
            api.env,
            [
                ("DEBUG".into(), "false".into()),
                ("PORT".into(), "3000".into())
            ]
        );

        let loaded = load(&dir.join("commented.json"), &defaults()).expect("json5-ish loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.apps[0].name, "web");
        assert_eq!(loaded.apps[0].args, ["--port", "8080"]);
        assert_eq!(loaded.apps[0].node_args, ["--no-warnings"]);

        let loaded = load(&dir.join("bare.json"), &defaults()).expect("one app loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.apps[0].name, "solo");
        assert_eq!(loaded.apps[0].env, [("PORT".into(), "4000".into())]);
    }

    #[test]
    fn disable_logs_is_read_and_dev_null_or_null_files_discard_their_stream() {
        let dir = temp_dir(&[(
            "c.json",
            r#"[{"name":"a","script":"app.js","disable_logs":true},
                {"name":"b","script":"app.js","disable_logs":true,"out_file":"o.log"},
                {"name":"c","script":"app.js","output":"/dev/null","error_file":"NULL"},
                {"name":"d","script":"app.js","disable_logs":false}]"#,
        )]);
        let file = dir.join("c.json");
        let loaded = load(&file, &defaults()).expect("loads");
        assert_eq!(
            loaded.warnings,
            [format!(
                "{}: app 'b': field 'out_file' is not written: disable_logs sends the output to \
                 /dev/null",
                file.display()
            )]
        );
        let [a, b, c, d] = &loaded.apps[..] else {
            panic!("four apps");
        };
        assert!(a.disable_logs && b.disable_logs && !c.disable_logs && !d.disable_logs);
        let null = Some(PathBuf::from(crate::config::NULL_DEVICE));
        assert_eq!((&c.out_file, &c.error_file), (&null, &null));
        let definition = c.definition(Path::new("/usr/bin/node"), false);
        assert!(!definition.disable_logs);
        assert_eq!(definition.out_file.as_deref(), Some("/dev/null"));
        assert!(a.definition(Path::new("/usr/bin/node"), false).disable_logs);
    }

    #[test]
    fn pm2_log_aliases_apply_and_defaults_draw_no_warning() {
        let dir = temp_dir(&[(
            "c.json",
            r#"[{"name":"a","script":"app.js","output":"o.log","out_file":"p.log","err":"e.log",
                 "log_date_format":"YYYY-MM-DD HH:mm Z","merge_logs":true,"exec_mode":"fork_mode",
                 "watch":false,"autorestart":true,"instances":1,"treekill":true,"vizion":false,
                 "pmx":false,"log_file":false,"windowsHide":true,"kill_retry_time":100}]"#,
        )]);
        let file = dir.join("c.json");
        let found = problems(load(&file, &defaults()));
        let shown: Vec<_> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [format!(
                "{}: app 'a': output: 'out_file' already sets the out_file; keep one of them",
                file.display()
            )]
        );
        std::fs::write(
            &file,
            r#"[{"name":"a","script":"app.js","output":"o.log","err":"e.log",
                 "log_date_format":"YYYY-MM-DD HH:mm Z","merge_logs":true,"exec_mode":"fork_mode",
                 "watch":false,"autorestart":true,"instances":1,"treekill":true,"vizion":false,
                 "pmx":false,"log_file":false,"windowsHide":true,"kill_retry_time":100,
                 "pid_file":"a.pid","log_type":"json"}]"#,
        )
        .expect("rewrite");
        let loaded = load(&file, &defaults()).expect("loads");
        let app = &loaded.apps[0];
        assert_eq!(app.out_file, Some(dir.join("o.log")));
        assert_eq!(app.error_file, Some(dir.join("e.log")));
        assert_eq!(app.log_date_format.as_deref(), Some("YYYY-MM-DD HH:mm Z"));
        assert_eq!(app.pid_file, Some(dir.join("a.pid")));
        assert_eq!(app.log_file, None, "log_file: false writes none");
        assert!(app.log_json, "log_type: 'json'");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let file = file.display();
        // log_file: true is the default place; a path is taken relative to the file; a format
        // with a token nodeguard does not render, and a log_file that is the out file, are refused.
        std::fs::write(
            file.to_string(),
            r#"[{"name":"a","script":"app.js","log_file":true},{"name":"b","script":"app.js","log":"all.log"},
                {"name":"c","script":"app.js","log_date_format":"Do MMM YYYY"},
                {"name":"d","script":"app.js","out_file":"x.log","log_file":"x.log"}]"#,
        )
        .expect("rewrite");
        let shown: Vec<_> = problems(load(Path::new(&file.to_string()), &defaults()))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].contains("app 'c': log_date_format")
                && shown[0].contains("unknown token 'Do'"),
            "{shown:?}"
        );
        assert!(
            shown[1].contains("app 'd': log_file: is the out or error file too"),
            "{shown:?}"
        );
        std::fs::write(
            file.to_string(),
            r#"[{"name":"a","script":"app.js","log_file":true},{"name":"b","script":"app.js","log":"all.log"}]"#,
        )
        .expect("rewrite");
        let loaded = load(Path::new(&file.to_string()), &defaults()).expect("loads");
        assert_eq!(loaded.apps[0].log_file, Some(PathBuf::new()));
        assert_eq!(loaded.apps[1].log_file, Some(dir.join("all.log")));
    }

    #[test]
    fn exec_mode_cluster_shares_the_port_with_any_instance_count_and_warns_nothing() {
        let dir = temp_dir(&[(
            "c.json",
            r#"[{"name":"a","script":"app.js","exec_mode":"cluster","instances":4},
                {"name":"b","script":"app.js","exec_mode":"cluster_mode"},
                {"name":"c","script":"app.js","exec_mode":"cluster","instances":4,"listen":3000},
                {"name":"d","script":"app.js","instances":4,"merge_logs":false},
                {"name":"e","script":"app.js","exec_mode":"fork"}]"#,
        )]);
        let file = dir.join("c.json");
        let loaded = load(&file, &defaults()).expect("loads");
        // Only 'd' loses something (merge_logs: false); cluster mode is what it is under PM2.
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("app 'd'") && loaded.warnings[0].contains("merge_logs"),
            "{:?}",
            loaded.warnings
        );
        let cluster: Vec<bool> = loaded.apps.iter().map(|app| app.cluster).collect();
        assert_eq!(cluster, [true, true, true, false, false]);
    }

    #[test]
    fn config_files_are_told_from_scripts() {
        for yes in [
            "process.yml",
            "ecosystem.YAML",
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
