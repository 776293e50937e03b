//! The progress line of a big `start` on a terminal ("812 of 2,000 running, 3 failed: web-17 …"),
//! counted from the supervisor's event stream while the start is under way.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nodeguard_proto::control::{AppState, EventRecord};

use crate::core::units::group_digits;

/// A count, grouped by thousands.
fn group(n: usize) -> String {
    group_digits(u64::try_from(n).unwrap_or(u64::MAX))
}

/// No line for a start that is over sooner than this: a small start prints only its table.
pub const SHOW_AFTER: Duration = Duration::from_millis(300);
/// The line is redrawn at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Failed apps named on the line; more are counted.
const NAMED_FAILURES: usize = 3;

/// What a running start has come to, from the events of the apps it added.
#[derive(Debug)]
pub struct StartProgress {
    total: usize,
    /// Ids that existed before the start: their events are not this start's.
    existing: HashSet<u32>,
    running: HashSet<u32>,
    /// Id to name (with its instance), in the order they failed.
    failed: HashMap<u32, String>,
    failed_order: Vec<u32>,
    began: Instant,
    drawn: Option<Instant>,
}

impl StartProgress {
    /// `total`: the processes the start asks for; `existing`: the ids the supervisor had before.
    pub fn new(total: usize, existing: HashSet<u32>) -> Self {
        Self {
            total,
            existing,
            running: HashSet::new(),
            failed: HashMap::new(),
            failed_order: Vec::new(),
            began: Instant::now(),
            drawn: None,
        }
    }

    /// Takes one event into account; true when the counts changed.
    pub fn see(&mut self, event: &EventRecord) -> bool {
        if event.kind != "state" || self.existing.contains(&event.id) {
            return false;
        }
        match event.state {
            Some(AppState::Running) => {
                self.failed.remove(&event.id);
                self.running.insert(event.id)
            }
            Some(AppState::Errored) => {
                self.running.remove(&event.id);
                let name = match event.instance {
                    Some(instance) => format!("{}:{instance}", event.app),
                    None => event.app.clone(),
                };
                if self.failed.insert(event.id, name).is_none() {
                    self.failed_order.push(event.id);
                }
                true
            }
            _ => false,
        }
    }

    /// The line to draw now, if it is time to draw one (not before [`SHOW_AFTER`], at most every
    /// [`REDRAW_EVERY`]).
    pub fn due(&mut self, now: Instant) -> Option<String> {
        if now.saturating_duration_since(self.began) < SHOW_AFTER {
            return None;
        }
        if let Some(drawn) = self.drawn {
            if now.saturating_duration_since(drawn) < REDRAW_EVERY {
                return None;
            }
        }
        self.drawn = Some(now);
        Some(self.line())
    }

    /// Whether a line was drawn (and must be cleared before the result is printed).
    pub fn shown(&self) -> bool {
        self.drawn.is_some()
    }

    /// "starting: 812 of 2,000 running, 3 failed (web-17, web-18, web-40)".
    pub fn line(&self) -> String {
        let mut line = format!(
            "starting: {} of {} running",
            group(self.running.len()),
            group(self.total)
        );
        let failed: Vec<&str> = self
            .failed_order
            .iter()
            .filter_map(|id| self.failed.get(id).map(String::as_str))
            .collect();
        if !failed.is_empty() {
            line.push_str(&format!(", {} failed (", group(failed.len())));
            line.push_str(&failed[..failed.len().min(NAMED_FAILURES)].join(", "));
            if failed.len() > NAMED_FAILURES {
                line.push_str(", …");
            }
            line.push(')');
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: u32, app: &str, state: AppState) -> EventRecord {
        EventRecord {
            id,
            app: app.into(),
            kind: "state".into(),
            state: Some(state),
            ..EventRecord::default()
        }
    }

    #[test]
    fn counts_only_the_new_apps_and_names_failures() {
        let mut progress = StartProgress::new(2000, HashSet::from([0]));
        assert!(!progress.see(&state(0, "old", AppState::Running)));
        assert!(progress.see(&state(1, "web-1", AppState::Running)));
        assert!(!progress.see(&state(1, "web-1", AppState::Running)));
        assert!(progress.see(&state(2, "web-2", AppState::Errored)));
        assert!(!progress.see(&state(3, "web-3", AppState::Starting)));
        assert_eq!(
            progress.line(),
            "starting: 1 of 2,000 running, 1 failed (web-2)"
        );
        for id in 4..9 {
            progress.see(&state(id, &format!("web-{id}"), AppState::Errored));
        }
        assert_eq!(
            progress.line(),
            "starting: 1 of 2,000 running, 6 failed (web-2, web-4, web-5, …)"
        );
    }

    #[test]
    fn the_line_waits_and_is_throttled() {
        let mut progress = StartProgress::new(10, HashSet::new());
        let began = progress.began;
        assert_eq!(progress.due(began), None);
        assert!(progress.due(began + SHOW_AFTER).is_some());
        assert_eq!(
            progress.due(began + SHOW_AFTER + Duration::from_millis(1)),
            None
        );
        assert!(progress.shown());
    }

    #[test]
    fn groups_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
