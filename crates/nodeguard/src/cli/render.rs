//! Turns status snapshots into the table `nodeguard status` prints.

use super::colour;
use crate::core::units::bytes;
use std::fmt::Write;
use std::time::Duration;

use nodeguard_proto::control::{AppDescription, AppStatus};

use crate::core::exit::human;

const HEADERS: [&str; 12] = [
    "name",
    "id",
    "pid",
    "state",
    "restarts",
    "hangs",
    "uptime",
    "cpu",
    "rss",
    "heap",
    "loop p50/p99/max",
    "pong",
];

/// A plain-text table, one row per app, columns padded to their widest cell.
pub fn status_table(apps: &[AppStatus]) -> String {
    status_table_in_colour(apps, false)
}

/// [`status_table`], with the state, and restarts and hangs when not zero, in colour when
/// `colour` (see [`colour::wanted`]).
pub fn status_table_in_colour(apps: &[AppStatus], colour: bool) -> String {
    let rows: Vec<[String; 12]> = apps.iter().map(row).collect();
    let codes: Vec<[&str; 12]> = apps
        .iter()
        .map(|app| {
            let mut codes = [""; 12];
            codes[3] = colour::state_code(app.state);
            codes[4] = colour::restarts_code(app.restarts);
            codes[5] = colour::hangs_code(app.hangs);
            codes
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String], codes: &[&str; 12]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            let _ = write!(
                text,
                "{}{:pad$}  ",
                colour::paint(cell, codes[i], colour),
                ""
            );
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADERS.map(String::from), &[""; 12]);
    for (row, codes) in rows.iter().zip(&codes) {
        line(row, codes);
    }
    if apps.is_empty() {
        out.push_str("(no apps)\n");
    }
    out
}

fn row(app: &AppStatus) -> [String; 12] {
    let dash = || "-".to_string();
    [
        match app.instance {
            Some(instance) => format!("{}:{instance}", app.name),
            None => app.name.clone(),
        },
        app.id.to_string(),
        app.pid.map_or_else(dash, |p| p.to_string()),
        app.state.as_str().to_string(),
        app.restarts.to_string(),
        app.hangs.to_string(),
        app.uptime_ms
            .map_or_else(dash, |ms| human(std::time::Duration::from_millis(ms))),
        app.cpu_percent.map_or_else(dash, cpu),
        app.tree_rss
            .or(app.memory.map(|m| m.rss))
            .map_or_else(dash, bytes),
        app.memory.map_or_else(dash, |m| bytes(m.heap_used)),
        app.loop_delay.map_or_else(dash, |d| {
            format!("{:.1}/{:.1}/{:.1}ms", d.p50_ms, d.p99_ms, d.max_ms)
        }),
        match (app.monitored, app.last_pong_ms) {
            (_, Some(ms)) => human(std::time::Duration::from_millis(ms)),
            (false, None) if app.pid.is_some() => "unmonitored".to_string(),
            _ => dash(),
        },
    ]
}

/// A CPU share as `status` shows it: `12.5%`.
pub fn cpu(percent: f64) -> String {
    format!("{percent:.1}%")
}

/// The text `nodeguard describe` prints for one app.
pub fn description(app: &AppDescription) -> String {
    description_in_colour(app, false)
}

/// What `describe` says of an app whose output goes to /dev/null (see
/// [`crate::config::AppSpec::discards_stdout`]); `None` for one whose output is captured.
fn discarded_logs(definition: &nodeguard_proto::control::AppDefinition) -> Option<&'static str> {
    let discards = |file: &Option<String>| {
        let file = file.as_deref().map(std::path::Path::new);
        crate::config::discards(definition.disable_logs, file, definition.log_file.is_some())
    };
    match (
        discards(&definition.out_file),
        discards(&definition.error_file),
    ) {
        (true, true) if definition.disable_logs => {
            Some("disabled (disable_logs): stdout and stderr go to /dev/null")
        }
        (true, true) => Some("stdout and stderr go to /dev/null"),
        (true, false) => Some("stdout goes to /dev/null"),
        (false, true) => Some("stderr goes to /dev/null"),
        (false, false) => None,
    }
}

/// [`description`], with the state, and restarts and hangs when not zero, in colour when
/// `colour`.
pub fn description_in_colour(app: &AppDescription, colour: bool) -> String {
    let status = &app.status;
    let definition = &app.definition;
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<20} {value}");
    };
    field(
        "name",
        match status.instance {
            Some(instance) => format!(
                "{} (id {}, instance {instance} of {})",
                status.name, status.id, definition.instances
            ),
            None => format!("{} (id {})", status.name, status.id),
        },
    );
    field("state", colour::state(status.state, colour));
    field(
        "pid",
        status.pid.map_or_else(|| "-".into(), |p| p.to_string()),
    );
    field("script", definition.script.clone());
    field("args", format!("{:?}", definition.args));
    field("cwd", definition.cwd.clone());
    if let Some(namespace) = &definition.namespace {
        field("namespace", namespace.clone());
    }
    if let Some(user) = &definition.uid {
        field("user", user.escape_debug().to_string());
    }
    if let Some(group) = &definition.gid {
        field("group", group.escape_debug().to_string());
    }
    if definition.instance_var.is_some() || definition.increment_var.is_some() {
        let instance_var = definition
            .instance_var
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_INSTANCE_VAR);
        let increment = match &definition.increment_var {
            Some(var) => format!(", {var} + instance"),
            None => String::new(),
        };
        field("instance vars", format!("{instance_var}{increment}"));
    }
    field(
        "node",
        format!("{} {:?}", definition.node, definition.node_args),
    );
    field(
        "heartbeat",
        format!(
            "every {}, timeout {}, hung after {} misses, start grace {}",
            human(std::time::Duration::from_millis(
                definition.heartbeat_interval_ms
            )),
            human(std::time::Duration::from_millis(
                definition.heartbeat_timeout_ms
            )),
            definition.heartbeat_misses,
            human(std::time::Duration::from_millis(definition.start_grace_ms)),
        ),
    );
    if !definition.listen.is_empty() || definition.wait_ready {
        field(
            "cluster",
            format!(
                "listen {}{}, ready within {}",
                if definition.listen.is_empty() {
                    "-".to_string()
                } else {
                    definition.listen.join(", ")
                },
                if definition.wait_ready {
                    " (ready at monitor.ready())"
                } else {
                    ""
                },
                human(std::time::Duration::from_millis(
                    definition.listen_timeout_ms.unwrap_or_default()
                ))
            ),
        );
    }
    field(
        "kill timeout",
        human(std::time::Duration::from_millis(definition.kill_timeout_ms)),
    );
    field(
        "kill signal",
        format!(
            "{}{}",
            definition.kill_signal.as_deref().unwrap_or("SIGTERM"),
            if definition.shutdown_with_message {
                " ('shutdown' message first)"
            } else {
                ""
            },
        ),
    );
    if let Some(logs) = discarded_logs(definition) {
        field("logs", logs.to_string());
    }
    if definition.heap_snapshot_on_memory_restart {
        field(
            "memory restart",
            "heap snapshot first (into <home>/profiles/)".to_string(),
        );
    }
    if let Some(ms) = definition.profile_on_stall_ms {
        field(
            "profile on stall",
            format!("loop delay p99 >= {ms} ms: 5 s CPU profile (one per 10 min)"),
        );
    }
    if definition.hang_show_query {
        field(
            "hang reports",
            "name requests with their query strings".to_string(),
        );
    }
    if !definition.watch.is_empty() {
        let ignored = if definition.ignore_watch.is_empty() {
            String::new()
        } else {
            format!(", ignoring {}", definition.ignore_watch.join(", "))
        };
        field(
            "watch",
            format!(
                "{}{ignored}, after {} of quiet",
                definition.watch.join(", "),
                human(std::time::Duration::from_millis(
                    definition.watch_delay_ms.unwrap_or(1000)
                )),
            ),
        );
    }
    if let Some(pattern) = &definition.cron_restart {
        field("cron restart", format!("{pattern} (local time)"));
    }
    let ms = |ms: Option<u64>| {
        ms.map_or_else(|| "default".into(), |ms| human(Duration::from_millis(ms)))
    };
    let codes = definition.clean_exit_codes.as_ref().map_or_else(
        || "0".to_string(),
        |codes| {
            codes
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    field(
        "restart policy",
        format!(
            "autorestart {} (clean exit codes {codes}), budget {} in {}, min uptime {}, \
             restart delay {}, backoff from {}",
            definition.autorestart.as_deref().unwrap_or("always"),
            definition
                .max_restarts
                .map_or_else(|| "default".into(), |n| n.to_string()),
            ms(definition.restart_window_ms),
            ms(definition.min_uptime_ms),
            ms(definition.restart_delay_ms),
            ms(definition.backoff_base_ms),
        ),
    );
    if let Some(limit) = definition.max_memory {
        field(
            "memory limit",
            format!("{} (whole process tree)", bytes(limit)),
        );
    }
    field(
        "restarts",
        format!(
            "{} ({} after hangs)",
            colour::paint(
                &status.restarts.to_string(),
                colour::restarts_code(status.restarts),
                colour
            ),
            colour::paint(
                &status.hangs.to_string(),
                colour::hangs_code(status.hangs),
                colour
            ),
        ),
    );
    field(
        "uptime",
        status.uptime_ms.map_or_else(
            || "-".into(),
            |ms| human(std::time::Duration::from_millis(ms)),
        ),
    );
    if let Some(percent) = status.cpu_percent {
        field(
            "cpu",
            format!("{} of a core (whole process tree)", cpu(percent)),
        );
    }
    if let Some(memory) = status.memory {
        field(
            "memory",
            format!(
                "rss {}, heap {}; whole tree {} in {} process(es)",
                bytes(memory.rss),
                bytes(memory.heap_used),
                bytes(status.tree_rss.unwrap_or(memory.rss)),
                status.processes.unwrap_or(1)
            ),
        );
    }
    if let Some(last) = &status.last_exit {
        field("last exit", last.clone());
    }
    let _ = writeln!(out, "  recent events:");
    if app.events.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for event in &app.events {
        let kind = format!("{:<13}", event.kind);
        let code = match event.kind.as_str() {
            "hung" | "stack" | "errored" | "memory" | "spawn_failed" | "kill_timeout" => "\x1b[31m",
            "exited" | "not_ready" | "reload_aborted" => "\x1b[33m",
            _ => "",
        };
        let _ = writeln!(
            out,
            "    {}  {} {}",
            event.at,
            colour::paint(&kind, code, colour),
            event.message
        );
    }
    let _ = writeln!(out);
    out
}
