//! Profiles taken by the monitor inside the app (Node's `inspector`, on its JS thread): asked for
//! by `nodeguard profile`, before a memory restart (`heap_snapshot_on_memory_restart`), or when
//! the loop stalls (`profile_on_stall`). One at a time per app; each streams in chunk by chunk
//! and is written to `<home>/profiles/` as it comes (see [`crate::io::profiles`]), so a heap
//! snapshot of hundreds of megabytes is never held in the supervisor.
//!
//! Every wait is bounded: no answer for [`IDLE_LIMIT`] (a hung app, an older monitor that skips
//! the request) or the whole profile over its limit ends it with an error, the partial file
//! removed. A heap snapshot holds the app's JS thread (V8 takes it synchronously); the monitor
//! says when it begins (an empty chunk, sent from the JS thread, so a hung app never says it),
//! and from then on the heartbeat's timers wait with it: they resume (a late check voided, not a
//! hang) when it ends or its bound passes, and a hang is then detected as ever. Until then the
//! heartbeat runs as usual, so a hung app is still found and killed.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use nodeguard_proto::control::ProfileFile;
use nodeguard_proto::worker::ProfileKind;

use super::*;

/// No chunk for this long: the app is not sending its profile.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// Longest CPU profile `nodeguard profile --duration` takes.
pub const MAX_CPU_DURATION: Duration = Duration::from_secs(60);
/// Longest an on-demand heap snapshot may take in all (under the CLI's 120 s wait).
const HEAP_LIMIT: Duration = Duration::from_secs(100);
/// Longest the memory guard waits for its heap snapshot before restarting anyway.
pub const MEMORY_SNAPSHOT_LIMIT: Duration = Duration::from_secs(60);
/// How long the CPU profile taken at a stall runs.
pub const STALL_PROFILE: Duration = Duration::from_secs(5);
/// At most one stall profile per app (per task) in this period.
pub const STALL_EVERY: Duration = Duration::from_secs(600);
/// Longest `hottest` text kept from a monitor.
const MAX_HOTTEST: usize = 300;

static NEXT_PROFILE_ID: AtomicU64 = AtomicU64::new(1);

/// The answer to an on-demand profile.
pub type ProfileResult = Result<ProfileFile, String>;

/// Why a profile is taken, and what to do when it ends.
pub(super) enum Purpose {
    /// `nodeguard profile`: answer the caller.
    Demand(oneshot::Sender<ProfileResult>),
    /// The memory guard: this pong (over the limit) is stepped once the snapshot is written.
    MemoryRestart(Event),
    /// `profile_on_stall`: the loop delay p99 that set it off.
    Stall { p99_ms: f64 },
}

/// The profile streaming in now.
pub(super) struct ActiveProfile {
    id: u64,
    kind: ProfileKind,
    file: std::fs::File,
    path: PathBuf,
    bytes: u64,
    pid: u32,
    purpose: Purpose,
    idle_until: Instant,
    give_up_at: Instant,
    /// The monitor's first chunk came: the app's JS thread is at work on it (for a heap
    /// snapshot, inside V8's synchronous snapshot, which ends on its own).
    started: bool,
}

impl ActiveProfile {
    /// When the wait for it ends.
    pub(super) fn deadline(&self) -> Instant {
        self.idle_until.min(self.give_up_at)
    }

    /// A heap snapshot holds the app's JS thread: the heartbeat's timers wait for it.
    pub(super) fn holds_heartbeat(&self) -> bool {
        self.kind == ProfileKind::Heap && self.started
    }
}

impl WorkerTask {
    /// Asks the monitor for a profile. On failure the purpose ends at once (the caller told,
    /// the memory restart done); the event to step then, if any, is returned.
    pub(super) fn start_profile(
        &mut self,
        kind: ProfileKind,
        duration: Duration,
        purpose: Purpose,
    ) -> Option<Event> {
        if self.profile.is_some() {
            return self.end_purpose(
                purpose,
                None,
                Err("a profile is already being taken".into()),
            );
        }
        let (Some(pid), Phase::Live { .. }) = (self.machine.pid(), &self.machine.phase) else {
            return self.end_purpose(purpose, None, Err("it is not running".into()));
        };
        let Some(connection) = &self.connection else {
            return self.end_purpose(
                purpose,
                None,
                Err(
                    "it has no monitor connected (profiles are taken by the monitor inside a \
                     Node app; none may be loaded, or a hung or exiting process lost it)"
                        .into(),
                ),
            );
        };
        // Under a command (npm start) the monitored process is not the spawned one.
        let pid = if connection.pid == 0 {
            pid
        } else {
            connection.pid
        };
        let (file, path) =
            match crate::io::profiles::create(&self.ctx.home, &self.spec.name, pid, kind) {
                Ok(created) => created,
                Err(error) => {
                    return self.end_purpose(
                        purpose,
                        None,
                        Err(format!("cannot create the profile file: {error}")),
                    )
                }
            };
        let id = NEXT_PROFILE_ID.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let limit = match (&purpose, kind) {
            (Purpose::MemoryRestart(_), _) => MEMORY_SNAPSHOT_LIMIT,
            (_, ProfileKind::Heap) => HEAP_LIMIT,
            (_, ProfileKind::Cpu) => duration.saturating_add(IDLE_LIMIT),
        };
        self.profile = Some(ActiveProfile {
            id,
            kind,
            file,
            path,
            bytes: 0,
            pid,
            purpose,
            idle_until: now + duration + IDLE_LIMIT,
            give_up_at: now + limit,
            started: false,
        });
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        if let Some(lost) = self.send(SupervisorMessage::Profile {
            id,
            kind,
            duration_ms,
        }) {
            let pending = self.fail_profile("cannot write to the monitor".into());
            return pending.or(Some(lost));
        }
        None
    }

    /// A chunk of the profile streaming in.
    pub(super) fn on_profile_chunk(&mut self, id: u64, data: String) -> Option<Event> {
        let active = self.profile.as_mut().filter(|p| p.id == id)?;
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        active.bytes = active.bytes.saturating_add(len);
        if active.bytes > crate::io::profiles::MAX_FILE_BYTES {
            return self.fail_profile(format!(
                "it is over {} (the limit of one profile)",
                crate::core::units::bytes(crate::io::profiles::MAX_FILE_BYTES)
            ));
        }
        if let Err(error) = active.file.write_all(data.as_bytes()) {
            let why = format!("cannot write {}: {error}", active.path.display());
            return self.fail_profile(why);
        }
        active.started = true;
        // Inside a heap snapshot V8 may build for a long while before its first bytes: only
        // the whole limit applies then.
        active.idle_until = match active.kind {
            ProfileKind::Heap => active.give_up_at,
            ProfileKind::Cpu => Instant::now() + IDLE_LIMIT,
        };
        None
    }

    /// The monitor says the profile is complete, or why not.
    pub(super) fn on_profile_done(
        &mut self,
        id: u64,
        error: Option<String>,
        hottest: Option<String>,
    ) -> Option<Event> {
        if self.profile.as_ref().is_none_or(|p| p.id != id) {
            return None;
        }
        if let Some(error) = error {
            return self.fail_profile(format!("the app could not take it: {}", one_line(&error)));
        }
        let active = self.profile.take()?;
        if let Err(error) = active.file.sync_all() {
            tracing::warn!(%error, "cannot sync the profile file");
        }
        let file = ProfileFile {
            name: self.spec.name.clone(),
            id: self.spec.id,
            instance: self.spec.shown_instance(),
            pid: active.pid,
            path: active.path.display().to_string(),
            bytes: active.bytes,
            hottest: hottest.map(|h| one_line(&h)),
        };
        self.end_purpose(active.purpose, Some(active.kind), Ok(file))
    }

    /// The wait for the profile ran out.
    pub(super) fn on_profile_deadline(&mut self) -> Option<Event> {
        let active = self.profile.as_ref()?;
        let why = if Instant::now() >= active.give_up_at {
            "it took too long (the app may be hung or short of memory)".to_string()
        } else {
            format!(
                "no answer from the app for {} (is it hung? an older monitor?)",
                human(IDLE_LIMIT)
            )
        };
        self.fail_profile(why)
    }

    /// Ends the profile streaming in with an error (its partial file removed).
    pub(super) fn fail_profile(&mut self, why: String) -> Option<Event> {
        let active = self.profile.take()?;
        drop(active.file);
        if let Err(error) = std::fs::remove_file(&active.path) {
            tracing::warn!(%error, path = %active.path.display(), "cannot remove a partial profile");
        }
        self.end_purpose(active.purpose, Some(active.kind), Err(why))
    }

    fn end_purpose(
        &mut self,
        purpose: Purpose,
        kind: Option<ProfileKind>,
        result: ProfileResult,
    ) -> Option<Event> {
        let what = match kind {
            Some(ProfileKind::Heap) => "heap snapshot",
            _ => "profile",
        };
        match purpose {
            Purpose::Demand(reply) => {
                let _ = reply.send(result);
                None
            }
            Purpose::MemoryRestart(pong) => {
                self.memory_note = Some(match result {
                    Ok(file) => format!(
                        "heap snapshot {} ({})",
                        file.path,
                        crate::core::units::bytes(file.bytes)
                    ),
                    Err(why) => format!("no heap snapshot: {why}"),
                });
                Some(pong)
            }
            Purpose::Stall { p99_ms } => {
                match result {
                    Ok(file) => {
                        let hottest = file
                            .hottest
                            .map(|h| format!("; hottest function: {h}"))
                            .unwrap_or_default();
                        self.record(
                            "profile",
                            format!(
                                "loop delay p99 {p99_ms:.0} ms over the stall threshold: CPU profile {} ({}){hottest}",
                                file.path,
                                crate::core::units::bytes(file.bytes)
                            ),
                        );
                    }
                    Err(why) => self.record("profile", format!("no {what} at the stall: {why}")),
                }
                None
            }
        }
    }

    /// A pong arrived: takes a stall profile if its loop delay calls for one, or holds back a
    /// pong over the memory limit until a heap snapshot is written. Returns the pong to step now,
    /// or `None` when it is held.
    pub(super) fn profile_on_pong(&mut self, pong: Event, rss: u64, p99_ms: f64) -> Option<Event> {
        if self.profile.is_some() {
            return Some(pong);
        }
        let over_limit = self
            .spec
            .timing
            .policy
            .max_memory
            .is_some_and(|limit| rss > limit);
        if over_limit
            && self.spec.heap_snapshot_on_memory_restart
            && self.memory_snapshot_for != Some(self.generation)
        {
            self.memory_snapshot_for = Some(self.generation);
            return self.start_profile(
                ProfileKind::Heap,
                Duration::ZERO,
                Purpose::MemoryRestart(pong),
            );
        }
        if let Some(threshold) = self.spec.profile_on_stall {
            let due = self
                .last_stall_profile
                .is_none_or(|at| at.elapsed() >= STALL_EVERY);
            if !over_limit && due && p99_ms >= threshold.as_secs_f64() * 1_000.0 {
                self.last_stall_profile = Some(Instant::now());
                if let Some(event) =
                    self.start_profile(ProfileKind::Cpu, STALL_PROFILE, Purpose::Stall { p99_ms })
                {
                    return Some(event);
                }
            }
        }
        Some(pong)
    }
}

/// `text` on one line, at most [`MAX_HOTTEST`] characters.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_HOTTEST)
        .collect()
}
