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
use std::time::{Duration, Instant};

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use crate::core::date_format::DateFormat;
use crate::io::forensics::StackTap;
pub use crate::io::logfile::StreamKind;
use crate::io::logfile::{LogFiles, LogSpec};

/// Longest line held in memory before it is passed on in pieces.
pub const MAX_LINE: usize = 1024 * 1024;
/// Most bytes taken from an app's pipe in one read (a Linux pipe holds 64 KiB). The buffer lives
/// on the stack of the thread polling the reader for the length of one read only, so an app costs
/// no read buffer between reads: a `BufReader` of this size per stream was 128 KiB of heap per app.
const READ_CHUNK: usize = 64 * 1024;
/// Lines queued for the terminal before readers wait (back-pressure to the apps).
const QUEUE_LINES: usize = 4096;
/// Bytes gathered before one write to the terminal.
const WRITE_BATCH: usize = 256 * 1024;
/// How long after a failed attempt an app's log files are tried again.
const REOPEN_RETRY: Duration = Duration::from_secs(5);
/// Colours cycled over apps on a terminal.
const COLORS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

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
    /// PM2's `log_date_format`, compiled; wins over `timestamps`.
    pub date_format: Option<Arc<DateFormat>>,
    /// PM2's `log_file`: both streams in one more file; an empty path is the default place
    /// (`<home>/logs/<app>-combined.log`).
    pub log_file: Option<Arc<PathBuf>>,
    /// PM2's `log_type: 'json'`: log-file lines are JSON objects.
    pub json: bool,
    /// The instance's id (the JSON lines' `process_id`).
    pub id: u32,
}

impl Origin {
    fn choice(&self) -> LogChoice {
        LogChoice {
            out_file: self.out_file.clone(),
            error_file: self.error_file.clone(),
            timestamps: self.timestamps,
            date_format: self.date_format.clone(),
            log_file: self.log_file.clone(),
            json: self.json,
        }
    }
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
    /// Close every log file; each is opened again, at its path, for its next line (SIGHUP).
    Reopen,
}

/// Sending side of the output writer. Clone one per reader.
#[derive(Clone)]
pub struct OutputSink {
    lines: mpsc::Sender<Item>,
    /// App output goes to the terminal (foreground mode), where the supervisor's log is too.
    terminal: bool,
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
    let terminal = destinations.terminal;
    let thread = thread::Builder::new()
        .name("nodeguard-output".into())
        .spawn(move || Writer::new(destinations).run(queue))?;
    Ok((OutputSink { lines, terminal }, OutputWriter { thread }))
}

/// The writer thread's state: terminal buffers and each app's open log files.
struct Writer {
    destinations: Destinations,
    out_buffer: Vec<u8>,
    err_buffer: Vec<u8>,
    files: HashMap<Arc<str>, LogFiles>,
    /// Per app, the log paths and timestamp setting of the last line whose files were checked:
    /// a line with the same ones goes straight to the open files (working out the paths for every
    /// line cost several allocations each).
    checked: HashMap<Arc<str>, LogChoice>,
    /// Apps whose log files could not be opened for their current choice (said once in the
    /// supervisor's log), with when to try again: until then, or until the choice changes or the
    /// files are reopened (SIGHUP), their lines go nowhere.
    refused: HashMap<Arc<str>, Instant>,
}

/// What an [`Origin`] says about its log files.
#[derive(Debug, Clone, PartialEq)]
struct LogChoice {
    out_file: Option<Arc<PathBuf>>,
    error_file: Option<Arc<PathBuf>>,
    timestamps: bool,
    date_format: Option<Arc<DateFormat>>,
    log_file: Option<Arc<PathBuf>>,
    json: bool,
}

impl Writer {
    fn new(destinations: Destinations) -> Self {
        Self {
            destinations,
            out_buffer: Vec::new(),
            err_buffer: Vec::new(),
            files: HashMap::new(),
            checked: HashMap::new(),
            refused: HashMap::new(),
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
                    Item::Reopen => {
                        self.flush();
                        // Dropping them closes them; lines queued after this open new files.
                        self.files.clear();
                        self.checked.clear();
                        self.refused.clear();
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
            let json = origin.json.then(|| (&*origin.app, origin.id));
            if let Err(error) = files.write_record_of(stream.into(), text, json) {
                tracing::warn!(app = %origin.app, %error, "cannot write the log file");
            }
        }
    }

    /// The app's log files, opened on first use (and again if the app's paths changed); `None`
    /// when files are off or cannot be opened (said in the supervisor's log).
    fn files_for(&mut self, app: &Arc<str>, origin: Option<&Origin>) -> Option<&mut LogFiles> {
        let home = self.destinations.log_home.as_ref()?;
        if let Some(origin) = origin {
            let same = self.checked.get(app).is_some_and(|checked| {
                checked.out_file == origin.out_file
                    && checked.error_file == origin.error_file
                    && checked.timestamps == origin.timestamps
                    && checked.date_format == origin.date_format
                    && checked.log_file == origin.log_file
                    && checked.json == origin.json
            });
            if same && self.files.contains_key(app) {
                return self.files.get_mut(app);
            }
            let retry_later = self
                .refused
                .get(app)
                .is_some_and(|retry_at| Instant::now() < *retry_at);
            if same && retry_later {
                return None;
            }
        }
        let mut spec = LogSpec::default_for(home, app);
        if let Some(origin) = origin {
            if let Some(path) = &origin.out_file {
                spec.out_path = path.to_path_buf();
            }
            if let Some(path) = &origin.error_file {
                spec.err_path = path.to_path_buf();
            }
            spec.timestamps = origin.timestamps;
            spec.date_format.clone_from(&origin.date_format);
            spec.json = origin.json;
            spec.combined_path = origin.log_file.as_ref().map(|path| {
                if path.as_os_str().is_empty() {
                    LogSpec::default_combined(home, app)
                } else {
                    path.to_path_buf()
                }
            });
        }
        let stale = self.files.get(app).is_some_and(|files| {
            origin.is_some()
                && (files.spec().out_path != spec.out_path
                    || files.spec().err_path != spec.err_path
                    || files.spec().timestamps != spec.timestamps
                    || files.spec().date_format != spec.date_format
                    || files.spec().combined_path != spec.combined_path
                    || files.spec().json != spec.json)
        });
        if stale {
            self.files.remove(app);
        }
        if !self.files.contains_key(app) {
            match LogFiles::open(spec) {
                Ok(files) => {
                    self.refused.remove(app);
                    self.files.insert(app.clone(), files);
                }
                Err(error) => {
                    if self.refused.contains_key(app) {
                        tracing::debug!(app = %app, %error, "still cannot open the log files");
                    } else {
                        tracing::warn!(app = %app, %error, "cannot open the log files; the app runs on, its output goes nowhere until they can be opened (tried again every {}s and on SIGHUP)", REOPEN_RETRY.as_secs());
                    }
                    match origin {
                        Some(origin) => {
                            self.checked.insert(app.clone(), origin.choice());
                            let retry_at = Instant::now().checked_add(REOPEN_RETRY);
                            self.refused
                                .insert(app.clone(), retry_at.unwrap_or_else(Instant::now));
                        }
                        None => {
                            self.checked.remove(app);
                        }
                    }
                    return None;
                }
            }
        }
        if let Some(origin) = origin {
            self.checked.insert(app.clone(), origin.choice());
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

/// Reads what `source` has (up to [`READ_CHUNK`] bytes, waiting for at least one) and cuts it into
/// lines with [`cut_lines`]. Returns the bytes read: 0 at the end of the stream.
async fn read_lines(
    source: &mut (impl AsyncRead + Unpin),
    partial: &mut Vec<u8>,
    lines: &mut Vec<Vec<u8>>,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *source).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                cut_lines(partial, buf.filled(), lines);
                Poll::Ready(Ok(buf.filled().len()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Cuts `bytes` into lines: the first one continues `partial`, each complete line (without its
/// `\n`, and without a `\r` before it) goes to `lines`, and an unfinished last line stays in
/// `partial`. A line reaching [`MAX_LINE`] bytes goes to `lines` in pieces of that size. Each line
/// is moved out whole, so `partial` holds no capacity once a long line has passed.
fn cut_lines(partial: &mut Vec<u8>, mut bytes: &[u8], lines: &mut Vec<Vec<u8>>) {
    while !bytes.is_empty() {
        let room = MAX_LINE - partial.len();
        match bytes.iter().position(|&b| b == b'\n') {
            Some(at) if at <= room => {
                let mut line = std::mem::take(partial);
                line.extend_from_slice(&bytes[..at]);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lines.push(line);
                bytes = &bytes[at + 1..];
            }
            _ => {
                let take = bytes.len().min(room);
                partial.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if partial.len() >= MAX_LINE {
                    lines.push(std::mem::take(partial));
                }
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
        mut source: impl AsyncRead + Unpin,
        origin: &Origin,
        stream: StreamKind,
        tap: Option<&StackTap>,
    ) {
        let mut partial = Vec::new();
        loop {
            let mut lines = Vec::new();
            let more =
                matches!(read_lines(&mut source, &mut partial, &mut lines).await, Ok(n) if n > 0);
            if !more && !partial.is_empty() {
                lines.push(std::mem::take(&mut partial));
            }
            for line in lines {
                if let Some(tap) = tap {
                    tap.offer(&line);
                }
                if !self.send(origin, stream, line).await {
                    return;
                }
            }
            if !more {
                return;
            }
        }
    }

    /// Whether app output is shown on the terminal, beside the supervisor's own log.
    pub fn on_terminal(&self) -> bool {
        self.terminal
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

    /// Closes every app's log files so that each is opened again at its path (SIGHUP, after an
    /// external rotation). Lines queued before this go to the old files, later ones to the new.
    pub async fn reopen(&self) {
        let _ = self.lines.send(Item::Reopen).await;
    }

    /// Empties an app's log files; returns once done.
    pub async fn clear(&self, app: Arc<str>) {
        let (done, finished) = oneshot::channel();
        if self.lines.send(Item::Clear { app, done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_all(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            cut_lines(&mut partial, chunk, &mut lines);
        }
        (lines, partial)
    }

    #[test]
    fn lines_are_cut_across_reads_and_lose_their_line_ends() {
        let (lines, partial) = cut_all(&[b"one\ntw", b"o\r\n\nthr", b"ee"]);
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec(), Vec::new()]);
        assert_eq!(partial, b"three");
    }

    #[test]
    fn a_long_line_passes_in_max_line_pieces_and_leaves_no_capacity_behind() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        for piece in long.chunks(READ_CHUNK) {
            cut_lines(&mut partial, piece, &mut lines);
        }
        cut_lines(&mut partial, b"\nnext\n", &mut lines);
        let lengths: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(lengths, [MAX_LINE, 10, 4]);
        assert!(partial.is_empty());
        assert_eq!(partial.capacity(), 0);
    }

    #[test]
    fn a_line_of_exactly_max_line_is_passed_whole() {
        let mut bytes = vec![b'y'; MAX_LINE];
        bytes.push(b'\n');
        let (lines, partial) = cut_all(&[&bytes]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert!(partial.is_empty());
    }

    #[tokio::test]
    async fn read_lines_reads_a_stream_to_its_end() {
        let mut source: &[u8] = b"a\nb\nrest";
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        let n = read_lines(&mut source, &mut partial, &mut lines)
            .await
            .unwrap();
        assert_eq!(n, 8);
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(partial, b"rest");
        let n = read_lines(&mut source, &mut partial, &mut lines)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
