//! The optional HTTP endpoint (`--http ADDR`): `/healthz`, `/readyz` and `/metrics` for
//! Kubernetes probes and Prometheus, and the web dashboard (`/`, `/events`, `/api/...`, see
//! dashboard.rs). A deliberately small HTTP/1.x responder on tokio's
//! `TcpListener` (one GET per connection, `Connection: close`) rather than a full HTTP stack, to
//! keep the supervisor's binary and memory small. Every request is bounded in size and time, and
//! the number of connections served at once is capped, so garbage, oversized or slow clients cost
//! little and cannot stall anything else. At the cap, the oldest connection that has not sent its
//! whole request yet is closed to make room: idle connections can never starve a probe. A
//! dashboard event stream gives its place back as soon as its request is in and takes one of
//! the dashboard's own (see dashboard.rs), so open pages never take a probe's place either.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::io::admission::{Admission, Admitted};
use crate::io::dashboard::{self, Dashboard};
use crate::io::health::{self, Probe, PROBE_DEADLINE};
use crate::io::metrics;

/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client must send its whole request head within this time (a probe sends it at once).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A client must take the answer within this time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and how many bytes, a closing connection's leftover input is read and dropped.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// Connections served at once. A new one beyond them closes the oldest connection still waiting
/// for its request, or, when every one is busy answering, is closed itself (see admission.rs).
const MAX_CONNECTIONS: usize = 32;
/// Pause after a failed accept (such as running out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Binds the HTTP endpoint's address. Through std with a resolved address, so that tokio's
/// name-resolution machinery stays out of the binary.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Serves requests until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    probe: Probe,
    dashboard: Dashboard,
    cancel: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(
            "serving /healthz, /readyz and /metrics on http://{address}, and the dashboard at \
             http://{address}/ ({})",
            if dashboard.token.is_some() {
                "write actions allowed with the token"
            } else {
                "read-only"
            }
        );
    }
    let admission = Admission::new(MAX_CONNECTIONS, "http");
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "http: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let Some(admitted) = admission.admit().await else {
            continue;
        };
        let probe = probe.clone();
        let cancel = cancel.clone();
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = answer(stream, &probe, &dashboard, admitted, &cancel) => {}
            }
        });
    }
}

/// An HTTP response: status, content type and body.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Extra header lines, each ending in `\r\n`.
    headers: String,
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Self {
            status,
            content_type: TEXT,
            body,
            headers: String::new(),
        }
    }

    fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
            headers: dashboard::COMMON_HEADERS.to_string(),
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    probe: &Probe,
    dashboard: &Dashboard,
    admitted: Admitted,
    cancel: &CancellationToken,
) {
    let head = tokio::select! {
        biased;
        // Closed to make room for a newer connection.
        () = admitted.evicted() => return,
        head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)) => head,
    };
    admitted.received();
    let response = match head {
        Err(_) => Response::text(408, "request not received in time"),
        Ok(Err(error)) => {
            tracing::debug!(%error, "http: reading a request failed");
            return;
        }
        Ok(Ok(Head::TooLarge)) => Response::text(431, "request head too large"),
        Ok(Ok(Head::Closed)) => return,
        Ok(Ok(Head::Complete(head))) => match parse_request_line(&head) {
            Err(response) => response,
            Ok(request) => {
                if request.path == "/events" && request.method == Method::Get {
                    if !dashboard::host_allowed(header(&head, "host")) {
                        return write(&mut stream, &wrong_host(), false).await;
                    }
                    // A stream holds a place of the dashboard's own, not one of the probes'.
                    let Some(place) = dashboard.stream_place() else {
                        let busy = Response::text(503, "too many dashboard streams open");
                        return write(&mut stream, &busy, false).await;
                    };
                    drop(admitted);
                    dashboard::stream(stream, dashboard, probe, cancel).await;
                    drop(place);
                    return;
                }
                let response = route(&request, &head, probe, dashboard).await;
                return write(&mut stream, &response, request.method == Method::Head).await;
            }
        },
    };
    write(&mut stream, &response, false).await;
}

enum Head {
    /// The request head, up to its blank line.
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed before sending a whole head.
    Closed,
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(Head::Closed);
        }
        // Only the new bytes (and the three before them) can complete the blank line.
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head_end(&head[scan_from..]) {
            head.truncate(scan_from + end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the head ends (the index just past its blank line), accepting bare `\n` line ends.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
}

struct Request<'a> {
    path: &'a str,
    method: Method,
}

/// The value of the first header named `name` (lowercase), if the head has it.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim_matches([' ', '\t', '\r']))
    })
}

fn wrong_host() -> Response {
    Response::text(
        421,
        "the dashboard answers only requests addressed to an IP address or localhost",
    )
}

fn parse_request_line(head: &[u8]) -> Result<Request<'_>, Response> {
    let bad = || Response::text(400, "bad request");
    let line_end = head.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| bad())?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(505, "only HTTP/1.x is served"));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        // POST only for the dashboard's write actions.
        "POST" if target.starts_with("/api/") => Method::Post,
        _ => return Err(Response::text(405, "only GET and HEAD are served")),
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request { path, method })
}

async fn route(
    request: &Request<'_>,
    head: &[u8],
    probe: &Probe,
    dashboard: &Dashboard,
) -> Response {
    let path = request.path;
    if request.method == Method::Post {
        if !dashboard::host_allowed(header(head, "host")) {
            return wrong_host();
        }
        let (status, body) =
            dashboard::action(dashboard, path, header(head, "authorization"), probe).await;
        let mut response = Response::json(status, body);
        if status == 401 {
            response.headers.push_str("WWW-Authenticate: Bearer\r\n");
        }
        return response;
    }
    match path {
        "/" | "/index.html" => {
            if !dashboard::host_allowed(header(head, "host")) {
                return wrong_host();
            }
            let (body, headers) = dashboard::page();
            Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body,
                headers,
            }
        }
        "/healthz" => {
            if probe.alive(PROBE_DEADLINE).await {
                Response::text(200, "ok")
            } else {
                Response::text(503, not_answering())
            }
        }
        "/readyz" => match probe.statuses(PROBE_DEADLINE).await {
            None => Response::text(503, not_answering()),
            Some(apps) => match health::readiness(&apps) {
                Ok(()) => Response::text(200, "ready"),
                Err(why) => Response::text(503, format!("not ready:\n{why}")),
            },
        },
        "/metrics" => match probe.statuses(PROBE_DEADLINE).await {
            None => Response::text(503, not_answering()),
            Some(apps) => Response {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: metrics::render(&apps),
                headers: String::new(),
            },
        },
        _ => Response::text(404, "not found: try /, /healthz, /readyz or /metrics"),
    }
}

fn not_answering() -> String {
    format!("the supervision loop did not answer within {PROBE_DEADLINE:?}")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

async fn write(stream: &mut TcpStream, response: &Response, head_only: bool) {
    let mut text = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
    );
    if response.status == 405 {
        text.push_str("Allow: GET, HEAD\r\n");
    }
    text.push_str(&response.headers);
    text.push_str("\r\n");
    if !head_only {
        text.push_str(&response.body);
    }
    let sent = async {
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, sent).await {
        Ok(Ok(())) => linger(stream).await,
        Ok(Err(error)) => tracing::debug!(%error, "http: writing a response failed"),
        Err(_) => tracing::debug!("http: the client did not take the response in time"),
    }
}

/// Reads and drops what the client still sends, briefly, before the connection closes: closing
/// with unread input makes the kernel reset the connection, which can destroy the response
/// before the client has read it (after a 431, say).
async fn linger(stream: &mut TcpStream) {
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_by_name() {
        let head =
            b"POST /api/x HTTP/1.1\r\nHost: 127.0.0.1:1\r\nauthorization:  Bearer abc \r\n\r\n";
        assert_eq!(header(head, "host"), Some("127.0.0.1:1"));
        assert_eq!(header(head, "authorization"), Some("Bearer abc"));
        assert_eq!(header(head, "cookie"), None);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn request_lines_are_checked() {
        let ok = parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
            .ok()
            .unwrap();
        assert_eq!(ok.path, "/metrics");
        assert_eq!(ok.method, Method::Get);
        assert_eq!(
            parse_request_line(b"HEAD /healthz HTTP/1.0\r\n\r\n")
                .ok()
                .unwrap()
                .method,
            Method::Head
        );
        let status = |line: &[u8]| parse_request_line(line).err().map(|r| r.status);
        assert_eq!(status(b"PUT /healthz HTTP/1.1\r\n\r\n"), Some(405));
        assert_eq!(status(b"POST /healthz HTTP/1.1\r\n\r\n"), Some(405));
        assert_eq!(
            parse_request_line(b"POST /api/restart/x HTTP/1.1\r\n\r\n")
                .ok()
                .unwrap()
                .method,
            Method::Post
        );
        assert_eq!(status(b"GET /healthz HTTP/2.0\r\n\r\n"), Some(505));
        assert_eq!(status(b"GET /healthz\r\n\r\n"), Some(400));
        assert_eq!(status(b"\xff\xfe garbage\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET  /healthz HTTP/1.1\r\n\r\n"), Some(400));
    }
}
