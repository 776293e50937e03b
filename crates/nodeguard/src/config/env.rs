//! What environment an app sees: the caller's environment captured by `start` (minus what belongs
//! to the caller alone), dotenv files read as Node's own `--env-file` reads them, the layers put
//! together in their one order of precedence, and secret-looking values masked for display.
//!
//! Precedence, lowest first (README, "Environment"): the caller's environment, `env_file`, the
//! config's `env`, its `env_<name>` (with `--env <name>`), `--env-file` on the command line; the
//! variables nodeguard sets for its monitor come last and cannot be overridden.

use std::path::{Path, PathBuf};

/// One variable: name and value.
pub type Var = (String, String);

/// Variables of the caller's environment that an app is not given: each belongs to the process
/// that ran `nodeguard start` (its shell, its service manager, its Node parent) or to nodeguard's
/// own monitor protocol, and would mislead or break the app.
pub const NOT_PASSED: &[&str] = &[
    // nodeguard sets these for the monitor at every spawn; a caller that is itself a supervised
    // app must not hand its own on (its listen sockets are not the new app's).
    "NODEGUARD_SOCKET",
    "NODEGUARD_TOKEN",
    "NODEGUARD_APP",
    "NODEGUARD_INSTANCE",
    "NODEGUARD_LISTEN",
    "NODEGUARD_WAIT_READY",
    "NODEGUARD_KILL_TIMEOUT_MS",
    "NODEGUARD_SPAWN",
    "NODEGUARD_CONFIG_MARKER",
    // systemd's per-service variables: the watchdog and notify socket are nodeguard's, the
    // sockets and journal stream are not the app's.
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
    // A Node parent's IPC channel and cluster role (nodeguard run from child_process.fork or PM2):
    // the app would try to open a channel that is not there.
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NODE_UNIQUE_ID",
    // The shell's: the last command's path (nodeguard itself) and its directories. PWD is set to
    // the app's own working directory instead.
    "_",
    "PWD",
    "OLDPWD",
];

/// The calling process's environment as an app is given it: every variable but [`NOT_PASSED`]
/// and those whose name or value is not UTF-8 (returned by name, to warn about).
pub fn caller_env() -> (Vec<Var>, Vec<String>) {
    filter_caller(std::env::vars_os())
}

/// [`caller_env`] over any list of variables, sorted by name.
pub fn filter_caller(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> (Vec<Var>, Vec<String>) {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for (name, value) in vars {
        match (name.into_string(), value.into_string()) {
            (Ok(name), _) if NOT_PASSED.contains(&name.as_str()) => {}
            (Ok(name), Ok(value)) => kept.push((name, value)),
            (Ok(name), Err(_)) => skipped.push(name),
            (Err(name), _) => skipped.push(name.to_string_lossy().into_owned()),
        }
    }
    kept.sort();
    (kept, skipped)
}

/// What PM2's `filter_env: true` still passes: the system's basics.
pub const BASICS: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// The caller's variables less those PM2's `filter_env` leaves out: names starting with one of
/// `prefixes`; the empty prefix (`filter_env: true`) leaves out all but [`BASICS`] and `LC_*`.
pub fn filtered(caller: &[Var], prefixes: Option<&[String]>) -> Vec<Var> {
    let Some(prefixes) = prefixes.filter(|p| !p.is_empty()) else {
        return caller.to_vec();
    };
    let dropped = |name: &str| {
        prefixes.iter().any(|prefix| {
            name.starts_with(prefix.as_str())
                && !(prefix.is_empty() && (BASICS.contains(&name) || name.starts_with("LC_")))
        })
    };
    caller
        .iter()
        .filter(|(name, _)| !dropped(name))
        .cloned()
        .collect()
}

/// `layers` put together, later ones winning; a variable keeps the place where it first appeared.
pub fn layered<'a>(layers: impl IntoIterator<Item = &'a [Var]>) -> Vec<Var> {
    let mut out: Vec<Var> = Vec::new();
    for layer in layers {
        for (name, value) in layer {
            match out.iter_mut().find(|(known, _)| known == name) {
                Some(slot) => slot.1.clone_from(value),
                None => out.push((name.clone(), value.clone())),
            }
        }
    }
    out
}

/// Why an env file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read env file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Content {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Reads and parses a dotenv file (see [`parse_dotenv`]).
pub fn read_env_file(path: &Path) -> Result<Vec<Var>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_dotenv(&text).map_err(|(line, problem)| EnvFileError::Content {
        path: path.to_path_buf(),
        line,
        problem,
    })
}

/// Parses a dotenv file's text as Node's `--env-file` does: `KEY=VALUE` lines, an optional
/// `export ` before the key, `#` comments (whole lines, or after an unquoted value), blank lines
/// and lines without `=` skipped; values trimmed, or quoted with `"`, `'` or `` ` `` (a quoted
/// value may span lines; in `"…"`, `\n` is a newline; an unclosed quote is kept as written, to the
/// end of its line). A later line wins over an earlier one. The one refusal: a NUL character,
/// which no environment can hold (`Err((line, problem))`).
pub fn parse_dotenv(text: &str) -> Result<Vec<Var>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace('\r', "");
    let len = text.len();
    let mut vars: Vec<Var> = Vec::new();
    let mut pos = 0;
    while pos < len {
        let line_end = text[pos..].find('\n').map_or(len, |i| pos + i);
        let line = &text[pos..line_end];
        let line_start = pos;
        pos = line_end + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some(equals) = line.find('=') else {
            continue;
        };
        let mut key = line[..equals].trim();
        if let Some(bare) = key.strip_prefix("export ") {
            key = bare.trim();
        }
        if key.is_empty() {
            continue;
        }
        let after_equals = &text[line_start + equals + 1..line_end];
        let value_start = line_end - after_equals.trim_start().len();
        let rest = &text[value_start..];
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'' | '`')) => match rest[1..].find(quote) {
                // The closing quote may be on a later line: the value spans lines.
                Some(end) => {
                    let body = &rest[1..=end];
                    let closing = value_start + 1 + end;
                    pos = text[closing..].find('\n').map_or(len, |i| closing + i + 1);
                    if quote == '"' {
                        body.replace("\\n", "\n")
                    } else {
                        body.to_string()
                    }
                }
                // Never closed: kept as written, to the end of the line.
                None => text[value_start..line_end].trim_end().to_string(),
            },
            _ => {
                let bare = &text[value_start..line_end];
                bare.split('#')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            }
        };
        if key.contains('\0') || value.contains('\0') {
            let line_no = text[..line_start].matches('\n').count().saturating_add(1);
            return Err((
                line_no,
                "a NUL character cannot be in the environment".into(),
            ));
        }
        match vars.iter_mut().find(|(known, _)| known == key) {
            Some(slot) => slot.1 = value,
            None => vars.push((key.to_string(), value)),
        }
    }
    Ok(vars)
}

/// Whether a variable's name says it holds a secret: it contains TOKEN, SECRET, PASS (PASSWORD,
/// PASSPHRASE), KEY, AUTH, CREDENTIAL or PRIVATE, in any case.
pub fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASS",
        "KEY",
        "AUTH",
        "CREDENTIAL",
        "PRIVATE",
    ]
    .iter()
    .any(|word| upper.contains(word))
}

/// What is shown in place of a secret.
pub const MASK: &str = "****";

/// A variable's value as shown without `--reveal`: all of it masked when the name looks secret
/// or the value holds a private key, only the password when it is a URL with credentials
/// (`postgres://user:****@host/db`), else as it is.
pub fn shown_value(name: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    if secret_name(name) || value.contains("PRIVATE KEY") {
        return MASK.to_string();
    }
    mask_url_password(value).unwrap_or_else(|| value.to_string())
}

/// `scheme://user:password@host…` with the password masked; `None` if the value holds no such
/// URL.
fn mask_url_password(value: &str) -> Option<String> {
    let scheme_end = value.find("://")?;
    let authority_start = scheme_end + 3;
    let authority_len = value[authority_start..]
        .find(['/', '?', '#', ' '])
        .unwrap_or(value.len() - authority_start);
    let authority = &value[authority_start..authority_start + authority_len];
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    let colon = userinfo.find(':')?;
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    if password_start >= password_end {
        return None;
    }
    Some(format!(
        "{}{MASK}{}",
        &value[..password_start],
        &value[password_end..]
    ))
}

/// How one variable differs between two environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        name: String,
        value: String,
    },
    Changed {
        name: String,
        from: String,
        to: String,
    },
    Removed {
        name: String,
    },
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Added { name, .. }
            | Change::Changed { name, .. }
            | Change::Removed { name } => name,
        }
    }
}

impl std::fmt::Display for Change {
    /// One line, values masked as [`shown_value`] masks them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added { name, value } => {
                write!(f, "{name} added ({})", display(&shown_value(name, value)))
            }
            Change::Changed { name, from, to } if secret_name(name) => {
                write!(f, "{name} changed (values hidden)")
            }
            Change::Changed { name, from, to } => write!(
                f,
                "{name} changed ({} -> {})",
                display(&shown_value(name, from)),
                display(&shown_value(name, to))
            ),
            Change::Removed { name } => write!(f, "{name} removed"),
        }
    }
}

/// A value as one line: quoted (JSON style) when it holds control characters or is empty.
pub fn display(value: &str) -> String {
    if value.is_empty() || value.chars().any(char::is_control) {
        serde_json::Value::String(value.to_string()).to_string()
    } else {
        value.to_string()
    }
}

/// The variables that differ between `before` and `after`, by name.
pub fn diff(before: &[Var], after: &[Var]) -> Vec<Change> {
    let find = |vars: &[Var], name: &str| {
        vars.iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.clone())
    };
    let mut changes = Vec::new();
    for (name, value) in after {
        match find(before, name) {
            None => changes.push(Change::Added {
                name: name.clone(),
                value: value.clone(),
            }),
            Some(old) if &old != value => changes.push(Change::Changed {
                name: name.clone(),
                from: old,
                to: value.clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, _) in before {
        if find(after, name).is_none() {
            changes.push(Change::Removed { name: name.clone() });
        }
    }
    changes.sort_by(|a, b| a.name().cmp(b.name()));
    changes
}

/// Checks a list of variables from a client or a state file: names not empty and without `=`
/// or NUL, values without NUL (`what` names the list in the message).
pub fn check_vars(what: &str, vars: &[Var]) -> Result<(), String> {
    for (name, value) in vars {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("{what}: invalid variable name {name:?}"));
        }
        if value.contains('\0') {
            return Err(format!("{what}: {name} holds a NUL character"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<Var> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dotenv_reads_what_node_reads() {
        let text = "\u{feff}# a comment\n\
                    BASIC=basic\n\
                    \n\
                    export EXPORTED = yes \n\
                    SPACED =  padded value  \n\
                    INLINE=value # trailing comment\n\
                    DOUBLE=\"say \\\"hi\\n there # not a comment\"\n\
                    SINGLE='single # kept \\n'\n\
                    BACKTICK=`it's \"both\"`\n\
                    EMPTY=\n\
                    NOEQUALS\n\
                    =novalue\n\
                    URL=postgres://u:p@h/db?x=1\n\
                    MULTI=\"first\n\
                    second\"\n\
                    UNCLOSED='abc\n\
                    CRLF=yes\r\n\
                    BASIC=overridden\n";
        let parsed = parse_dotenv(text).expect("parses");
        let get = |name: &str| {
            parsed
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("BASIC"), Some("overridden"));
        assert_eq!(get("EXPORTED"), Some("yes"));
        assert_eq!(get("SPACED"), Some("padded value"));
        assert_eq!(get("INLINE"), Some("value"));
        // As Node: a double-quoted value ends at the next double quote (no escapes but \n).
        assert_eq!(get("DOUBLE"), Some("say \\"));
        assert_eq!(get("SINGLE"), Some("single # kept \\n"));
        assert_eq!(get("BACKTICK"), Some("it's \"both\""));
        assert_eq!(get("EMPTY"), Some(""));
        assert_eq!(get("NOEQUALS"), None);
        assert_eq!(get("URL"), Some("postgres://u:p@h/db?x=1"));
        assert_eq!(get("MULTI"), Some("first\nsecond"));
        assert_eq!(get("UNCLOSED"), Some("'abc"));
        assert_eq!(get("CRLF"), Some("yes"));
        assert_eq!(parsed.iter().filter(|(k, _)| k == "BASIC").count(), 1);
    }

    #[test]
    fn dotenv_double_quotes_expand_newlines_and_a_nul_is_refused() {
        let parsed = parse_dotenv("A=\"one\\ntwo\"\nB=after").expect("parses");
        assert_eq!(parsed, vars(&[("A", "one\ntwo"), ("B", "after")]));
        assert_eq!(
            parse_dotenv("A=1\nB=x\0y\n").unwrap_err().0,
            2,
            "the line of the NUL"
        );
    }

    #[test]
    fn layers_later_win_and_keep_first_place() {
        let caller = vars(&[("A", "caller"), ("B", "caller"), ("C", "caller")]);
        let config = vars(&[("B", "config"), ("D", "config")]);
        let cli = vars(&[("C", "cli")]);
        assert_eq!(
            layered([&caller[..], &config[..], &cli[..]]),
            vars(&[
                ("A", "caller"),
                ("B", "config"),
                ("C", "cli"),
                ("D", "config")
            ])
        );
    }

    #[test]
    fn the_callers_own_variables_are_not_passed() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let os = |text: &str| OsString::from(text);
        let (kept, skipped) = filter_caller([
            (os("PATH"), os("/bin")),
            (os("NOTIFY_SOCKET"), os("/run/x")),
            (os("_"), os("/usr/bin/nodeguard")),
            (os("NODEGUARD_TOKEN"), os("t")),
            (os("NODEGUARD_HOME"), os("/h")),
            (os("BAD"), OsString::from_vec(vec![0xff])),
            (os("FOO"), os("bar")),
        ]);
        assert_eq!(
            kept,
            vars(&[("FOO", "bar"), ("NODEGUARD_HOME", "/h"), ("PATH", "/bin")])
        );
        assert_eq!(skipped, ["BAD"]);
    }

    #[test]
    fn filter_env_drops_prefixes_or_all_but_the_basics() {
        let caller = vars(&[
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("AWS_KEY", "k"),
            ("NODE_ENV", "dev"),
        ]);
        assert_eq!(filtered(&caller, None), caller);
        assert_eq!(filtered(&caller, Some(&[])), caller);
        let aws = ["AWS_".to_string()];
        assert_eq!(
            filtered(&caller, Some(&aws)),
            vars(&[("PATH", "/bin"), ("LC_ALL", "C"), ("NODE_ENV", "dev")])
        );
        let all = [String::new()];
        assert_eq!(
            filtered(&caller, Some(&all)),
            vars(&[("PATH", "/bin"), ("LC_ALL", "C")])
        );
    }

    #[test]
    fn secrets_are_masked_for_display() {
        assert_eq!(shown_value("API_TOKEN", "abc"), MASK);
        assert_eq!(shown_value("db_password", "abc"), MASK);
        assert_eq!(shown_value("STRIPE_KEY", "sk"), MASK);
        assert_eq!(shown_value("AWS_SECRET_ACCESS_KEY", "s"), MASK);
        assert_eq!(shown_value("GOOGLE_CREDENTIALS", "{}"), MASK);
        assert_eq!(shown_value("BASIC_AUTH", "u:p"), MASK);
        assert_eq!(shown_value("NODE_ENV", "production"), "production");
        assert_eq!(
            shown_value("DATABASE_URL", "postgres://app:hunter2@db:5432/app"),
            "postgres://app:****@db:5432/app"
        );
        assert_eq!(
            shown_value("REDIS", "redis://:pw@localhost:6379"),
            "redis://:****@localhost:6379"
        );
        assert_eq!(
            shown_value("HOMEPAGE", "https://user@example.com/a:b@c"),
            "https://user@example.com/a:b@c"
        );
        assert_eq!(
            shown_value("CERT", "-----BEGIN PRIVATE KEY-----\nabc"),
            MASK
        );
        assert_eq!(shown_value("API_TOKEN", ""), "");
    }

    #[test]
    fn diff_names_what_changed() {
        let before = vars(&[("A", "1"), ("B", "2"), ("API_TOKEN", "x")]);
        let after = vars(&[("A", "1"), ("B", "3"), ("C", "4"), ("API_TOKEN", "y")]);
        let lines: Vec<String> = diff(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "API_TOKEN changed (values hidden)",
                "B changed (2 -> 3)",
                "C added (4)",
            ]
        );
        let lines: Vec<String> = diff(&after, &before)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "API_TOKEN changed (values hidden)",
                "B changed (3 -> 2)",
                "C removed"
            ]
        );
    }

    #[test]
    fn bad_variables_from_a_client_are_refused() {
        assert!(check_vars("env", &vars(&[("A", "1")])).is_ok());
        assert!(check_vars("env", &vars(&[("", "1")])).is_err());
        assert!(check_vars("env", &vars(&[("A=B", "1")])).is_err());
        assert!(check_vars("env", &vars(&[("A", "1\u{0}2")])).is_err());
    }
}
