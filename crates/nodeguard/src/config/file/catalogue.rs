//! The PM2 fields nodeguard reads, and those it knows but does not act on, with what to tell
//! the user instead.

/// Fields nodeguard knows from PM2 but does not act on, with what to tell the user.
pub(super) const NOT_SUPPORTED: &[(&str, &str)] = &[
    // PM2's logging fields (`output`/`error` and the other aliases of out_file/error_file, `time`,
    // `merge_logs`, `log_date_format`, `log_type` and `disable_logs` are read by the checker).
    // PM2's own machinery, and PM2.io (Keymetrics).
    (
        "source_map_support",
        "no source-map-support is injected; add `--enable-source-maps` to node_args",
    ),
    (
        "treekill",
        "stopping an app always signals its whole process group",
    ),
    (
        "force",
        "an app name runs once; `nodeguard restart <app>` restarts it",
    ),
    (
        "vizion",
        "no versioning (git) metadata is collected",
    ),
    (
        "pmx",
        "there is no PM2.io integration; metrics are served at /metrics (`nodeguard daemon --http ADDR`)",
    ),
    (
        "automation",
        "there is no PM2.io integration; metrics are served at /metrics (`nodeguard daemon --http ADDR`)",
    ),
    (
        "trace",
        "there is no PM2.io transaction tracing",
    ),
    (
        "v8",
        "there is no PM2.io integration; heap figures are in `nodeguard status --json`",
    ),
    (
        "event_loop_inspector",
        "there is no PM2.io integration; event-loop delay is in `nodeguard status --json`",
    ),
    (
        "deep_monitoring",
        "there is no PM2.io integration; metrics are served at /metrics (`nodeguard daemon --http ADDR`)",
    ),
    ("io", "there is no PM2.io integration"),
    ("name_prefix", "the name is used as written, with no prefix"),
    ("install_url", "nothing is installed from a URL"),
    ("execute_command", ""),
    ("write", "PM2's internal flag has no meaning here"),
    (
        "disable_trace",
        "there is no PM2.io transaction tracing",
    ),
    (
        "watch_options",
        "chokidar options do not apply (nodeguard watches with inotify); use ignore_watch and \
         watch_delay",
    ),
    (
        "post_update",
        "nothing pulls and restarts the app from outside; run these commands in your deployment",
    ),
    ("append_env_to_name", ""),
    ("max_memory_restart_interval", ""),
];

/// Values of PM2 fields that ask for what nodeguard does anyway (or for PM2's default): taken
/// without a warning, since nothing is lost.
pub(super) fn changes_nothing(field: &str, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    let off = matches!(value, Value::Bool(false));
    match field {
        "watch"
        | "force"
        | "append_env_to_name"
        | "source_map_support"
        | "vizion"
        | "pmx"
        | "automation"
        | "trace"
        | "v8"
        | "event_loop_inspector"
        | "deep_monitoring"
        | "shutdown_with_message"
        | "filter_env" => off,
        "treekill" | "disable_trace" => matches!(value, Value::Bool(true)),
        // Only Windows has console windows; PM2's own retry interval while stopping.
        "windowsHide" | "disable_source_map_support" | "kill_retry_time" => true,
        "namespace" => value.as_str() == Some("default"),
        "post_update" => value.as_array().is_some_and(Vec::is_empty),
        _ => false,
    }
}

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
    "interpreter",
    "exec_interpreter",
    "max_memory_restart",
    "kill_timeout",
    "autorestart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "exp_backoff_restart_delay",
    "stop_exit_codes",
    "wait_ready",
    "hang_show_query",
    "heap_snapshot_on_memory_restart",
    "profile_on_stall",
    "listen_timeout",
    "listen",
    "out_file",
    "error_file",
    "output",
    "error",
    "merge_logs",
    "log_date_format",
    "log_type",
    "log_file",
    "log",
    "disable_logs",
    "pid_file",
    "pid",
    "exec_mode",
    "port",
    "interpreterArgs",
    "time",
    "heartbeat_interval",
    "heartbeat_timeout",
    "heartbeat_misses",
    "start_grace",
    "watch",
    "ignore_watch",
    "watch_delay",
    "cron_restart",
    "kill_signal",
    "shutdown_with_message",
    "on_event",
    "instance_var",
    "increment_var",
    "namespace",
    "uid",
    "user",
    "username",
    "gid",
];
