//! Event hooks (`--on-event`, `on_event`): which events run which command or POST to which URL.
//!
//! One hook is written `KINDS=TARGET`: `KINDS` a comma-separated list of event kinds (or `all`),
//! optionally with `timeout:DUR` among them (the hook's own deadline, 10 s when not given),
//! `TARGET` a command line (split as a POSIX shell would split it, quotes and backslashes
//! included, then run without a shell) or an `http://` URL the event is POSTed to as JSON.

use std::fmt;
use std::time::Duration;

/// The longest `timeout:` a hook may have.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a hook can be run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// The app exited without being asked to (a non-zero code or a signal); an OOM kill too.
    Crash,
    /// The app's event loop hung (the event carries the stack and the last stderr lines).
    Hang,
    /// The restart budget is spent: the app rests errored.
    Errored,
    /// The memory guard restarts the app (its tree's RSS passed the limit).
    Memory,
    /// The kernel's OOM killer killed the app or a process in its tree.
    Oom,
    /// A process of the app started.
    Start,
    /// The app was stopped on request.
    Stop,
    /// The app exited with code 0 on its own.
    Exit,
}

impl HookKind {
    pub const ALL: [HookKind; 8] = [
        HookKind::Crash,
        HookKind::Hang,
        HookKind::Errored,
        HookKind::Memory,
        HookKind::Oom,
        HookKind::Start,
        HookKind::Stop,
        HookKind::Exit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HookKind::Crash => "crash",
            HookKind::Hang => "hang",
            HookKind::Errored => "errored",
            HookKind::Memory => "memory",
            HookKind::Oom => "oom",
            HookKind::Start => "start",
            HookKind::Stop => "stop",
            HookKind::Exit => "exit",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == text)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Where a hook sends the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookTarget {
    /// A program and its arguments, run without a shell.
    Command(Vec<String>),
    /// `http://host:port/path`: the event is POSTed as JSON.
    Url {
        /// `host` or `host:port`, for the Host header.
        authority: String,
        host: String,
        port: u16,
        /// The path and query, `/` at least.
        path: String,
    },
}

/// One hook: the kinds it runs for and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    kinds: u16,
    pub target: HookTarget,
    /// `timeout:DUR`, if given.
    pub timeout: Option<Duration>,
    /// As written, for the wire and `describe`.
    pub text: String,
}

/// Most hooks one app may have.
pub const MAX_HOOKS: usize = 16;

impl HookSpec {
    /// Parses `KINDS=TARGET` (see the module's doc).
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = "write KINDS=COMMAND or KINDS=http://HOST:PORT/PATH, KINDS being a \
                     comma-separated list of crash, hang, errored, memory, oom, start, stop, exit \
                     (or all), and timeout:DUR if 10s is not right";
        let Some((kinds_text, target_text)) = text.split_once('=') else {
            return Err(format!("on_event {text:?}: no '=': {usage}"));
        };
        let mut kinds = 0u16;
        let mut timeout = None;
        for word in kinds_text.split(',').map(str::trim) {
            if let Some(duration) = word.strip_prefix("timeout:") {
                let duration = crate::core::duration::parse_duration(duration)
                    .map_err(|why| format!("on_event {text:?}: timeout: {why}"))?;
                if duration.is_zero() || duration > MAX_TIMEOUT {
                    return Err(format!(
                        "on_event {text:?}: timeout must be more than 0 and at most 1h"
                    ));
                }
                timeout = Some(duration);
                continue;
            }
            if word == "all" || word == "*" {
                kinds = HookKind::ALL.iter().fold(0, |bits, kind| bits | kind.bit());
                continue;
            }
            match HookKind::parse(word) {
                Some(kind) => kinds |= kind.bit(),
                None => {
                    return Err(format!(
                        "on_event {text:?}: unknown event kind {word:?}: {usage}"
                    ))
                }
            }
        }
        let target_text = target_text.trim();
        let target = if let Some(rest) = target_text.strip_prefix("http://") {
            parse_url(rest).map_err(|why| format!("on_event {text:?}: {why}"))?
        } else if target_text.starts_with("https://") {
            return Err(format!(
                "on_event {text:?}: https is not built in (nodeguard carries no TLS stack); use a \
                 command hook such as `hang=curl -sS --data-binary @- -H 'content-type: \
                 application/json' https://...` (the event is on its stdin)"
            ));
        } else {
            let words = shell_words::split(target_text)
                .map_err(|error| format!("on_event {text:?}: {error}"))?;
            if words.is_empty() {
                return Err(format!("on_event {text:?}: no command after '=': {usage}"));
            }
            HookTarget::Command(words)
        };
        if kinds == 0 {
            return Err(format!("on_event {text:?}: no event kind: {usage}"));
        }
        Ok(Self {
            kinds,
            timeout,
            target,
            text: text.to_string(),
        })
    }

    /// Whether this hook runs for `kind` (a `crash` hook runs for OOM kills too: they are
    /// crashes).
    pub fn wants(&self, kind: HookKind) -> bool {
        self.kinds & kind.bit() != 0
            || (kind == HookKind::Oom && self.kinds & HookKind::Crash.bit() != 0)
    }
}

impl fmt::Display for HookSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses an app's hooks, in order; at most [`MAX_HOOKS`].
pub fn parse_all(texts: &[String]) -> Result<Vec<HookSpec>, String> {
    if texts.len() > MAX_HOOKS {
        return Err(format!(
            "on_event: {} hooks; at most {MAX_HOOKS} per app",
            texts.len()
        ));
    }
    texts.iter().map(|text| HookSpec::parse(text)).collect()
}

/// `host[:port][/path]` after `http://`.
fn parse_url(rest: &str) -> Result<HookTarget, String> {
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("a URL needs a host (and no user:password@)".into());
    }
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return Err("the URL's path holds spaces or control characters".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err("an IPv6 host needs its closing ']'".into());
        };
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("bad port {port:?}"))?,
        None => 80,
    };
    if host.is_empty() || host.chars().any(|c| c.is_control() || c == ' ') {
        return Err("a URL needs a host".into());
    }
    Ok(HookTarget::Url {
        authority: authority.to_string(),
        host,
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_parse_into_kinds_and_targets() {
        let hook = HookSpec::parse("crash,hang=./notify.sh --to 'ops team'").unwrap();
        assert!(hook.wants(HookKind::Crash) && hook.wants(HookKind::Hang));
        assert!(hook.wants(HookKind::Oom), "an OOM kill is a crash");
        assert!(!hook.wants(HookKind::Start));
        assert_eq!(
            hook.target,
            HookTarget::Command(vec!["./notify.sh".into(), "--to".into(), "ops team".into()])
        );
        let hook = HookSpec::parse("hang=http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(
            hook.target,
            HookTarget::Url {
                authority: "127.0.0.1:9000".into(),
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/hook?x=1".into()
            }
        );
        let hook = HookSpec::parse("all=http://[::1]").unwrap();
        assert!(HookKind::ALL.iter().all(|kind| hook.wants(*kind)));
        assert!(matches!(hook.target, HookTarget::Url { port: 80, ref path, .. } if path == "/"));
        assert!(!HookSpec::parse("oom=x").unwrap().wants(HookKind::Crash));
        let hook = HookSpec::parse("crash, timeout:2s=./slow.sh").unwrap();
        assert_eq!(hook.timeout, Some(Duration::from_secs(2)));
        assert!(hook.wants(HookKind::Crash));
    }

    #[test]
    fn bad_hooks_are_refused_with_the_reason() {
        for (text, says) in [
            ("./notify.sh", "no '='"),
            ("crash,boom=./x", "unknown event kind \"boom\""),
            ("crash=", "no command"),
            ("crash=https://example.com/", "https is not built in"),
            ("crash=http://:80/", "host"),
            ("crash=http://h:99999/", "bad port"),
            ("crash=./x 'open", "missing closing quote"),
            ("timeout:2s=./x", "no event kind"),
            ("crash,timeout:0s=./x", "more than 0"),
            ("crash,timeout:soon=./x", "timeout"),
        ] {
            let error = HookSpec::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        let many = vec!["crash=x".to_string(); MAX_HOOKS + 1];
        assert!(parse_all(&many).is_err());
    }
}
