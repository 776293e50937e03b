//! `status` for many apps: which rows to show (`status 'web*'`, `--state errored`) and which
//! fields `--json` prints (`--fields name,pid,state`), applied to the supervisor's answer.

use nodeguard_proto::control::{AppState, AppStatus};

/// Every field of a `status --json` row, in order.
pub const FIELDS: &[&str] = &[
    "name",
    "id",
    "instance",
    "script",
    "pid",
    "state",
    "restarts",
    "hangs",
    "uptime_ms",
    "monitored",
    "memory",
    "tree_rss",
    "processes",
    "loop_delay_ms",
    "loop_delay",
    "last_pong_ms",
    "pong_rtt_ms",
    "last_exit",
];

/// The rows and fields `status` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusFilter {
    /// A name glob (`*` any run of characters, `?` one), an exact name, or an id.
    pub pattern: Option<String>,
    pub state: Option<AppState>,
    /// With `--json`: only these fields of each row.
    pub fields: Option<Vec<String>>,
}

impl StatusFilter {
    /// Whether anything is filtered at all.
    pub fn is_empty(&self) -> bool {
        self.pattern.is_none() && self.state.is_none() && self.fields.is_none()
    }

    /// The rows this filter keeps.
    pub fn rows(&self, apps: Vec<AppStatus>) -> Vec<AppStatus> {
        apps.into_iter()
            .filter(|app| self.state.is_none_or(|state| app.state == state))
            .filter(|app| {
                self.pattern.as_deref().is_none_or(|pattern| {
                    glob_matches(pattern, &app.name) || pattern.parse::<u32>() == Ok(app.id)
                })
            })
            .collect()
    }

    /// `rows` as the JSON array `status --json` prints (one line; only `fields` when given).
    pub fn json(&self, rows: &[AppStatus]) -> serde_json::Result<String> {
        let Some(fields) = &self.fields else {
            return serde_json::to_string(rows);
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let serde_json::Value::Object(mut all) = serde_json::to_value(row)? else {
                continue;
            };
            let mut kept = serde_json::Map::new();
            for field in fields {
                if let Some(value) = all.remove(field.as_str()) {
                    kept.insert(field.clone(), value);
                }
            }
            out.push(serde_json::Value::Object(kept));
        }
        serde_json::to_string(&out)
    }
}

/// `--state`'s value.
pub fn parse_state(text: &str) -> Result<AppState, String> {
    Ok(match text {
        "starting" => AppState::Starting,
        "running" => AppState::Running,
        "stopping" => AppState::Stopping,
        "stopped" => AppState::Stopped,
        "backoff" => AppState::Backoff,
        "errored" => AppState::Errored,
        _ => {
            return Err(format!(
                "unknown state '{text}' (one of: starting, running, stopping, stopped, backoff, \
                 errored)"
            ))
        }
    })
}

/// `--fields`' value, one argument (a `Vec` would be many to clap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldList(pub Vec<String>);

/// `--fields`' value: names from [`FIELDS`], separated by commas.
pub fn parse_fields(text: &str) -> Result<FieldList, String> {
    let mut fields = Vec::new();
    for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !FIELDS.contains(&field) {
            return Err(format!(
                "unknown field '{field}' (fields: {})",
                FIELDS.join(", ")
            ));
        }
        fields.push(field.to_string());
    }
    if fields.is_empty() {
        return Err("no fields given".to_string());
    }
    Ok(FieldList(fields))
}

/// Whether `name` matches `pattern`: `*` stands for any run of characters, `?` for one, every
/// other character for itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // The classic two-pointer match with one backtrack point: linear in practice.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The `apps` array of a `status` answer as the supervisor wrote it (compact JSON), found without
/// decoding the rows: `status --json` and `jlist` of thousands of apps print it as it is (or
/// re-indented, see [`pretty`]) instead of parsing every row and writing it again. `None` for any
/// other answer (an error, another protocol version), which the caller decodes as usual.
pub fn raw_apps(payload: &[u8]) -> Option<&[u8]> {
    let prefix = format!(
        "{{\"version\":{},\"outcome\":{{\"type\":\"status\",\"apps\":",
        nodeguard_proto::PROTOCOL_VERSION
    );
    let apps = payload
        .strip_prefix(prefix.as_bytes())?
        .strip_suffix(b"}}")?;
    (apps.first() == Some(&b'[') && apps.last() == Some(&b']')).then_some(apps)
}

/// Compact JSON (as `serde_json::to_vec` writes it) re-indented exactly as
/// `serde_json::to_string_pretty` writes the same value: two spaces a level, `": "` after keys,
/// `[]` and `{}` when empty. Strings are copied as they are, escapes included.
pub fn pretty(compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len().saturating_mul(2));
    let mut depth = 0usize;
    let mut bytes = compact.iter().copied().peekable();
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.resize(out.len().saturating_add(depth.saturating_mul(2)), b' ');
    };
    while let Some(byte) = bytes.next() {
        match byte {
            b'"' => {
                out.push(byte);
                while let Some(byte) = bytes.next() {
                    out.push(byte);
                    match byte {
                        b'\\' => out.extend(bytes.next()),
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            b'{' | b'[' => {
                let close = if byte == b'{' { b'}' } else { b']' };
                out.push(byte);
                if bytes.peek() == Some(&close) {
                    bytes.next();
                    out.push(close);
                } else {
                    depth = depth.saturating_add(1);
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(byte);
            }
            b',' => {
                out.push(byte);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b' ' | b'\n' | b'\r' | b'\t' => {}
            _ => out.push(byte),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use nodeguard_proto::control::{Outcome, Response};

    fn row(name: &str, exit: Option<&str>) -> AppStatus {
        AppStatus {
            name: name.into(),
            id: 7,
            instance: Some(1),
            script: "/srv/a \"b\"\\c\u{1}é".into(),
            pid: Some(42),
            state: AppState::Running,
            restarts: 3,
            hangs: 0,
            uptime_ms: Some(1_234),
            monitored: true,
            memory: None,
            tree_rss: Some(99),
            processes: None,
            loop_delay_ms: Some(0.1 + 0.2),
            loop_delay: None,
            last_pong_ms: None,
            pong_rtt_ms: Some(1e-7),
            last_exit: exit.map(str::to_string),
            cpu_percent: Some(12.5),
        }
    }

    /// The rows found in the wire form print exactly as decoding them and printing them would.
    #[test]
    fn raw_rows_print_as_decoded_ones_would() {
        for apps in [
            Vec::new(),
            vec![row("web", Some("code 1\nthen [x]: {y}"))],
            vec![row("a", None), row("b,c", Some(""))],
        ] {
            let response = Response {
                version: nodeguard_proto::PROTOCOL_VERSION,
                outcome: Outcome::Status { apps: apps.clone() },
            };
            let payload = serde_json::to_vec(&response).expect("encodes");
            let raw = raw_apps(&payload).expect("a status answer");
            assert_eq!(raw, serde_json::to_vec(&apps).expect("encodes").as_slice());
            let printed = String::from_utf8(pretty(raw)).expect("utf-8");
            assert_eq!(
                printed,
                serde_json::to_string_pretty(&apps).expect("encodes")
            );
        }
        let error = Response {
            version: nodeguard_proto::PROTOCOL_VERSION,
            outcome: Outcome::Error {
                message: "no".into(),
            },
        };
        assert_eq!(
            raw_apps(&serde_json::to_vec(&error).expect("encodes")),
            None
        );
    }

    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob_matches("web*", "web-1"));
        assert!(glob_matches("web*", "web"));
        assert!(!glob_matches("web*", "api-web"));
        assert!(glob_matches("*web*", "api-web-2"));
        assert!(glob_matches("w?b", "web"));
        assert!(!glob_matches("w?b", "wb"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("api", "api"));
        assert!(!glob_matches("api", "api2"));
    }

    #[test]
    fn fields_and_states_are_checked() {
        assert_eq!(parse_fields("name, pid").unwrap().0, vec!["name", "pid"]);
        assert!(parse_fields("name,bogus").unwrap_err().contains("bogus"));
        assert!(parse_fields(",").is_err());
        assert_eq!(parse_state("errored").unwrap(), AppState::Errored);
        assert!(parse_state("dead").is_err());
    }
}
