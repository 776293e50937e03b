//! Checks one app of a config file field by field, collecting every problem and warning at once.

use super::catalogue::{NOT_SUPPORTED, SUPPORTED};
use super::*;

/// Checks one app's fields, recording problems and warnings as it goes.
pub(super) struct Checker<'a> {
    pub(super) file: &'a Path,
    pub(super) app: AppRef,
    pub(super) problems: &'a mut Vec<Problem>,
    pub(super) warnings: &'a mut Vec<String>,
    /// Explicit names so far, with the index of the app that has each.
    pub(super) seen: &'a mut HashMap<String, usize>,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            app: self.app.clone(),
            field: (!field.is_empty()).then(|| field.to_string()),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, field: &str, message: &str) {
        self.warnings.push(format!(
            "{}: {}: field '{field}' {message}",
            self.file.display(),
            self.app
        ));
    }

    pub(super) fn app(
        &mut self,
        entry: Value,
        base: &Path,
        defaults: &AppDefaults,
    ) -> Option<ParsedApp> {
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
        let env = self.env_fields(&mut fields, &cwd);
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
                env: env.env,
                env_blocks: env.blocks,
                env_file: env.file,
                filter_env: env.filter,
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
    pub(super) fn leftovers(&mut self, fields: Map<String, Value>) {
        for key in fields.keys() {
            if key == "exec_mode"
                && matches!(fields.get(key), Some(Value::String(mode)) if mode == "fork" || mode == "fork_mode")
            {
                continue;
            }
            if let Some((_, why)) = NOT_SUPPORTED.iter().find(|(known, _)| known == key) {
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

    pub(super) fn name(&mut self, value: Value) -> Option<String> {
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
    pub(super) fn path(&mut self, field: &str, value: Value, base: &Path) -> Option<PathBuf> {
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
    pub(super) fn words_field(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &str,
    ) -> Vec<String> {
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

    pub(super) fn instances(&mut self, value: Value) -> Option<Instances> {
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
    pub(super) fn count(&mut self, field: &str, value: Value) -> Option<u32> {
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
    pub(super) fn listen_field(&mut self, fields: &mut Map<String, Value>) -> Vec<String> {
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
    pub(super) fn exit_codes_field(
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

    pub(super) fn bool_field(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &str,
    ) -> Option<bool> {
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
    pub(super) fn duration_field(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &str,
    ) -> Option<Duration> {
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
        match parsed.and_then(crate::core::duration::bounded) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.problem(field, message);
                None
            }
        }
    }

    /// Bytes as a number, or a size such as `"200M"`, `"1G"`, `"512K"` (1024-based, as in PM2).
    pub(super) fn size(&mut self, field: &str, value: Value) -> Option<u64> {
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

/// Removes `.` and resolves `..` without touching the file system (symlinks are kept as named).
pub(super) fn normalize(path: &Path) -> PathBuf {
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
