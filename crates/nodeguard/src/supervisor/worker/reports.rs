//! The machine's reports as log lines and describe events, and the hang's stack.

use crate::core::exit::human;
use crate::core::machine::{
    HangEvidence, Phase, Report, StackPlan, StopSignal, Timing, INTERRUPT_STACK_TIMEOUT,
    STACK_TIMEOUT,
};
use crate::core::units::bytes;
use crate::io::forensics::{self};
use crate::io::logfile::timestamp;
use crate::io::sourcemap;
use crate::platform;
use nodeguard_proto::control::AppEvent;
use std::time::{Duration, SystemTime};

use super::*;

/// What confirmed a hang, for its log line.
pub(super) fn evidence_text(evidence: HangEvidence) -> String {
    match evidence {
        HangEvidence::StuckInJs { queued_for } => {
            format!("a ping waited {} for the JS thread", human(queued_for))
        }
        HangEvidence::NoAnswer => "the monitor's own thread did not answer either".to_string(),
    }
}

/// Why missed heartbeats were not the app's fault, for its log line.
pub(super) fn disproof_text(queued_for: Option<Duration>) -> String {
    match queued_for {
        Some(queued_for) => format!(
            "the monitor had the latest ping for only {}",
            human(queued_for)
        ),
        None => "the monitor had no ping waiting for JS".to_string(),
    }
}

impl WorkerTask {
    /// For a hang: remembers to collect the stack, or returns the line saying why there is none.
    pub(super) fn hang_note(&mut self, report: &Report) -> Option<String> {
        let Report::Hung {
            silent_for, stack, ..
        } = report
        else {
            return None;
        };
        let why = match stack {
            StackPlan::Requested | StackPlan::Interrupt => {
                self.capture = Some(*silent_for);
                return None;
            }
            StackPlan::AppHandlesSigint => {
                "the app listens for SIGINT, which turns off Node's --trace-sigint (or runs \
                 on Bun or Deno, which print no stack on SIGINT)"
            }
            StackPlan::ProcessUnresponsive => {
                "the process did not answer at all (not even the monitor's own thread)"
            }
        };
        Some(forensics::while_handling(
            forensics::summary(*silent_for, Err(why)),
            &self.hang_requests,
        ))
    }

    /// The monitor sent the hung process's stack (captured through V8's interrupt): records
    /// where it was stuck. SIGKILL follows (the machine's answer to the same event).
    pub(super) async fn report_received_stack(&mut self) {
        let frames = self.stack_frames.take().unwrap_or_default();
        let Some(silent_for) = self.capture.take() else {
            return;
        };
        let recorded = self
            .connection
            .as_ref()
            .map(|connection| connection.pid)
            .and_then(|pid| sourcemap::recorded_path(&self.ctx.worker_socket, pid));
        // Reading maps is file I/O: off the runtime's threads.
        let raw = frames.clone();
        let frames =
            tokio::task::spawn_blocking(move || sourcemap::map_frames(&raw, recorded.as_deref()))
                .await
                .unwrap_or(frames);
        let frames = forensics::shorten_frames(&frames, &self.spec.cwd);
        let text = forensics::summary(silent_for, Ok(&frames));
        let text = forensics::while_handling(text, &self.hang_requests);
        self.note(text, frames).await;
    }

    /// No stack came from the monitor and the hung process was killed: its JS thread was blocked
    /// outside JavaScript (the interrupt never ran), or the monitor's connection was gone. Says
    /// which; no stack is guessed.
    pub(super) async fn report_blocked(&mut self, silent_for: Duration) {
        let why = if self.capture_lost {
            "the monitor's connection closed before the stack came".to_string()
        } else {
            format!(
                "blocked outside JavaScript (in a native or synchronous call: the JS thread took \
                 no interrupt within {})",
                human(INTERRUPT_STACK_TIMEOUT)
            )
        };
        let text = forensics::summary(silent_for, Err(&why));
        let text = forensics::while_handling(text, &self.hang_requests);
        self.note(text, Vec::new()).await;
    }

    /// The hung process exited after SIGINT (or SIGKILL at the deadline): reads the stack it
    /// printed and records where it was stuck, mapped through the source maps the monitor of
    /// process `maps_pid` recorded (and those on disk).
    pub(super) async fn report_stack(&mut self, silent_for: Duration, maps_pid: Option<u32>) {
        if let Phase::Stopping { pid, .. } = self.machine.phase {
            // Whatever else holds the stderr pipe goes now, so the pipe ends.
            let _ = platform::signal_group(pid, StopSignal::Kill);
        }
        let Some(tap) = self.tap.clone() else {
            return;
        };
        let lines = tap.finish(STACK_DRAIN).await;
        let requests = self.hang_requests.clone();
        let recorded =
            maps_pid.and_then(|pid| sourcemap::recorded_path(&self.ctx.worker_socket, pid));
        let (cwd, trace) = (self.spec.cwd.clone(), lines);
        // Reading maps is file I/O: off the runtime's threads.
        let frames = tokio::task::spawn_blocking(move || {
            forensics::parse_trace(&trace, &cwd, recorded.as_deref())
        })
        .await
        .unwrap_or(None);
        let text = match &frames {
            Some(frames) => forensics::summary(silent_for, Ok(frames)),
            None if self.spec.discards_stderr() => forensics::summary(
                silent_for,
                Err("its stderr goes to /dev/null (disable_logs), where Node prints it on SIGINT"),
            ),
            None => forensics::summary(
                silent_for,
                Err(&format!(
                    "the process printed none within {} of SIGINT",
                    human(STACK_TIMEOUT)
                )),
            ),
        };
        let text = forensics::while_handling(text, &requests);
        self.note(text, frames.unwrap_or_default()).await;
    }

    /// The process a stack is about: the one being stopped or still live.
    fn stack_pid(&self) -> Option<u32> {
        match self.machine.phase {
            Phase::Live { pid, .. } | Phase::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Removes what the monitor of process `pid` recorded for source maps: the process is gone.
    pub(super) fn forget_maps(&self, pid: Option<u32>) {
        if let Some(path) =
            pid.and_then(|pid| sourcemap::recorded_path(&self.ctx.worker_socket, pid))
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Records a forensic line: in `describe`, the supervisor's log, and the app's own log. In
    /// foreground mode both logs are the terminal: the line is printed once, with the app's
    /// prefix.
    pub(super) async fn note(&mut self, text: String, stack: Vec<String>) {
        // The hang's last stderr lines go after its stack, once (in every place the line goes).
        let tail = std::mem::take(&mut self.hang_tail);
        let text = if tail.is_empty() {
            text
        } else {
            format!("{text}\n{}", forensics::tail_text(&tail))
        };
        if self.origin.is_none() || !self.ctx.output.on_terminal() {
            tracing::error!("{text}");
        }
        self.fire_hooks(hooks::HookEvent {
            kind: crate::config::hooks::HookKind::Hang,
            pid: self.stack_pid(),
            exit: None,
            message: &text,
            stack: &stack,
            stderr: &tail,
        });
        let detail = Detail {
            pid: self.stack_pid(),
            exit: None,
            stack,
        };
        self.record_with("stack", text.clone(), detail);
        // An app with its stderr discarded gets no log file for it, not even for this line.
        let discarded = self.spec.discards_stderr() && !self.ctx.output.on_terminal();
        if let Some(origin) = self.origin.as_ref().filter(|_| !discarded) {
            for line in text.lines() {
                self.ctx
                    .output
                    .note(origin, format!("[nodeguard] {line}"))
                    .await;
            }
        }
    }

    pub(super) fn record(&mut self, kind: &str, message: String) {
        self.record_with(kind, message, Detail::default());
    }

    /// [`Self::record`], with the report's fields for the event bus.
    pub(super) fn record_with(&mut self, kind: &str, message: String, detail: Detail) {
        self.announce(Happening::Report {
            kind: kind.to_string(),
            message: message.clone(),
            detail,
        });
        self.remember(AppEvent {
            at: timestamp(SystemTime::now()),
            kind: kind.to_string(),
            message,
        });
    }

    /// Logs a report and keeps it in the event history: one rendering, two places.
    pub(super) fn log(&mut self, report: Report) {
        let mut rendered = render(&report, &self.spec.timing);
        let oom = match (&report, &self.oom) {
            (Report::Exited { status, .. }, Some(oom)) => {
                // `signal SIGKILL after 2.0s; …` → `signal SIGKILL (killed by the kernel OOM
                // killer) after 2.0s; …`, in the log, describe and status alike.
                let status = status.to_string();
                rendered.text =
                    rendered
                        .text
                        .replacen(&status, &format!("{status} ({})", oom.text()), 1);
                if let Some(last) = &mut self.machine.last_exit {
                    *last = last.replacen(&status, &format!("{status} ({})", oom.text()), 1);
                }
                rendered.level = Level::Error;
                true
            }
            _ => false,
        };
        if let Some((kind, pid, exit)) = hooks::hook_kind(&report, oom) {
            self.fire_hooks(hooks::HookEvent {
                kind,
                pid,
                exit,
                message: &rendered.history_line(),
                stack: &[],
                stderr: &[],
            });
        }
        let pid = rendered.pid;
        let text = &rendered.text;
        match rendered.level {
            Level::Info => tracing::info!(pid, "{text}"),
            Level::Warn => tracing::warn!(pid, "{text}"),
            Level::Error => tracing::error!(pid, "{text}"),
        }
        let exit = match &report {
            Report::Exited { status, .. } | Report::Stopped { status, .. } => Some(*status),
            _ => None,
        };
        let detail = Detail {
            pid,
            exit,
            stack: Vec::new(),
        };
        let mut line = rendered.history_line();
        if rendered.kind == "memory" {
            if let Some(note) = self.memory_note.take() {
                tracing::warn!(pid, "{note}");
                line = format!("{line}; {note}");
            }
        }
        if oom {
            self.record_with("oom", line.clone(), detail.clone());
        }
        self.record_with(rendered.kind, line, detail);
    }
}

/// How loud a report is in the supervisor's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    Info,
    Warn,
    Error,
}

/// A report as people read it, in the log and in `describe` alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rendered {
    /// The event history's name for it (see `AppEvent::kind`).
    pub(super) kind: &'static str,
    pub(super) level: Level,
    /// The process it is about, if one.
    pub(super) pid: Option<u32>,
    /// One line, without the pid.
    pub(super) text: String,
}

impl Rendered {
    /// The line kept in the event history: the text, after the pid when there is one.
    pub(super) fn history_line(&self) -> String {
        match self.pid {
            Some(pid) => format!("pid {pid}: {}", self.text),
            None => self.text.clone(),
        }
    }
}

/// The one rendering of every report (the log line and the history entry are both made from it).
pub(super) fn render(report: &Report, timing: &Timing) -> Rendered {
    let (kind, level, pid, text) = match report {
        Report::Started { pid } => ("started", Level::Info, Some(*pid), "started".to_string()),
        Report::Ready { pid, after } => (
            "ready",
            Level::Info,
            Some(*pid),
            format!("ready after {}", human(*after)),
        ),
        Report::NotReady { pid, waited } => (
            "not_ready",
            Level::Error,
            Some(*pid),
            format!(
                "not ready within {} (no listen on the shared socket, or no monitor.ready() or \
                 process.send('ready') with wait-ready); killed",
                human(*waited)
            ),
        ),
        Report::Exited {
            pid,
            status,
            uptime,
            restart_in,
        } => (
            "exited",
            Level::Warn,
            Some(*pid),
            match restart_in {
                Some(delay) if delay.is_zero() => {
                    format!("{status} after {}; restarted at once", human(*uptime))
                }
                Some(delay) => format!(
                    "{status} after {}; restart in {} (backoff)",
                    human(*uptime),
                    human(*delay)
                ),
                None => format!("{status} after {}", human(*uptime)),
            },
        ),
        Report::Hung {
            pid,
            silent_for,
            misses,
            evidence,
            ..
        } => (
            "hung",
            Level::Error,
            Some(*pid),
            format!(
                "event loop silent for {} ({misses} heartbeats missed; {}); killed and restarted",
                human(*silent_for),
                evidence_text(*evidence)
            ),
        ),
        Report::HangDisproved { misses, queued_for } => (
            "hang_disproved",
            Level::Warn,
            None,
            format!(
                "{misses} heartbeats missed, but {}: not a hang",
                disproof_text(*queued_for)
            ),
        ),
        Report::StackTimeout { pid } => (
            "stack_timeout",
            Level::Warn,
            Some(*pid),
            format!(
                "no stack within {} of SIGINT; sent SIGKILL",
                human(STACK_TIMEOUT)
            ),
        ),
        Report::InterruptTimeout { pid } => (
            "stack_timeout",
            Level::Warn,
            Some(*pid),
            format!(
                "the JS thread took no interrupt within {} (blocked outside JavaScript); sent \
                 SIGKILL",
                human(INTERRUPT_STACK_TIMEOUT)
            ),
        ),
        Report::KillTimeout { pid } => (
            "kill_timeout",
            Level::Warn,
            Some(*pid),
            format!(
                "still running {} after SIGTERM; sent SIGKILL",
                human(timing.kill_timeout)
            ),
        ),
        Report::Stopped { pid, status } => (
            "stopped",
            Level::Info,
            Some(*pid),
            format!("stopped ({status})"),
        ),
        Report::SpawnFailed { error } => ("spawn_failed", Level::Error, None, error.clone()),
        Report::MemoryExceeded { pid, rss, limit } => (
            "memory",
            Level::Warn,
            Some(*pid),
            format!(
                "rss {} over the limit of {}; restarting gracefully",
                bytes(*rss),
                bytes(*limit)
            ),
        ),
        Report::GaveUp { restarts, window } => (
            "errored",
            Level::Error,
            None,
            format!(
                "{restarts} failures within {}: over the restart budget; not restarting until an \
                 operator does",
                human(*window)
            ),
        ),
        Report::Unmonitored => (
            "unmonitored",
            Level::Warn,
            None,
            format!(
                "no monitor connected within {}; hang detection is off for this process",
                human(timing.start_grace)
            ),
        ),
        Report::LateCheckVoided { late_by } => (
            "late_check",
            Level::Warn,
            None,
            format!(
                "supervisor ran {} late; a heartbeat check was voided",
                human(*late_by)
            ),
        ),
    };
    Rendered {
        kind,
        level,
        pid,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::exit::ExitKind;

    const MS: Duration = Duration::from_millis(1);

    /// Each report's kind, level and history line, as one table: the log line and `describe` are
    /// both made from this rendering, so they cannot drift apart.
    #[test]
    fn every_report_renders_once_with_its_kind_level_and_line() {
        let timing = Timing {
            heartbeat_interval: 1_000 * MS,
            heartbeat_timeout: 1_000 * MS,
            heartbeat_misses: 3,
            start_grace: 2_000 * MS,
            kill_timeout: 5_000 * MS,
            policy: crate::core::machine::RestartPolicy::default(),
        };
        let table: Vec<(Report, &str, Level, &str)> = vec![
            (Report::Started { pid: 7 }, "started", Level::Info, "pid 7: started"),
            (
                Report::Ready { pid: 7, after: 120 * MS },
                "ready",
                Level::Info,
                "pid 7: ready after 120ms",
            ),
            (
                Report::Exited {
                    pid: 7,
                    status: ExitKind::Code(4),
                    uptime: 338 * MS,
                    restart_in: Some(100 * MS),
                },
                "exited",
                Level::Warn,
                "pid 7: exit code 4 after 338ms; restart in 100ms (backoff)",
            ),
            (
                Report::Exited {
                    pid: 7,
                    status: ExitKind::Code(1),
                    uptime: 2_000 * MS,
                    restart_in: Some(Duration::ZERO),
                },
                "exited",
                Level::Warn,
                "pid 7: exit code 1 after 2.0s; restarted at once",
            ),
            (
                Report::Hung {
                    pid: 7,
                    silent_for: 800 * MS,
                    misses: 3,
                    evidence: HangEvidence::NoAnswer,
                    stack: StackPlan::ProcessUnresponsive,
                },
                "hung",
                Level::Error,
                "pid 7: event loop silent for 800ms (3 heartbeats missed; the monitor's own thread \
                 did not answer either); killed and restarted",
            ),
            (
                Report::HangDisproved {
                    misses: 3,
                    queued_for: None,
                },
                "hang_disproved",
                Level::Warn,
                "3 heartbeats missed, but the monitor had no ping waiting for JS: not a hang",
            ),
            (
                Report::InterruptTimeout { pid: 7 },
                "stack_timeout",
                Level::Warn,
                "pid 7: the JS thread took no interrupt within 1.0s (blocked outside JavaScript); \
                 sent SIGKILL",
            ),
            (
                Report::KillTimeout { pid: 7 },
                "kill_timeout",
                Level::Warn,
                "pid 7: still running 5.0s after SIGTERM; sent SIGKILL",
            ),
            (
                Report::MemoryExceeded {
                    pid: 7,
                    rss: 300 << 20,
                    limit: 200 << 20,
                },
                "memory",
                Level::Warn,
                "pid 7: rss 300.0M over the limit of 200.0M; restarting gracefully",
            ),
            (
                Report::GaveUp {
                    restarts: 11,
                    window: 60_000 * MS,
                },
                "errored",
                Level::Error,
                "11 failures within 1m00s: over the restart budget; not restarting until an \
                 operator does",
            ),
            (
                Report::Unmonitored,
                "unmonitored",
                Level::Warn,
                "no monitor connected within 2.0s; hang detection is off for this process",
            ),
            (
                Report::SpawnFailed {
                    error: "cannot start node: No such file or directory".into(),
                },
                "spawn_failed",
                Level::Error,
                "cannot start node: No such file or directory",
            ),
        ];
        for (report, kind, level, line) in table {
            let rendered = render(&report, &timing);
            assert_eq!(
                (
                    rendered.kind,
                    rendered.level,
                    rendered.history_line().as_str()
                ),
                (kind, level, line),
                "{report:?}"
            );
        }
    }
}
