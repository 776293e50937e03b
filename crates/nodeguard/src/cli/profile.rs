//! `nodeguard profile <target> --cpu|--heap`: the flags, and delivering the files the daemon
//! wrote into `<home>/profiles/` to where the caller asked (`-o`, else the current directory).
//!
//! The daemon streams each profile to its own private directory as the monitor sends it; the
//! CLI, which runs as the same user (the control socket accepts no other), then moves it out.
//! So a heap snapshot of hundreds of megabytes crosses no socket twice and is never held in
//! memory, and the daemon never writes outside its home.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use nodeguard_proto::control::ProfileFile;
use nodeguard_proto::worker::ProfileKind;

use crate::core::duration::parse_duration;

/// Flags of `nodeguard profile`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["cpu", "heap"])))]
pub struct ProfileArgs {
    /// An app name or id (several instances: one file each).
    pub target: String,
    /// A CPU profile (.cpuprofile: open it in Chrome DevTools, Performance tab, or VS Code).
    #[arg(long)]
    pub cpu: bool,
    /// A heap snapshot (.heapsnapshot: Chrome DevTools, Memory tab). The app's JS thread is
    /// busy while V8 writes it: seconds for a large heap.
    #[arg(long)]
    pub heap: bool,
    /// How long the CPU profile runs (at most 60s).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_profile_duration)]
    pub duration: Duration,
    /// Where to write it (default: <name>-<pid>-<time>.<ext> in the current directory). With
    /// several instances, `-<instance>` goes before the extension.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Longest CPU profile (the daemon checks it too).
pub const MAX_CPU_DURATION: Duration = Duration::from_secs(60);

fn parse_profile_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() || duration > MAX_CPU_DURATION {
        return Err(format!("{text}: a CPU profile lasts from 1ms to 60s"));
    }
    Ok(duration)
}

impl ProfileArgs {
    pub fn kind(&self) -> ProfileKind {
        if self.heap {
            ProfileKind::Heap
        } else {
            ProfileKind::Cpu
        }
    }

    /// Where `file` (one of `count` profiles) goes.
    pub fn destination(&self, file: &ProfileFile, count: usize, cwd: &Path) -> PathBuf {
        let daemon_path = Path::new(&file.path);
        match &self.output {
            Some(output) if count <= 1 => cwd.join(output),
            Some(output) => {
                let suffix = file.instance.unwrap_or(file.id);
                let stem = output
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name = match output.extension() {
                    Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
                    None => format!("{stem}-{suffix}"),
                };
                cwd.join(output.with_file_name(name))
            }
            None => cwd.join(daemon_path.file_name().unwrap_or(daemon_path.as_os_str())),
        }
    }
}

/// Moves the daemon's file to `to` (copied then removed across file systems). The file is the
/// daemon's, in its private directory; it must be a regular file (no link is followed).
pub fn deliver(from: &Path, to: &Path) -> io::Result<()> {
    let metadata = std::fs::symlink_metadata(from)?;
    if !metadata.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", from.display()),
        ));
    }
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProfileArgs,
    }

    fn file(instance: Option<u32>) -> ProfileFile {
        ProfileFile {
            name: "web".into(),
            id: 3,
            instance,
            pid: 42,
            path: "/home/x/profiles/web-42-20261129T233000Z.cpuprofile".into(),
            bytes: 1,
            hottest: None,
        }
    }

    #[test]
    fn destinations_and_kinds() {
        let cwd = Path::new("/work");
        let cli = Cli::try_parse_from(["p", "web", "--cpu"]).unwrap();
        assert_eq!(cli.args.kind(), ProfileKind::Cpu);
        assert_eq!(
            cli.args.destination(&file(None), 1, cwd),
            Path::new("/work/web-42-20261129T233000Z.cpuprofile")
        );
        let cli = Cli::try_parse_from(["p", "web", "--heap", "-o", "out/a.heapsnapshot"]).unwrap();
        assert_eq!(cli.args.kind(), ProfileKind::Heap);
        assert_eq!(
            cli.args.destination(&file(Some(1)), 2, cwd),
            Path::new("/work/out/a-1.heapsnapshot")
        );
        assert!(Cli::try_parse_from(["p", "web"]).is_err());
        assert!(Cli::try_parse_from(["p", "web", "--cpu", "--duration", "61s"]).is_err());
        assert!(Cli::try_parse_from(["p", "web", "--cpu", "--duration", "0s"]).is_err());
        assert!(Cli::try_parse_from(["p", "web", "--cpu", "--heap"]).is_err());
    }
}
