//! Restart policy and timing: which exits restart, how soon (backoff), when to give up (the
//! restart budget), the memory limit, and every default, each with its reason.

use std::time::Duration;

/// Default `min_uptime`: an uptime at least this long means the process was healthy, and its next
/// restart is immediate (after `restart_delay`, if set).
pub const STABLE_UPTIME: Duration = Duration::from_secs(1);
/// Default first delay after a quick crash; it doubles with every further quick crash.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest delay between restarts of a crash-looping app.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A heartbeat check that runs at least this late (or half the timeout, if larger) is voided.
pub const LATE_TOLERANCE_FLOOR: Duration = Duration::from_millis(50);

/// Longest wait for a hung process to print its JS stack after SIGINT before SIGKILL.
pub const STACK_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest wait for the stack the monitor captures through V8's interrupt: the JS thread takes the
/// interrupt at its next loop back-edge or call, within microseconds while it runs JavaScript;
/// past this it is blocked outside JavaScript (a native or synchronous call) and is killed.
pub const INTERRUPT_STACK_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for the monitor's native thread to answer a probe (or the heartbeat timeout, if
/// shorter). It answers within microseconds unless the whole process is frozen.
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_millis(500);

/// How `last_exit` begins when a process could not be started at all.
pub const SPAWN_FAILED: &str = "spawn failed";

/// Default restart budget: more restarts than this within [`DEFAULT_RESTART_WINDOW`] mark the
/// app errored.
pub const DEFAULT_MAX_RESTARTS: u32 = 10;
/// Default window of the restart budget.
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Default time between heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default time a ping may stay unanswered before it counts as a miss.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive misses that declare a worker hung.
pub const DEFAULT_HEARTBEAT_MISSES: u32 = 3;
/// Default time a new worker has before its first pong is due.
pub const DEFAULT_START_GRACE: Duration = Duration::from_secs(5);
/// Default time between SIGTERM and SIGKILL when stopping.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Which exits restart the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autorestart {
    /// Every exit nobody asked for.
    Always,
    /// Every exit but a clean one (an exit code in the policy's clean codes, by default 0).
    OnFailure,
    /// None: an exited app stays stopped.
    Never,
}

impl Autorestart {
    /// From `always`, `on-failure` or `never`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(Autorestart::Always),
            "on-failure" => Ok(Autorestart::OnFailure),
            "never" => Ok(Autorestart::Never),
            // Quoted as Rust escapes it, so a newline in a file's value cannot split the message.
            other => Err(format!(
                "{other:?} is not an autorestart mode (use always, on-failure or never)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Autorestart::Always => "always",
            Autorestart::OnFailure => "on-failure",
            Autorestart::Never => "never",
        }
    }
}

/// A set of exit codes, 0 to 255.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCodes([u64; 4]);

impl Default for ExitCodes {
    /// Just 0.
    fn default() -> Self {
        Self([1, 0, 0, 0])
    }
}

impl ExitCodes {
    pub fn contains(self, code: i32) -> bool {
        u8::try_from(code).is_ok_and(|code| self.0[usize::from(code / 64)] >> (code % 64) & 1 == 1)
    }

    /// The set of `codes`; an error names the first one out of 0–255.
    pub fn from_codes(codes: impl IntoIterator<Item = i64>) -> Result<Self, String> {
        let mut set = [0u64; 4];
        for code in codes {
            let code = u8::try_from(code)
                .map_err(|_| format!("{code} is not an exit code (they run from 0 to 255)"))?;
            set[usize::from(code / 64)] |= 1 << (code % 64);
        }
        Ok(Self(set))
    }

    /// From a comma-separated list such as `0,3,143`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let codes = text
            .split(',')
            .map(|part| {
                part.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{text:?} is not a list of exit codes (write e.g. 0,3)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_codes(codes)
    }

    pub fn codes(self) -> Vec<i32> {
        (0..=255).filter(|&code| self.contains(code)).collect()
    }
}

/// When to restart, how soon, when to give up, and the memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub autorestart: Autorestart,
    /// Exit codes that count as a clean stop under `on-failure`.
    pub clean_exit_codes: ExitCodes,
    /// An uptime at least this long resets the backoff (PM2's `min_uptime`).
    pub min_uptime: Duration,
    /// Delay before every restart (PM2's `restart_delay`); quick crashes wait at least the backoff.
    pub restart_delay: Duration,
    /// First backoff delay after a quick crash (PM2's `exp_backoff_restart_delay`), doubling up to
    /// [`BACKOFF_MAX`].
    pub backoff_base: Duration,
    /// More restarts than this within `restart_window` mark the app errored; 0 means no limit.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// RSS in bytes above which the app is restarted gracefully, checked at every heartbeat.
    pub max_memory: Option<u64>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            autorestart: Autorestart::Always,
            clean_exit_codes: ExitCodes::default(),
            min_uptime: STABLE_UPTIME,
            restart_delay: Duration::ZERO,
            backoff_base: BACKOFF_BASE,
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_window: DEFAULT_RESTART_WINDOW,
            max_memory: None,
        }
    }
}

/// The timing and policy knobs of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub heartbeat_misses: u32,
    pub start_grace: Duration,
    pub kill_timeout: Duration,
    pub policy: RestartPolicy,
}

impl Timing {
    /// Voiding threshold for a late heartbeat check.
    pub fn late_tolerance(&self) -> Duration {
        (self.heartbeat_timeout / 2).max(LATE_TOLERANCE_FLOOR)
    }

    /// How long a probe of the monitor's native thread may take.
    pub fn probe_timeout(&self) -> Duration {
        self.heartbeat_timeout.min(PROBE_TIMEOUT_MAX)
    }
}

/// The one set of defaults: what an app gets when neither the command line nor a config file
/// says otherwise (the CLI's `--help` shows the same values; a test ties the two together).
impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            heartbeat_misses: DEFAULT_HEARTBEAT_MISSES,
            start_grace: DEFAULT_START_GRACE,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            policy: RestartPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_mode_or_code_list_is_refused_in_one_line_whatever_it_holds() {
        let mode = Autorestart::parse("\n-failure").unwrap_err();
        assert_eq!(
            mode,
            r#""\n-failure" is not an autorestart mode (use always, on-failure or never)"#
        );
        let codes = ExitCodes::parse("0,x\ny").unwrap_err();
        assert!(!codes.contains('\n'), "{codes}");
        assert_eq!(Autorestart::parse("on-failure"), Ok(Autorestart::OnFailure));
    }
}
