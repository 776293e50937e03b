//! `nodeguard monit`: a full-screen terminal view of the daemon's apps (PM2's `monit`).
//!
//! It asks the daemon for `Status` once a second and `Describe` of the selected app once a
//! second, over the control socket, and reads the selected app's log files itself; the daemon
//! does nothing else for it. Memory and loop-delay history (for the sparklines) is kept here,
//! from those answers. Restart, reload and stop run on a thread of their own, so the view keeps
//! refreshing while they wait on the daemon. The terminal is restored on quit, on a panic and
//! on SIGTERM, SIGHUP or SIGINT.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use nodeguard_proto::control::{AppDescription, AppState, AppStatus, Command, Outcome, Target};

use crate::core::exit::human;
use crate::core::units::bytes;
use crate::io::control_client::{self, ClientError};
use crate::io::home::HomePaths;
use crate::io::logfile::LogSpec;
use crate::io::logread;

/// How often the view asks the daemon for status (and the selected app's events).
pub const REFRESH: Duration = Duration::from_secs(1);
/// Samples kept per app for the sparklines: ten minutes at one a second.
const HISTORY: usize = 600;
/// Log lines read per stream of the selected app.
const LOG_LINES: usize = 200;
/// Events shown for the selected app (the daemon keeps 50).
const EVENT_LINES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum MonitError {
    #[error("monit needs a terminal: stdout is not one (use `nodeguard status` in scripts)")]
    NotATerminal,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("unexpected answer from the supervisor")]
    Unexpected,
}

/// One app's recent samples.
#[derive(Debug, Default)]
struct History {
    /// Whole-tree resident memory, in KiB.
    memory: VecDeque<u64>,
    /// Loop delay p99, in tenths of a millisecond.
    delay: VecDeque<u64>,
}

impl History {
    fn push(&mut self, app: &AppStatus) {
        let memory = app.tree_rss.or(app.memory.map(|m| m.rss)).unwrap_or(0) / 1024;
        let delay = app.loop_delay.map_or(0.0, |d| d.p99_ms);
        push_bounded(&mut self.memory, memory);
        push_bounded(&mut self.delay, tenths(delay));
    }
}

fn push_bounded(samples: &mut VecDeque<u64>, value: u64) {
    if samples.len() == HISTORY {
        samples.pop_front();
    }
    samples.push_back(value);
}

/// Milliseconds as whole tenths (negative and non-finite values as 0).
fn tenths(ms: f64) -> u64 {
    let tenths = (ms * 10.0).round();
    if tenths.is_finite() && tenths > 0.0 && tenths < 1e15 {
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let value = tenths as u64;
        value
    } else {
        0
    }
}

/// An action asked for by a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Restart,
    Reload,
    Stop,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::Stop => "stop",
        }
    }
}

/// What the view shows and where the cursor is.
struct View {
    apps: Vec<AppStatus>,
    histories: HashMap<u32, History>,
    table: TableState,
    /// The selected app's id, kept across refreshes that reorder or remove rows.
    selected: Option<u32>,
    description: Option<AppDescription>,
    logs: Vec<(bool, String)>,
    follow: bool,
    /// The last action's outcome or the last error, for the help line.
    message: String,
    busy: Option<String>,
    home: PathBuf,
}

impl View {
    fn selected_app(&self) -> Option<&AppStatus> {
        let id = self.selected?;
        self.apps.iter().find(|app| app.id == id)
    }

    fn take_status(&mut self, apps: Vec<AppStatus>) {
        for app in &apps {
            self.histories.entry(app.id).or_default().push(app);
        }
        self.histories
            .retain(|id, _| apps.iter().any(|app| app.id == *id));
        self.apps = apps;
        let index = self
            .selected
            .and_then(|id| self.apps.iter().position(|app| app.id == id))
            .or((!self.apps.is_empty()).then_some(0));
        self.table.select(index);
        self.selected = index.and_then(|i| self.apps.get(i)).map(|app| app.id);
    }

    fn move_selection(&mut self, down: bool) {
        if self.apps.is_empty() {
            return;
        }
        let current = self.table.selected().unwrap_or(0);
        let last = self.apps.len().saturating_sub(1);
        let next = if down {
            current.saturating_add(1).min(last)
        } else {
            current.saturating_sub(1)
        };
        self.table.select(Some(next));
        self.selected = self.apps.get(next).map(|app| app.id);
        self.description = None;
        self.logs.clear();
    }
}

/// Runs the view until the user quits. `runtime` serves the requests to the daemon.
pub fn run(paths: &HomePaths, runtime: &tokio::runtime::Runtime) -> Result<(), MonitError> {
    if !std::io::stdout().is_terminal() {
        return Err(MonitError::NotATerminal);
    }
    // Fail before touching the terminal when no daemon answers.
    let first = status(paths, runtime)?;
    let mut signals = runtime.block_on(async { Signals::new() })?;
    let actions = spawn_actor(paths.clone());
    let mut guard = TerminalGuard::enter()?;
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;
    let mut view = View {
        apps: Vec::new(),
        histories: HashMap::new(),
        table: TableState::default(),
        selected: None,
        description: None,
        logs: Vec::new(),
        follow: false,
        message: String::new(),
        busy: None,
        home: paths.home.clone(),
    };
    view.take_status(first);
    let mut next_refresh = Instant::now();
    loop {
        if Instant::now() >= next_refresh {
            next_refresh = Instant::now() + REFRESH;
            match status(paths, runtime) {
                Ok(apps) => view.take_status(apps),
                Err(error) => view.message = error.to_string(),
            }
            refresh_selected(paths, runtime, &mut view);
        }
        while let Ok(done) = actions.results.try_recv() {
            view.busy = None;
            view.message = done;
            next_refresh = Instant::now();
        }
        terminal.draw(|frame| draw(frame, &mut view))?;
        if runtime.block_on(signals.any()) {
            break;
        }
        let wait = next_refresh
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        // Our own wait first: on a hung-up terminal (its window closed, tmux's server killed)
        // reads return end-of-file at once, and crossterm's poll spins on that.
        match crate::platform::wait_for_terminal_input(wait) {
            crate::platform::TerminalInput::HungUp => break,
            crate::platform::TerminalInput::Idle => continue,
            crate::platform::TerminalInput::Ready => {}
        }
        if !event::poll(Duration::ZERO)? {
            continue;
        }
        match event::read()? {
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                match handle_key(key, &mut view, &actions.requests) {
                    Flow::Quit => break,
                    Flow::Refresh => next_refresh = Instant::now(),
                    Flow::Continue => {}
                }
            }
            _ => {}
        }
    }
    drop(terminal);
    guard.leave();
    Ok(())
}

enum Flow {
    Continue,
    Refresh,
    Quit,
}

fn handle_key(key: KeyEvent, view: &mut View, requests: &mpsc::Sender<(Action, u32)>) -> Flow {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') if ctrl => Flow::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Flow::Quit,
        KeyCode::Up | KeyCode::Char('k') => {
            view.move_selection(false);
            Flow::Refresh
        }
        KeyCode::Down | KeyCode::Char('j') => {
            view.move_selection(true);
            Flow::Refresh
        }
        KeyCode::Char('f') => {
            view.follow = !view.follow;
            Flow::Continue
        }
        KeyCode::Char(c @ ('r' | 'R' | 'l' | 's')) => {
            let action = match c {
                'r' => Action::Restart,
                's' => Action::Stop,
                _ => Action::Reload,
            };
            let Some(app) = view.selected_app() else {
                return Flow::Continue;
            };
            if let Some(busy) = &view.busy {
                view.message = format!("still waiting: {busy}");
                return Flow::Continue;
            }
            let what = format!("{} {}", action.verb(), label(app));
            if requests.send((action, app.id)).is_ok() {
                view.message = format!("{what} …");
                view.busy = Some(what);
            }
            Flow::Continue
        }
        _ => Flow::Continue,
    }
}

fn status(
    paths: &HomePaths,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<AppStatus>, MonitError> {
    match runtime.block_on(control_client::request(paths, Command::Status))? {
        Outcome::Status { apps } => Ok(apps),
        _ => Err(MonitError::Unexpected),
    }
}

/// The selected app's description (events, log paths) and log tail.
fn refresh_selected(paths: &HomePaths, runtime: &tokio::runtime::Runtime, view: &mut View) {
    let Some(id) = view.selected else {
        view.description = None;
        view.logs.clear();
        return;
    };
    let command = Command::Describe {
        target: Target(id.to_string()),
    };
    view.description = match runtime.block_on(control_client::request(paths, command)) {
        Ok(Outcome::Described { apps }) => apps.into_iter().find(|app| app.status.id == id),
        _ => None,
    };
    let Some(app) = &view.description else {
        return;
    };
    let mut spec = LogSpec::default_for(&view.home, &app.status.name);
    if let Some(out) = &app.definition.out_file {
        spec.out_path = PathBuf::from(out);
    }
    if let Some(err) = &app.definition.error_file {
        spec.err_path = PathBuf::from(err);
    }
    let mut logs = Vec::new();
    for (is_err, path) in [(false, &spec.out_path), (true, &spec.err_path)] {
        if let Ok(lines) = logread::tail_lines(path, LOG_LINES) {
            logs.extend(
                lines
                    .into_iter()
                    .map(|line| (is_err, String::from_utf8_lossy(&line).into_owned())),
            );
        }
    }
    view.logs = logs;
}

/// `name` or `name:instance`.
fn label(app: &AppStatus) -> String {
    match app.instance {
        Some(instance) => format!("{}:{instance}", app.name),
        None => app.name.clone(),
    }
}

fn state_style(state: AppState) -> Style {
    match state {
        AppState::Running => Style::default().fg(Color::Green),
        AppState::Starting | AppState::Stopping | AppState::Backoff => {
            Style::default().fg(Color::Yellow)
        }
        AppState::Errored => Style::default().fg(Color::Red),
        AppState::Stopped => Style::default().add_modifier(Modifier::DIM),
    }
}

fn draw(frame: &mut Frame, view: &mut View) {
    let area = frame.area();
    let [main, help] = split(
        Direction::Vertical,
        area,
        [Constraint::Min(3), Constraint::Length(1)],
    );
    if view.follow {
        draw_logs(frame, view, main, "logs (following; f: back)");
    } else {
        let rows = u16::try_from(view.apps.len()).unwrap_or(u16::MAX);
        let table_height = rows.saturating_add(3).min(main.height / 2).max(4);
        let [table, charts, bottom] = split(
            Direction::Vertical,
            main,
            [
                Constraint::Length(table_height),
                Constraint::Length(6),
                Constraint::Min(4),
            ],
        );
        draw_table(frame, view, table);
        draw_charts(frame, view, charts);
        let [logs, events] = split(
            Direction::Horizontal,
            bottom,
            [Constraint::Percentage(55), Constraint::Percentage(45)],
        );
        draw_logs(frame, view, logs, "logs");
        draw_events(frame, view, events);
    }
    let mut spans = vec![Span::styled(
        " ↑/↓ select  r restart  R reload  s stop  f follow logs  q quit ",
        Style::default().add_modifier(Modifier::REVERSED),
    )];
    if !view.message.is_empty() {
        spans.push(Span::raw(format!("  {}", view.message)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), help);
}

fn split<const N: usize>(
    direction: Direction,
    area: Rect,
    constraints: [Constraint; N],
) -> [Rect; N] {
    let chunks = Layout::default()
        .direction(direction)
        .constraints(constraints)
        .split(area);
    std::array::from_fn(|i| chunks.get(i).copied().unwrap_or_default())
}

fn draw_table(frame: &mut Frame, view: &mut View, area: Rect) {
    let dash = || "-".to_string();
    let header = Row::new([
        "name",
        "id",
        "state",
        "pid",
        "uptime",
        "↺",
        "hangs",
        "cpu",
        "mem",
        "heap",
        "loop p50/p99/max",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = view.apps.iter().map(|app| {
        let count = |n: u64, colour: Color| {
            let cell = Cell::from(n.to_string());
            if n == 0 {
                cell
            } else {
                cell.style(Style::default().fg(colour).add_modifier(Modifier::BOLD))
            }
        };
        Row::new([
            Cell::from(label(app)),
            Cell::from(app.id.to_string()),
            Cell::from(app.state.as_str()).style(state_style(app.state)),
            Cell::from(app.pid.map_or_else(dash, |p| p.to_string())),
            Cell::from(
                app.uptime_ms
                    .map_or_else(dash, |ms| human(Duration::from_millis(ms))),
            ),
            count(app.restarts, Color::Yellow),
            count(app.hangs, Color::Red),
            Cell::from(app.cpu_percent.map_or_else(dash, |p| format!("{p:.1}%"))),
            Cell::from(
                app.tree_rss
                    .or(app.memory.map(|m| m.rss))
                    .map_or_else(dash, bytes),
            ),
            Cell::from(app.memory.map_or_else(dash, |m| bytes(m.heap_used))),
            Cell::from(app.loop_delay.map_or_else(dash, |d| {
                format!("{:.1}/{:.1}/{:.1}ms", d.p50_ms, d.p99_ms, d.max_ms)
            })),
        ])
    });
    let name_width = view
        .apps
        .iter()
        .map(|app| label(app).chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let widths = [
        Constraint::Length(u16::try_from(name_width).unwrap_or(u16::MAX)),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Min(18),
    ];
    let title = format!(
        " nodeguard monit · {} · {} app(s) ",
        view.home.display(),
        view.apps.len()
    );
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("› ");
    frame.render_stateful_widget(table, area, &mut view.table);
}

fn draw_charts(frame: &mut Frame, view: &View, area: Rect) {
    let [memory_area, delay_area] = split(
        Direction::Horizontal,
        area,
        [Constraint::Percentage(50), Constraint::Percentage(50)],
    );
    let history = view.selected.and_then(|id| view.histories.get(&id));
    let name = view.selected_app().map(label).unwrap_or_default();
    // The newest samples that fit, oldest first.
    let recent = |samples: Option<&VecDeque<u64>>, width: u16| -> Vec<u64> {
        let samples: Vec<u64> = samples.into_iter().flatten().copied().collect();
        let keep = usize::from(width.saturating_sub(2));
        samples[samples.len().saturating_sub(keep)..].to_vec()
    };
    let memory = recent(history.map(|h| &h.memory), memory_area.width);
    let delay = recent(history.map(|h| &h.delay), delay_area.width);
    let last_memory = memory.last().copied().unwrap_or(0);
    let max_memory = memory.iter().copied().max().unwrap_or(0);
    let memory_title = format!(
        " {name} memory {} (max {}) ",
        bytes(last_memory.saturating_mul(1024)),
        bytes(max_memory.saturating_mul(1024))
    );
    let last_delay = delay.last().copied().unwrap_or(0);
    let max_delay = delay.iter().copied().max().unwrap_or(0);
    let delay_title = format!(
        " loop delay p99 {:.1}ms (max {:.1}ms) ",
        tenths_to_ms(last_delay),
        tenths_to_ms(max_delay)
    );
    frame.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(memory_title))
            .data(&memory)
            .style(Style::default().fg(Color::Cyan)),
        memory_area,
    );
    frame.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(delay_title))
            .data(&delay)
            .style(Style::default().fg(Color::Magenta)),
        delay_area,
    );
}

fn tenths_to_ms(tenths: u64) -> f64 {
    // Sparkline samples are far below 2^52: exact.
    tenths as f64 / 10.0
}

fn draw_logs(frame: &mut Frame, view: &View, area: Rect, title: &str) {
    let name = view.selected_app().map(label).unwrap_or_default();
    let height = usize::from(area.height.saturating_sub(2));
    let shown = &view.logs[view.logs.len().saturating_sub(height)..];
    let lines: Vec<Line> = shown
        .iter()
        .map(|(is_err, text)| {
            if *is_err {
                Line::styled(text.clone(), Style::default().fg(Color::Red))
            } else {
                Line::raw(text.clone())
            }
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" {name} {title} (stderr in red) ")),
        ),
        area,
    );
}

fn draw_events(frame: &mut Frame, view: &View, area: Rect) {
    let mut lines: Vec<Line> = Vec::new();
    if let Some(description) = &view.description {
        let first = description.events.len().saturating_sub(EVENT_LINES);
        for event in &description.events[first..] {
            let style = match event.kind.as_str() {
                "hung" | "stack" | "errored" | "memory" | "spawn_failed" | "kill_timeout" => {
                    Style::default().fg(Color::Red)
                }
                "exited" | "not_ready" | "reload_aborted" => Style::default().fg(Color::Yellow),
                _ => Style::default(),
            };
            // The time of day is enough here: `describe` has the full stamp.
            let time = event.at.get(11..19).unwrap_or(&event.at);
            // A stack is `where (file:line:col) < caller (…) < …`: one frame a line.
            let text = if event.kind == "stack" {
                event.message.replace(" < ", "\n")
            } else {
                event.message.clone()
            };
            let mut message = text.lines();
            lines.push(Line::from(vec![
                Span::styled(
                    format!("{time} "),
                    Style::default().add_modifier(Modifier::DIM),
                ),
                Span::styled(format!("{} ", event.kind), style),
                Span::raw(message.next().unwrap_or_default().to_string()),
            ]));
            // A stack's frames, one per line.
            lines.extend(message.map(|line| Line::styled(format!("    < {line}"), style)));
        }
    }
    let height = usize::from(area.height.saturating_sub(2));
    let lines = lines.split_off(lines.len().saturating_sub(height));
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" events ")),
        area,
    );
}

/// The action thread: one request at a time, each answered with a line for the help bar.
struct Actor {
    requests: mpsc::Sender<(Action, u32)>,
    results: mpsc::Receiver<String>,
}

fn spawn_actor(paths: HomePaths) -> Actor {
    let (requests, incoming) = mpsc::channel::<(Action, u32)>();
    let (done, results) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = done.send("cannot start the async runtime".to_string());
            return;
        };
        for (action, id) in incoming {
            let target = Target(id.to_string());
            let command = match action {
                Action::Restart => Command::Restart {
                    target,
                    update_env: None,
                },
                Action::Reload => Command::Reload {
                    target,
                    update_env: None,
                },
                Action::Stop => Command::Stop { target },
            };
            let line = match runtime.block_on(control_client::request(&paths, command)) {
                Ok(_) => format!("{} done", action.verb()),
                Err(error) => format!("{} failed: {error}", action.verb()),
            };
            if done.send(line).is_err() {
                return;
            }
        }
    });
    Actor { requests, results }
}

/// The signals that end the view (the terminal is restored first).
struct Signals {
    #[cfg(unix)]
    signals: Vec<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let kinds = [
                SignalKind::terminate(),
                SignalKind::hangup(),
                SignalKind::interrupt(),
            ];
            let mut signals = Vec::new();
            for kind in kinds {
                signals.push(signal(kind)?);
            }
            Ok(Self { signals })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Whether one of them arrived; never waits.
    async fn any(&mut self) -> bool {
        #[cfg(unix)]
        for signal in &mut self.signals {
            let arrived = tokio::time::timeout(Duration::ZERO, signal.recv()).await;
            if arrived.is_ok() {
                return true;
            }
        }
        false
    }
}

/// Raw mode and the alternate screen while it lives; the terminal as it was afterwards, also
/// after a panic (through the panic hook).
struct TerminalGuard {
    active: bool,
}

impl TerminalGuard {
    fn enter() -> std::io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let guard = Self { active: true };
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(guard)
    }

    fn leave(&mut self) {
        if self.active {
            self.active = false;
            restore_terminal();
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        self.leave();
    }
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenths_of_a_millisecond_are_bounded() {
        assert_eq!(tenths(1.26), 13);
        assert_eq!(tenths(-3.0), 0);
        assert_eq!(tenths(f64::NAN), 0);
        assert_eq!(tenths(f64::INFINITY), 0);
    }

    #[test]
    fn history_keeps_the_newest_samples() {
        let mut samples = VecDeque::new();
        for n in 0..(HISTORY as u64 + 5) {
            push_bounded(&mut samples, n);
        }
        assert_eq!(samples.len(), HISTORY);
        assert_eq!(samples.front(), Some(&5));
    }
}
