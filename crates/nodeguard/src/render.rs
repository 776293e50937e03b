//! Turns status snapshots into the table `nodeguard status` prints.

use std::fmt::Write;

use nodeguard_proto::control::AppStatus;

use crate::exit::human;

const HEADERS: [&str; 11] = [
    "name", "id", "pid", "state", "restarts", "hangs", "uptime", "rss", "heap", "loop p99", "pong",
];

/// A plain-text table, one row per app, columns padded to their widest cell.
pub fn status_table(apps: &[AppStatus]) -> String {
    let rows: Vec<[String; 11]> = apps.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADERS.map(String::from));
    for row in &rows {
        line(row);
    }
    if apps.is_empty() {
        out.push_str("(no apps)\n");
    }
    out
}

fn row(app: &AppStatus) -> [String; 11] {
    let dash = || "-".to_string();
    [
        app.name.clone(),
        app.id.to_string(),
        app.pid.map_or_else(dash, |p| p.to_string()),
        app.state.as_str().to_string(),
        app.restarts.to_string(),
        app.hangs.to_string(),
        app.uptime_ms
            .map_or_else(dash, |ms| human(std::time::Duration::from_millis(ms))),
        app.memory.map_or_else(dash, |m| bytes(m.rss)),
        app.memory.map_or_else(dash, |m| bytes(m.heap_used)),
        app.loop_delay_ms
            .map_or_else(dash, |ms| format!("{ms:.1}ms")),
        match (app.monitored, app.last_pong_ms) {
            (_, Some(ms)) => human(std::time::Duration::from_millis(ms)),
            (false, None) if app.pid.is_some() => "unmonitored".to_string(),
            _ => dash(),
        },
    ]
}

/// `812K`, `41.3M`, `1.2G`.
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let n = n as f64;
    if n < KIB * KIB {
        format!("{:.0}K", n / KIB)
    } else if n < KIB * KIB * KIB {
        format!("{:.1}M", n / (KIB * KIB))
    } else {
        format!("{:.1}G", n / (KIB * KIB * KIB))
    }
}
