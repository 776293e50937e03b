//! Fuzz-style tests of what nodeguard reads from files: random bytes and mutated valid documents
//! through the config-file loader and checker (JSON), the duration and size parsers, and the state
//! file (`dump.json`) as `resurrect` reads it. Nothing may panic; an error is one line (a config's
//! list of problems is one line per problem, each naming the file); what is accepted can be sent
//! to the daemon without losing anything on the way.
//!
//! Deterministic: every case comes from a seed (random per run, or `NODEGUARD_FUZZ_SEED`), and a
//! failure names the seed, the case and its input, so `NODEGUARD_FUZZ_SEED=<seed> cargo test -p
//! nodeguard --test fuzz_input` replays it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // a test: casts of random numbers are the point, and a failed step should stop it loudly
#![cfg(unix)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodeguard::config::file::{self, AppDefaults, ConfigFileError};
use nodeguard::config::{
    AppSpec, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_MISSES, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_KILL_TIMEOUT, DEFAULT_START_GRACE,
};
use nodeguard::core::machine::{RestartPolicy, Timing};
use nodeguard::io::state_file::{self, StateError};
use serde_json::{json, Value};

/// Cases per test; each config and dump case writes and reads one small file.
const FILE_CASES: u64 = 2_000;
const STRING_CASES: u64 = 20_000;

/// splitmix64: tiny, fast and good enough to pick inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max` random bytes (`max` > 0).
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The run's seed: `NODEGUARD_FUZZ_SEED`, or one from the clock.
fn seed() -> u64 {
    if let Ok(text) = std::env::var("NODEGUARD_FUZZ_SEED") {
        return text
            .trim()
            .parse()
            .expect("NODEGUARD_FUZZ_SEED must be an unsigned integer");
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Runs `cases` cases, each from its own rng; a panic in one (the code under test's or a failed
/// check) is reported with the seed, the case number and the input the case recorded.
fn run_cases(name: &str, cases: u64, case: impl Fn(&mut Rng, &mut Vec<u8>)) {
    let seed = seed();
    for index in 0..cases {
        let mut rng = Rng(seed ^ index.wrapping_mul(0xa076_1d64_78bd_642f));
        let mut input = Vec::new();
        let outcome = catch_unwind(AssertUnwindSafe(|| case(&mut rng, &mut input)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let shown = String::from_utf8_lossy(&input[..input.len().min(4_000)]).into_owned();
            panic!(
                "{name}: case {index} failed: {message}\n  input ({} bytes): {shown}\n  replay \
                 with NODEGUARD_FUZZ_SEED={seed}",
                input.len()
            );
        }
    }
}

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("random bytes");
        let path = std::env::temp_dir().join(format!(
            "ng-fuzz-{tag}-{:012x}",
            u64::from_ne_bytes(bytes) >> 16
        ));
        std::fs::create_dir(&path).expect("scratch dir");
        std::fs::create_dir(path.join("sub")).expect("scratch subdir");
        std::fs::write(path.join("app.js"), "").expect("app.js");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `bytes` to a new private file at `path`, as nodeguard writes its own (replacing a file
/// by truncation would make ext4 flush it to disk on close, thousands of times).
fn write_fresh(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the input file");
    file.write_all(bytes).expect("write the input file");
}

/// Numbers and strings that break assumptions: huge, negative, fractional, out of range, wrong
/// unit or type. The duration strings include the ones issue 12 found overflowing.
fn odd_value(rng: &mut Rng) -> Value {
    const NUMBERS: &[&str] = &[
        "0",
        "-1",
        "-0.0",
        "0.5",
        "1e300",
        "-1e300",
        "1.7976931348623157e308",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "5e-324",
        "123456789012345678901234567890",
    ];
    const STRINGS: &[&str] = &[
        "",
        " ",
        "max",
        "-1",
        "0",
        "NaN",
        "Infinity",
        "1e309s",
        "4000000000000000h",
        "18446744073709551616ms",
        "18446744073709551615",
        "99999999999999999999",
        "5124095576030431h",
        "1.5s",
        "-5s",
        ".s",
        "1..2m",
        "200M",
        "1.5G",
        "99999999999999T",
        "1e400",
        "0x10",
        "127.0.0.1:0",
        "[::1]:65536",
        "host:99999",
        "a\u{0}b",
        "line\nbreak",
        "\u{1b}[31mred",
        "all",
        "../../etc/passwd",
        "/",
        "💥",
    ];
    match rng.below(10) {
        0..=2 => serde_json::from_str(rng.pick::<&str>(NUMBERS)).unwrap_or(Value::Null),
        3..=5 => Value::String(rng.pick(STRINGS).to_string()),
        6 => Value::String("y".repeat(rng.below(5_000))),
        7 => json!([1, "two", null, {"k": "v"}]),
        8 => json!({"nested": {"deeper": [true, 1e300]}}),
        _ => rng
            .pick(&[Value::Null, Value::Bool(true), Value::Bool(false)])
            .clone(),
    }
}

/// Changes one spot in a JSON tree: a value replaced, a field dropped, duplicated or added.
fn mutate_value(value: &mut Value, rng: &mut Rng) {
    match value {
        Value::Object(map) if !map.is_empty() && !rng.chance(8) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(8) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    let name = rng.pick(FIELD_NAMES).to_string();
                    map.insert(name, odd_value(rng));
                }
                _ => mutate_value(map.get_mut(&key).expect("picked key"), rng),
            }
        }
        Value::Array(items) if !items.is_empty() && !rng.chance(8) => {
            let at = rng.below(items.len());
            match rng.below(6) {
                0 => {
                    items.remove(at);
                }
                1 => {
                    let copy = items[at].clone();
                    items.push(copy);
                }
                _ => mutate_value(&mut items[at], rng),
            }
        }
        other => *other = odd_value(rng),
    }
}

/// Field names to add: known ones (so odd values reach their checks), near misses, PM2's.
const FIELD_NAMES: &[&str] = &[
    "name",
    "script",
    "args",
    "cwd",
    "env",
    "instances",
    "node_args",
    "interpreter_args",
    "max_memory_restart",
    "kill_timeout",
    "autorestart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "exp_backoff_restart_delay",
    "stop_exit_codes",
    "wait_ready",
    "listen_timeout",
    "listen",
    "out_file",
    "error_file",
    "time",
    "heartbeat_interval",
    "heartbeat_timeout",
    "heartbeat_misses",
    "start_grace",
    "exec_mode",
    "env_production",
    "kill_timout",
    "apps",
    "version",
    "id",
    "definition",
    "restarts",
    "hangs",
    "stopped",
    "instances_",
    "heartbeat_interval_ms",
    "kill_timeout_ms",
    "start_grace_ms",
    "max_memory",
    "clean_exit_codes",
    "listen_timeout_ms",
];

/// Byte-level damage: flips, truncation, insertions, duplicated stretches.
fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..=rng.below(4) {
        if bytes.is_empty() {
            bytes.extend(rng.bytes(17));
            continue;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes.truncate(at),
            2 => {
                let extra = rng.bytes(9);
                bytes.splice(at..at, extra);
            }
            3 => {
                let end = (at + 1 + rng.below(32)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => bytes[at] = *rng.pick(b"{}[]\",:0-.e\\"),
        }
    }
}

/// A document from `base`: random bytes, damaged text, or a tree with a few values changed.
fn document(rng: &mut Rng, base: &Value) -> Vec<u8> {
    match rng.below(8) {
        0 => rng.bytes(400),
        1 | 2 => {
            let mut bytes = serde_json::to_vec_pretty(base).expect("base serializes");
            mutate_bytes(&mut bytes, rng);
            bytes
        }
        _ => {
            let mut value = base.clone();
            for _ in 0..=rng.below(4) {
                mutate_value(&mut value, rng);
            }
            serde_json::to_vec_pretty(&value).expect("mutated value serializes")
        }
    }
}

fn defaults() -> AppDefaults {
    AppDefaults {
        node: PathBuf::from("/usr/bin/node"),
        timing: Timing {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            heartbeat_misses: DEFAULT_HEARTBEAT_MISSES,
            start_grace: DEFAULT_START_GRACE,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            policy: RestartPolicy::default(),
        },
    }
}

/// A config using every field the checker reads, as PM2 and nodeguard users write them.
fn config_base() -> Value {
    json!({
        "apps": [
            {
                "name": "api",
                "script": "app.js",
                "args": "--port 8080 --flag",
                "cwd": ".",
                "env": {"NODE_ENV": "production", "PORT": 8080, "DEBUG": false},
                "instances": 2,
                "node_args": ["--max-old-space-size=256"],
                "interpreter_args": "--trace-warnings",
                "max_memory_restart": "200M",
                "kill_timeout": 3000,
                "autorestart": true,
                "max_restarts": 10,
                "min_uptime": "2s",
                "restart_delay": 250,
                "exp_backoff_restart_delay": 100,
                "stop_exit_codes": [0, 3],
                "wait_ready": false,
                "listen_timeout": "8s",
                "listen": ["127.0.0.1:3000", 3001],
                "out_file": "sub/out.log",
                "error_file": "sub/err.log",
                "time": true,
                "heartbeat_interval": "1s",
                "heartbeat_timeout": "500ms",
                "heartbeat_misses": 3,
                "start_grace": 5000
            },
            {"script": "app.js", "instances": "max", "exec_mode": "fork"}
        ]
    })
}

/// Whether a config's error message has the shape users are promised: one line, or for a list
/// of problems one line per problem, each naming the file.
fn check_config_error(error: &ConfigFileError, file: &Path) {
    let message = error.to_string();
    assert!(!message.trim().is_empty(), "an empty error message");
    match error {
        ConfigFileError::Invalid { problems } => {
            assert!(!problems.is_empty(), "Invalid with no problems");
            for line in message.lines() {
                assert!(
                    line.starts_with(&file.display().to_string()),
                    "a problem line that does not name the file: {line:?}"
                );
            }
            assert_eq!(message.lines().count(), problems.len(), "{message}");
        }
        _ => assert!(!message.contains('\n'), "a multi-line error: {message:?}"),
    }
}

/// Whole milliseconds of `duration`, as the wire form carries it; `None` if that overflows.
fn wire_millis(duration: Duration) -> Option<u64> {
    u64::try_from(duration.as_millis()).ok()
}

/// Checks that an accepted app reaches the daemon as it was written: every duration fits the wire
/// form, and the daemon's side (`from_definition`) either refuses it with one line or ends up
/// with the same timing.
fn check_accepted(app: &file::AppConfig, defaults: &AppDefaults) {
    let timing = &app.timing;
    let durations = [
        ("kill_timeout", Some(timing.kill_timeout)),
        ("start_grace", Some(timing.start_grace)),
        ("heartbeat_interval", Some(timing.heartbeat_interval)),
        ("heartbeat_timeout", Some(timing.heartbeat_timeout)),
        ("min_uptime", app.min_uptime),
        ("restart_delay", app.restart_delay),
        ("exp_backoff_restart_delay", app.exp_backoff_restart_delay),
        ("listen_timeout", app.listen_timeout),
    ];
    for (field, duration) in durations {
        if let Some(duration) = duration {
            assert!(
                wire_millis(duration).is_some(),
                "{field} = {duration:?} was accepted but does not fit in the u64 milliseconds \
                 `start` sends to the daemon (it would be truncated)"
            );
        }
    }
    let definition = app.definition(&defaults.node, false);
    match AppSpec::from_definition(0, app.name.clone(), definition) {
        Ok(back) => {
            let whole_ms = |d: Duration| Duration::from_millis(wire_millis(d).unwrap_or(0));
            assert_eq!(
                (
                    back.timing.kill_timeout,
                    back.timing.start_grace,
                    back.timing.heartbeat_interval,
                    back.timing.heartbeat_timeout,
                    back.timing.heartbeat_misses,
                ),
                (
                    whole_ms(timing.kill_timeout),
                    whole_ms(timing.start_grace),
                    whole_ms(timing.heartbeat_interval),
                    whole_ms(timing.heartbeat_timeout),
                    timing.heartbeat_misses,
                ),
                "the daemon would run {} with other timings than the config's",
                app.name
            );
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains('\n'), "a multi-line error: {message:?}");
        }
    }
}

#[test]
fn mutated_json_configs_load_or_fail_with_one_line_per_problem() {
    let scratch = Scratch::new("config");
    let base = config_base();
    let defaults = defaults();
    let file = scratch.0.join("apps.json");
    run_cases("config file", FILE_CASES, |rng, input| {
        let bytes = document(rng, &base);
        input.clone_from(&bytes);
        write_fresh(&file, &bytes);
        match file::load(&file, &defaults) {
            Ok(loaded) => {
                assert!(!loaded.apps.is_empty(), "loaded a config with no apps");
                for warning in &loaded.warnings {
                    assert!(!warning.contains('\n'), "a multi-line warning: {warning:?}");
                }
                for app in &loaded.apps {
                    check_accepted(app, &defaults);
                }
            }
            Err(error) => check_config_error(&error, &file),
        }
    });
}

#[test]
fn random_duration_and_size_strings_parse_or_are_refused() {
    const PIECES: &[&str] = &[
        "0",
        "1",
        "9",
        ".",
        "5",
        "e",
        "-",
        "+",
        "ms",
        "s",
        "m",
        "h",
        "d",
        "K",
        "M",
        "G",
        "T",
        "B",
        "iB",
        " ",
        "99999999999999999999",
        "1e308",
        "NaN",
        "inf",
        "\u{0}",
        "٣",
    ];
    run_cases("durations and sizes", STRING_CASES, |rng, input| {
        let mut text = String::new();
        for _ in 0..=rng.below(5) {
            text.push_str(rng.pick::<&str>(PIECES));
        }
        input.clone_from(&text.clone().into_bytes());
        match nodeguard::core::duration::parse_duration(&text) {
            Ok(duration) => {
                // What a duration is used for: waiting that long from now.
                let _ = std::time::Instant::now().checked_add(duration);
            }
            Err(message) => assert!(!message.contains('\n') && !message.is_empty()),
        }
        let _ = file::parse_size(&text);
    });
}

/// A state file as the daemon writes it: two apps, one stopped, one with per-instance counters.
fn dump_base(scratch: &Path) -> Value {
    let definition = |name: &str, instances: u32| {
        json!({
            "name": name, "script": scratch.join("app.js"), "args": ["--port", "80"],
            "node": "/usr/bin/node", "node_args": [], "cwd": scratch, "env": [["A", "1"]],
            "out_file": null, "error_file": null, "log_timestamps": false,
            "autorestart": "on-failure", "max_restarts": 5, "restart_window_ms": 30000,
            "max_memory": 209715200, "clean_exit_codes": [0, 3], "min_uptime_ms": 1000,
            "restart_delay_ms": 0, "backoff_base_ms": 100, "heartbeat_interval_ms": 1000,
            "heartbeat_timeout_ms": 1000, "heartbeat_misses": 3, "start_grace_ms": 5000,
            "kill_timeout_ms": 5000, "instances": instances, "listen": ["127.0.0.1:0"],
            "wait_ready": false, "listen_timeout_ms": 8000
        })
    };
    json!({
        "version": 1,
        "apps": [
            {"id": 0, "definition": definition("api", 1), "restarts": 2, "hangs": 1, "stopped": false},
            {"id": 1, "definition": definition("web", 2), "restarts": 1, "hangs": 0, "stopped": true,
             "instances": [{"restarts": 1, "hangs": 0}, {"restarts": 0, "hangs": 0}]}
        ]
    })
}

#[test]
fn mutated_state_files_read_or_are_set_aside_with_one_line() {
    let scratch = Scratch::new("dump");
    let home = scratch.0.join("home");
    std::fs::create_dir(&home).expect("home");
    let base = dump_base(&scratch.0);
    let path = state_file::state_path(&home);
    run_cases("state file", FILE_CASES, |rng, input| {
        let bytes = document(rng, &base);
        input.clone_from(&bytes);
        write_fresh(&path, &bytes);
        match state_file::read(&path) {
            Ok(Some(saved)) => {
                for app in saved.apps {
                    let name = app.definition.name.clone().unwrap_or_default();
                    // What resurrect does with each saved app.
                    if let Err(error) = AppSpec::from_definition(app.id, name, app.definition) {
                        let message = error.to_string();
                        assert!(!message.contains('\n'), "a multi-line error: {message:?}");
                    }
                }
            }
            Ok(None) => panic!("a state file that exists read as missing"),
            Err(error) => {
                let message = error.to_string();
                assert!(!message.contains('\n'), "a multi-line error: {message:?}");
                let StateError::Corrupt { backup, .. } = error else {
                    panic!("a state file we can read was not reported as corrupt: {message}");
                };
                assert!(!path.exists(), "a corrupt state file was left in place");
                assert_eq!(
                    std::fs::read(&backup).expect("the backup"),
                    bytes,
                    "the backup differs"
                );
                std::fs::remove_file(&backup).expect("remove the backup");
            }
        }
    });
}
