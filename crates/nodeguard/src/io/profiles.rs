//! `<home>/profiles/`: where CPU profiles and heap snapshots land as they stream in from an app's
//! monitor, with bounded count and disk use.
//!
//! The directory is private (0700, created or checked at every new profile, never through a
//! symbolic link); each file is created 0600 with `O_EXCL | O_NOFOLLOW`. Before a new profile
//! begins, the oldest profiles are removed until at most [`MAX_FILES`]` - 1` are left and they
//! take at most [`MAX_TOTAL_BYTES`]` - `[`MAX_FILE_BYTES`]; the new one may then grow to
//! [`MAX_FILE_BYTES`] (past it, it is abandoned and removed). So the directory never holds more
//! than [`MAX_FILES`] profiles or [`MAX_TOTAL_BYTES`] bytes. `nodeguard profile` moves its file
//! out to where the caller asked, so only automatic profiles (memory restarts, stalls) and ones
//! whose caller went away stay.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nodeguard_proto::worker::ProfileKind;

/// Most profiles kept in the directory.
pub const MAX_FILES: usize = 20;
/// Largest profile written (a heap snapshot of a multi-gigabyte heap is refused past it).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;
/// Most bytes the directory's profiles take together.
pub const MAX_TOTAL_BYTES: u64 = 2 * MAX_FILE_BYTES;

/// The profiles directory of a home.
pub fn dir(home: &Path) -> PathBuf {
    home.join("profiles")
}

/// Whether `name` is a file this module wrote.
fn is_profile(name: &str) -> bool {
    name.ends_with(".cpuprofile") || name.ends_with(".heapsnapshot")
}

/// `name` with anything but letters, digits, `.`, `_` and `-` replaced, for a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Prepares the directory, makes room (see the module's bounds) and creates the new profile
/// `<name>-<pid>-<time>.<ext>` (a counter is added if taken).
pub fn create(home: &Path, name: &str, pid: u32, kind: ProfileKind) -> io::Result<(File, PathBuf)> {
    let dir = dir(home);
    crate::platform::ensure_private_dir(&dir).map_err(io::Error::other)?;
    make_room(&dir);
    // 2026-11-29T23:30:00.123Z -> 20261129T233000Z
    let stamp: String = crate::io::logfile::timestamp(SystemTime::now())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let stamp = match stamp.find('T') {
        Some(t) => format!("{}Z", stamp.get(..t + 7).unwrap_or(&stamp)),
        None => stamp,
    };
    let base = format!("{}-{pid}-{stamp}", file_safe(name));
    for attempt in 0u32..100 {
        let file_name = match attempt {
            0 => format!("{base}.{}", kind.extension()),
            n => format!("{base}-{n}.{}", kind.extension()),
        };
        let path = dir.join(file_name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        match crate::io::logfile::open_private_regular(&path, options) {
            Ok(file) => return Ok((file, path)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many profiles with the same name this second",
    ))
}

/// Removes the oldest profiles until a new one fits the bounds.
fn make_room(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|entry| entry.file_name().to_str().is_some_and(is_profile))
        .filter_map(|entry| {
            // Not followed: a link is counted by its own size and removed as a link.
            let metadata = std::fs::symlink_metadata(entry.path()).ok()?;
            let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some((modified, metadata.len(), entry.path()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().fold(0, |sum, f| sum.saturating_add(f.1));
    let mut count = files.len();
    for (_, len, path) in files {
        if count < MAX_FILES && total <= MAX_TOTAL_BYTES - MAX_FILE_BYTES {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed an old profile to make room"),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot remove an old profile")
            }
        }
        count = count.saturating_sub(1);
        total = total.saturating_sub(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_safe_and_the_oldest_make_room() {
        let home = std::env::temp_dir().join(format!("ng-profiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let mut paths = Vec::new();
        for _ in 0..(MAX_FILES + 3) {
            let (_, path) = create(&home, "a/b c", 7, ProfileKind::Cpu).unwrap();
            paths.push(path);
        }
        let name = paths[0].file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with("a_b_c-7-") && name.ends_with(".cpuprofile"),
            "{name}"
        );
        let left = std::fs::read_dir(dir(&home)).unwrap().count();
        assert_eq!(left, MAX_FILES);
        assert!(paths.last().unwrap().exists());
        let _ = std::fs::remove_dir_all(&home);
    }
}
