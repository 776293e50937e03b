//! Health and readiness, as `/healthz`, `/readyz` and systemd's watchdog see them: the supervisor
//! actor is asked over its own request queue, so "healthy" means the supervision loop really
//! answered within a deadline, not that some other task is still running.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use nodeguard_proto::control::{AppState, AppStatus, Command, Outcome};

use crate::supervisor::api::ControlRequest;

/// How long the supervisor actor has to answer a health or status question. Generous: the actor
/// answers in microseconds, so missing this means it is stuck, not busy.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// Asks the supervisor actor questions on behalf of the HTTP endpoints and the systemd notifier.
#[derive(Clone)]
pub struct Probe {
    supervisor: mpsc::Sender<ControlRequest>,
}

impl Probe {
    pub fn new(supervisor: mpsc::Sender<ControlRequest>) -> Self {
        Self { supervisor }
    }

    /// Whether the supervision loop answers a ping within `deadline`.
    pub async fn alive(&self, deadline: Duration) -> bool {
        matches!(
            self.ask(Command::Ping, deadline).await,
            Some(Outcome::Pong { .. })
        )
    }

    /// Every app's status, if the supervision loop answers within `deadline`.
    pub async fn statuses(&self, deadline: Duration) -> Option<Vec<AppStatus>> {
        match self.ask(Command::Status, deadline).await {
            Some(Outcome::Status { apps }) => Some(apps),
            _ => None,
        }
    }

    /// Whether the supervision loop has finished (it takes no more questions).
    pub fn closed(&self) -> bool {
        self.supervisor.is_closed()
    }

    /// Any command (the dashboard's write actions), if answered within `deadline`.
    pub async fn command(&self, command: Command, deadline: Duration) -> Option<Outcome> {
        self.ask(command, deadline).await
    }

    async fn ask(&self, command: Command, deadline: Duration) -> Option<Outcome> {
        let exchange = async {
            let (reply, answer) = oneshot::channel();
            self.supervisor
                .send(ControlRequest { command, reply })
                .await
                .ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .ok()
            .flatten()
    }
}

/// `/readyz`: `Ok` when there is at least one app and every app is running; otherwise why not.
pub fn readiness(apps: &[AppStatus]) -> Result<(), String> {
    if apps.is_empty() {
        return Err("no apps".to_string());
    }
    let waiting: Vec<String> = apps
        .iter()
        .filter(|app| app.state != AppState::Running)
        .map(|app| format!("{} (id {}): {}", app.name, app.id, app.state.as_str()))
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(waiting.join("\n"))
    }
}

/// Whether the apps have settled after starting, for systemd's `READY=1`: none is still starting,
/// backing off or stopping. An errored app counts as settled: waiting longer would not bring it
/// up, and holding back `READY=1` would make systemd time the start out and kill the healthy
/// apps too. `STATUS=` and `/readyz` still report it.
pub fn settled(apps: &[AppStatus]) -> bool {
    apps.iter().all(|app| {
        matches!(
            app.state,
            AppState::Running | AppState::Stopped | AppState::Errored
        )
    })
}

/// One line counting apps by state, e.g. `3 apps: 2 running, 1 errored` (for systemd's
/// `STATUS=`).
pub fn summary(apps: &[AppStatus]) -> String {
    const ORDER: [AppState; 6] = [
        AppState::Running,
        AppState::Starting,
        AppState::Backoff,
        AppState::Stopping,
        AppState::Stopped,
        AppState::Errored,
    ];
    let counts: Vec<String> = ORDER
        .iter()
        .filter_map(|&state| {
            let count = apps.iter().filter(|app| app.state == state).count();
            (count > 0).then(|| format!("{count} {}", state.as_str()))
        })
        .collect();
    match apps.len() {
        0 => "no apps".to_string(),
        1 => format!("1 app: {}", counts.join(", ")),
        n => format!("{n} apps: {}", counts.join(", ")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An app row with only its identity and state set (shared with the metrics tests).
    pub(crate) fn app(name: &str, id: u32, state: AppState) -> AppStatus {
        AppStatus {
            name: name.into(),
            id,
            instance: None,
            script: format!("/srv/{name}.js"),
            pid: Some(100 + id),
            state,
            restarts: 0,
            hangs: 0,
            uptime_ms: None,
            monitored: true,
            memory: None,
            tree_rss: None,
            processes: None,
            loop_delay_ms: None,
            loop_delay: None,
            last_pong_ms: None,
            pong_rtt_ms: None,
            last_exit: None,
            cpu_percent: None,
        }
    }

    #[test]
    fn ready_only_when_every_app_runs() {
        assert!(readiness(&[]).is_err());
        assert!(readiness(&[app("a", 0, AppState::Running)]).is_ok());
        let why = readiness(&[
            app("a", 0, AppState::Running),
            app("b", 1, AppState::Errored),
        ])
        .unwrap_err();
        assert_eq!(why, "b (id 1): errored");
    }

    #[test]
    fn errored_and_stopped_apps_are_settled_but_starting_ones_are_not() {
        assert!(settled(&[]));
        assert!(settled(&[
            app("a", 0, AppState::Running),
            app("b", 1, AppState::Errored),
            app("c", 2, AppState::Stopped),
        ]));
        assert!(!settled(&[
            app("a", 0, AppState::Running),
            app("b", 1, AppState::Backoff)
        ]));
        assert!(!settled(&[app("a", 0, AppState::Starting)]));
    }

    #[test]
    fn the_summary_counts_states() {
        assert_eq!(summary(&[]), "no apps");
        assert_eq!(
            summary(&[app("a", 0, AppState::Running)]),
            "1 app: 1 running"
        );
        assert_eq!(
            summary(&[
                app("a", 0, AppState::Errored),
                app("b", 1, AppState::Running),
                app("c", 2, AppState::Running),
            ]),
            "3 apps: 2 running, 1 errored"
        );
    }
}
