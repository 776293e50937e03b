//! The web dashboard on the `--http` address: `GET /` is one self-contained page (HTML, CSS and
//! JS inline, compiled into the binary), `GET /events` a server-sent-events stream of status
//! snapshots (one a second) and of every bus event as it happens, and, only with a token
//! configured (`--http-token-file`), `POST /api/{restart,reload,stop}/<target>` with
//! `Authorization: Bearer <token>`.
//!
//! Costs nothing while no page is open: there is no timer, no bus listener and no buffer until a
//! stream connects, and each stream owns its own. Streams have their own cap (so they never take
//! the places probes need), a write deadline (a client that does not read is dropped), and never
//! block supervision (the bus is a broadcast ring: a listener that falls behind skips events).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use nodeguard_proto::control::{Command, Outcome, Target};

use crate::io::health::{Probe, PROBE_DEADLINE};

/// The page, with `{{NONCE}}` where its script and style tags take the response's nonce.
const PAGE: &str = include_str!("dashboard.html");
/// Event streams served at once (each asks the supervisor for a snapshot once a second).
pub const MAX_STREAMS: usize = 8;
/// How often a stream sends a status snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// A stream's client must take each message within this time, or it is dropped.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write action may take (a restart waits for the new process to run).
const ACTION_DEADLINE: Duration = Duration::from_secs(60);
/// Recent events sent to a page when it connects.
const HISTORY: usize = 60;

/// Token lengths accepted from `--http-token-file`.
const MIN_TOKEN: usize = 16;
const MAX_TOKEN: usize = 512;

/// What the bus gives a stream: an event (as a JSON object), a count of events it missed, or the
/// end.
pub enum Next {
    Event(String),
    Lagged(u64),
    Closed,
}

/// One stream's view of the supervisor's event bus (which this layer cannot name; the
/// supervisor hands a [`Subscribe`] in).
pub trait EventStream: Send {
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Next> + Send + '_>>;
}

/// Subscribes a new stream to the bus.
pub type Subscribe = Arc<dyn Fn() -> Box<dyn EventStream> + Send + Sync>;

/// The dashboard's share of the HTTP endpoint.
#[derive(Clone)]
pub struct Dashboard {
    pub subscribe: Subscribe,
    /// Write actions are served only with a token.
    pub token: Option<Arc<Token>>,
    streams: Arc<Semaphore>,
}

impl Dashboard {
    pub fn new(subscribe: Subscribe, token: Option<Arc<Token>>) -> Self {
        Self {
            subscribe,
            token,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }

    /// A place for one more event stream, if any is free.
    pub fn stream_place(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }
}

/// The bearer token for write actions. Its `Debug` does not show it.
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Whether `given` is the token, in time that does not depend on where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let mut difference = u8::from(given.len() != self.0.len());
        for (index, byte) in self.0.iter().enumerate() {
            difference |= byte ^ given.get(index).copied().unwrap_or(0);
        }
        difference == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--http-token-file {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("--http-token-file {0}: is a symbolic link; give the file itself")]
    Symlink(String),
    #[error("--http-token-file {0}: not a regular file")]
    NotFile(String),
    #[error("--http-token-file {0}: open to other users (mode {1:o}); chmod 600 it")]
    Open(String, u32),
    #[error("--http-token-file {0}: owned by another user")]
    Owner(String),
    #[error(
        "--http-token-file {0}: the token must be one line of {MIN_TOKEN} to {MAX_TOKEN} visible \
         ASCII characters (e.g. from `openssl rand -hex 32`)"
    )]
    Format(String),
}

/// Reads the token from a private file: a regular file of the current user, not a symlink,
/// readable by no one else, holding one line of visible ASCII.
pub fn read_token_file(path: &Path, uid: u32) -> Result<Token, TokenError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                TokenError::Symlink(shown.clone())
            } else {
                TokenError::Io {
                    path: shown.clone(),
                    source,
                }
            }
        })?;
    let io_error = |source| TokenError::Io {
        path: shown.clone(),
        source,
    };
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(TokenError::NotFile(shown));
    }
    if metadata.uid() != uid {
        return Err(TokenError::Owner(shown));
    }
    if metadata.mode() & 0o077 != 0 {
        return Err(TokenError::Open(shown, metadata.mode() & 0o777));
    }
    let mut text = Vec::new();
    let limit = u64::try_from(MAX_TOKEN + 2).unwrap_or(u64::MAX);
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, limit), &mut text)
        .map_err(io_error)?;
    while text.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        text.pop();
    }
    if text.len() < MIN_TOKEN || text.len() > MAX_TOKEN || !text.iter().all(u8::is_ascii_graphic) {
        return Err(TokenError::Format(shown));
    }
    Ok(Token(text))
}

/// A fresh nonce for the page's inline script and style (Content-Security-Policy).
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Without randomness the nonce still only has to differ from what an attacker could
        // inject, and nothing is injected into the page; the time keeps it changing.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = now.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Headers every dashboard response carries: no sniffing, no framing, no referrer. No CORS
/// header is ever sent, so other origins cannot read anything.
pub const COMMON_HEADERS: &str = "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nCross-Origin-Resource-Policy: same-origin\r\n";

/// The page and its extra headers (the Content-Security-Policy with this response's nonce).
pub fn page() -> (String, String) {
    let nonce = nonce();
    let body = PAGE.replace("{{NONCE}}", &nonce);
    let headers = format!(
        "Content-Security-Policy: default-src 'none'; script-src 'nonce-{nonce}'; style-src \
         'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'\r\n{COMMON_HEADERS}"
    );
    (body, headers)
}

/// Whether a request's `Host` names this machine by address (or `localhost`): a page on
/// another site whose name was made to resolve to this address (DNS rebinding) sends its own
/// name and is refused. A reverse proxy must pass the upstream's address as `Host` (nginx does by
/// default).
pub fn host_allowed(host: Option<&str>) -> bool {
    let Some(host) = host.map(str::trim) else {
        // HTTP/1.0 clients may send none; a browser always does.
        return true;
    };
    if let Ok(address) = host.parse::<std::net::SocketAddr>() {
        return !address.ip().is_unspecified();
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

/// A write action's answer: status and JSON body.
pub async fn action(
    dashboard: &Dashboard,
    path: &str,
    authorization: Option<&str>,
    probe: &Probe,
) -> (u16, String) {
    let error =
        |status, message: &str| (status, serde_json::json!({ "error": message }).to_string());
    let Some(token) = &dashboard.token else {
        return error(
            403,
            "write actions are off: start the daemon with --http-token-file to allow them",
        );
    };
    let given = authorization
        .and_then(|value| value.trim().strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if !token.matches(given.as_bytes()) {
        return error(401, "missing or wrong bearer token");
    }
    let Some(rest) = path.strip_prefix("/api/") else {
        return error(404, "not found");
    };
    let Some((verb, target)) = rest.split_once('/') else {
        return error(404, "not found: POST /api/{restart,reload,stop}/<app>");
    };
    let Some(target) = percent_decode(target).filter(|t| !t.is_empty() && t.len() <= 256) else {
        return error(400, "bad target");
    };
    let target = Target(target);
    let command = match verb {
        "restart" => Command::Restart {
            target,
            update_env: None,
        },
        "reload" => Command::Reload {
            target,
            update_env: None,
        },
        "stop" => Command::Stop { target },
        _ => return error(404, "not found: POST /api/{restart,reload,stop}/<app>"),
    };
    match probe.command(command, ACTION_DEADLINE).await {
        None => error(503, "the supervision loop did not answer in time"),
        Some(Outcome::Error { message }) => error(409, &message),
        Some(Outcome::Done { apps } | Outcome::Reloaded { apps, .. }) => {
            (200, serde_json::json!({ "apps": apps }).to_string())
        }
        Some(_) => error(500, "unexpected answer"),
    }
}

/// `%XX`-decodes a path segment; `None` if it is malformed or not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Serves one event stream until the client goes, falls behind, or `cancel` fires.
pub async fn stream(
    mut stream: TcpStream,
    dashboard: &Dashboard,
    probe: &Probe,
    cancel: &CancellationToken,
) {
    // Subscribed before the first snapshot, so nothing falls between the two.
    let mut events = (dashboard.subscribe)();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n{COMMON_HEADERS}\r\nretry: 2000\n\n"
    );
    let hello = serde_json::json!({ "actions": dashboard.token.is_some() }).to_string();
    let mut first = head;
    first.push_str(&message("hello", &hello));
    if let Some(history) = history(probe).await {
        first.push_str(&message("history", &history));
    }
    if !send(&mut stream, &first).await {
        return;
    }
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sink = [0u8; 512];
    loop {
        let text = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            read = stream.read(&mut sink) => match read {
                // The client went away (what it sends otherwise is ignored).
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            next = events.next() => match next {
                Next::Event(json) => message("event", &json),
                Next::Lagged(missed) => {
                    tracing::debug!(missed, "dashboard: a stream fell behind the event bus");
                    message("lagged", &missed.to_string())
                }
                Next::Closed => return,
            },
            _ = tick.tick() => match probe.statuses(PROBE_DEADLINE).await {
                Some(apps) => match status_json(&apps) {
                    Some(json) => message("status", &json),
                    None => continue,
                },
                None => message("unanswered", "{}"),
            },
        };
        if !send(&mut stream, &text).await {
            return;
        }
    }
}

/// The status rows as the page gets them: without the script's path (the page does not show
/// it, and the dashboard exposes no paths beyond what stacks name).
fn status_json(apps: &[nodeguard_proto::control::AppStatus]) -> Option<String> {
    let mut value = serde_json::to_value(apps).ok()?;
    if let Some(rows) = value.as_array_mut() {
        for row in rows {
            if let Some(row) = row.as_object_mut() {
                row.remove("script");
            }
        }
    }
    Some(value.to_string())
}

/// One server-sent event (the data is one line of JSON).
fn message(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// Writes within the deadline; `false` when the client is gone or too slow (then dropped).
async fn send(stream: &mut TcpStream, text: &str) -> bool {
    match tokio::time::timeout(STREAM_WRITE_TIMEOUT, stream.write_all(text.as_bytes())).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "dashboard: writing to a stream failed");
            false
        }
        Err(_) => {
            tracing::debug!("dashboard: a stream's client did not read in time; dropped");
            false
        }
    }
}

/// The most recent events of every app (as `describe` keeps them), oldest first, as a JSON array
/// of `{app, id, instance, at, kind, message}`.
async fn history(probe: &Probe) -> Option<String> {
    let described = match probe
        .command(
            Command::Describe {
                target: Target("all".to_string()),
            },
            PROBE_DEADLINE,
        )
        .await?
    {
        Outcome::Described { apps } => apps,
        _ => return Some("[]".to_string()),
    };
    let mut events: Vec<serde_json::Value> = described
        .iter()
        .flat_map(|app| {
            app.events.iter().map(|event| {
                serde_json::json!({
                    "app": app.status.name,
                    "id": app.status.id,
                    "instance": app.status.instance,
                    "at": event.at,
                    "kind": event.kind,
                    "message": event.message,
                })
            })
        })
        .collect();
    events.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
    let skip = events.len().saturating_sub(HISTORY);
    serde_json::to_string(&events[skip..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let token = Token(b"0123456789abcdef".to_vec());
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn hosts_must_be_addresses() {
        assert!(host_allowed(Some("127.0.0.1:9615")));
        assert!(host_allowed(Some("[::1]:9615")));
        assert!(host_allowed(Some("localhost:9615")));
        assert!(host_allowed(Some("10.0.0.2")));
        assert!(host_allowed(None));
        assert!(!host_allowed(Some("evil.example:9615")));
        assert!(!host_allowed(Some("evil.example")));
    }

    #[test]
    fn targets_are_percent_decoded() {
        assert_eq!(percent_decode("my%20app").as_deref(), Some("my app"));
        assert_eq!(percent_decode("api").as_deref(), Some("api"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn the_page_carries_its_nonce() {
        let (body, headers) = page();
        let nonce = headers
            .split("'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(body.contains(&format!("<script nonce=\"{nonce}\">")));
        assert!(!body.contains("{{NONCE}}"));
        assert!(!body.contains("src=\"http") && !body.contains("href=\"http"));
    }
}
