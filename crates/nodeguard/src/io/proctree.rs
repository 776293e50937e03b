//! The process trees under the supervisor: which processes belong to each app (its children,
//! grandchildren, and those that escaped its process group), their total memory, and reaping the
//! orphans that, as a child subreaper (or PID 1), the supervisor inherits.
//!
//! One scan of the process table per [`SCAN_INTERVAL`] serves every app, rather than one per
//! heartbeat per app. A descendant whose parent died is re-parented to the supervisor and loses
//! its link to the app, so the index remembers, by pid and start time, which app each process was
//! seen under, and keeps counting it there. A process that was never seen under its app (a quick
//! double fork finishes between two scans) is recognised by the [`ENV_SPAWN_KEY`] it inherited
//! from the app's environment. When an app's main process exits, [`TreeSnapshot`] says which
//! leftovers to end. The same scan measures each tree's CPU use (see [`CpuMeter`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::platform::{self, ProcessInfo};

/// Set in each app's environment to a key unique to that spawn; inherited by its descendants, it
/// ties an orphan back to its app.
pub const ENV_SPAWN_KEY: &str = "NODEGUARD_SPAWN";

/// How often the process table is scanned.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How long after a SIGCHLD the table is scanned for adopted orphans to reap. The signal mostly
/// means an app's main process exited, and its restart is under way on the same thread: a scan
/// (a read of every process's stat) right then would delay it, while a zombie orphan can wait a
/// moment. Several SIGCHLDs within this time share one scan.
pub const ORPHAN_REAP_DELAY: Duration = Duration::from_millis(50);

/// A process, identified across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    pub pid: u32,
    pub start_time: u64,
}

/// One app's tree at the last scan, its main process excluded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppTree {
    pub descendants: Vec<Member>,
    /// Resident memory of the descendants, in bytes.
    pub descendants_rss: u64,
    /// Resident memory of the main process itself, in bytes (what its monitor reports, when the
    /// monitor is in it; under a command the monitor is in a descendant).
    pub root_rss: u64,
    /// The main process's start time (with its pid, identifies it across pid reuse).
    pub root_start: u64,
    /// CPU time of the whole tree (main process and descendants seen now), in clock ticks.
    pub cpu_ticks: u64,
    /// CPU use of the tree between the last two scans, in percent of one core (100 is one core
    /// busy); `None` on the first scan that sees the tree.
    pub cpu_percent: Option<f64>,
}

/// Every app's tree at the last scan, by the pid of the app's main process.
#[derive(Debug, Clone, Default)]
pub struct TreeSnapshot {
    pub apps: HashMap<u32, AppTree>,
}

impl TreeSnapshot {
    pub fn of(&self, root: u32) -> Option<&AppTree> {
        self.apps.get(&root)
    }
}

/// The supervisor's own children (the apps' main processes): pid → spawn key. Spawning holds the
/// lock from fork until the pid is recorded, so the reaper never collects a child that tokio
/// waits for.
pub type ChildSet = Arc<Mutex<HashMap<u32, u64>>>;

/// Remembers which app each process was seen under.
#[derive(Debug, Default)]
pub struct TreeIndex {
    owner: HashMap<Member, u32>,
    /// Adopted orphans whose environment names no app of ours: not looked at again.
    foreign: HashSet<Member>,
}

impl TreeIndex {
    /// Attributes `table`'s processes to the apps whose main processes are `roots` (pid → spawn
    /// key); `me` is the supervisor's pid. Orphans it adopted keep the app they were seen under,
    /// or are matched by `spawn_key_of` (the [`ENV_SPAWN_KEY`] in a process's environment).
    pub fn update(
        &mut self,
        table: &[ProcessInfo],
        roots: &HashMap<u32, u64>,
        me: u32,
        spawn_key_of: impl Fn(u32) -> Option<u64>,
    ) -> TreeSnapshot {
        let mut children: HashMap<u32, Vec<&ProcessInfo>> = HashMap::new();
        for process in table {
            children.entry(process.ppid).or_default().push(process);
        }
        let mut owner = HashMap::new();
        let mut apps: HashMap<u32, AppTree> = HashMap::new();
        let mut visit = |start: &ProcessInfo, root: u32, owner: &mut HashMap<Member, u32>| {
            let tree = apps.entry(root).or_default();
            let mut stack = vec![start];
            while let Some(process) = stack.pop() {
                let member = Member {
                    pid: process.pid,
                    start_time: process.start_time,
                };
                if owner.insert(member, root).is_some() {
                    continue;
                }
                tree.descendants.push(member);
                tree.descendants_rss += process.rss;
                tree.cpu_ticks = tree.cpu_ticks.saturating_add(process.cpu_ticks);
                stack.extend(children.get(&process.pid).into_iter().flatten().copied());
            }
        };
        for &root in roots.keys() {
            for child in children.get(&root).into_iter().flatten() {
                visit(child, root, &mut owner);
            }
        }
        // Orphans adopted by us: seen under an app before, or carrying its spawn key.
        let mut foreign = HashSet::new();
        for orphan in children.get(&me).into_iter().flatten() {
            if roots.contains_key(&orphan.pid) || orphan.zombie {
                continue;
            }
            let member = Member {
                pid: orphan.pid,
                start_time: orphan.start_time,
            };
            let root = match self.owner.get(&member) {
                Some(&root) => Some(root),
                None if self.foreign.contains(&member) => None,
                None => spawn_key_of(orphan.pid).and_then(|key| {
                    roots
                        .iter()
                        .find_map(|(&root, &root_key)| (root_key == key).then_some(root))
                }),
            };
            match root.filter(|root| roots.contains_key(root)) {
                Some(root) => visit(orphan, root, &mut owner),
                None => {
                    foreign.insert(member);
                }
            }
        }
        for &root in roots.keys() {
            apps.entry(root).or_default();
        }
        for process in table {
            if let Some(tree) = apps.get_mut(&process.pid) {
                tree.root_rss = process.rss;
                tree.root_start = process.start_time;
                tree.cpu_ticks = tree.cpu_ticks.saturating_add(process.cpu_ticks);
            }
        }
        self.foreign = foreign;
        self.owner = owner;
        TreeSnapshot { apps }
    }
}

/// Turns the CPU time of each tree at successive scans into a rate. It keeps one number per app
/// between scans, nothing per process: a descendant that exits takes its time with it (the
/// kernel adds it to its parent's children's time, which is not counted), so the interval in
/// which it exits may read low, never high.
#[derive(Debug)]
pub struct CpuMeter {
    ticks_per_second: f64,
    /// By main process (pid and start time): the tree's CPU ticks at the last scan and when.
    last: HashMap<Member, (u64, std::time::Instant)>,
}

impl CpuMeter {
    pub fn new(ticks_per_second: u64) -> Self {
        Self {
            // Never 0: a bogus value makes no rates rather than a division by zero.
            ticks_per_second: ticks_per_second.max(1) as f64,
            last: HashMap::new(),
        }
    }

    /// Sets each tree's `cpu_percent` from its CPU time now and at the previous scan.
    pub fn measure(&mut self, snapshot: &mut TreeSnapshot, now: std::time::Instant) {
        let mut last = HashMap::with_capacity(snapshot.apps.len());
        for (&pid, tree) in &mut snapshot.apps {
            let root = Member {
                pid,
                start_time: tree.root_start,
            };
            if let Some(&(ticks, at)) = self.last.get(&root) {
                let seconds = now.saturating_duration_since(at).as_secs_f64();
                if seconds > 0.0 {
                    let used = tree.cpu_ticks.saturating_sub(ticks) as f64 / self.ticks_per_second;
                    tree.cpu_percent = Some(used / seconds * 100.0);
                }
            }
            last.insert(root, (tree.cpu_ticks, now));
        }
        self.last = last;
    }
}

fn kill_leftover(pid: u32) {
    if let Err(error) = platform::kill_process(pid) {
        tracing::warn!(pid, %error, "cannot end a leftover process");
    }
}

/// What is left of an app's tree after its main process exited gets SIGKILL, in two halves. This
/// one is cheap: the descendants the last scan saw (each re-checked by its start time, so a
/// reused pid is left alone).
pub fn end_known_descendants(tree: Option<&AppTree>) {
    for member in tree.into_iter().flat_map(|tree| &tree.descendants) {
        let same = platform::process_info(member.pid)
            .is_some_and(|now| now.start_time == member.start_time && !now.zombie);
        if same {
            kill_leftover(member.pid);
        }
    }
}

/// The other half: a look at the orphans adopted by this supervisor (its children that are no
/// app's main process) for those carrying `spawn_key` in their environment (descendants born and
/// orphaned since the last scan). Linux lists a process's children (see
/// [`platform::own_children`]); elsewhere, or where it does not, the whole process table is read,
/// so a restart runs it off its critical path (see the worker).
pub fn end_orphans_by_key(spawn_key: u64, children: &ChildSet) {
    end_orphans_by_keys(&HashSet::from([spawn_key]), children);
}

/// [`end_orphans_by_key`] for several keys in one scan of the process table.
pub fn end_orphans_by_keys(spawn_keys: &HashSet<u64>, children: &ChildSet) {
    // The apps' main processes still running are not orphans: their stat is not even read (in
    // `stop all` of thousands, most of the table), which makes a scan a listing of /proc and a
    // read per other process. An app whose process exited was forgotten before its sweep.
    let ours: HashSet<u32> = children
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .copied()
        .collect();
    let me = std::process::id();
    // The adopted orphans are this process's children: where the kernel lists those, they are
    // read alone, not the whole table (each crash's sweep read every process's stat, on a core the
    // restarted app's start competes for).
    let table = match platform::own_children() {
        Some(children) => children
            .into_iter()
            .filter(|pid| !ours.contains(pid))
            .filter_map(platform::process_info)
            .collect(),
        None => match platform::list_processes_but(|pid| ours.contains(&pid)) {
            Ok(table) => table,
            Err(_) => return,
        },
    };
    for orphan in table.iter().filter(|p| p.ppid == me && !p.zombie) {
        let key = platform::environment_variable(orphan.pid, ENV_SPAWN_KEY)
            .and_then(|key| key.parse::<u64>().ok());
        if key.is_some_and(|key| spawn_keys.contains(&key)) {
            kill_leftover(orphan.pid);
        }
    }
}

/// Ends orphans by spawn key ([`end_orphans_by_key`]) on its own thread, in batches: the keys
/// of every app that exited while a scan ran share the next scan, so `stop all` of thousands of
/// apps is a few scans of the process table, not one per app. The periodic tree scan runs on the
/// same thread (see [`start`]), off the runtime's only thread.
#[derive(Clone)]
pub struct OrphanSweeper {
    jobs: std::sync::mpsc::Sender<SweeperJob>,
}

enum SweeperJob {
    Sweep(u64, tokio::sync::oneshot::Sender<()>),
    Run(Box<dyn FnOnce() + Send>),
}

impl OrphanSweeper {
    pub fn start(children: ChildSet) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<SweeperJob>();
        std::thread::Builder::new()
            .name("nodeguard-sweeper".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut sweeps = Vec::new();
                    let mut runs = Vec::new();
                    for job in std::iter::once(first).chain(queue.try_iter()) {
                        match job {
                            SweeperJob::Sweep(key, done) => sweeps.push((key, done)),
                            SweeperJob::Run(job) => runs.push(job),
                        }
                    }
                    if !sweeps.is_empty() {
                        let keys: HashSet<u64> = sweeps.iter().map(|(key, _)| *key).collect();
                        end_orphans_by_keys(&keys, &children);
                        for (_, done) in sweeps {
                            let _ = done.send(());
                        }
                    }
                    for job in runs {
                        job();
                    }
                }
            })?;
        Ok(Self { jobs })
    }

    /// Asks for the orphans carrying `spawn_key` to be ended; the receiver answers once they
    /// were (or at once if the sweeper is gone).
    pub fn sweep(&self, spawn_key: u64) -> tokio::sync::oneshot::Receiver<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let _ = self.jobs.send(SweeperJob::Sweep(spawn_key, done));
        answer
    }

    /// Runs `job` on the sweeper's thread; gives it back if that thread is gone.
    fn run<F: FnOnce() + Send + 'static>(&self, job: F) -> Result<(), ()> {
        self.jobs
            .send(SweeperJob::Run(Box::new(job)))
            .map_err(|_| ())
    }
}

/// What the scanner keeps from one scan to the next.
struct Scanner {
    me: u32,
    index: TreeIndex,
    cpu: CpuMeter,
}

impl Scanner {
    /// One scan of the process table: every app's tree, or `None` without a process table.
    fn scan(&mut self, children: &ChildSet) -> Option<TreeSnapshot> {
        let table = platform::list_processes().ok()?;
        let roots = children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut snapshot = self.index.update(&table, &roots, self.me, |pid| {
            platform::environment_variable(pid, ENV_SPAWN_KEY)?
                .parse()
                .ok()
        });
        self.cpu.measure(&mut snapshot, std::time::Instant::now());
        Some(snapshot)
    }
}

/// Starts the scanner: a task that publishes a [`TreeSnapshot`] every [`SCAN_INTERVAL`] and
/// collects zombie orphans (on SIGCHLD and at each scan) until `stop` fires. The scan itself (a
/// read of every process's stat: 20-30 ms of CPU with 2,000-3,700 processes on the machine) runs
/// on `sweeper`'s thread: on the runtime's only thread it held up whatever came meanwhile, such
/// as an app's exit and its restart, or a restarted app's hello.
pub fn start(
    children: ChildSet,
    stop: CancellationToken,
    sweeper: OrphanSweeper,
) -> watch::Receiver<Arc<TreeSnapshot>> {
    let (publish, snapshots) = watch::channel(Arc::new(TreeSnapshot::default()));
    tokio::spawn(async move {
        let mut scanner = Some(Scanner {
            me: std::process::id(),
            index: TreeIndex::default(),
            cpu: CpuMeter::new(platform::clock_ticks_per_second()),
        });
        let mut ticks = tokio::time::interval(SCAN_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sigchld = child_signals();
        let mut reap_at: Option<tokio::time::Instant> = None;
        loop {
            let scan_tree = tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => true,
                _ = next_child_signal(&mut sigchld), if reap_at.is_none() => {
                    reap_at = Some(tokio::time::Instant::now() + ORPHAN_REAP_DELAY);
                    continue;
                }
                _ = sleep_until_due(reap_at) => false,
            };
            reap_at = None;
            if reap_orphans(&children) {
                // An exited child of tokio's hides the others from waitid until tokio collects
                // it, which it does on this same SIGCHLD: look again shortly.
                reap_at = Some(tokio::time::Instant::now() + ORPHAN_REAP_DELAY);
            }
            // A wake-up only to reap reads no process table: read on every exit, it cost a
            // millisecond of this thread (the runtime's only one) 50 ms after each crash, just
            // when the restarted process's monitor says hello, and during `stop all` of thousands
            // of apps one whole /proc read per SIGCHLD batch.
            if !scan_tree {
                continue;
            }
            let Some(mut taken) = scanner.take() else {
                break;
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            let roots = children.clone();
            let job = move || {
                let snapshot = taken.scan(&roots);
                let _ = reply.send((taken, snapshot));
            };
            let (kept, snapshot) = match sweeper.run(job) {
                Ok(()) => match answer.await {
                    Ok(done) => done,
                    // The sweeper's thread is gone (the supervisor is ending).
                    Err(_) => break,
                },
                Err(()) => break,
            };
            scanner = Some(kept);
            if let Some(snapshot) = snapshot {
                publish.send_replace(Arc::new(snapshot));
            }
        }
    });
    snapshots
}

/// Collects exited children that are not children tokio waits for: orphans we adopted as a
/// subreaper or PID 1. It asks the kernel (waitid), not /proc, which in a PID namespace may be
/// the host's and show none of our children. True if one of tokio's children is still to be
/// collected and hides any others.
fn reap_orphans(children: &ChildSet) -> bool {
    // The spawner holds this lock from fork until it records the pid, so a child tokio will wait
    // for is never taken for an orphan.
    let ours = children.lock().unwrap_or_else(PoisonError::into_inner);
    let (reaped, blocked) = platform::reap_exited_orphans(|pid| ours.contains_key(&pid));
    if reaped > 0 {
        tracing::debug!(reaped, "reaped orphans");
    }
    blocked
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
fn child_signals() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok()
}

#[cfg(unix)]
async fn next_child_signal(signals: &mut Option<tokio::signal::unix::Signal>) {
    match signals {
        Some(signals) => {
            signals.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, ppid: u32, rss: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid,
            pgid: pid,
            start_time: u64::from(pid) * 10,
            rss,
            cpu_ticks: 0,
            zombie: false,
        }
    }

    fn pids(tree: &AppTree) -> Vec<u32> {
        let mut pids: Vec<u32> = tree.descendants.iter().map(|m| m.pid).collect();
        pids.sort();
        pids
    }

    #[test]
    fn descendants_are_counted_under_their_app_and_orphans_stay_with_it() {
        let me = 1;
        let roots = HashMap::from([(10, 100), (20, 200)]);
        let mut index = TreeIndex::default();
        let no_env = |_| None;
        // 10 → 11 → 12, 20 → 21, and 99 is unrelated.
        let table = vec![
            process(10, me, 40),
            process(11, 10, 5),
            process(12, 11, 7),
            process(20, me, 40),
            process(21, 20, 3),
            process(99, 50, 1000),
        ];
        let snapshot = index.update(&table, &roots, me, no_env);
        assert_eq!(pids(snapshot.of(10).unwrap()), [11, 12]);
        assert_eq!(snapshot.of(10).unwrap().descendants_rss, 12);
        assert_eq!(pids(snapshot.of(20).unwrap()), [21]);

        // 11 exits; 12 is re-parented to us and still counts for app 10.
        let table = vec![
            process(10, me, 40),
            process(12, me, 7),
            process(20, me, 40),
            process(21, 20, 3),
        ];
        let snapshot = index.update(&table, &roots, me, no_env);
        assert_eq!(pids(snapshot.of(10).unwrap()), [12]);

        // A new process reusing pid 12 is not app 10's.
        let mut reused = process(12, me, 7);
        reused.start_time += 1;
        let snapshot = index.update(&[process(10, me, 40), reused], &roots, me, no_env);
        assert_eq!(pids(snapshot.of(10).unwrap()), Vec::<u32>::new());
    }

    #[test]
    fn an_orphan_never_seen_under_its_app_is_matched_by_its_spawn_key() {
        let me = 1;
        let roots = HashMap::from([(10, 100), (20, 200)]);
        let mut index = TreeIndex::default();
        // 31 and 32 were adopted before any scan saw their parents; 33 is someone else's.
        let table = vec![
            process(10, me, 40),
            process(20, me, 40),
            process(31, me, 9),
            process(32, me, 4),
            process(33, me, 1),
        ];
        let keys = |pid| match pid {
            31 => Some(200),
            32 => Some(100),
            _ => None,
        };
        let snapshot = index.update(&table, &roots, me, keys);
        assert_eq!(pids(snapshot.of(10).unwrap()), [32]);
        assert_eq!(pids(snapshot.of(20).unwrap()), [31]);
        assert_eq!(snapshot.of(20).unwrap().descendants_rss, 9);
        // The foreign one is not asked about again.
        let snapshot = index.update(&table, &roots, me, |pid| {
            assert_ne!(pid, 33, "asked about a known foreign process again");
            None
        });
        assert_eq!(pids(snapshot.of(10).unwrap()), [32]);
    }

    #[test]
    fn cpu_use_is_the_tree_s_ticks_per_second_of_the_interval() {
        let me = 1;
        let roots = HashMap::from([(10, 100)]);
        let mut index = TreeIndex::default();
        let mut meter = CpuMeter::new(100);
        let at = |root: u64, child: u64| {
            let mut main = process(10, me, 40);
            main.cpu_ticks = root;
            let mut worker = process(11, 10, 5);
            worker.cpu_ticks = child;
            vec![main, worker]
        };
        let start = std::time::Instant::now();
        let mut first = index.update(&at(1000, 500), &roots, me, |_| None);
        meter.measure(&mut first, start);
        assert_eq!(first.of(10).unwrap().cpu_ticks, 1500);
        assert_eq!(first.of(10).unwrap().cpu_percent, None);
        // 2 s later: 50 + 150 ticks = 2 s of CPU in 2 s, one core.
        let mut second = index.update(&at(1050, 650), &roots, me, |_| None);
        meter.measure(&mut second, start + Duration::from_secs(2));
        let percent = second.of(10).unwrap().cpu_percent.unwrap();
        assert!((percent - 100.0).abs() < 1e-9, "{percent}");
        // The worker exits: its time leaves the tree, which reads 0, not negative.
        let mut third = index.update(&at(1060, 0)[..1], &roots, me, |_| None);
        meter.measure(&mut third, start + Duration::from_secs(3));
        assert_eq!(third.of(10).unwrap().cpu_percent, Some(0.0));
    }
}
