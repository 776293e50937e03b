//! `/metrics`: every app's status in the Prometheus/OpenMetrics text format, encoded by the
//! `prometheus-client` crate. The registry is built afresh from a status snapshot on each scrape,
//! so a deleted app's series disappear with it and nothing is kept between scrapes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use nodeguard_proto::control::{AppState, AppStatus};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every state an app can be in, for `nodeguard_app_state`.
const STATES: [AppState; 6] = [
    AppState::Starting,
    AppState::Running,
    AppState::Stopping,
    AppState::Stopped,
    AppState::Backoff,
    AppState::Errored,
];

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The labels that identify one app process: its name, id and instance. The instance label is
/// `app_instance` (0 for an app not in cluster mode), because Prometheus itself sets `instance`
/// to the scrape target and would rename ours.
fn labels(app: &AppStatus) -> Labels {
    vec![
        ("app", app.name.clone()),
        ("id", app.id.to_string()),
        ("app_instance", app.instance.unwrap_or(0).to_string()),
    ]
}

/// The exposition text for these apps (ending in `# EOF`).
pub fn render(apps: &[AppStatus]) -> String {
    let mut registry = Registry::with_prefix("nodeguard");
    let app_count = Gauge::<i64>::default();
    let up = Family::<Labels, Gauge>::default();
    let state = Family::<Labels, Gauge>::default();
    let restarts = Family::<Labels, Counter>::default();
    let hangs = Family::<Labels, Counter>::default();
    let rss = Family::<Labels, Gauge>::default();
    let heap_total = Family::<Labels, Gauge>::default();
    let heap_used = Family::<Labels, Gauge>::default();
    let tree_rss = Family::<Labels, Gauge>::default();
    let processes = Family::<Labels, Gauge>::default();
    let delay_p50 = Family::<Labels, FloatGauge>::default();
    let delay_p99 = Family::<Labels, FloatGauge>::default();
    let delay_max = Family::<Labels, FloatGauge>::default();
    let uptime = Family::<Labels, FloatGauge>::default();

    app_count.set(apps.len() as i64);
    for app in apps {
        let labels = labels(app);
        let gauge_u64 = |family: &Family<Labels, Gauge>, value: u64| {
            family
                .get_or_create(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        gauge_u64(&up, u64::from(app.state == AppState::Running));
        for candidate in STATES {
            let mut with_state = labels.clone();
            with_state.push(("state", candidate.as_str().to_string()));
            state
                .get_or_create(&with_state)
                .set(i64::from(app.state == candidate));
        }
        restarts.get_or_create(&labels).inc_by(app.restarts);
        hangs.get_or_create(&labels).inc_by(app.hangs);
        if let Some(memory) = app.memory {
            gauge_u64(&rss, memory.rss);
            gauge_u64(&heap_total, memory.heap_total);
            gauge_u64(&heap_used, memory.heap_used);
        }
        if let Some(bytes) = app.tree_rss {
            gauge_u64(&tree_rss, bytes);
        }
        if let Some(count) = app.processes {
            gauge_u64(&processes, u64::from(count));
        }
        if let Some(delay) = app.loop_delay {
            let seconds = |ms: f64| ms / 1000.0;
            delay_p50.get_or_create(&labels).set(seconds(delay.p50_ms));
            delay_p99.get_or_create(&labels).set(seconds(delay.p99_ms));
            delay_max.get_or_create(&labels).set(seconds(delay.max_ms));
        }
        if let Some(ms) = app.uptime_ms {
            uptime.get_or_create(&labels).set(ms as f64 / 1000.0);
        }
    }

    registry.register("apps", "Apps in the supervisor's table", app_count);
    registry.register(
        "up",
        "1 while the app's process is running (and answering heartbeats, if monitored)",
        up,
    );
    registry.register(
        "app_state",
        "1 for the app's current state (starting, running, stopping, stopped, backoff, errored)",
        state,
    );
    registry.register(
        "restarts",
        "Restarts after unexpected exits, hangs and memory-limit breaches",
        restarts,
    );
    registry.register(
        "hangs",
        "Hung event loops detected (each killed, and restarted unless over the restart budget)",
        hangs,
    );
    registry.register(
        "processes",
        "Processes in the app's tree, the main one included",
        processes,
    );
    let bytes = |name: &str, help: &str, family| (name.to_string(), help.to_string(), family);
    for (name, help, family) in [
        bytes(
            "memory_rss",
            "Resident set size, from the latest heartbeat",
            rss,
        ),
        bytes(
            "memory_heap_total",
            "V8 heap size, from the latest heartbeat",
            heap_total,
        ),
        bytes(
            "memory_heap_used",
            "V8 heap in use, from the latest heartbeat",
            heap_used,
        ),
        bytes(
            "memory_tree_rss",
            "Resident set size of the app's whole process tree (what --max-memory checks)",
            tree_rss,
        ),
    ] {
        registry.register_with_unit(name, help, Unit::Bytes, family);
    }
    for (name, help, family) in [
        (
            "event_loop_delay_p50",
            "Median event-loop delay over the interval before the latest heartbeat",
            delay_p50,
        ),
        (
            "event_loop_delay_p99",
            "99th-percentile event-loop delay over the interval before the latest heartbeat",
            delay_p99,
        ),
        (
            "event_loop_delay_max",
            "Longest event-loop delay over the interval before the latest heartbeat",
            delay_max,
        ),
        (
            "uptime",
            "Time since the app's current process was spawned",
            uptime,
        ),
    ] {
        registry.register_with_unit(name, help, Unit::Seconds, family);
    }

    let mut text = String::new();
    // Writing into a String cannot fail, and every label value is escaped by the encoder.
    if encode(&mut text, &registry).is_err() {
        tracing::error!("could not encode the metrics");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_proto::worker::{LoopDelay, MemoryUsage};

    fn app(name: &str, id: u32, state: AppState) -> AppStatus {
        AppStatus {
            restarts: 3,
            hangs: 1,
            uptime_ms: Some(1500),
            memory: Some(MemoryUsage {
                rss: 50_000_000,
                heap_total: 8_000_000,
                heap_used: 6_000_000,
                external: 0,
                array_buffers: 0,
            }),
            loop_delay_ms: Some(12.0),
            loop_delay: Some(LoopDelay {
                mean_ms: 10.0,
                p50_ms: 10.0,
                p99_ms: 12.0,
                max_ms: 250.0,
            }),
            tree_rss: Some(60_000_000),
            processes: Some(2),
            last_pong_ms: Some(10),
            pong_rtt_ms: Some(0.5),
            ..crate::io::health::tests::app(name, id, state)
        }
    }

    #[test]
    fn every_metric_is_written_with_its_labels() {
        let text = render(&[app("api", 0, AppState::Running)]);
        for line in [
            "nodeguard_apps 1",
            "nodeguard_up{app=\"api\",id=\"0\",app_instance=\"0\"} 1",
            "nodeguard_app_state{app=\"api\",id=\"0\",app_instance=\"0\",state=\"running\"} 1",
            "nodeguard_app_state{app=\"api\",id=\"0\",app_instance=\"0\",state=\"errored\"} 0",
            "nodeguard_restarts_total{app=\"api\",id=\"0\",app_instance=\"0\"} 3",
            "nodeguard_hangs_total{app=\"api\",id=\"0\",app_instance=\"0\"} 1",
            "nodeguard_memory_rss_bytes{app=\"api\",id=\"0\",app_instance=\"0\"} 50000000",
            "nodeguard_memory_heap_total_bytes{app=\"api\",id=\"0\",app_instance=\"0\"} 8000000",
            "nodeguard_memory_heap_used_bytes{app=\"api\",id=\"0\",app_instance=\"0\"} 6000000",
            "nodeguard_event_loop_delay_p50_seconds{app=\"api\",id=\"0\",app_instance=\"0\"} 0.01",
            "nodeguard_event_loop_delay_p99_seconds{app=\"api\",id=\"0\",app_instance=\"0\"} 0.012",
            "nodeguard_event_loop_delay_max_seconds{app=\"api\",id=\"0\",app_instance=\"0\"} 0.25",
            "nodeguard_uptime_seconds{app=\"api\",id=\"0\",app_instance=\"0\"} 1.5",
            "nodeguard_memory_tree_rss_bytes{app=\"api\",id=\"0\",app_instance=\"0\"} 60000000",
            "nodeguard_processes{app=\"api\",id=\"0\",app_instance=\"0\"} 2",
            "# TYPE nodeguard_restarts counter",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn an_errored_app_is_down_and_label_values_are_escaped() {
        let text = render(&[app("we\"ird\napp", 7, AppState::Errored)]);
        assert!(
            text.contains("nodeguard_up{app=\"we\\\"ird\\napp\",id=\"7\",app_instance=\"0\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn each_cluster_instance_is_its_own_series() {
        let mut first = app("web", 3, AppState::Running);
        first.instance = Some(0);
        let mut second = app("web", 4, AppState::Starting);
        second.instance = Some(1);
        let text = render(&[first, second]);
        for line in [
            "nodeguard_up{app=\"web\",id=\"3\",app_instance=\"0\"} 1",
            "nodeguard_up{app=\"web\",id=\"4\",app_instance=\"1\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn no_apps_still_renders() {
        let text = render(&[]);
        assert!(text.contains("nodeguard_apps 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
