//! Checks one app of a config file field by field, collecting every problem and warning at once.

use super::catalogue::{changes_nothing, NOT_SUPPORTED, SUPPORTED};
use super::*;
use crate::config::command::{self, Entry};
use crate::config::ConfigError;
use crate::core::date_format::DateFormat;
use crate::core::units::edit_distance;

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
        // PM2's `interpreter` (or its older name `exec_interpreter`) chooses the runtime.
        let mut interpreter = None;
        for field in ["interpreter", "exec_interpreter"] {
            match fields.remove(field) {
                Some(Value::String(text)) if interpreter.is_none() => interpreter = Some(text),
                Some(Value::String(_)) | None => {}
                Some(other) => self.problem(
                    field,
                    format!("expected a program name or path, got {}", show(&other)),
                ),
            }
        }
        let entry = match fields.remove("script") {
            None => {
                self.problem("script", "missing: every app needs the script to run");
                None
            }
            Some(Value::String(text))
                if !text.trim().is_empty() && !text.contains('\0') && cwd_ok =>
            {
                match command::resolve_entry(&text, interpreter.as_deref(), &cwd, &defaults.node) {
                    Ok(entry) => Some(Entry {
                        script: normalize(&entry.script),
                        ..entry
                    }),
                    Err(error) => {
                        let full = normalize(&cwd.join(&text));
                        let message = match error {
                            ConfigError::ScriptNotFound(_) => {
                                format!(
                                    "{} not found (as a file or a command on PATH)",
                                    full.display()
                                )
                            }
                            ConfigError::ScriptIsDirectory(_) => {
                                format!("{} is a directory, not a script", full.display())
                            }
                            other => other.to_string(),
                        };
                        self.problem("script", message);
                        None
                    }
                }
            }
            Some(value) => self.path("script", value, &cwd).map(|script| Entry {
                script,
                args: Vec::new(),
                interpreter: None,
                node_args: Vec::new(),
            }),
        };
        let mut args = self.words_field(&mut fields, "args");
        let mut node_args = self.words_field(&mut fields, "node_args");
        let mut extra = self.words_field(&mut fields, "interpreter_args");
        // PM2's camel-case alias of interpreter_args.
        extra.extend(self.words_field(&mut fields, "interpreterArgs"));
        let interpreter_args = match entry.as_ref().and_then(|e| e.interpreter.as_ref()) {
            // A non-node interpreter takes them; for node they are node arguments, as in PM2.
            Some(_) => extra,
            None => {
                node_args.extend(extra);
                Vec::new()
            }
        };
        let (script, interpreter) = match entry {
            Some(entry) => {
                args.splice(0..0, entry.args);
                node_args.splice(0..0, entry.node_args);
                (Some(entry.script), entry.interpreter)
            }
            None => (None, None),
        };
        let mut env = self.env_fields(&mut fields, &cwd);
        // PM2's `port`: a shortcut that sets PORT in the app's environment (over env's).
        if let Some(port) = fields.remove("port") {
            match port.as_u64().and_then(|port| u16::try_from(port).ok()) {
                Some(port) => {
                    env.env.retain(|(key, _)| key != "PORT");
                    env.env.push(("PORT".to_string(), port.to_string()));
                }
                None => self.problem(
                    "port",
                    format!("expected a port number, got {}", show(&port)),
                ),
            }
        }
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
        let hang_show_query = self
            .bool_field(&mut fields, "hang_show_query")
            .unwrap_or(false);
        let heap_snapshot_on_memory_restart = self
            .bool_field(&mut fields, "heap_snapshot_on_memory_restart")
            .unwrap_or(false);
        let profile_on_stall = self.duration_field(&mut fields, "profile_on_stall");
        let listen_timeout = self.duration_field(&mut fields, "listen_timeout");
        let listen = self.listen_field(&mut fields);
        let cluster = self.exec_mode(&mut fields);
        let logs = self.log_fields(&mut fields, &cwd, instances);
        let triggers = self.triggers(&mut fields, &cwd);
        let instance_var = self.var_name_field(&mut fields, "instance_var");
        let increment_var = self.var_name_field(&mut fields, "increment_var");
        let namespace = self.namespace_field(&mut fields);
        let uid = self.account_field(&mut fields, &["uid", "user", "username"]);
        let gid = self.account_field(&mut fields, &["gid"]);

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
                interpreter,
                interpreter_args,
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
                hang_show_query,
                heap_snapshot_on_memory_restart,
                profile_on_stall,
                cluster,
                out_file: logs.out_file,
                error_file: logs.error_file,
                disable_logs: logs.disabled,
                log_timestamps: logs.timestamps,
                log_json: logs.json,
                log_date_format: logs.date_format,
                log_file: logs.log_file,
                pid_file: logs.pid_file,
                triggers,
                instance_vars: crate::config::InstanceVars {
                    instance_var,
                    increment_var,
                },
                namespace,
                uid,
                gid,
            },
        })
    }

    /// PM2's `exec_mode`: whether `cluster` was asked for. `fork` is what nodeguard does for a
    /// process that binds its own port. `cluster` means what it means under PM2: the supervisor
    /// binds the address the app listens on and shares it (as Node's cluster module does for
    /// PM2), with any number of instances, so `reload` and `scale` keep serving.
    fn exec_mode(&mut self, fields: &mut Map<String, Value>) -> bool {
        let Some(value) = fields.remove("exec_mode") else {
            return false;
        };
        match value.as_str().unwrap_or("") {
            "fork" | "fork_mode" => false,
            "cluster" | "cluster_mode" => true,
            _ => {
                self.problem(
                    "exec_mode",
                    format!("expected \"fork\" or \"cluster\", got {}", show(&value)),
                );
                false
            }
        }
    }

    /// PM2's log fields: `out_file` and `error_file` with their aliases (`output`, `error`, …),
    /// `log_file` (`log`), `pid_file` (`pid`), `time`, `log_date_format`, `merge_logs` and
    /// `disable_logs`.
    fn log_fields(
        &mut self,
        fields: &mut Map<String, Value>,
        cwd: &Path,
        instances: Instances,
    ) -> LogFields {
        let out_file = self.aliased_path(fields, "out_file", &["out", "output", "out_log"], cwd);
        let error_file = self.aliased_path(
            fields,
            "error_file",
            &["error", "err", "err_file", "err_log"],
            cwd,
        );
        let timestamps = self.bool_field(fields, "time").unwrap_or(false);
        let mut date_format = None;
        match fields.remove("log_date_format") {
            // PM2 prefixes no date for `false` or `null` (a common way to switch it off).
            None | Some(Value::Bool(false)) | Some(Value::Null) => {}
            Some(Value::String(format)) if format.trim().is_empty() => {}
            // PM2 prefixes each line with the time when a format is given.
            Some(Value::String(format)) => match DateFormat::parse(&format) {
                Ok(_) => date_format = Some(format),
                Err(message) => self.problem("log_date_format", message),
            },
            Some(other) => self.problem(
                "log_date_format",
                format!("expected a format string, got {}", show(&other)),
            ),
        }
        let json = match fields.remove("log_type") {
            None | Some(Value::Null) => false,
            Some(Value::String(kind)) if kind == "json" => true,
            // PM2 writes plain lines for any other value.
            Some(Value::String(kind)) if kind.is_empty() || kind == "raw" => false,
            Some(other) => {
                self.problem(
                    "log_type",
                    format!(
                        "expected \"json\" (or nothing, for plain lines), got {}",
                        show(&other)
                    ),
                );
                false
            }
        };
        for field in ["merge_logs", "combine_logs"] {
            match fields.remove(field) {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) if instances == Instances::Count(1) => {}
                Some(Value::Bool(false)) => self.warn(
                    field,
                    "is false, but the instances of an app always share its two log files \
                     (PM2 writes one pair per instance); `nodeguard logs <app>` shows them",
                ),
                Some(other) => self.problem(
                    field,
                    format!("expected true or false, got {}", show(&other)),
                ),
            }
        }
        let mut log_file = None;
        for field in ["log_file", "log"] {
            match fields.remove(field) {
                None | Some(Value::Bool(false)) | Some(Value::Null) => {}
                Some(_) if log_file.is_some() => self.problem(
                    field,
                    "'log_file' already sets the combined log; keep one of them",
                ),
                // The default place, `<home>/logs/<name>-combined.log`.
                Some(Value::Bool(true)) => log_file = Some(PathBuf::new()),
                Some(value) => log_file = self.path(field, value, cwd),
            }
        }
        let same = log_file.as_ref().filter(|log| {
            !log.as_os_str().is_empty()
                && (Some(*log) == out_file.as_ref() || Some(*log) == error_file.as_ref())
        });
        if same.is_some() {
            self.problem(
                "log_file",
                "is the out or error file too; the combined log needs a file of its own",
            );
        }
        let disabled = self.bool_field(fields, "disable_logs").unwrap_or(false);
        if disabled {
            for (field, set) in [
                ("out_file", out_file.is_some()),
                ("error_file", error_file.is_some()),
                ("log_file", log_file.is_some()),
            ] {
                if set {
                    self.warn(
                        field,
                        "is not written: disable_logs sends the output to /dev/null",
                    );
                }
            }
        }
        let pid_file = self.aliased_path(fields, "pid_file", &["pid"], cwd);
        if let Some(path) = &pid_file {
            if let Err(message) = crate::config::check_pid_file(path) {
                self.problem("pid_file", message);
            }
        }
        LogFields {
            out_file,
            error_file,
            disabled,
            timestamps,
            json,
            date_format,
            log_file,
            pid_file,
        }
    }

    /// A path field that PM2 also reads under other names; two of them at once is a problem.
    fn aliased_path(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &str,
        aliases: &[&str],
        cwd: &Path,
    ) -> Option<PathBuf> {
        let mut found: Option<(String, Value)> =
            fields.remove(field).map(|v| (field.to_string(), v));
        for alias in aliases {
            let Some(value) = fields.remove(*alias) else {
                continue;
            };
            match &found {
                Some((first, _)) => {
                    let message = format!("'{first}' already sets the {field}; keep one of them");
                    self.problem(alias, message);
                }
                None => found = Some((alias.to_string(), value)),
            }
        }
        let (name, value) = found?;
        // PM2 takes "NULL" for /dev/null in its out and error files.
        if field != "pid_file" && value.as_str() == Some("NULL") {
            return Some(PathBuf::from(crate::config::NULL_DEVICE));
        }
        self.path(&name, value, cwd)
    }

    /// `watch`, `ignore_watch`, `watch_delay`, `cron_restart`, `kill_signal` (SIGINT when absent,
    /// as PM2) and `shutdown_with_message`.
    pub(super) fn triggers(&mut self, fields: &mut Map<String, Value>, cwd: &Path) -> Triggers {
        let watch = match fields.remove("watch") {
            None | Some(Value::Bool(false)) | Some(Value::Null) => Vec::new(),
            Some(Value::Bool(true)) => vec![cwd.to_path_buf()],
            Some(Value::String(path)) if !cwd.join(&path).exists() => {
                let message = format!("{} does not exist", cwd.join(&path).display());
                self.problem("watch", message);
                Vec::new()
            }
            Some(Value::String(path)) => vec![cwd.join(path)],
            Some(Value::Array(items)) => {
                let mut paths = Vec::new();
                for (index, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(path) if !cwd.join(&path).exists() => self.problem(
                            &format!("watch[{index}]"),
                            format!("{} does not exist", cwd.join(&path).display()),
                        ),
                        Value::String(path) => paths.push(cwd.join(path)),
                        other => self.problem(
                            &format!("watch[{index}]"),
                            format!("expected a path, got {}", show(&other)),
                        ),
                    }
                }
                paths
            }
            Some(other) => {
                self.problem(
                    "watch",
                    format!(
                        "expected true, false or a list of paths, got {}",
                        show(&other)
                    ),
                );
                Vec::new()
            }
        };
        let ignore_watch = self.words_field(fields, "ignore_watch");
        let watch_delay = self.duration_field(fields, "watch_delay");
        let cron_restart = match fields.remove("cron_restart") {
            None | Some(Value::Null) => None,
            Some(Value::String(pattern)) => match crate::config::check_cron(&pattern) {
                Ok(()) => Some(pattern),
                Err(error) => {
                    let message = error.to_string();
                    let message = message.strip_prefix("cron_restart: ").unwrap_or(&message);
                    self.problem("cron_restart", message.to_string());
                    None
                }
            },
            Some(other) => {
                self.problem(
                    "cron_restart",
                    format!("expected a cron pattern, got {}", show(&other)),
                );
                None
            }
        };
        let kill_signal = match fields.remove("kill_signal") {
            None | Some(Value::Null) => StopSignal::Interrupt,
            Some(Value::String(name)) => StopSignal::parse(&name).unwrap_or_else(|message| {
                self.problem("kill_signal", message);
                StopSignal::Interrupt
            }),
            Some(other) => {
                self.problem(
                    "kill_signal",
                    format!("expected a signal name, got {}", show(&other)),
                );
                StopSignal::Interrupt
            }
        };
        let shutdown_with_message = self
            .bool_field(fields, "shutdown_with_message")
            .unwrap_or(false);
        let on_event = self.on_event_field(fields);
        Triggers {
            watch,
            ignore_watch,
            watch_delay,
            cron_restart,
            kill_signal,
            shutdown_with_message,
            on_event,
        }
    }

    /// nodeguard's `on_event`: one hook (`"crash,hang=./notify.sh"`), a list of them, or an
    /// object of kinds to targets (`{ "crash,hang": "./notify.sh" }`); each checked.
    fn on_event_field(&mut self, fields: &mut Map<String, Value>) -> Vec<String> {
        let texts = match fields.remove("on_event") {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => {
                let mut texts = Vec::new();
                for (index, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(text) => texts.push(text),
                        other => self.problem(
                            &format!("on_event[{index}]"),
                            format!("expected \"KINDS=TARGET\", got {}", show(&other)),
                        ),
                    }
                }
                texts
            }
            Some(Value::Object(map)) => {
                let mut texts = Vec::new();
                for (kinds, target) in map {
                    match target {
                        Value::String(target) => texts.push(format!("{kinds}={target}")),
                        other => self.problem(
                            &format!("on_event.{kinds}"),
                            format!("expected a command or URL, got {}", show(&other)),
                        ),
                    }
                }
                texts
            }
            Some(other) => {
                self.problem(
                    "on_event",
                    format!(
                        "expected \"KINDS=TARGET\", a list of them or an object, got {}",
                        show(&other)
                    ),
                );
                return Vec::new();
            }
        };
        match crate::config::hooks::parse_all(&texts) {
            Ok(_) => texts,
            Err(message) => {
                let message = message.strip_prefix("on_event ").unwrap_or(&message);
                self.problem("on_event", message.to_string());
                Vec::new()
            }
        }
    }

    /// PM2's `instance_var` / `increment_var`: an environment variable name.
    pub(super) fn var_name_field(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &str,
    ) -> Option<String> {
        match fields.remove(field)? {
            Value::String(name) => match crate::config::check_var_name(field, &name) {
                Ok(()) => Some(name),
                Err(error) => {
                    self.problem(field, error.to_string());
                    None
                }
            },
            other => {
                let message = format!("expected a variable name, got {}", show(&other));
                self.problem(field, message);
                None
            }
        }
    }

    /// PM2's `uid` (or `user`, `username`) and `gid`: a name or a number, checked against the
    /// system's accounts when the app starts.
    pub(super) fn account_field(
        &mut self,
        fields: &mut Map<String, Value>,
        names: &[&str],
    ) -> Option<String> {
        let mut found: Option<String> = None;
        for &field in names {
            let Some(value) = fields.remove(field) else {
                continue;
            };
            let text = match value {
                Value::String(text)
                    if !text.is_empty() && text.len() <= 256 && !text.contains('\0') =>
                {
                    text
                }
                Value::Number(number)
                    if number.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) =>
                {
                    number.to_string()
                }
                other => {
                    let message =
                        format!("expected a user or group name or id, got {}", show(&other));
                    self.problem(field, message);
                    continue;
                }
            };
            if found.is_some() {
                self.problem(field, format!("give only one of {}", names.join(", ")));
                continue;
            }
            found = Some(text);
        }
        found
    }

    /// PM2's `namespace`: a group name, under the rules of app names.
    pub(super) fn namespace_field(&mut self, fields: &mut Map<String, Value>) -> Option<String> {
        match fields.remove("namespace")? {
            Value::String(name) => match crate::config::name_problem(&name) {
                None => Some(name),
                Some(problem) => {
                    let shown = crate::config::shown_name(&name);
                    self.problem("namespace", format!("{problem}, got \"{shown}\""));
                    None
                }
            },
            other => {
                let message = format!("expected a string, got {}", show(&other));
                self.problem("namespace", message);
                None
            }
        }
    }

    /// Warns about every field that was not taken.
    pub(super) fn leftovers(&mut self, fields: Map<String, Value>) {
        for (key, value) in &fields {
            if changes_nothing(key, value) {
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
            Some(bytes) if bytes < crate::config::MIN_MEMORY => {
                let text = show(&value);
                self.problem(field, crate::config::memory_too_small(&text, bytes));
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

/// What [`Checker::log_fields`] read.
struct LogFields {
    out_file: Option<PathBuf>,
    error_file: Option<PathBuf>,
    /// PM2's `disable_logs`.
    disabled: bool,
    timestamps: bool,
    /// PM2's `log_type: 'json'`.
    json: bool,
    date_format: Option<String>,
    log_file: Option<PathBuf>,
    pid_file: Option<PathBuf>,
}
