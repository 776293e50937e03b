//! The per-app flags shared by foreground mode and `start`: heartbeat timing, restart policy,
//! memory limit, node and its arguments.

use crate::config::file::{self};
use crate::config::{self, ConfigError, DEFAULT_HEARTBEAT_MISSES};
use crate::core::duration::parse_duration;
use crate::core::machine::{Autorestart, ExitCodes, RestartPolicy, Timing, DEFAULT_MAX_RESTARTS};
use clap::Args;
use std::time::Duration;

/// How to run an app: the options shared by foreground mode and `start`.
#[derive(Debug, Clone, Args)]
pub struct AppOptions {
    /// Node.js binary to run the apps with.
    #[arg(long, value_name = "PATH", default_value = "node")]
    pub node: String,

    /// Extra argument for node itself (before the script); repeat for more (PM2's --node-args). One
    /// value holding spaces is split as a shell would: --node-arg="--import tsx" is two arguments.
    #[arg(
        long = "node-arg",
        visible_alias = "node-args",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub node_args: Vec<String>,

    /// Time between heartbeats.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Time a heartbeat may stay unanswered before it counts as missed (at most the interval)
    /// [default: 1s, or the interval if that is shorter]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,

    /// Consecutive missed heartbeats after which the app counts as hung and is restarted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HEARTBEAT_MISSES)]
    pub heartbeat_misses: u32,

    /// Time a newly started app has before its first heartbeat answer is due.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub start_grace: Duration,

    /// Time between SIGTERM and SIGKILL when stopping an app.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub kill_timeout: Duration,

    /// Prefix each log-file line with its time (RFC 3339, UTC), like PM2's `time: true` (--time).
    #[arg(long, visible_alias = "time")]
    pub log_timestamps: bool,

    /// Write each log-file line as a JSON object ({"message","timestamp","type","process_id",
    /// "app_name"}), as PM2's `--log-type json` / `log_type: 'json'` does.
    #[arg(long = "log-type", value_name = "json|raw", value_parser = parse_log_type)]
    pub log_type: Option<bool>,

    /// Name the HTTP requests in flight at a hang with their query strings (left out by default:
    /// they may hold secrets). The path and method are always named.
    #[arg(long)]
    pub hang_show_query: bool,

    /// Before --max-memory restarts the app, take a heap snapshot (through the monitor inside
    /// it) into <home>/profiles/: at most 60 s, then the restart goes ahead anyway. The memory
    /// event names the file. See "Profiles" in the README for the directory's bounds.
    #[arg(long)]
    pub heap_snapshot_on_memory_restart: bool,

    /// When a heartbeat reports an event-loop delay p99 of at least DUR (e.g. 200ms), take a
    /// 5-second CPU profile into <home>/profiles/ (at most one per app every 10 minutes); the
    /// `profile` event names the file and the hottest function.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub profile_on_stall: Option<Duration>,
    /// Prefix each log-file line with its local time (TZ honoured) in this format, as PM2's
    /// log_date_format: moment/dayjs tokens YYYY YY MM M DD D HH H hh h mm m ss s SSS A a Z ZZ and
    /// [escaped text], e.g. "YYYY-MM-DD HH:mm:ss Z". Wins over --time.
    #[arg(long, value_name = "FORMAT", value_parser = parse_date_format)]
    pub log_date_format: Option<String>,

    /// Which exits restart the app: always, on-failure (any but a clean exit code), never.
    #[arg(long, value_name = "MODE", default_value = "always", value_parser = Autorestart::parse)]
    pub autorestart: Autorestart,

    /// Exit codes that count as a clean stop under --autorestart on-failure (e.g. 0,3).
    #[arg(long, value_name = "CODES", default_value = "0", value_parser = ExitCodes::parse)]
    pub clean_exit_codes: ExitCodes,

    /// A run at least this long counts as stable: the backoff resets.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub min_uptime: Duration,

    /// Delay before every restart (quick crashes wait at least the backoff).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub restart_delay: Duration,

    /// First delay after a quick crash, doubling with each further one up to 10 s.
    #[arg(long, value_name = "DUR", default_value = "100ms", value_parser = parse_duration)]
    pub backoff_base: Duration,

    /// More restarts than this within --restart-window mark the app errored (0: no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RESTARTS)]
    pub max_restarts: u32,

    /// The window of the restart budget.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    pub restart_window: Duration,

    /// Restart the app gracefully when its RSS exceeds this (e.g. 200M, 1G; a bare number is
    /// bytes, as in PM2, and at least 1M), checked at every heartbeat (PM2's
    /// --max-memory-restart).
    #[arg(
        long,
        visible_alias = "max-memory-restart",
        value_name = "SIZE",
        value_parser = parse_memory
    )]
    pub max_memory: Option<u64>,
}

/// A `--log-date-format`, checked (one line naming an unknown token).
/// `--log-type`: `json` (true) or `raw` (false, plain lines, the default), as PM2 takes it.
fn parse_log_type(text: &str) -> Result<bool, String> {
    match text {
        "json" => Ok(true),
        "raw" => Ok(false),
        _ => Err(format!(
            "expected json or raw, got '{}'",
            text.escape_debug()
        )),
    }
}

impl AppOptions {
    /// Whether log lines are written as JSON objects (`--log-type json`).
    pub fn log_json(&self) -> bool {
        self.log_type.unwrap_or(false)
    }
}

fn parse_date_format(text: &str) -> Result<String, String> {
    crate::core::date_format::DateFormat::parse(text).map(|_| text.to_string())
}

/// A memory size on the command line: `200M`, `1.5G`, `512K`, or bytes; at most
/// [`config::MAX_MEMORY`].
pub(super) fn parse_memory(text: &str) -> Result<u64, String> {
    match file::parse_size(text) {
        Some(0) | None => Err(format!(
            "'{text}' is not a memory size (write e.g. 200M or 1G)"
        )),
        Some(bytes) if bytes > config::MAX_MEMORY => {
            Err(format!("'{text}' is too large (at most 1024T)"))
        }
        Some(bytes) if bytes < config::MIN_MEMORY => Err(config::memory_too_small(text, bytes)),
        Some(bytes) => Ok(bytes),
    }
}

impl AppOptions {
    /// `--node-arg` values, each split shell-like (`--import tsx` is two words).
    pub fn split_node_args(&self) -> Result<Vec<String>, ConfigError> {
        let mut words = Vec::new();
        for arg in &self.node_args {
            let split = shell_words::split(arg)
                .map_err(|error| ConfigError::Policy(format!("--node-arg {arg:?}: {error}")))?;
            words.extend(split);
        }
        Ok(words)
    }

    /// The heartbeat and stop timing, validated.
    pub fn timing(&self) -> Result<Timing, ConfigError> {
        // Without an explicit timeout, the default follows a shorter interval.
        let heartbeat_timeout = self
            .heartbeat_timeout
            .unwrap_or(config::DEFAULT_HEARTBEAT_TIMEOUT.min(self.heartbeat_interval));
        let timing = Timing {
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout,
            heartbeat_misses: self.heartbeat_misses,
            start_grace: self.start_grace,
            kill_timeout: self.kill_timeout,
            policy: RestartPolicy {
                autorestart: self.autorestart,
                clean_exit_codes: self.clean_exit_codes,
                min_uptime: self.min_uptime,
                restart_delay: self.restart_delay,
                backoff_base: self.backoff_base,
                max_restarts: self.max_restarts,
                restart_window: self.restart_window,
                max_memory: self.max_memory,
            },
        };
        config::validate_timing(&timing)?;
        Ok(timing)
    }
}
