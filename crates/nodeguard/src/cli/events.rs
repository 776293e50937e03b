//! `nodeguard events [target] [--json]`: the supervisor's live event stream, one line per event
//! (NDJSON with `--json`), flushed as each comes.

use std::io::Write;

use nodeguard_proto::control::{Command, EventRecord, Target};

use crate::io::control_client::{self, ClientError};
use crate::io::framed::FrameError;
use crate::io::home::HomePaths;

/// How a stream that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The supervisor went away (stopped, killed, or crashed).
    SupervisorGone,
    /// Our stdout closed (a pipe into `head`), or Ctrl-C.
    Stopped,
}

/// Streams the target's events (every app's with none) to stdout until the supervisor goes away,
/// stdout closes or Ctrl-C. No supervisor, an unknown target or another protocol: an error.
pub async fn follow(
    paths: &HomePaths,
    target: Option<String>,
    json: bool,
) -> Result<End, ClientError> {
    let command = Command::Events {
        target: target.map(Target),
    };
    let mut stdout_gone = false;
    let print = |record: EventRecord| {
        let text = if json {
            serde_json::to_string(&record).unwrap_or_default()
        } else {
            line(&record)
        };
        let mut out = std::io::stdout().lock();
        let written = writeln!(out, "{text}").and_then(|()| out.flush());
        stdout_gone = written.is_err();
        !stdout_gone
    };
    let outcome = tokio::select! {
        outcome = control_client::request_stream(paths, command, print) => outcome,
        _ = tokio::signal::ctrl_c() => return Ok(End::Stopped),
    };
    if stdout_gone {
        return Ok(End::Stopped);
    }
    match outcome {
        // A stream has no final outcome but an error; anything else ends it all the same.
        Ok(_) => Ok(End::SupervisorGone),
        Err(error) if supervisor_gone(&error) => Ok(End::SupervisorGone),
        Err(error) => Err(error),
    }
}

/// Whether the connection ended the way a supervisor going away ends it.
fn supervisor_gone(error: &ClientError) -> bool {
    control_client::cut_off(error) || matches!(error, ClientError::Frame(FrameError::Truncated))
}

/// One event as people read it: time, app (`name:instance` in cluster mode), kind, then what is
/// known; a hang's stack follows, one frame per line.
pub fn line(record: &EventRecord) -> String {
    let who = match (record.app.as_str(), record.instance) {
        ("", _) => "-".to_string(),
        (app, Some(instance)) => format!("{app}:{instance}"),
        (app, None) => app.to_string(),
    };
    let mut details = Vec::new();
    if let Some(state) = record.state {
        details.push(state.as_str().to_string());
    }
    if record.kind == "state" {
        if let Some(pid) = record.pid {
            details.push(format!("pid {pid}"));
        }
        match (record.restarts, record.hangs) {
            (Some(restarts), Some(hangs)) if restarts > 0 || hangs > 0 => {
                details.push(format!("restarts {restarts} hangs {hangs}"));
            }
            _ => {}
        }
    }
    if let Some(message) = &record.message {
        details.push(message.clone());
    }
    let mut text = format!("{} {who} {} {}", record.at, record.kind, details.join(" "));
    text.truncate(text.trim_end().len());
    for frame in &record.stack {
        text.push_str("\n    at ");
        text.push_str(frame);
    }
    // One event, one line (and its frames): nothing in an app's message may start another.
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hang_prints_its_stack_under_its_line() {
        let record = EventRecord {
            at: "2026-11-29T23:00:00.000Z".into(),
            app: "api".into(),
            id: 0,
            instance: Some(1),
            kind: "stack".into(),
            pid: Some(7),
            message: Some("hung 1.0s in spin (app.js:3:1)\u{1b}[2J".into()),
            stack: vec!["spin (app.js:3:1)".into(), "main (app.js:9:1)".into()],
            ..EventRecord::default()
        };
        assert_eq!(
            line(&record),
            "2026-11-29T23:00:00.000Z api:1 stack hung 1.0s in spin (app.js:3:1) [2J\n    at \
             spin (app.js:3:1)\n    at main (app.js:9:1)"
        );
    }
}
