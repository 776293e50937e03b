//! How a process ended (`Code` or `Signal`, never pre-folded into 128+N) and human-readable
//! durations for log lines.

use std::fmt;
use std::time::Duration;

/// The end of a process, as the OS reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl ExitKind {
    /// From a std exit status.
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = status.signal() {
                return ExitKind::Signal(signal);
            }
        }
        ExitKind::Code(status.code().unwrap_or(-1))
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::Code(code) => write!(f, "exit code {code}"),
            ExitKind::Signal(signal) => match signal_name(*signal) {
                Some(name) => write!(f, "signal {name}"),
                None => write!(f, "signal {signal}"),
            },
        }
    }
}

/// The conventional name of a common signal number (Linux and macOS agree on these).
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// `850ms`, `3.2s`, `4m05s`, `2h03m`: short and unambiguous.
pub fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else if ms < 3_600_000 {
        let secs = duration.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        let mins = duration.as_secs() / 60;
        format!("{}h{:02}m", mins / 60, mins % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(3_240)), "3.2s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
        assert_eq!(human(Duration::from_secs(7_380)), "2h03m");
    }

    #[test]
    fn exits_name_their_cause() {
        assert_eq!(ExitKind::Code(3).to_string(), "exit code 3");
        assert_eq!(ExitKind::Signal(9).to_string(), "signal SIGKILL");
        assert_eq!(ExitKind::Signal(31).to_string(), "signal 31");
    }
}
