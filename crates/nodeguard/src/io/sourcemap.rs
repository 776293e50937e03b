//! Source maps for hang stacks: rewrites a frame such as `blockForever (/app/dist/app.js:8:9)` to
//! the place the user wrote, `blockForever (/app/src/app.ts:12:5)`.
//!
//! A frame's file finds its map in one of two places. First, what the monitor recorded while the
//! app's modules loaded ([`RECORDED_DIR`]`/<pid>` under the run directory): code transformed in
//! memory (TypeScript under tsx) carries an inline map that is on no disk, and the monitor writes
//! `<absolute path>\t<sourceMappingURL>` lines for such modules of the app's own (never
//! `node_modules`). Second, the file on disk: its last `//# sourceMappingURL=` comment, a `.map`
//! file beside it (`tsc --sourceMap`, bundlers) or an inline `data:` URL.
//!
//! Costs nothing until a hang is reported, and then is bounded: at most [`MAX_FILES`] files per
//! stack, [`MAX_TAIL_BYTES`] read from the end of each, maps of at most [`MAX_MAP_BYTES`], a
//! recorded file of at most [`MAX_RECORDED_BYTES`] (read as a stream). Files are opened read-only;
//! the recorded file is opened without following a symbolic link. A map that cannot be read or
//! parsed leaves its frames as they were. Our own small base64-VLQ decoder, no crate.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The directory under the run directory where monitors record inline maps, one file per pid.
pub const RECORDED_DIR: &str = "maps";
/// Most distinct files whose maps are looked for in one stack.
pub const MAX_FILES: usize = 16;
/// Most bytes read from the end of a generated file to find its `sourceMappingURL` comment (an
/// inline map is part of it).
pub const MAX_TAIL_BYTES: u64 = 12 << 20;
/// Largest source map (its JSON) that is decoded.
pub const MAX_MAP_BYTES: u64 = 8 << 20;
/// Largest recorded file that is read.
pub const MAX_RECORDED_BYTES: u64 = 64 << 20;
/// Longest path in a recorded line.
const MAX_RECORDED_PATH: u64 = 4096;

/// Where the monitor of process `pid` records maps: [`RECORDED_DIR`]`/<pid>` beside the worker
/// socket (the monitor finds the directory the same way, from `NODEGUARD_SOCKET`).
pub fn recorded_path(worker_socket: &Path, pid: u32) -> Option<PathBuf> {
    Some(
        worker_socket
            .parent()?
            .join(RECORDED_DIR)
            .join(pid.to_string()),
    )
}

/// Removes the directory monitors record maps in, with what is left in it (a foreground run
/// cleaning its own home).
pub fn remove_recorded_dir(run_dir: &Path) {
    let dir = run_dir.join(RECORDED_DIR);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Makes the private directory monitors record maps in (under the run directory), emptied of what
/// processes of an earlier supervisor left. Called once when the home is prepared.
pub fn prepare_recorded_dir(run_dir: &Path) -> Result<(), crate::platform::PrivatePathError> {
    let dir = run_dir.join(RECORDED_DIR);
    crate::platform::ensure_private_dir(&dir)?;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Each frame (`function (location)` or a bare location, as V8 prints them after `at `) with its
/// location mapped through the file's source map when there is one; the others unchanged.
/// `recorded` is the file the process's monitor recorded inline maps in, if any.
pub fn map_frames(frames: &[String], recorded: Option<&Path>) -> Vec<String> {
    let parsed: Vec<Option<Frame>> = frames.iter().map(|f| Frame::parse(f)).collect();
    let mut files: Vec<PathBuf> = Vec::new();
    for frame in parsed.iter().flatten() {
        if !files.contains(&frame.file) && files.len() < MAX_FILES {
            files.push(frame.file.clone());
        }
    }
    if files.is_empty() {
        return frames.to_vec();
    }
    let mut urls = recorded
        .map(|path| read_recorded(path, &files))
        .unwrap_or_default();
    let mut maps: HashMap<PathBuf, Option<SourceMap>> = HashMap::new();
    for file in &files {
        let url = urls.remove(file).or_else(|| url_on_disk(file));
        let map = url.and_then(|url| load_map(&url, file));
        maps.insert(file.clone(), map);
    }
    let found: Vec<Option<Mapping>> = parsed
        .iter()
        .map(|frame| {
            let frame = frame.as_ref()?;
            let map = maps.get(&frame.file)?.as_ref()?;
            map.lookup(frame.line.checked_sub(1)?, frame.column.checked_sub(1)?)
        })
        .collect();
    frames
        .iter()
        .enumerate()
        .map(|(i, original)| {
            let (Some(frame), Some(mapping)) = (&parsed[i], &found[i]) else {
                return original.clone();
            };
            // Node's rule for a name the transpiler changed: the name the map gives the call
            // site of this function in the next frame, when that is in the same file.
            let caller_name = match (parsed.get(i + 1), found.get(i + 1)) {
                (Some(Some(caller)), Some(Some(call))) if caller.file == frame.file => {
                    call.name.clone()
                }
                _ => None,
            };
            let function = caller_name.as_deref().or(frame.function.as_deref());
            let location = format!(
                "{}:{}:{}",
                mapping.source,
                mapping.line.saturating_add(1),
                mapping.column.saturating_add(1)
            );
            match function {
                Some(function) => format!("{function} ({location})"),
                None => location,
            }
        })
        .collect()
}

/// A frame whose location is a file: its function (if named) and position (1-based).
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    function: Option<String>,
    file: PathBuf,
    line: u32,
    column: u32,
}

impl Frame {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (function, location) = match text.strip_suffix(')').and_then(|t| t.rsplit_once(" (")) {
            Some((function, location)) => (Some(function.to_string()), location),
            None => (None, text),
        };
        let (rest, column) = location.rsplit_once(':')?;
        let (file, line) = rest.rsplit_once(':')?;
        Some(Self {
            function,
            file: file_path(file)?,
            line: line.parse().ok()?,
            column: column.parse().ok()?,
        })
    }
}

/// An absolute path, or a `file://` URL's path (percent-decoded); `None` for `node:` and others.
fn file_path(location: &str) -> Option<PathBuf> {
    if let Some(rest) = location.strip_prefix("file://") {
        let path = percent_decode(rest)?;
        return path
            .starts_with(b"/")
            .then(|| PathBuf::from(OsStr::from_bytes(&path)));
    }
    location.starts_with('/').then(|| PathBuf::from(location))
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    Some(out)
}

/// The recorded `sourceMappingURL`s of `wanted` files (the last line for a file wins: it is what
/// the process compiled last). Empty when the file is missing, not ours, a link, or too large.
fn read_recorded(path: &Path, wanted: &[PathBuf]) -> HashMap<PathBuf, String> {
    let mut found = HashMap::new();
    let Some(file) = open_recorded(path) else {
        return found;
    };
    let mut reader = BufReader::new(file.take(MAX_RECORDED_BYTES));
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_TAIL_BYTES.saturating_add(MAX_RECORDED_PATH);
        match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(line) = line.strip_suffix(b"\n") else {
            // Longer than any line we write (or cut short at the end): skip it.
            if skip_line(&mut reader) {
                continue;
            }
            break;
        };
        let Some(tab) = line.iter().position(|&b| b == b'\t') else {
            continue;
        };
        let file = PathBuf::from(OsStr::from_bytes(&line[..tab]));
        if wanted.contains(&file) {
            if let Ok(url) = std::str::from_utf8(&line[tab + 1..]) {
                found.insert(file, url.trim().to_string());
            }
        }
    }
    found
}

/// Opens the recorded file read-only: a regular file of ours, in a directory reached and a file
/// opened without following a symbolic link at either.
fn open_recorded(path: &Path) -> Option<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::MetadataExt;
    let (dir, name) = (path.parent()?, path.file_name()?);
    let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | nofollow,
        Mode::empty(),
    )
    .ok()?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | nofollow;
    let file = std::fs::File::from(rustix::fs::openat(&dir, name, flags, Mode::empty()).ok()?);
    let metadata = file.metadata().ok()?;
    (metadata.file_type().is_file()
        && metadata.uid() == crate::platform::current_uid()
        && metadata.len() <= MAX_RECORDED_BYTES)
        .then_some(file)
}

/// Reads past the next newline; false at the end of the stream or on an error.
fn skip_line(reader: &mut impl BufRead) -> bool {
    loop {
        let (done, used) = match reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buffer) => match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => (true, at + 1),
                None => (false, buffer.len()),
            },
        };
        reader.consume(used);
        if done {
            return true;
        }
    }
}

/// The last `sourceMappingURL` comment near the end of a generated file on disk.
fn url_on_disk(file: &Path) -> Option<String> {
    let mut file = open_read_only(file)?;
    let metadata = file.metadata().ok()?;
    if !metadata.file_type().is_file() {
        return None;
    }
    let length = metadata.len();
    let start = length.saturating_sub(MAX_TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.take(MAX_TAIL_BYTES).read_to_end(&mut tail).ok()?;
    comment_url(&tail)
}

/// Opens an app's file read-only, without blocking (a FIFO named in a stack must not hang us);
/// the callers then take only a regular file.
fn open_read_only(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()
}

/// The URL of the last `//# sourceMappingURL=` (or older `//@`) comment in `code`.
fn comment_url(code: &[u8]) -> Option<String> {
    let at = [
        b"//# sourceMappingURL=".as_slice(),
        b"//@ sourceMappingURL=",
    ]
    .iter()
    .filter_map(|marker| rfind(code, marker).map(|at| at + marker.len()))
    .max()?;
    let rest = &code[at..];
    let end = rest
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(rest.len());
    let url = std::str::from_utf8(&rest[..end]).ok()?.trim();
    (!url.is_empty() && !url.contains(char::is_whitespace)).then(|| url.to_string())
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Reads and parses the map a `sourceMappingURL` names, for the generated file `file`.
fn load_map(url: &str, file: &Path) -> Option<SourceMap> {
    let base = file.parent()?;
    if let Some(data) = url.strip_prefix("data:") {
        let (kind, payload) = data.split_once(',')?;
        if !kind.starts_with("application/json") || !kind.ends_with(";base64") {
            return None;
        }
        if u64::try_from(payload.len()).ok()? > MAX_MAP_BYTES.saturating_mul(4) / 3 + 4 {
            return None;
        }
        return SourceMap::parse(&base64_decode(payload.as_bytes())?, base);
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        PathBuf::from(OsStr::from_bytes(&percent_decode(rest)?))
    } else if url.contains("://") {
        return None;
    } else {
        base.join(OsStr::from_bytes(&percent_decode(url)?))
    };
    let map_file = open_read_only(&path)?;
    let metadata = map_file.metadata().ok()?;
    if !metadata.file_type().is_file() || metadata.len() > MAX_MAP_BYTES {
        return None;
    }
    let mut json = Vec::new();
    map_file.take(MAX_MAP_BYTES).read_to_end(&mut json).ok()?;
    SourceMap::parse(&json, path.parent()?)
}

/// Standard base64 (padding optional); `None` on any other character.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let text = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &c in text {
        buffer = ((buffer << 6) | u32::from(base64_value(c)?)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits).to_le_bytes()[0]);
        }
    }
    Some(out)
}

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Where a generated position came from (0-based), and the original name there, if any.
#[derive(Debug, Clone, PartialEq)]
struct Mapping {
    source: String,
    line: u32,
    column: u32,
    name: Option<String>,
}

/// A version 3 source map, its mappings kept encoded (decoded per lookup, up to the line asked).
#[derive(Debug)]
struct SourceMap {
    /// Each source resolved: an absolute path when it is a file, else as the map says.
    sources: Vec<String>,
    names: Vec<String>,
    mappings: String,
}

impl SourceMap {
    /// Parses a map whose relative sources are relative to `base` (the map's directory). Read as
    /// a JSON value (the parser the binary has anyway), not a derived type: less code.
    fn parse(json: &[u8], base: &Path) -> Option<Self> {
        use serde_json::Value;
        let map: Value = serde_json::from_slice(json).ok()?;
        if map.get("version")?.as_u64()? != 3 {
            return None;
        }
        let root = map.get("sourceRoot").and_then(Value::as_str).unwrap_or("");
        let strings = |field: &str| -> Vec<String> {
            map.get(field)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .map(|item| item.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let sources = strings("sources")
            .iter()
            .map(|source| resolve_source(root, source, base))
            .collect();
        Some(Self {
            sources,
            names: strings("names"),
            mappings: map.get("mappings")?.as_str()?.to_string(),
        })
    }

    /// The original position of generated `line`:`column` (0-based): the segment at or before
    /// `column` on that line (or the line's first one, when the column is before it).
    fn lookup(&self, line: u32, column: u32) -> Option<Mapping> {
        let line = usize::try_from(line).ok()?;
        let text = self.mappings.split(';').nth(line)?;
        // The source, line, column and name fields are relative to the previous segment over
        // the whole string: decode every line before the one asked for.
        let mut state = [0i64; 4];
        let before = self.mappings.split(';').take(line);
        for segment in before.flat_map(|l| l.split(',')).filter(|s| !s.is_empty()) {
            let fields = decode_vlq(segment)?;
            for (slot, delta) in state.iter_mut().zip(fields.iter().skip(1)) {
                *slot = slot.checked_add(*delta)?;
            }
        }
        let mut generated = 0i64;
        // (state after the segment, how many fields it had)
        let mut best: Option<([i64; 4], usize)> = None;
        for segment in text.split(',').filter(|s| !s.is_empty()) {
            let fields = decode_vlq(segment)?;
            generated = generated.checked_add(*fields.first()?)?;
            for (slot, delta) in state.iter_mut().zip(fields.iter().skip(1)) {
                *slot = slot.checked_add(*delta)?;
            }
            if generated <= i64::from(column) || best.is_none() {
                best = Some((state, fields.len()));
            }
        }
        let ([source, original_line, original_column, name], fields) = best?;
        if fields < 4 {
            return None;
        }
        Some(Mapping {
            source: self.sources.get(usize::try_from(source).ok()?)?.clone(),
            line: u32::try_from(original_line).ok()?,
            column: u32::try_from(original_column).ok()?,
            name: if fields == 5 {
                self.names.get(usize::try_from(name).ok()?).cloned()
            } else {
                None
            },
        })
    }
}

/// One segment's base64-VLQ values (1, 4 or 5 of them); `None` if malformed.
fn decode_vlq(segment: &str) -> Option<Vec<i64>> {
    let mut values = Vec::with_capacity(5);
    let mut value: i64 = 0;
    let mut shift = 0u32;
    for &c in segment.as_bytes() {
        let digit = i64::from(base64_value(c)?);
        if shift > 30 {
            return None;
        }
        value |= (digit & 31) << shift;
        if digit & 32 != 0 {
            shift += 5;
            continue;
        }
        let magnitude = value >> 1;
        values.push(if value & 1 == 1 {
            -magnitude
        } else {
            magnitude
        });
        value = 0;
        shift = 0;
    }
    (shift == 0 && matches!(values.len(), 1 | 4 | 5)).then_some(values)
}

/// A map's source as a path where it names a file: `sourceRoot` + source, relative to `base`
/// (`..` resolved by name, not through the file system). Other URLs (`webpack://…`) stay as
/// they are.
fn resolve_source(root: &str, source: &str, base: &Path) -> String {
    let joined = if root.is_empty() || source.starts_with('/') || source.contains("://") {
        source.to_string()
    } else if root.ends_with('/') {
        format!("{root}{source}")
    } else {
        format!("{root}/{source}")
    };
    let path = if let Some(rest) = joined.strip_prefix("file://") {
        match percent_decode(rest) {
            Some(bytes) => PathBuf::from(OsStr::from_bytes(&bytes)),
            None => return joined,
        }
    } else if joined.contains("://") {
        return joined;
    } else {
        base.join(&joined)
    };
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tsc's output for tests/fixtures/sourcemap/src/app.ts (`tsc --sourceMap --module commonjs`).
    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sourcemap")
    }

    fn strings(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        while !out.len().is_multiple_of(4) {
            out.push('=');
        }
        out
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ng-sourcemap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn vlq_values_decode_as_the_spec_gives_them() {
        assert_eq!(decode_vlq("AAAA"), Some(vec![0, 0, 0, 0]));
        assert_eq!(decode_vlq("AACA"), Some(vec![0, 0, 1, 0]));
        assert_eq!(decode_vlq("D"), Some(vec![-1]));
        // 16 needs two digits: 32 -> "gB".
        assert_eq!(decode_vlq("gBAAAC"), Some(vec![16, 0, 0, 0, 1]));
        assert_eq!(decode_vlq("A!"), None);
        assert_eq!(decode_vlq("g"), None, "a dangling continuation");
        assert_eq!(decode_vlq("gggggggggggggA"), None, "too long a number");
        assert_eq!(decode_vlq("AA"), None, "two fields is no segment");
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode(b"aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode(b"aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(
            base64_decode(base64(b"any bytes \x00\xff").as_bytes()),
            Some(b"any bytes \x00\xff".to_vec())
        );
        assert_eq!(base64_decode(b"aGk*"), None);
    }

    /// Positions checked by hand: V8 stops `blockForever` at its `for` (dist/app.js 42:5, which
    /// is src/app.ts 15:3), called from the arrow function at dist/app.js 50:55 (src 24:51).
    #[test]
    fn a_tsc_map_on_disk_names_the_ts_lines() {
        let dir = fixture().canonicalize().unwrap();
        let js = dir.join("dist/app.js");
        let ts = dir.join("src/app.ts");
        let frames = vec![
            format!("blockForever ({}:42:5)", js.display()),
            format!("file://{}:50:55", js.display()),
            "processImmediate (node:internal/timers:483:21)".to_string(),
            "Server.emit (node:events:519:28)".to_string(),
        ];
        assert_eq!(
            map_frames(&frames, None),
            [
                format!("blockForever ({}:15:3)", ts.display()),
                format!("{}:24:51", ts.display()),
                frames[2].clone(),
                frames[3].clone(),
            ]
        );
        // The lines the fixture's comments name.
        let source = std::fs::read_to_string(&ts).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        assert!(lines[14].contains("the hang is here"), "{}", lines[14]);
        assert!(lines[23].contains("called from here"), "{}", lines[23]);
    }

    #[test]
    fn a_recorded_inline_map_is_used_for_a_file_that_has_none_on_disk() {
        let dir = scratch("recorded");
        let map = std::fs::read(fixture().join("dist/app.js.map")).unwrap();
        let generated = dir.join("app.ts");
        std::fs::write(&generated, "// the TypeScript on disk: no map here\n").unwrap();
        let recorded = dir.join("recorded");
        let line = format!(
            "{}\tdata:application/json;base64,{}\n",
            generated.display(),
            base64(&map)
        );
        let other = "/elsewhere/x.ts\tdata:application/json;base64,e30=\n";
        let no_tab = "garbage without a tab\n";
        std::fs::write(&recorded, format!("{other}{no_tab}{line}")).unwrap();
        let frames = vec![format!("blockForever ({}:42:5)", generated.display())];
        // The map's source is ../src/app.ts, relative to the generated file's directory.
        let expected = dir.parent().unwrap().join("src/app.ts");
        assert_eq!(
            map_frames(&frames, Some(&recorded)),
            [format!("blockForever ({}:15:3)", expected.display())]
        );
        // No recorded file: the frame stays as it was.
        assert_eq!(map_frames(&frames, Some(&dir.join("missing"))), frames);
        // A recorded file behind a symbolic link is not read.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&recorded, &link).unwrap();
        assert_eq!(map_frames(&frames, Some(&link)), frames);
        let linked_dir = dir.join("linked-dir");
        std::os::unix::fs::symlink(&dir, &linked_dir).unwrap();
        assert_eq!(
            map_frames(&frames, Some(&linked_dir.join("recorded"))),
            frames
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_from_the_map_and_sources_under_a_source_root() {
        let dir = scratch("names");
        // Line 1: `AAAA` maps to src 0, line 0, col 0; line 2: `AACAC` to line 1, col 0, name 1.
        let map = r#"{"version":3,"sources":["lib/a.ts"],"sourceRoot":"/proj/","names":["x","blockForever"],"mappings":"AAAA;AACAC"}"#;
        let generated = dir.join("bundle.js");
        std::fs::write(
            &generated,
            format!(
                "a();\nb();\n//# sourceMappingURL=data:application/json;charset=utf-8;base64,{}\n",
                base64(map.as_bytes())
            ),
        )
        .unwrap();
        let frames = vec![
            format!("a ({}:1:5)", generated.display()),
            format!("{}:2:3", generated.display()),
        ];
        assert_eq!(
            map_frames(&frames, None),
            ["blockForever (/proj/lib/a.ts:1:1)", "/proj/lib/a.ts:2:1"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_maps_leave_frames_as_they_were() {
        let dir = scratch("bad");
        let cases: &[(&str, &str)] = &[
            (
                "not-json",
                "//# sourceMappingURL=data:application/json;base64,bm90IGpzb24=",
            ),
            (
                "bad-base64",
                "//# sourceMappingURL=data:application/json;base64,***",
            ),
            ("missing-file", "//# sourceMappingURL=nowhere.js.map"),
            (
                "remote",
                "//# sourceMappingURL=https://example.com/a.js.map",
            ),
            (
                "text-url",
                "//# sourceMappingURL=data:text/plain;base64,e30=",
            ),
            ("empty", "//# sourceMappingURL="),
        ];
        for (name, comment) in cases {
            let file = dir.join(format!("{name}.js"));
            std::fs::write(&file, format!("x();\n{comment}\n")).unwrap();
            let frames = vec![format!("f ({}:1:1)", file.display())];
            assert_eq!(map_frames(&frames, None), frames, "{name}");
        }
        let maps: &[(&str, &str)] = &[
            (
                "version-2",
                r#"{"version":2,"sources":["a.ts"],"mappings":"AAAA"}"#,
            ),
            (
                "bad-vlq",
                r#"{"version":3,"sources":["a.ts"],"mappings":"A!AA"}"#,
            ),
            (
                "bad-source",
                r#"{"version":3,"sources":["a.ts"],"mappings":"AgBAA"}"#,
            ),
            (
                "negative",
                r#"{"version":3,"sources":["a.ts"],"mappings":"AADA"}"#,
            ),
            (
                "no-source",
                r#"{"version":3,"sources":["a.ts"],"mappings":"A"}"#,
            ),
            (
                "short-line",
                r#"{"version":3,"sources":["a.ts"],"mappings":""}"#,
            ),
        ];
        for (name, json) in maps {
            let file = dir.join(format!("{name}.js"));
            std::fs::write(dir.join(format!("{name}.js.map")), json).unwrap();
            std::fs::write(&file, format!("x();\n//# sourceMappingURL={name}.js.map\n")).unwrap();
            let frames = vec![format!("f ({}:1:1)", file.display())];
            assert_eq!(map_frames(&frames, None), frames, "{name}");
        }
        // A map over the size limit is not read.
        let big = dir.join("big.js");
        let file = std::fs::File::create(dir.join("big.js.map")).unwrap();
        file.set_len(MAX_MAP_BYTES + 1).unwrap();
        std::fs::write(&big, "x();\n//# sourceMappingURL=big.js.map\n").unwrap();
        let frames = vec![format!("f ({}:1:1)", big.display())];
        assert_eq!(map_frames(&frames, None), frames);
        // A FIFO named in a stack is neither waited on nor read.
        let fifo = dir.join("fifo.js");
        let path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let frames = vec![format!("f ({}:1:1)", fifo.display())];
        assert_eq!(map_frames(&frames, None), frames);
        // Frames that are no file at all, or not frames.
        let odd = strings(&[
            "",
            "(",
            "f (node:internal/x:1:2)",
            "f (/a:b:c)",
            "/no-position",
        ]);
        assert_eq!(map_frames(&odd, None), odd);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
