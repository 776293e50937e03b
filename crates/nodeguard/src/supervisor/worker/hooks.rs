//! Events out of an app task: its hooks (`on_event`), and kernel OOM kills told apart from other
//! deaths by SIGKILL.

use std::sync::Arc;

use crate::config::hooks::HookKind;
use crate::core::exit::{signal_name, ExitKind};
use crate::core::machine::{Phase, Report};
use crate::io::hooks::HookJob;
use crate::platform::oom;

use super::*;

/// What a hook is told about one event.
pub(super) struct HookEvent<'a> {
    pub kind: HookKind,
    pub pid: Option<u32>,
    pub exit: Option<ExitKind>,
    pub message: &'a str,
    pub stack: &'a [String],
    pub stderr: &'a [String],
}

/// The kernel OOM killer's part in a process's end, for its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OomKill {
    /// The app's main process was the victim.
    Main,
    /// A process in its tree was (the app then exited).
    Descendant(u32),
    /// No kernel log to read, but the cgroup's OOM-kill count rose while it ran, and nobody in
    /// nodeguard sent the SIGKILL.
    Counted,
}

impl OomKill {
    pub(super) fn text(&self) -> String {
        match self {
            OomKill::Main => "killed by the kernel OOM killer".into(),
            OomKill::Descendant(pid) => {
                format!("its process {pid} was killed by the kernel OOM killer")
            }
            OomKill::Counted => {
                "killed by the kernel OOM killer (the cgroup's oom_kill count rose while it ran; \
                 the kernel log named no process of it)"
                    .into()
            }
        }
    }
}

/// The hook kind of a report, if hooks hear of it.
pub(super) fn hook_kind(
    report: &Report,
    oom: bool,
) -> Option<(HookKind, Option<u32>, Option<ExitKind>)> {
    Some(match report {
        Report::Started { pid } => (HookKind::Start, Some(*pid), None),
        Report::Stopped { pid, status } => (HookKind::Stop, Some(*pid), Some(*status)),
        Report::Exited { pid, status, .. } => {
            let kind = if oom {
                HookKind::Oom
            } else if *status == ExitKind::Code(0) {
                HookKind::Exit
            } else {
                HookKind::Crash
            };
            (kind, Some(*pid), Some(*status))
        }
        Report::MemoryExceeded { pid, .. } => (HookKind::Memory, Some(*pid), None),
        Report::GaveUp { .. } => (HookKind::Errored, None, None),
        _ => return None,
    })
}

impl WorkerTask {
    /// Hands the event to each of the app's hooks that wants it; nothing when it has none.
    pub(super) fn fire_hooks(&self, event: HookEvent<'_>) {
        if !self.spec.hooks.iter().any(|hook| hook.wants(event.kind)) {
            return;
        }
        let at = crate::io::logfile::timestamp(std::time::SystemTime::now());
        let (code, signal) = match event.exit {
            Some(ExitKind::Code(code)) => (Some(code), None),
            Some(ExitKind::Signal(signal)) => (
                None,
                Some(signal_name(signal).map_or_else(|| format!("SIG{signal}"), str::to_string)),
            ),
            None => (None, None),
        };
        let mut payload = serde_json::Map::new();
        let mut put = |key: &str, value: serde_json::Value| {
            payload.insert(key.to_string(), value);
        };
        put("at", at.clone().into());
        put("app", self.spec.name.clone().into());
        put("id", self.spec.id.into());
        if let Some(instance) = self.spec.shown_instance() {
            put("instance", instance.into());
        }
        put("kind", event.kind.name().into());
        if let Some(pid) = event.pid {
            put("pid", pid.into());
        }
        if let Some(code) = code {
            put("code", code.into());
        }
        if let Some(signal) = &signal {
            put("signal", signal.clone().into());
        }
        put("restarts", self.machine.restarts.into());
        put("hangs", self.machine.hangs.into());
        put("message", event.message.into());
        if !event.stack.is_empty() {
            put("stack", event.stack.to_vec().into());
        }
        if !event.stderr.is_empty() {
            put("stderr", event.stderr.to_vec().into());
        }
        let json = serde_json::Value::Object(payload).to_string();
        let clean = |text: &str| text.replace('\0', "");
        let mut env = vec![
            (
                "NODEGUARD_EVENT_KIND".to_string(),
                event.kind.name().to_string(),
            ),
            ("NODEGUARD_APP".to_string(), clean(&self.spec.name)),
            ("NODEGUARD_APP_ID".to_string(), self.spec.id.to_string()),
            ("NODEGUARD_AT".to_string(), at),
            (
                "NODEGUARD_RESTARTS".to_string(),
                self.machine.restarts.to_string(),
            ),
            (
                "NODEGUARD_HANGS".to_string(),
                self.machine.hangs.to_string(),
            ),
            (
                "NODEGUARD_MESSAGE".to_string(),
                clean(event.message.lines().next().unwrap_or_default()),
            ),
            ("NODEGUARD_EVENT_JSON".to_string(), clean(&json)),
        ];
        if let Some(instance) = self.spec.shown_instance() {
            env.push(("NODEGUARD_INSTANCE".to_string(), instance.to_string()));
        }
        if let Some(pid) = event.pid {
            env.push(("NODEGUARD_PID".to_string(), pid.to_string()));
        }
        if let Some(code) = code {
            env.push(("NODEGUARD_EXIT_CODE".to_string(), code.to_string()));
        }
        if let Some(signal) = signal {
            env.push(("NODEGUARD_EXIT_SIGNAL".to_string(), signal));
        }
        let payload: Arc<str> = json.into();
        for hook in self.spec.hooks.iter().filter(|hook| hook.wants(event.kind)) {
            self.ctx.hooks.fire(HookJob {
                target: hook.target.clone(),
                hook: hook.text.clone(),
                app: self.spec.display_name().to_string(),
                kind: event.kind.name(),
                cwd: self.spec.cwd.clone(),
                env: env.clone(),
                payload: payload.clone(),
                timeout: hook
                    .timeout
                    .unwrap_or(crate::supervisor::hooks::DEFAULT_TIMEOUT),
            });
        }
    }

    /// The processes of the app's tree now (its main process and, at the last scan, its
    /// descendants), for [`Self::check_oom`] once it has exited.
    pub(super) fn tree_pids(&self) -> Vec<u32> {
        let Some(pid) = self.machine.pid() else {
            return Vec::new();
        };
        let tree = self.ctx.tree.borrow();
        std::iter::once(pid)
            .chain(
                tree.of(pid)
                    .into_iter()
                    .flat_map(|tree| tree.descendants.iter().map(|member| member.pid)),
            )
            .collect()
    }

    /// The app's process exited with `status` while nobody in nodeguard was stopping it: was it
    /// the kernel's OOM killer (the process, or one in its tree `pids`)? Reads the kernel log
    /// (only on a SIGKILL, or when the app had descendants: the records logged since its last
    /// look, on this thread when they are few) and, when the log names none of them, the
    /// cgroup's count.
    pub(super) async fn check_oom(&mut self, status: ExitKind, pids: Vec<u32>) {
        self.oom = None;
        if !matches!(self.machine.phase, Phase::Live { .. }) {
            return;
        }
        let killed = status == ExitKind::Signal(libc::SIGKILL);
        if !killed && (pids.len() < 2 || status == ExitKind::Code(0)) {
            return;
        }
        let since = self.spawned_micros.saturating_sub(1_000_000);
        let scan = match oom::kmsg_victims(since, oom::INLINE_RECORDS, false) {
            // Many records to read (or another app's look under way): off this thread.
            oom::Scan::Behind => tokio::task::spawn_blocking(move || {
                oom::kmsg_victims(since, oom::MOST_RECORDS, true)
            })
            .await
            .unwrap_or(oom::Scan::Unreadable),
            scan => scan,
        };
        let main = pids.first().copied();
        let named = match &scan {
            oom::Scan::Victims(victims) if main.is_some_and(|main| victims.contains(&main)) => {
                Some(OomKill::Main)
            }
            oom::Scan::Victims(victims) => pids
                .iter()
                .skip(1)
                .find(|pid| victims.contains(pid))
                .map(|pid| OomKill::Descendant(*pid)),
            oom::Scan::Unreadable | oom::Scan::Behind => None,
        };
        self.oom = named.or_else(|| {
            let counted = killed
                && self
                    .oom_baseline
                    .zip(oom::cgroup_oom_kills())
                    .is_some_and(|(before, now)| now > before);
            counted.then_some(OomKill::Counted)
        });
    }

    /// At each spawn: the clock and the cgroup's OOM-kill count [`Self::check_oom`] compares
    /// with.
    pub(super) fn mark_spawn_for_oom(&mut self) {
        self.oom = None;
        self.spawned_micros = oom::monotonic_micros();
        self.oom_baseline = oom::cgroup_oom_kills();
    }
}
