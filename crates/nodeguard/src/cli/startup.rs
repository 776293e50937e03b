//! `nodeguard startup systemd`: the user unit that runs the daemon as a notify service and brings
//! back the saved apps.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `WatchdogSec=` of the unit `startup systemd` writes.
pub const UNIT_WATCHDOG_SEC: u64 = 30;
/// The unit's file name.
pub const UNIT_NAME: &str = "nodeguard.service";

/// What the unit file says.
#[derive(Debug, Clone)]
pub struct UnitSettings {
    /// Absolute path of the nodeguard binary.
    pub exe: PathBuf,
    /// Absolute path of the nodeguard home.
    pub home: PathBuf,
    /// `PATH` for the supervisor and its apps (a user manager's default is minimal).
    pub path_env: Option<String>,
    /// `--http ADDR` for the daemon, if wanted.
    pub http: Option<String>,
    /// The saved apps' names, for a comment.
    pub saved_apps: Vec<String>,
    /// The state file they are saved in.
    pub state_file: PathBuf,
    /// For a system unit (`--system --user NAME`): the account the daemon runs as.
    pub system_user: Option<String>,
}

/// Why no unit can be written for these settings.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(
        "the {what} path {path} holds a control character (a newline?): a unit file cannot name \
         it safely; use a path without one"
    )]
    ControlCharacter { what: &'static str, path: String },
    #[error(
        "'{0}' is not a user name a unit can hold (letters, digits, '.', '_' and '-'; not \
         starting with '-')"
    )]
    UserName(String),
}

/// Whether `name` is a user name systemd's `User=` takes as it is (the portable subset).
fn plain_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The system unit's file name for `user` (`nodeguard-<user>.service`, as PM2's `pm2-<user>`).
pub fn system_unit_name(user: &str) -> String {
    format!("nodeguard-{user}.service")
}

/// Where a system unit goes.
pub fn system_unit_path(user: &str) -> PathBuf {
    Path::new("/etc/systemd/system").join(system_unit_name(user))
}

/// A systemd user unit that runs the supervisor in the foreground as a notify service and brings
/// back the saved apps. Paths with control characters are refused: a newline in the home would
/// otherwise end a comment line and inject unit directives.
pub fn unit(settings: &UnitSettings) -> Result<String, UnitError> {
    for (what, path) in [
        ("nodeguard binary", &settings.exe),
        ("home", &settings.home),
        ("state file", &settings.state_file),
    ] {
        let text = path.to_string_lossy();
        if text.chars().any(char::is_control) {
            return Err(UnitError::ControlCharacter {
                what,
                path: text.escape_debug().to_string(),
            });
        }
    }
    if let Some(user) = &settings.system_user {
        if !plain_user_name(user) {
            return Err(UnitError::UserName(user.escape_debug().to_string()));
        }
    }
    // Saved names come from a file: quoted so that none can break out of its comment line.
    let saved_apps: Vec<String> = settings
        .saved_apps
        .iter()
        .map(|name| name.escape_debug().to_string())
        .collect();
    let mut exec = vec![
        exec_word(&settings.exe.to_string_lossy()),
        "daemon".to_string(),
        "--resurrect".to_string(),
        "--home".to_string(),
        exec_word(&settings.home.to_string_lossy()),
    ];
    if let Some(http) = &settings.http {
        exec.push("--http".to_string());
        exec.push(exec_word(http));
    }
    let saved = if settings.saved_apps.is_empty() {
        format!(
            "# No apps are saved in {} yet: add them with `nodeguard start` (the daemon saves its\n\
             # app list on every change).",
            settings.state_file.display()
        )
    } else {
        format!(
            "# Brings back the {} app(s) saved in {}: {}.",
            saved_apps.len(),
            settings.state_file.display(),
            saved_apps.join(", ")
        )
    };
    let (whose, user_line, wanted_by) = match &settings.system_user {
        Some(user) => (
            format!(
                "{user} (a system unit), written by `nodeguard startup systemd --system --user \
                 {user}`"
            ),
            format!("User={user}\n"),
            "multi-user.target",
        ),
        None => (
            "this user, written by `nodeguard startup systemd`".to_string(),
            String::new(),
            "default.target",
        ),
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# nodeguard supervisor for {whose}.\n\
         {saved}\n\
         # Type=notify: the daemon runs in the foreground, sends READY=1 once the apps have\n\
         # started, and keeps the watchdog fed while its supervision loop answers.\n\
         \n\
         [Unit]\n\
         Description=nodeguard: supervised Node.js apps\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         {user_line}\
         ExecStart={}\n\
         Restart=on-failure\n\
         RestartSec=2s\n\
         WatchdogSec={UNIT_WATCHDOG_SEC}s\n\
         # SIGTERM to nodeguard alone: it stops every app itself (SIGTERM, then SIGKILL after the\n\
         # kill timeout); whatever is left when TimeoutStopSec runs out is killed.\n\
         KillMode=mixed\n\
         TimeoutStopSec=60s",
        exec.join(" ")
    );
    if let Some(path) = &settings.path_env {
        let _ = writeln!(text, "Environment={}", exec_word(&format!("PATH={path}")));
    }
    let _ = writeln!(text, "\n[Install]\nWantedBy={wanted_by}");
    Ok(text)
}

/// One word of a unit-file command line or assignment: `%` and `$` escaped (specifiers and
/// variable expansion), and quoted when it holds whitespace, quotes or backslashes.
fn exec_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let needs_quotes = escaped.is_empty()
        || escaped
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | ';'));
    if !needs_quotes {
        return escaped;
    }
    let mut quoted = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\n' => quoted.push_str("\\n"),
            // Any other control character as a C escape: never a raw line break in the unit.
            c if c.is_ascii_control() => {
                let _ = write!(quoted, "\\x{:02x}", u32::from(c));
            }
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Where a user unit goes: `$XDG_CONFIG_HOME/systemd/user/` or `~/.config/systemd/user/`.
pub fn user_unit_path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(|home| Path::new(&home).join(".config"))
        })?;
    Some(config.join("systemd").join("user").join(UNIT_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> UnitSettings {
        UnitSettings {
            exe: PathBuf::from("/opt/node guard/nodeguard"),
            home: PathBuf::from("/home/ann/.nodeguard"),
            path_env: Some("/usr/local/bin:/usr/bin".into()),
            http: Some("127.0.0.1:9615".into()),
            saved_apps: vec!["api".into(), "worker".into()],
            state_file: PathBuf::from("/home/ann/.nodeguard/dump.json"),
            system_user: None,
        }
    }

    #[test]
    fn a_system_unit_runs_as_the_user_and_starts_with_the_system() {
        let settings = UnitSettings {
            system_user: Some("ann".into()),
            ..settings()
        };
        let text = unit(&settings).expect("a unit");
        for line in ["User=ann", "WantedBy=multi-user.target"] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let bad = UnitSettings {
            system_user: Some("ann\nExecStartPre=/bin/evil".into()),
            ..settings
        };
        assert!(matches!(unit(&bad), Err(UnitError::UserName(_))));
    }

    #[test]
    fn the_unit_runs_the_daemon_as_a_notify_service() {
        let text = unit(&settings()).expect("a unit for plain paths");
        for line in [
            "Type=notify",
            "ExecStart=\"/opt/node guard/nodeguard\" daemon --resurrect --home /home/ann/.nodeguard --http 127.0.0.1:9615",
            "Restart=on-failure",
            "WatchdogSec=30s",
            "KillMode=mixed",
            "Environment=PATH=/usr/local/bin:/usr/bin",
            "WantedBy=default.target",
            "# Brings back the 2 app(s) saved in /home/ann/.nodeguard/dump.json: api, worker.",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn unit_words_are_escaped() {
        assert_eq!(exec_word("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(exec_word("/a b"), "\"/a b\"");
        assert_eq!(exec_word("100%"), "100%%");
        assert_eq!(exec_word("$HOME"), "$$HOME");
        assert_eq!(exec_word("a\"b"), "\"a\\\"b\"");
    }
}
