//! Fuzz-style tests of the wire format: random and mutated bytes through the frame decoder and the
//! message decoders of both sockets. Nothing may panic; every frame handed out respects the limit.
//!
//! Deterministic: every case comes from a seed (random per run, or `NODEGUARD_FUZZ_SEED`), and a
//! failure names the seed, the case and its input, so `NODEGUARD_FUZZ_SEED=<seed> cargo test -p
//! nodeguard-proto --test fuzz` replays it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // a test: casts of random numbers are the point, and a failed step should stop it loudly

use std::panic::{catch_unwind, AssertUnwindSafe};

use nodeguard_proto::control::{Request, Response};
use nodeguard_proto::worker::{SupervisorMessage, WorkerMessage};
use nodeguard_proto::{
    decode_payload, encode_frame, peek_version, FrameDecoder, ProtoError, FRAME_HEADER_LEN,
    MAX_CONTROL_FRAME, MAX_WORKER_FRAME,
};
use serde_json::{json, Value};

/// Cases per test: a few thousand run in well under a second in release builds.
const CASES: u64 = 4_000;

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

/// Runs `CASES` cases, each from its own rng; a panic in one is reported with the seed, the case
/// number and the input the case recorded in `input` (bytes, shown as text).
fn run_cases(name: &str, case: impl Fn(&mut Rng, &mut Vec<u8>)) {
    let seed = seed();
    for index in 0..CASES {
        let mut rng = Rng(seed ^ index.wrapping_mul(0xa076_1d64_78bd_642f));
        let mut input = Vec::new();
        let outcome = catch_unwind(AssertUnwindSafe(|| case(&mut rng, &mut input)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let shown = String::from_utf8_lossy(&input[..input.len().min(2_000)]).into_owned();
            panic!(
                "{name}: case {index} failed: {message}\n  input ({} bytes): {shown:?}\n  \
                 replay with NODEGUARD_FUZZ_SEED={seed}",
                input.len()
            );
        }
    }
}

/// Valid messages of every kind on both sockets, the starting points of mutation.
fn samples() -> Vec<Value> {
    let definition = json!({
        "name": "api", "script": "/srv/api.js", "args": ["--port", "80"], "node": "/usr/bin/node",
        "node_args": [], "cwd": "/srv", "env": [["A", "1"]], "out_file": null, "error_file": null,
        "log_timestamps": false, "autorestart": "always", "max_restarts": 5,
        "restart_window_ms": 30000, "max_memory": 209715200, "clean_exit_codes": [0],
        "min_uptime_ms": 1000, "restart_delay_ms": 0, "backoff_base_ms": 100,
        "heartbeat_interval_ms": 1000, "heartbeat_timeout_ms": 1000, "heartbeat_misses": 3,
        "start_grace_ms": 5000, "kill_timeout_ms": 5000, "instances": 2,
        "listen": ["127.0.0.1:8080"], "wait_ready": false, "listen_timeout_ms": 8000
    });
    let mut out = vec![
        json!({"type": "hello", "version": 1, "token": "00112233445566778899aabbccddeeff", "pid": 42}),
        json!({"type": "pong", "seq": 7, "queued_ms": 0.25, "stack_on_sigint": true,
               "memory": {"rss": 1, "heap_total": 2, "heap_used": 3, "external": 4, "array_buffers": 5},
               "loop_delay": {"mean_ms": 0.1, "p50_ms": 0.1, "p99_ms": 1.5, "max_ms": 9.0}}),
        json!({"type": "probe_reply", "seq": 3, "queued_seq": 2, "queued_ms": 1500.0, "last_ping_seq": 2}),
        json!({"type": "ready"}),
        json!({"type": "welcome", "version": 1}),
        json!({"type": "refused", "reason": "unknown token"}),
        json!({"type": "ping", "seq": 1}),
        json!({"type": "probe", "seq": 1}),
        json!({"type": "shutdown"}),
        json!({"version": 1, "command": {"type": "start", "apps": [definition]}}),
        json!({"version": 1, "outcome": {"type": "error", "message": "no app named x"}}),
        json!({"version": 1, "outcome": {"type": "pong", "pid": 1, "version": "0.1.0"}}),
    ];
    for command in ["status", "ping", "save", "resurrect", "kill"] {
        out.push(json!({"version": 1, "command": {"type": command}}));
    }
    for command in ["stop", "restart", "reload", "delete", "describe", "flush"] {
        out.push(json!({"version": 1, "command": {"type": command, "target": "web"}}));
    }
    out
}

/// Values that break assumptions: huge, negative, fractional, out-of-range and wrong-typed.
fn odd_value(rng: &mut Rng) -> Value {
    let numbers = [
        "0",
        "-1",
        "-0.0",
        "1e300",
        "-1e300",
        "1.7976931348623157e308",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "0.5",
        "5e-324",
        "123456789012345678901234567890",
    ];
    match rng.below(8) {
        0..=2 => serde_json::from_str(rng.pick::<&str>(&numbers)).unwrap_or(Value::Null),
        3 => Value::String(
            rng.pick(&["", "NaN", "Infinity", "-1", "1e300", "\u{0}", "all", "💥"])
                .to_string(),
        ),
        4 => Value::String("x".repeat(rng.below(70_000))),
        5 => json!([1, "two", null]),
        6 => json!({"nested": {"deeper": [true]}}),
        _ => rng
            .pick(&[Value::Null, Value::Bool(true), Value::Bool(false)])
            .clone(),
    }
}

/// Changes one spot in a JSON tree: a value replaced, a field dropped or added, an array emptied.
fn mutate_value(value: &mut Value, rng: &mut Rng) {
    match value {
        Value::Object(map) if !map.is_empty() && !rng.chance(6) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("{key}_extra"), odd_value(rng));
                }
                _ => mutate_value(map.get_mut(&key).expect("picked key"), rng),
            }
        }
        Value::Array(items) if !items.is_empty() && !rng.chance(6) => {
            let at = rng.below(items.len());
            match rng.below(5) {
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

/// A mutated or random payload, as JSON text or bytes.
fn payload(rng: &mut Rng, samples: &[Value]) -> Vec<u8> {
    let mut value = rng.pick(samples).clone();
    match rng.below(4) {
        0 => rng.bytes(300),
        1 => {
            let mut bytes = serde_json::to_vec(&value).expect("sample serializes");
            mutate_bytes(&mut bytes, rng);
            bytes
        }
        _ => {
            for _ in 0..=rng.below(3) {
                mutate_value(&mut value, rng);
            }
            serde_json::to_vec(&value).expect("mutated value serializes")
        }
    }
}

fn decode_everything(payload: &[u8]) {
    let _ = peek_version(payload);
    let _ = decode_payload::<Request>(payload);
    let _ = decode_payload::<Response>(payload);
    let _ = decode_payload::<WorkerMessage>(payload);
    let _ = decode_payload::<SupervisorMessage>(payload);
}

#[test]
fn mutated_messages_decode_or_fail_cleanly() {
    let samples = samples();
    run_cases("mutated messages", |rng, input| {
        let bytes = payload(rng, &samples);
        input.clone_from(&bytes);
        decode_everything(&bytes);
        // Whatever decodes encodes again within the limit of its socket, or is refused as such.
        if let Ok(message) = decode_payload::<WorkerMessage>(&bytes) {
            match encode_frame(&message, MAX_WORKER_FRAME) {
                Ok(frame) => assert!(frame.len() <= FRAME_HEADER_LEN + MAX_WORKER_FRAME),
                Err(error) => assert!(matches!(error, ProtoError::FrameTooLarge { .. })),
            }
        }
        if let Ok(request) = decode_payload::<Request>(&bytes) {
            let again = encode_frame(&request, MAX_CONTROL_FRAME).expect("a request re-encodes");
            let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
            decoder.push(&again);
            let back: Request = decoder
                .next_message()
                .expect("a re-encoded request decodes")
                .expect("a whole frame");
            assert_eq!(back, request, "a request does not survive a round trip");
        }
    });
}

#[test]
fn random_streams_through_the_frame_decoder() {
    let samples = samples();
    run_cases("frame decoder", |rng, input| {
        let max = *rng.pick(&[0, 1, 16, 300, MAX_WORKER_FRAME]);
        // A stream of frames: valid, mutated, lying about their length, or raw garbage.
        let mut stream = Vec::new();
        for _ in 0..=rng.below(6) {
            let body = payload(rng, &samples);
            let announced = match rng.below(6) {
                0 => rng.next() as u32,
                1 => *rng.pick(&[0, u32::MAX, max as u32, max as u32 + 1]),
                2 => (body.len() as u32).saturating_sub(1),
                _ => body.len() as u32,
            };
            if rng.chance(8) {
                stream.extend(rng.bytes(8));
            }
            stream.extend(announced.to_be_bytes());
            stream.extend(&body);
        }
        *input = format!("max {max}, stream: ").into_bytes();
        input.extend(&stream);
        let mut decoder = FrameDecoder::new(max);
        let mut pushed = 0usize;
        let mut taken = 0usize;
        let mut rest = &stream[..];
        'feed: while !rest.is_empty() {
            let chunk = 1 + rng.below(rest.len().min(64));
            decoder.push(&rest[..chunk]);
            pushed += chunk;
            rest = &rest[chunk..];
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        assert!(frame.len() <= max, "a frame over the limit was handed out");
                        taken += FRAME_HEADER_LEN + frame.len();
                        decode_everything(&frame);
                    }
                    Ok(None) => break,
                    Err(ProtoError::FrameTooLarge { len, max: limit }) => {
                        assert!(len > limit, "refused a frame within the limit");
                        break 'feed;
                    }
                    Err(other) => panic!("the decoder failed with {other}"),
                }
            }
            assert_eq!(pushed, taken + decoder.buffered(), "bytes lost or made up");
        }
    });
}
