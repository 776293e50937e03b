//! ANSI colour for `status` and `describe`: only when stdout is a terminal, `NO_COLOR` is unset
//! (or empty) and `--no-color` was not given, so pipes and scripts always read plain text.

use std::io::IsTerminal;

use nodeguard_proto::control::AppState;

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const BOLD_YELLOW: &str = "\x1b[1;33m";
const BOLD_RED: &str = "\x1b[1;31m";

/// Whether output to stdout gets colour.
pub fn wanted(no_color: bool) -> bool {
    !no_color
        && !matches!(std::env::var_os("NO_COLOR"), Some(value) if !value.is_empty())
        && std::io::stdout().is_terminal()
}

/// The escape that starts a state's colour.
pub fn state_code(state: AppState) -> &'static str {
    match state {
        AppState::Running => GREEN,
        AppState::Starting | AppState::Stopping | AppState::Backoff => YELLOW,
        AppState::Errored => RED,
        AppState::Stopped => DIM,
    }
}

/// `text` in `code`'s colour when `on`.
pub fn paint(text: &str, code: &str, on: bool) -> String {
    if on && !code.is_empty() {
        format!("{code}{text}{RESET}")
    } else {
        text.to_string()
    }
}

/// A state's name in its colour.
pub fn state(state: AppState, on: bool) -> String {
    paint(state.as_str(), state_code(state), on)
}

/// The colour of a restart count: none at 0, bold yellow otherwise.
pub fn restarts_code(count: u64) -> &'static str {
    if count == 0 {
        ""
    } else {
        BOLD_YELLOW
    }
}

/// The colour of a hang count: none at 0, bold red otherwise.
pub fn hangs_code(count: u64) -> &'static str {
    if count == 0 {
        ""
    } else {
        BOLD_RED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_when_on() {
        assert_eq!(state(AppState::Running, false), "running");
        assert_eq!(state(AppState::Running, true), "\x1b[32mrunning\x1b[0m");
        assert_eq!(paint("0", restarts_code(0), true), "0");
        assert_eq!(paint("2", hangs_code(2), true), "\x1b[1;31m2\x1b[0m");
    }
}
