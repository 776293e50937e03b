//! Reading app log files for `nodeguard logs`: the last lines (reaching into rotated files) and a
//! live follow that survives rotation.
//!
//! Only complete lines are returned. A fragment at the end of the current file is a line still
//! being written: [`tail_lines`] leaves it out and [`follow`] with `from_end` starts at its
//! beginning, so `tail_lines` then `follow(.., true)` prints it once, whole, when it completes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::io::logfile::{rotated_path, LogError};
use crate::io::output::MAX_LINE;

/// How often [`follow`] looks for new lines and for rotation.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes read at a time, backwards by [`tail_lines`] and forwards by [`follow`].
const BLOCK: usize = 64 * 1024;
/// A line without a newline this long is passed on in pieces (the writer's longest line plus room
/// for a timestamp).
const MAX_PENDING: usize = MAX_LINE + 64;

/// The last `n` complete lines of the log at `path`, oldest first, without their newlines. When
/// the current file holds fewer, the rest come from `path.1`, `path.2`, … so a rotation does not
/// hide recent lines. A missing file has no lines. Reads backwards in blocks: the cost follows
/// `n`, not the file's size.
pub fn tail_lines(path: &Path, n: usize) -> Result<Vec<Vec<u8>>, LogError> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut index = 0;
    while lines.len() < n {
        let file = rotated_path(path, index);
        let older = match last_lines_of(&file, n - lines.len(), index == 0) {
            Ok(older) => older,
            // The current file may be missing for a moment mid-rotation; `.1` still counts.
            Err(error) if error.kind() == io::ErrorKind::NotFound && index == 0 => Vec::new(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            Err(source) => return Err(LogError::Read { path: file, source }),
        };
        lines.splice(0..0, older);
        index += 1;
    }
    Ok(lines)
}

/// The last `n` lines of one file. `current` drops an unterminated fragment at the end.
fn last_lines_of(path: &Path, n: usize, current: bool) -> io::Result<Vec<Vec<u8>>> {
    let mut file = File::open(path)?;
    let mut pos = file.metadata()?.len();
    let mut blocks = Vec::new();
    let mut newlines = 0;
    // The n-th line from the end starts after the (n+1)-th newline from the end, or at offset 0.
    while pos > 0 && newlines <= n {
        let size = pos.min(BLOCK as u64);
        pos -= size;
        file.seek(SeekFrom::Start(pos))?;
        let mut block = Vec::with_capacity(usize::try_from(size).unwrap_or(BLOCK));
        file.by_ref().take(size).read_to_end(&mut block)?;
        newlines += block.iter().filter(|&&b| b == b'\n').count();
        blocks.push(block);
    }
    let mut data: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    match data.iter().rposition(|&b| b == b'\n') {
        Some(last) => data.truncate(last + 1),
        None if current => data.clear(),
        None => {}
    }
    if !current && !data.is_empty() && !data.ends_with(b"\n") {
        data.push(b'\n');
    }
    // `data` now ends with a newline (or is empty); the piece after it is empty.
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    pieces.pop();
    let skip_partial_first = usize::from(pos > 0);
    let whole = &pieces[skip_partial_first.min(pieces.len())..];
    let start = whole.len().saturating_sub(n);
    Ok(whole[start..].iter().map(|l| l.to_vec()).collect())
}

/// Which file on disk an open file is, to notice it being renamed away.
#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The file being followed.
struct Followed {
    file: tokio::fs::File,
    id: (u64, u64),
    /// Bytes read so far.
    offset: u64,
}

/// Sends each complete line appended to `path` to `out`, without its newline, until `out`'s
/// receiver is dropped. With `from_end`, lines already complete at the start are skipped;
/// otherwise the file is read from its beginning. A missing file is waited for. Polls every
/// [`FOLLOW_INTERVAL`].
///
/// Rotation (the file renamed to `path.1` and a new one created) is noticed by the identity
/// (device, inode) at `path` changing. The followed file is then read to its end and the follow
/// moves on to its successor: the file that was rotated just after it (`path.k-1` when it is now
/// `path.k`), or `path` itself. So a slow reader, or several rotations within one poll, loses
/// nothing as long as the files are still kept. A file shrinking in place (truncated) is read
/// again from its start.
pub async fn follow(path: PathBuf, out: mpsc::Sender<Vec<u8>>, from_end: bool) {
    let mut current: Option<Followed> = None;
    let mut pending = Vec::new();
    let mut skip_existing = from_end;
    let mut warned = false;
    loop {
        if current.is_none() {
            match open_followed(&path, skip_existing).await {
                Ok(opened) => {
                    // After the first look, anything that appears at `path` is new.
                    skip_existing = false;
                    current = opened;
                    warned = false;
                }
                Err(error) if !warned => {
                    tracing::warn!(path = %path.display(), %error, "cannot follow log file");
                    warned = true;
                }
                Err(_) => {}
            }
        }
        if let Some(followed) = current.as_mut() {
            if !drain(followed, &mut pending, &out).await {
                return;
            }
            match tokio::fs::metadata(&path).await {
                Ok(meta) if file_id(&meta) == followed.id => {
                    if meta.len() < followed.offset {
                        // Truncated in place: start over.
                        if followed.file.seek(SeekFrom::Start(0)).await.is_ok() {
                            followed.offset = 0;
                            pending.clear();
                        } else {
                            current = None;
                        }
                    }
                }
                // No longer the current file: finish it, then go on to its successor.
                _ => {
                    // Lines appended between the last read and the rename.
                    if !drain(followed, &mut pending, &out).await {
                        return;
                    }
                    if !pending.is_empty() && out.send(std::mem::take(&mut pending)).await.is_err()
                    {
                        return;
                    }
                    let old = followed.id;
                    current = successor(&path, old).await;
                    continue;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            () = out.closed() => return,
        }
    }
}

/// The file rotated just after the one identified by `old`, opened at its start: `path.k-1` if
/// `old` is now `path.k`, `path` if it is `path.1`. `None` when `old` is gone (deleted past
/// `keep`, or the logs were cleared) or the successor is missing: the follow then waits for
/// `path` itself.
async fn successor(path: &Path, old: (u64, u64)) -> Option<Followed> {
    // A rotation between finding `old` and opening its successor would make us skip a file;
    // `old` still being where it was found after the open shows that none happened.
    for _ in 0..3 {
        let index = rotated_index(path, old).await?;
        let next = open_followed(&rotated_path(path, index - 1), false)
            .await
            .ok()
            .flatten()?;
        if let Ok(meta) = tokio::fs::metadata(rotated_path(path, index)).await {
            if file_id(&meta) == old {
                return Some(next);
            }
        }
    }
    None
}

/// The `k` for which `path.k` is the file identified by `id`.
async fn rotated_index(path: &Path, id: (u64, u64)) -> Option<usize> {
    let mut index = 1;
    while let Ok(meta) = tokio::fs::metadata(rotated_path(path, index)).await {
        if file_id(&meta) == id {
            return Some(index);
        }
        index += 1;
    }
    None
}

/// Opens `path`, at the start of its unterminated last line when `skip_existing`. `None` if
/// missing.
async fn open_followed(path: &Path, skip_existing: bool) -> io::Result<Option<Followed>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let meta = file.metadata().await?;
    let offset = if skip_existing {
        end_of_last_line(&mut file, meta.len()).await?
    } else {
        0
    };
    file.seek(SeekFrom::Start(offset)).await?;
    Ok(Some(Followed {
        file,
        id: file_id(&meta),
        offset,
    }))
}

/// The offset just past the last newline before `len`, or 0.
async fn end_of_last_line(file: &mut tokio::fs::File, len: u64) -> io::Result<u64> {
    let mut pos = len;
    let mut block = vec![0; BLOCK];
    while pos > 0 {
        let size = usize::try_from(pos).map_or(BLOCK, |pos| pos.min(BLOCK));
        pos -= size as u64;
        file.seek(SeekFrom::Start(pos)).await?;
        file.read_exact(&mut block[..size]).await?;
        if let Some(at) = block[..size].iter().rposition(|&b| b == b'\n') {
            return Ok(pos + at as u64 + 1);
        }
    }
    Ok(0)
}

/// Reads `followed` to its current end, sending each complete line. False once `out` is closed.
async fn drain(
    followed: &mut Followed,
    pending: &mut Vec<u8>,
    out: &mpsc::Sender<Vec<u8>>,
) -> bool {
    let mut buffer = vec![0; BLOCK];
    loop {
        let read = match followed.file.read(&mut buffer).await {
            Ok(0) => return true,
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "reading a followed log file");
                return true;
            }
        };
        followed.offset += read as u64;
        if !send_lines(&buffer[..read], pending, out).await {
            return false;
        }
    }
}

/// Splits `bytes` into lines after `pending`, sends the complete ones and keeps the rest.
async fn send_lines(bytes: &[u8], pending: &mut Vec<u8>, out: &mpsc::Sender<Vec<u8>>) -> bool {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'\n') {
        pending.extend_from_slice(&rest[..at]);
        rest = &rest[at + 1..];
        if out.send(std::mem::take(pending)).await.is_err() {
            return false;
        }
    }
    pending.extend_from_slice(rest);
    if pending.len() >= MAX_PENDING && out.send(std::mem::take(pending)).await.is_err() {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::logfile::tests::{line, spec, TempDir};
    use crate::io::logfile::{LogFiles, Stream};

    #[test]
    fn missing_file_has_no_lines() {
        let dir = TempDir::new("tail-missing");
        let lines = tail_lines(&dir.0.join("nope.log"), 10).expect("tail");
        assert!(lines.is_empty());
    }

    #[test]
    fn tail_of_a_large_file_reads_only_the_end() {
        let dir = TempDir::new("tail-large");
        let spec = spec(&dir.0, 0, 0);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..20_000 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
        }
        drop(logs);
        assert!(std::fs::metadata(&spec.out_path).expect("meta").len() > 4 * BLOCK as u64);
        let expect = |range: std::ops::Range<usize>| range.map(line).collect::<Vec<_>>();
        assert_eq!(
            tail_lines(&spec.out_path, 5).expect("tail"),
            expect(19_995..20_000)
        );
        assert_eq!(
            tail_lines(&spec.out_path, 3000).expect("tail"),
            expect(17_000..20_000)
        );
        assert_eq!(
            tail_lines(&spec.out_path, 50_000).expect("tail"),
            expect(0..20_000)
        );
        assert!(tail_lines(&spec.out_path, 0).expect("tail").is_empty());
    }

    #[test]
    fn tail_continues_across_a_rotation_boundary() {
        let dir = TempDir::new("tail-rotated");
        let spec = spec(&dir.0, 1000, 3);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..200 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
        }
        drop(logs);
        let in_current = tail_lines(&spec.out_path, usize::MAX).expect("tail");
        let current_only = {
            let data = std::fs::read(&spec.out_path).expect("read");
            data.iter().filter(|&&b| b == b'\n').count()
        };
        assert!(current_only < 40, "current holds {current_only} lines");
        let want = current_only + 10;
        let lines = tail_lines(&spec.out_path, want).expect("tail");
        assert_eq!(lines, (200 - want..200).map(line).collect::<Vec<_>>());
        // All files together: a contiguous run ending at the last line.
        let first = 200 - in_current.len();
        assert_eq!(in_current, (first..200).map(line).collect::<Vec<_>>());
    }

    #[test]
    fn tail_leaves_out_a_line_still_being_written() {
        let dir = TempDir::new("tail-fragment");
        let path = dir.0.join("x.log");
        std::fs::write(&path, b"one\ntwo\nthr").expect("write");
        let lines = tail_lines(&path, 5).expect("tail");
        assert_eq!(lines, vec![b"one".to_vec(), b"two".to_vec()]);
        std::fs::write(&path, b"no newline yet").expect("write");
        assert!(tail_lines(&path, 5).expect("tail").is_empty());
    }

    async fn recv_n(rx: &mut mpsc::Receiver<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(line)) => got.push(line),
                _ => break,
            }
        }
        got
    }

    #[tokio::test]
    async fn follow_sees_new_lines_and_continues_after_rotation() {
        let dir = TempDir::new("follow");
        let spec = spec(&dir.0, 2000, 5);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..10 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
        }
        logs.flush().expect("flush");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&spec.out_path)
            .and_then(|mut f| io::Write::write_all(&mut f, b"half"))
            .expect("fragment");

        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(follow(spec.out_path.clone(), tx, true));
        tokio::time::sleep(FOLLOW_INTERVAL * 2).await;
        // Finish the fragment by hand, then the writer takes over on a fresh line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&spec.out_path)
            .and_then(|mut f| io::Write::write_all(&mut f, b" done\n"))
            .expect("finish fragment");
        assert_eq!(recv_n(&mut rx, 1).await, vec![b"half done".to_vec()]);

        // Several rotations, some within one poll interval.
        let mut expected = Vec::new();
        for round in 0..6 {
            for i in 0..40 {
                let n = 1000 + round * 40 + i;
                logs.write_line(Stream::Out, &line(n)).expect("write");
                expected.push(line(n));
            }
            logs.flush().expect("flush");
            if round % 2 == 0 {
                tokio::time::sleep(FOLLOW_INTERVAL * 2).await;
            }
        }
        assert!(
            rotated_path(&spec.out_path, 3).exists(),
            "rotated several times"
        );
        let got = recv_n(&mut rx, expected.len()).await;
        for g in &got {
            eprintln!("GOT {}", String::from_utf8_lossy(&g[..10]));
        }
        assert_eq!(got.len(), expected.len());
        assert_eq!(got, expected);

        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("follow ends when the receiver is dropped")
            .expect("task");
    }

    #[tokio::test]
    async fn follow_waits_for_a_missing_file_and_reads_it_from_the_start() {
        let dir = TempDir::new("follow-missing");
        let path = dir.0.join("later.log");
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(follow(path.clone(), tx, true));
        tokio::time::sleep(FOLLOW_INTERVAL * 2).await;
        std::fs::write(&path, b"first\nsecond\n").expect("write");
        assert_eq!(
            recv_n(&mut rx, 2).await,
            vec![b"first".to_vec(), b"second".to_vec()]
        );
        // Truncated in place: read again from the start.
        std::fs::write(&path, b"again\n").expect("truncate");
        assert_eq!(recv_n(&mut rx, 1).await, vec![b"again".to_vec()]);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("ends")
            .expect("task");
    }
}
