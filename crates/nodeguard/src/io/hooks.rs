//! Running one event hook: a command (no shell; the event as JSON on stdin and in `NODEGUARD_*`
//! variables, in its own process group, killed with it at the deadline) or an HTTP POST of the
//! JSON over a plain TCP connection (http only: no TLS stack is carried for this).

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::hooks::HookTarget;
use crate::core::exit::{human, ExitKind};
use crate::core::machine::StopSignal;
use crate::io::proctree::ChildSet;
use crate::platform;

/// The most of a failing command's stderr quoted in the supervisor's log.
const STDERR_QUOTED: usize = 512;

/// One hook to run for one event.
#[derive(Debug, Clone)]
pub struct HookJob {
    pub target: HookTarget,
    /// The hook as written, for log lines.
    pub hook: String,
    pub app: String,
    pub kind: &'static str,
    /// The app's directory: where a command runs.
    pub cwd: PathBuf,
    /// `NODEGUARD_*` variables for a command.
    pub env: Vec<(String, String)>,
    /// The event as one JSON object.
    pub payload: Arc<str>,
    pub timeout: Duration,
}

/// Runs the hook to its end or its deadline; `Err` says why it failed, for the log.
pub async fn run(job: &HookJob, children: &ChildSet) -> Result<(), String> {
    match &job.target {
        HookTarget::Command(argv) => run_command(job, argv, children).await,
        HookTarget::Url {
            authority,
            host,
            port,
            path,
        } => tokio::time::timeout(job.timeout, post(job, authority, host, *port, path))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}", human(job.timeout)))),
    }
}

async fn run_command(job: &HookJob, argv: &[String], children: &ChildSet) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&job.cwd)
        .envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    // The orphan reaper must not collect the hook before tokio does: its pid is recorded as one
    // of ours under the same lock the reaper takes (as the spawner does for apps).
    let (mut child, pid) = {
        let mut ours = children.lock().unwrap_or_else(PoisonError::into_inner);
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {program}: {error}"))?;
        let pid = child.id();
        if let Some(pid) = pid {
            ours.insert(pid, 0);
        }
        (child, pid)
    };
    let stderr = child.stderr.take().map(|mut stderr| {
        tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buffer = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_QUOTED.saturating_sub(kept.len());
                kept.extend_from_slice(buffer.get(..n.min(room)).unwrap_or_default());
            }
            kept
        })
    });
    let mut stdin = child.stdin.take();
    let outcome = tokio::time::timeout(job.timeout, async {
        if let Some(stdin) = &mut stdin {
            // A hook that does not read its stdin is fine: EPIPE is not a failure.
            let _ = stdin.write_all(job.payload.as_bytes()).await;
            let _ = stdin.write_all(b"\n").await;
        }
        drop(stdin.take());
        child.wait().await
    })
    .await;
    let result = match outcome {
        Ok(Ok(status)) => {
            let status = ExitKind::from_status(status);
            if status == ExitKind::Code(0) {
                Ok(())
            } else {
                Err(status.to_string())
            }
        }
        Ok(Err(error)) => Err(format!("lost track of it: {error}")),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = platform::signal_group(pid, StopSignal::Kill);
            }
            let _ = child.wait().await;
            Err(format!(
                "still running after {}; its process group was killed",
                human(job.timeout)
            ))
        }
    };
    if let Some(pid) = pid {
        children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
    }
    let quoted = match stderr {
        // A grandchild may hold the pipe open: the hook's own end is what counts.
        Some(task) => match tokio::time::timeout(Duration::from_millis(200), task).await {
            Ok(Ok(kept)) => String::from_utf8_lossy(&kept)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
                .trim()
                .to_string(),
            _ => String::new(),
        },
        None => String::new(),
    };
    result.map_err(|why| {
        if quoted.is_empty() {
            why
        } else {
            format!("{why}; stderr: {quoted}")
        }
    })
}

async fn post(
    job: &HookJob,
    authority: &str,
    host: &str,
    port: u16,
    path: &str,
) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|error| format!("cannot connect to {authority}: {error}"))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: nodeguard\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        job.payload.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|error| format!("cannot send to {authority}: {error}"))?;
    stream
        .write_all(job.payload.as_bytes())
        .await
        .map_err(|error| format!("cannot send to {authority}: {error}"))?;
    // The status line is all that is read: `HTTP/1.1 204 No Content`.
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        let n = stream
            .read(&mut buffer)
            .await
            .map_err(|error| format!("no answer from {authority}: {error}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(buffer.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&answer);
    let line = line.lines().next().unwrap_or_default();
    let code = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(()),
        Some(_) => Err(format!("{authority} answered {:?}", line.trim())),
        None => Err(format!("{authority} sent no HTTP answer")),
    }
}
