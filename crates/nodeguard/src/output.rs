//! Copies app output, as whole lines, to the terminal (prefixed with the app's name) and/or to each
//! app's log files under `<home>/logs/`.
//!
//! Every app's stdout and stderr are read by a task that cuts them into lines and hands each line
//! to one writer thread, so lines from different apps never interleave mid-line and a slow
//! terminal never blocks the runtime. A partial last line is flushed when the app exits. A line
//! longer than [`MAX_LINE`] is passed on in pieces of that size rather than buffered without bound.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::forensics::StackTap;
use crate::logfile::{LogFiles, LogSpec};

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

/// Where app output goes.
#[derive(Debug, Clone)]
pub struct Destinations {
    /// Print lines on our stdout/stderr.
    pub terminal: bool,
    /// Append lines to `<home>/logs/<app>-out.log` and `-err.log`.
    pub log_home: Option<PathBuf>,
}

/// Identifies an app's output: its name, its terminal prefix, and where its log files are when
/// not at the default places.
#[derive(Debug, Clone)]
pub struct Origin {
    pub app: Arc<str>,
    pub prefix: Arc<str>,
    pub out_file: Option<Arc<PathBuf>>,
    pub error_file: Option<Arc<PathBuf>>,
    pub timestamps: bool,
}

enum Item {
    Line {
        origin: Origin,
        stream: StreamKind,
        text: Vec<u8>,
    },
    /// Empty the app's log files, then answer.
    Clear {
        app: Arc<str>,
        done: oneshot::Sender<()>,
    },
}

/// Sending side of the output writer. Clone one per reader.
#[derive(Clone)]
pub struct OutputSink {
    lines: mpsc::Sender<Item>,
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
pub fn start(destinations: Destinations) -> io::Result<(OutputSink, OutputWriter)> {
    let (lines, queue) = mpsc::channel::<Item>(QUEUE_LINES);
    let thread = thread::Builder::new()
        .name("nodeguard-output".into())
        .spawn(move || Writer::new(destinations).run(queue))?;
    Ok((OutputSink { lines }, OutputWriter { thread }))
}

/// The writer thread's state: terminal buffers and each app's open log files.
struct Writer {
    destinations: Destinations,
    out_buffer: Vec<u8>,
    err_buffer: Vec<u8>,
    files: HashMap<Arc<str>, LogFiles>,
}

impl Writer {
    fn new(destinations: Destinations) -> Self {
        Self {
            destinations,
            out_buffer: Vec::new(),
            err_buffer: Vec::new(),
            files: HashMap::new(),
        }
    }

    fn run(mut self, mut queue: mpsc::Receiver<Item>) {
        while let Some(first) = queue.blocking_recv() {
            // Gather what is queued, then write it in one go.
            let mut next = Some(first);
            while let Some(item) = next {
                match item {
                    Item::Line {
                        origin,
                        stream,
                        text,
                    } => self.line(&origin, stream, &text),
                    Item::Clear { app, done } => {
                        self.flush();
                        if let Some(files) = self.files_for(&app, None) {
                            if let Err(error) = files.clear() {
                                tracing::warn!(app = %app, %error, "cannot empty the log files");
                            }
                        }
                        let _ = done.send(());
                    }
                }
                if self.out_buffer.len() + self.err_buffer.len() >= WRITE_BATCH {
                    break;
                }
                next = queue.try_recv().ok();
            }
            self.flush();
        }
        self.flush();
    }

    fn line(&mut self, origin: &Origin, stream: StreamKind, text: &[u8]) {
        if self.destinations.terminal {
            let buffer = match stream {
                StreamKind::Stdout => &mut self.out_buffer,
                StreamKind::Stderr => &mut self.err_buffer,
            };
            buffer.extend_from_slice(origin.prefix.as_bytes());
            buffer.extend_from_slice(text);
            buffer.push(b'\n');
        }
        if let Some(files) = self.files_for(&origin.app, Some(origin)) {
            if let Err(error) = files.write_line(stream.into(), text) {
                tracing::warn!(app = %origin.app, %error, "cannot write the log file");
            }
        }
    }

    /// The app's log files, opened on first use (and again if the app's paths changed); `None`
    /// when files are off or cannot be opened (said in the supervisor's log).
    fn files_for(&mut self, app: &Arc<str>, origin: Option<&Origin>) -> Option<&mut LogFiles> {
        let home = self.destinations.log_home.as_ref()?;
        let mut spec = LogSpec::default_for(home, app);
        if let Some(origin) = origin {
            if let Some(path) = &origin.out_file {
                spec.out_path = path.to_path_buf();
            }
            if let Some(path) = &origin.error_file {
                spec.err_path = path.to_path_buf();
            }
            spec.timestamps = origin.timestamps;
        }
        let stale = self.files.get(app).is_some_and(|files| {
            origin.is_some()
                && (files.spec().out_path != spec.out_path
                    || files.spec().err_path != spec.err_path
                    || files.spec().timestamps != spec.timestamps)
        });
        if stale {
            self.files.remove(app);
        }
        if !self.files.contains_key(app) {
            match LogFiles::open(spec) {
                Ok(files) => {
                    self.files.insert(app.clone(), files);
                }
                Err(error) => {
                    tracing::warn!(app = %app, %error, "cannot open the log files; output goes nowhere");
                    return None;
                }
            }
        }
        self.files.get_mut(app)
    }

    /// Writes the terminal buffers (the std locks are held only for that: tracing writes to the
    /// same stderr from other threads) and flushes the log files.
    fn flush(&mut self) {
        // A closed terminal loses output but must not stop supervision.
        if !self.out_buffer.is_empty() {
            let mut lock = io::stdout().lock();
            let _ = lock.write_all(&self.out_buffer).and_then(|()| lock.flush());
            self.out_buffer.clear();
        }
        if !self.err_buffer.is_empty() {
            let mut lock = io::stderr().lock();
            let _ = lock.write_all(&self.err_buffer).and_then(|()| lock.flush());
            self.err_buffer.clear();
        }
        for (app, files) in &mut self.files {
            if let Err(error) = files.flush() {
                tracing::warn!(app = %app, %error, "cannot flush the log file");
            }
        }
    }
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
    /// Reads `source` to its end, passing on each line, and offering each to `tap` if given (the
    /// tap is closed at the end).
    pub async fn copy_lines(
        self,
        source: impl AsyncRead + Unpin,
        origin: Origin,
        stream: StreamKind,
        tap: Option<Arc<StackTap>>,
    ) {
        self.copy_lines_into(source, &origin, stream, tap.as_deref())
            .await;
        if let Some(tap) = tap {
            tap.close();
        }
    }

    async fn copy_lines_into(
        &self,
        source: impl AsyncRead + Unpin,
        origin: &Origin,
        stream: StreamKind,
        tap: Option<&StackTap>,
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
                if let Some(tap) = tap {
                    tap.offer(&line);
                }
                if !self.send(origin, stream, std::mem::take(&mut line)).await {
                    return;
                }
            }
        }
        if !line.is_empty() {
            if let Some(tap) = tap {
                tap.offer(&line);
            }
            self.send(origin, stream, line).await;
        }
    }

    /// Writes a line of the supervisor's own about an app into the app's output (its error log,
    /// or the terminal with the app's prefix), e.g. where a hung app was stuck.
    pub async fn note(&self, origin: &Origin, text: String) {
        self.send(origin, StreamKind::Stderr, text.into_bytes())
            .await;
    }

    async fn send(&self, origin: &Origin, stream: StreamKind, text: Vec<u8>) -> bool {
        self.lines
            .send(Item::Line {
                origin: origin.clone(),
                stream,
                text,
            })
            .await
            .is_ok()
    }

    /// Empties an app's log files; returns once done.
    pub async fn clear(&self, app: Arc<str>) {
        let (done, finished) = oneshot::channel();
        if self.lines.send(Item::Clear { app, done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}
