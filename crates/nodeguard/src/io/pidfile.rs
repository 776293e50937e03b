//! PM2's `pid_file`: the app's pid written at each spawn to a path the user chose, removed when
//! the process ends. The path is outside the home, so it is opened without following a symlink
//! at its last component, created 0600 (missing directories 0700, as for log files), and must be
//! a regular file.

use std::io::{self, Write};
use std::path::Path;

/// Writes `pid` and a newline to `path`, replacing what was there.
pub fn write(path: &Path, pid: u32) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(parent)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    let mut file = crate::io::logfile::open_private_regular(path, options)?;
    file.set_len(0)?;
    file.write_all(format!("{pid}\n").as_bytes())
}

/// Removes the pid file if it is (still) a regular file holding `pid`: a file another process
/// wrote since is left alone.
pub fn remove(path: &Path, pid: u32) {
    let ours = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
        && std::fs::read_to_string(path).is_ok_and(|text| text.trim() == pid.to_string());
    if ours {
        if let Err(error) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), %error, "cannot remove the pid file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_private_removed_and_links_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ng-pidfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.pid");
        write(&path, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        write(&path, 7).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        remove(&path, 8);
        assert!(path.exists(), "another pid's file stays");
        remove(&path, 7);
        assert!(!path.exists());

        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("link.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write(&link, 1)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(write(&dir, 1).is_err(), "a directory is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
