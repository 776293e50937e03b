//! Watching an app's files for `watch`: inotify on the watched directories (recursively, new
//! ones included) and on the parents of watched files, through the tokio reactor (no thread), with
//! `ignore_watch` globs and `node_modules` / `.git` left out.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Most directories one app's watch covers; past it the rest goes unwatched, with a warning.
pub const MAX_WATCHED_DIRS: usize = 8192;

/// `ignore_watch` plus the paths never watched.
#[derive(Debug, Clone)]
pub struct Ignore {
    base: PathBuf,
    globs: Vec<String>,
    /// The app's own output files (absolute): never a change, nor the directories below `base`
    /// that lead to them (created when the first line is written).
    own: Vec<PathBuf>,
}

impl Ignore {
    /// Globs relative to `base` (the app's cwd), as PM2 reads them: one without `/` matches any
    /// component of a path (`node_modules`, `*.log`), one with `/` the path from `base`
    /// (`logs/**`, `public/*.css`) or any of its leading parts. `*` and `?` stop at `/`; `**`
    /// does not.
    pub fn new(base: &Path, globs: &[String], always: &[&str]) -> Self {
        let mut all: Vec<String> = always.iter().map(|s| (*s).to_string()).collect();
        all.extend(
            globs
                .iter()
                .map(|g| g.trim_start_matches("./").trim_end_matches('/').to_string())
                .filter(|g| !g.is_empty()),
        );
        Self {
            base: base.to_path_buf(),
            globs: all,
            own: Vec::new(),
        }
    }

    /// Leaves out the app's own output files (its log files), and the directories under `base`
    /// that hold them.
    pub fn with_own_files(mut self, files: Vec<PathBuf>) -> Self {
        self.own = files;
        self
    }

    pub fn is_ignored(&self, path: &Path) -> bool {
        if self.own.iter().any(|own| {
            own == path
                || (own.starts_with(path) && path.starts_with(&self.base) && path != self.base)
        }) {
            return true;
        }
        let relative = path.strip_prefix(&self.base).unwrap_or(path);
        let parts: Vec<&str> = relative
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => part.to_str(),
                _ => None,
            })
            .collect();
        self.globs.iter().any(|glob| {
            if glob.contains('/') {
                (1..=parts.len()).any(|end| glob_match(glob, &parts[..end].join("/")))
            } else {
                parts.iter().any(|part| glob_match(glob, part))
            }
        })
    }
}

/// `*` (not `/`), `**` (anything), `?` (one character, not `/`), else literal.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative matcher with memo: positions (g, t) already known not to match.
    let mut dead = std::collections::HashSet::new();
    fn go(
        g: usize,
        t: usize,
        glob: &[char],
        text: &[char],
        dead: &mut std::collections::HashSet<(usize, usize)>,
    ) -> bool {
        if dead.contains(&(g, t)) {
            return false;
        }
        let matched = match glob.get(g) {
            None => t == text.len(),
            Some('*') => {
                let double = glob.get(g + 1) == Some(&'*');
                let next = if double { g + 2 } else { g + 1 };
                // `**/` also matches no directory at all.
                let skip_slash = double && glob.get(next) == Some(&'/');
                (skip_slash && go(next + 1, t, glob, text, dead))
                    || go(next, t, glob, text, dead)
                    || (t < text.len()
                        && (double || text[t] != '/')
                        && go(g, t + 1, glob, text, dead))
            }
            Some('?') => t < text.len() && text[t] != '/' && go(g + 1, t + 1, glob, text, dead),
            Some(c) => t < text.len() && text[t] == *c && go(g + 1, t + 1, glob, text, dead),
        };
        if !matched {
            dead.insert((g, t));
        }
        matched
    }
    go(0, 0, &glob, &text, &mut dead)
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use futures_util::StreamExt;
    use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
    use std::collections::HashMap;

    fn mask() -> WatchMask {
        WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ATTRIB
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
    }

    /// A watched directory: all of it (recursively), or only the watched files in it.
    #[derive(Debug, Clone)]
    struct Dir {
        path: PathBuf,
        only: Option<Vec<std::ffi::OsString>>,
    }

    /// The watches of one app.
    pub struct FileWatch {
        stream: EventStream<Vec<u8>>,
        dirs: HashMap<WatchDescriptor, Dir>,
        ignore: Ignore,
        warned_full: bool,
    }

    struct Adder<'a> {
        watches: Watches,
        dirs: &'a mut HashMap<WatchDescriptor, Dir>,
        ignore: &'a Ignore,
        full: bool,
    }

    impl Adder<'_> {
        /// Watches `dir` and every directory below it that is not ignored.
        fn tree(&mut self, dir: &Path) {
            let mut pending = vec![dir.to_path_buf()];
            while let Some(dir) = pending.pop() {
                if self.dirs.len() >= MAX_WATCHED_DIRS {
                    self.full = true;
                    return;
                }
                match self.watches.add(&dir, mask() | WatchMask::ONLYDIR) {
                    Ok(wd) => {
                        self.dirs.insert(
                            wd,
                            Dir {
                                path: dir.clone(),
                                only: None,
                            },
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, dir = %dir.display(), "cannot watch");
                        continue;
                    }
                }
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    if is_dir && !self.ignore.is_ignored(&path) {
                        pending.push(path);
                    }
                }
            }
        }

        /// Watches the directory holding `file`, for `file` alone.
        fn file(&mut self, file: &Path) -> io::Result<()> {
            let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
                return Err(io::Error::other(format!("cannot watch {}", file.display())));
            };
            let wd = self.watches.add(parent, mask() | WatchMask::ONLYDIR)?;
            let entry = self.dirs.entry(wd).or_insert_with(|| Dir {
                path: parent.to_path_buf(),
                only: Some(Vec::new()),
            });
            if let Some(only) = &mut entry.only {
                only.push(name.to_os_string());
            }
            Ok(())
        }
    }

    impl FileWatch {
        /// Watches `paths` (directories recursively; a file through its directory). Must run
        /// inside the tokio runtime; the directory walk is synchronous.
        pub fn new(paths: &[PathBuf], ignore: Ignore) -> io::Result<Self> {
            let inotify = Inotify::init()?;
            let stream = inotify.into_event_stream(vec![0u8; 16 * 1024])?;
            let mut dirs = HashMap::new();
            let mut adder = Adder {
                watches: stream.watches(),
                dirs: &mut dirs,
                ignore: &ignore,
                full: false,
            };
            for path in paths {
                if path.is_dir() {
                    adder.tree(path);
                } else if path.exists() {
                    adder.file(path)?;
                } else {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} does not exist", path.display()),
                    ));
                }
            }
            let full = adder.full;
            if full {
                tracing::warn!("watching only the first {MAX_WATCHED_DIRS} directories");
            }
            Ok(Self {
                stream,
                dirs,
                ignore,
                warned_full: full,
            })
        }

        /// How many directories are watched.
        pub fn dirs(&self) -> usize {
            self.dirs.len()
        }

        /// The next change that is not ignored: the path that changed.
        pub async fn next_change(&mut self) -> io::Result<PathBuf> {
            loop {
                let Some(event) = self.stream.next().await else {
                    return Err(io::Error::other("the inotify stream ended"));
                };
                let event = event?;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    return Ok(PathBuf::from("(many files)"));
                }
                if event.mask.contains(EventMask::IGNORED) {
                    self.dirs.remove(&event.wd);
                    continue;
                }
                let Some(dir) = self.dirs.get(&event.wd) else {
                    continue;
                };
                let name = event.name.as_deref();
                if let (Some(only), Some(name)) = (&dir.only, name) {
                    if !only.iter().any(|watched| watched.as_os_str() == name) {
                        continue;
                    }
                }
                let path = match name {
                    Some(name) => dir.path.join(name),
                    None => dir.path.clone(),
                };
                if self.ignore.is_ignored(&path) {
                    continue;
                }
                let recursive = dir.only.is_none();
                if recursive
                    && event.mask.contains(EventMask::ISDIR)
                    && event
                        .mask
                        .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                {
                    let mut adder = Adder {
                        watches: self.stream.watches(),
                        dirs: &mut self.dirs,
                        ignore: &self.ignore,
                        full: false,
                    };
                    adder.tree(&path);
                    if adder.full && !self.warned_full {
                        self.warned_full = true;
                        tracing::warn!("watching only the first {MAX_WATCHED_DIRS} directories");
                    }
                }
                return Ok(path);
            }
        }
    }
}

#[cfg(target_os = "linux")]
pub use linux::FileWatch;

/// Without inotify there is no watching: `new` says so.
#[cfg(not(target_os = "linux"))]
pub struct FileWatch;

#[cfg(not(target_os = "linux"))]
impl FileWatch {
    pub fn new(_paths: &[PathBuf], _ignore: Ignore) -> io::Result<Self> {
        Err(io::Error::other("watching files needs Linux (inotify)"))
    }
    pub fn dirs(&self) -> usize {
        0
    }
    pub async fn next_change(&mut self) -> io::Result<PathBuf> {
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_log_files_and_their_directories_are_left_out() {
        let ignore = Ignore::new(Path::new("/srv/app"), &[], &[]).with_own_files(vec![
            PathBuf::from("/srv/app/logs/out.log"),
            PathBuf::from("/srv/app/logs/err.log"),
        ]);
        assert!(ignore.is_ignored(Path::new("/srv/app/logs/out.log")));
        assert!(ignore.is_ignored(Path::new("/srv/app/logs/err.log")));
        assert!(
            ignore.is_ignored(Path::new("/srv/app/logs")),
            "the directory made for them"
        );
        assert!(!ignore.is_ignored(Path::new("/srv/app")));
        assert!(!ignore.is_ignored(Path::new("/srv/app/logs/other.txt")));
        assert!(!ignore.is_ignored(Path::new("/srv/app/src/index.js")));
    }

    #[test]
    fn globs_match_as_pm2_users_write_them() {
        assert!(glob_match("*.log", "out.log"));
        assert!(!glob_match("*.log", "a/out.log"));
        assert!(glob_match("logs/**", "logs/a/b.txt"));
        assert!(glob_match("**/*.tmp", "x.tmp"));
        assert!(glob_match("**/*.tmp", "a/b/x.tmp"));
        assert!(glob_match("file?.js", "file1.js"));
        assert!(!glob_match("file?.js", "file12.js"));
        let ignore = Ignore::new(
            Path::new("/app"),
            &["logs".into(), "./public/*.css".into(), "*.tmp".into()],
            &["node_modules", ".git"],
        );
        assert!(ignore.is_ignored(Path::new("/app/node_modules/x/index.js")));
        assert!(ignore.is_ignored(Path::new("/app/.git/HEAD")));
        assert!(ignore.is_ignored(Path::new("/app/logs/out.log")));
        assert!(ignore.is_ignored(Path::new("/app/public/site.css")));
        assert!(ignore.is_ignored(Path::new("/app/src/a.tmp")));
        assert!(!ignore.is_ignored(Path::new("/app/src/index.js")));
        assert!(!ignore.is_ignored(Path::new("/app/public/site.js")));
    }
}
