//! Hang forensics: turns a hung process's JS stack into one line such as
//! `hung 3.2s in barSpin (app.js:12:5) < handler (app.js:20:3) while handling GET /search`. The
//! stack comes from the monitor (captured through V8's interrupt, see the monitor's `stack`
//! module: frames as `function (file:line:col)`, shortened by [`shorten_frames`]), or, where the
//! monitor cannot capture it, from the trace Node prints on SIGINT under `--trace-sigint`, caught
//! here from its stderr ([`StackTap`], [`parse_trace`]).
//!
//! Why SIGINT and `--trace-sigint` as the fallback: Node's SIGINT watchdog runs on its own thread and asks V8 to
//! interrupt the running JavaScript, so it prints the main thread's stack even while the event loop
//! is blocked, and then dies by SIGINT. It costs nothing until used. The alternative, an inspector
//! session held by a `worker_thread` in every app, measured about 10 MB RSS per app. The trace is
//! off while the app listens for SIGINT itself; the monitor reports that, and then nothing is
//! asked for and the event says so. When no stack comes, the line says so; nothing is guessed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// The line Node prints before the stack when SIGINT interrupts running JavaScript.
const TRACE_HEADER: &str = "KEYBOARD_INTERRUPT: Script execution was interrupted by";
/// Most stderr lines kept while a capture is armed (Node prints at most 10 frames).
const MAX_CAPTURED_LINES: usize = 64;

/// Stderr lines a hang report carries from before the hang (see [`StackTap::tail`]).
pub const TAIL_LINES: usize = 20;
/// Most bytes those lines hold together; a longer line is cut to this at a character boundary.
pub const TAIL_BYTES: usize = 4096;

/// Watches one process's stderr lines: keeps the last [`TAIL_LINES`] always (bounded by
/// [`TAIL_BYTES`]), and every line while armed.
#[derive(Debug)]
pub struct StackTap {
    armed: AtomicBool,
    lines: Mutex<Vec<String>>,
    tail: Mutex<Tail>,
    closed: watch::Sender<bool>,
}

/// The last stderr lines, whole (a line is never split across entries), oldest first.
#[derive(Debug, Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text: String = cut(&text, TAIL_BYTES)
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        if self.lines.len() >= TAIL_LINES {
            let old = self.lines.pop_front().unwrap_or_default();
            self.bytes = self.bytes.saturating_sub(old.len());
        }
        while self.bytes.saturating_add(text.len()) > TAIL_BYTES {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.len());
        }
        self.bytes = self.bytes.saturating_add(text.len());
        self.lines.push_back(text);
    }
}

impl Default for StackTap {
    fn default() -> Self {
        Self {
            armed: AtomicBool::new(false),
            lines: Mutex::new(Vec::new()),
            tail: Mutex::new(Tail::default()),
            closed: watch::Sender::new(false),
        }
    }
}

impl StackTap {
    /// Starts keeping lines: the stack is about to be asked for.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Offers one stderr line (without its newline). Cheap when not armed (one copy into the
    /// tail).
    pub fn offer(&self, line: &[u8]) {
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() < MAX_CAPTURED_LINES {
            lines.push(String::from_utf8_lossy(line).into_owned());
        }
    }

    /// The last stderr lines the process wrote (at most [`TAIL_LINES`] and [`TAIL_BYTES`]), oldest
    /// first.
    pub fn tail(&self) -> Vec<String> {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        tail.lines.iter().cloned().collect()
    }

    /// The stream ended: everything the process wrote has been offered.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Waits (at most `wait`) for the stream to end, then returns the lines kept.
    pub async fn finish(&self, wait: Duration) -> Vec<String> {
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(wait, closed.wait_for(|closed| *closed)).await;
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The frames of the trace in `lines`, innermost first, mapped through source maps (see
/// [`sourcemap`](super::sourcemap); `recorded` is where the process's monitor recorded inline
/// maps) and shortened for a log line: paths under `cwd` become relative, `file://` URLs become
/// paths. `None` if no trace was printed.
pub fn parse_trace(lines: &[String], cwd: &Path, recorded: Option<&Path>) -> Option<Vec<String>> {
    let header = lines.iter().position(|line| line.contains(TRACE_HEADER))?;
    let frames: Vec<String> = lines[header + 1..]
        .iter()
        .map(|line| line.trim())
        .take_while(|line| line.starts_with("at "))
        .map(|line| line[3..].to_string())
        .collect();
    let frames = super::sourcemap::map_frames(&frames, recorded);
    Some(frames.iter().map(|f| shorten_frame(f, cwd)).collect())
}

/// Frames as the monitor sends them (`fn (/abs/app.js:1:2)`), shortened for a log line like
/// those of [`parse_trace`].
pub fn shorten_frames(frames: &[String], cwd: &Path) -> Vec<String> {
    frames
        .iter()
        .take(MAX_FRAMES)
        .map(|frame| {
            let frame: String = cut(frame, MAX_FRAME_LEN)
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            shorten_frame(&frame, cwd)
        })
        .collect()
}

/// Most frames kept from a monitor's stack.
const MAX_FRAMES: usize = nodeguard_proto::worker::MAX_FRAMES;
/// Longest frame or request kept from a monitor, in bytes.
const MAX_FRAME_LEN: usize = 1100;

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A monitor's in-flight requests, bounded in number and length, control characters dropped (they
/// go into log lines).
pub fn bounded_requests(requests: Vec<String>) -> Vec<String> {
    requests
        .into_iter()
        .take(nodeguard_proto::worker::MAX_REQUESTS)
        .map(|request| {
            cut(&request, 300)
                .chars()
                .filter(|c| !c.is_control())
                .collect()
        })
        .collect()
}

/// `line` followed by the requests the process was handling: `… while handling GET /search`.
pub fn while_handling(line: String, requests: &[String]) -> String {
    if requests.is_empty() {
        line
    } else {
        format!("{line} while handling {}", requests.join(", "))
    }
}

/// `fn (/abs/app.js:1:2)` → `fn (app.js:1:2)`; a bare location gets `<anonymous>`.
fn shorten_frame(frame: &str, cwd: &Path) -> String {
    match frame.rsplit_once(" (") {
        Some((function, location)) => {
            let location = location.strip_suffix(')').unwrap_or(location);
            format!("{function} ({})", shorten_location(location, cwd))
        }
        None => format!("<anonymous> ({})", shorten_location(frame, cwd)),
    }
}

fn shorten_location(location: &str, cwd: &Path) -> String {
    let location = location.strip_prefix("file://").unwrap_or(location);
    match Path::new(location).strip_prefix(cwd) {
        Ok(relative) if location.starts_with('/') => relative.display().to_string(),
        _ => location.to_string(),
    }
}

/// The one-line verdict: where the loop was stuck, or why no stack is known.
pub fn summary(silent_for: Duration, frames: Result<&[String], &str>) -> String {
    let silent = crate::core::exit::human(silent_for);
    match frames {
        Ok(frames) if !frames.is_empty() => format!("hung {silent} in {}", frames.join(" < ")),
        Ok(_) => format!("hung {silent}; no stack: Node printed the trace header but no frames"),
        Err(why) => format!("hung {silent}; no stack: {why}"),
    }
}

/// A hang's stderr tail as lines for a report: a heading, then each line after `| `.
pub fn tail_text(tail: &[String]) -> String {
    let mut text = format!("last {} stderr line(s) before the hang:", tail.len());
    for line in tail {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_whole_lines_within_its_bounds() {
        let tap = StackTap::default();
        for n in 0..50 {
            tap.offer(format!("line {n}").as_bytes());
        }
        let tail = tap.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[0], "line 30");
        assert_eq!(tail[TAIL_LINES - 1], "line 49");
        // Long lines: the byte bound holds and no entry is a piece of another.
        let long = "é".repeat(TAIL_BYTES);
        tap.offer(long.as_bytes());
        tap.offer(b"after");
        let tail = tap.tail();
        assert!(tail.iter().map(String::len).sum::<usize>() <= TAIL_BYTES);
        assert_eq!(tail.last().map(String::as_str), Some("after"));
        assert!(tail
            .iter()
            .all(|line| line == "after" || line.starts_with('é')));
        // Not armed: nothing else is kept.
        assert!(tap.lines.lock().unwrap().is_empty());
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_trace_becomes_short_frames_innermost_first() {
        let captured = lines(
            "some earlier app line\n\
             KEYBOARD_INTERRUPT: Script execution was interrupted by `SIGINT`\n    \
             at barSpin (/srv/app/lib/spin.js:12:5)\n    \
             at handler (file:///srv/app/app.mjs:20:3)\n    \
             at /srv/other/x.js:3:1\n    \
             at listOnTimeout (node:internal/timers:581:17)\n\
             \n\
             trailing noise",
        );
        let frames = parse_trace(&captured, Path::new("/srv/app"), None).unwrap();
        assert_eq!(
            frames,
            [
                "barSpin (lib/spin.js:12:5)",
                "handler (app.mjs:20:3)",
                "<anonymous> (/srv/other/x.js:3:1)",
                "listOnTimeout (node:internal/timers:581:17)",
            ]
        );
        assert_eq!(
            summary(Duration::from_millis(3200), Ok(&frames[..2])),
            "hung 3.2s in barSpin (lib/spin.js:12:5) < handler (app.mjs:20:3)"
        );
    }

    #[test]
    fn no_header_means_no_trace_and_the_line_says_why() {
        assert_eq!(
            parse_trace(
                &lines("just output\n    at x (y.js:1:1)"),
                Path::new("/"),
                None
            ),
            None
        );
        assert_eq!(
            summary(Duration::from_secs(4), Err("the process printed none")),
            "hung 4.0s; no stack: the process printed none"
        );
    }

    #[tokio::test]
    async fn the_tap_keeps_lines_only_while_armed_and_finishes_at_close() {
        let tap = StackTap::default();
        tap.offer(b"before");
        tap.arm();
        tap.offer(b"after");
        tap.close();
        assert_eq!(tap.finish(Duration::from_secs(5)).await, ["after"]);
    }
}
