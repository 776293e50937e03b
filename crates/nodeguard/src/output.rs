//! Copies app output to the terminal as whole lines, each prefixed with the app's name.
//!
//! Every app's stdout and stderr are read by a task that cuts them into lines and hands each line
//! to one writer thread, so lines from different apps never interleave mid-line and a slow
//! terminal never blocks the runtime. A partial last line is flushed when the app exits. A line
//! longer than [`MAX_LINE`] is passed on in pieces of that size rather than buffered without bound.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Longest line held in memory before it is passed on in pieces.
pub const MAX_LINE: usize = 1024 * 1024;
/// Lines queued for the terminal before readers wait (back-pressure to the apps).
const QUEUE_LINES: usize = 4096;
/// Bytes gathered before one write to the terminal.
const WRITE_BATCH: usize = 256 * 1024;
/// Colours cycled over apps on a terminal.
const COLORS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

/// Which of the app's streams a line came from; it goes to the same stream of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

struct Line {
    prefix: Arc<str>,
    stream: StreamKind,
    text: Vec<u8>,
}

/// Sending side of the terminal writer. Clone one per reader.
#[derive(Clone)]
pub struct OutputSink {
    lines: mpsc::Sender<Line>,
}

/// Joins the writer thread once every sink is dropped.
pub struct OutputWriter {
    thread: thread::JoinHandle<()>,
}

impl OutputWriter {
    /// Blocks until every queued line is written.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts the writer thread.
pub fn start() -> io::Result<(OutputSink, OutputWriter)> {
    let (lines, mut queue) = mpsc::channel::<Line>(QUEUE_LINES);
    let thread = thread::Builder::new()
        .name("nodeguard-output".into())
        .spawn(move || {
            let stdout = io::stdout();
            let stderr = io::stderr();
            let mut out_buffer = Vec::new();
            let mut err_buffer = Vec::new();
            while let Some(first) = queue.blocking_recv() {
                // Gather what is queued, then write each stream in one go. The std locks are taken
                // only for that write: tracing writes to the same stderr from other threads.
                let mut next = Some(first);
                while let Some(line) = next {
                    let buffer = match line.stream {
                        StreamKind::Stdout => &mut out_buffer,
                        StreamKind::Stderr => &mut err_buffer,
                    };
                    buffer.extend_from_slice(line.prefix.as_bytes());
                    buffer.extend_from_slice(&line.text);
                    buffer.push(b'\n');
                    if out_buffer.len() + err_buffer.len() >= WRITE_BATCH {
                        break;
                    }
                    next = queue.try_recv().ok();
                }
                // A closed terminal loses output but must not stop supervision.
                if !out_buffer.is_empty() {
                    let mut lock = stdout.lock();
                    let _ = lock.write_all(&out_buffer).and_then(|()| lock.flush());
                    out_buffer.clear();
                }
                if !err_buffer.is_empty() {
                    let mut lock = stderr.lock();
                    let _ = lock.write_all(&err_buffer).and_then(|()| lock.flush());
                    err_buffer.clear();
                }
            }
        })?;
    Ok((OutputSink { lines }, OutputWriter { thread }))
}

/// The prefix for an app: `name | `, coloured on a terminal.
pub fn prefix_for(name: &str, index: usize, color: bool) -> Arc<str> {
    if color {
        let code = COLORS[index % COLORS.len()];
        format!("\x1b[{code}m{name}\x1b[0m | ").into()
    } else {
        format!("{name} | ").into()
    }
}

impl OutputSink {
    /// Reads `source` to its end, passing on each line.
    pub async fn copy_lines(
        self,
        source: impl AsyncRead + Unpin,
        prefix: Arc<str>,
        stream: StreamKind,
    ) {
        let mut reader = BufReader::with_capacity(64 * 1024, source);
        let mut line = Vec::new();
        while let Ok(available) = reader.fill_buf().await {
            if available.is_empty() {
                break;
            }
            let room = MAX_LINE - line.len();
            let newline = available.iter().position(|&b| b == b'\n');
            let (text_len, consumed, complete) = match newline {
                Some(at) if at <= room => (at, at + 1, true),
                _ => {
                    let take = available.len().min(room);
                    (take, take, false)
                }
            };
            line.extend_from_slice(&available[..text_len]);
            reader.consume(consumed);
            if complete || line.len() >= MAX_LINE {
                if complete && line.last() == Some(&b'\r') {
                    line.pop();
                }
                if !self.send(&prefix, stream, std::mem::take(&mut line)).await {
                    return;
                }
            }
        }
        if !line.is_empty() {
            self.send(&prefix, stream, line).await;
        }
    }

    async fn send(&self, prefix: &Arc<str>, stream: StreamKind, text: Vec<u8>) -> bool {
        self.lines
            .send(Line {
                prefix: prefix.clone(),
                stream,
                text,
            })
            .await
            .is_ok()
    }
}
