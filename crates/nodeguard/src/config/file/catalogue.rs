//! The PM2 fields nodeguard reads, and those it knows but does not act on, with what to tell
//! the user instead.

/// Fields nodeguard knows from PM2 but does not act on, with what to tell the user.
pub(super) const NOT_SUPPORTED: &[(&str, &str)] = &[
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
pub(super) const SUPPORTED: &[&str] = &[
    "name",
    "script",
    "args",
    "cwd",
    "env",
    "env_file",
    "filter_env",
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
