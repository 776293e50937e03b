//! What runs an app, resolved as PM2 does: a Node script, a TypeScript file, a command found on
//! PATH or a command line (`npm run start`, `node server.js`, `uvicorn app:app`), or a file run
//! by a chosen `interpreter` (`bun`, `python3`, `tsx`, `none`, a path).
//!
//! The rules, in order:
//! 1. An `interpreter` names the runtime: `node` (or a path ending in `/node`) is Node with the
//!    monitor preloaded; `none` runs the script itself as a command; anything else is looked up
//!    on PATH and runs `interpreter interpreter_args script args`.
//! 2. Without one, a script that is not a file but holds spaces is a command line, split as a
//!    shell would (quotes, backslashes); its first word is resolved by these same rules.
//! 3. A file: `.js/.mjs/.cjs` (and files without one of the extensions below, such as Express's
//!    `bin/www`) run with node; `.ts/.mts/.cts` with node and Node's own type stripping where the
//!    Node version has it, else `--import tsx` from the project; `.py` with python3; `.sh` with
//!    sh; another executable file (a binary, a script with a non-node `#!` line) as a command.
//! 4. Not a file: a program on PATH runs as a command (`node` itself means rule 3 for its
//!    first argument). The program is resolved on the caller's PATH, to an absolute path.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// `interpreter: 'none'`: the script runs itself.
pub const NONE: &str = "none";

/// How to run one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The script file, or the command's program (absolute).
    pub script: PathBuf,
    /// Arguments taken from a command line, before the app's own.
    pub args: Vec<String>,
    /// `None`: node. [`NONE`]: a command. Else an interpreter's absolute path.
    pub interpreter: Option<String>,
    /// Node arguments the runtime needs (type stripping, `--import tsx`), before the user's.
    pub node_args: Vec<String>,
}

/// Resolves `script` (a path or command line, as typed) against `cwd`; `node` runs Node apps.
pub fn resolve_entry(
    script: &str,
    interpreter: Option<&str>,
    cwd: &Path,
    node: &Path,
) -> Result<Entry, ConfigError> {
    let interpreter = interpreter.map(str::trim).filter(|i| !i.is_empty());
    match interpreter {
        Some(name) if is_node(name) => node_entry(file(script, cwd)?, Vec::new(), node, cwd),
        Some(NONE) => command_entry(script, cwd),
        Some(name) => {
            let program = which::which_in(name, std::env::var_os("PATH"), cwd)
                .map_err(|_| ConfigError::InterpreterNotFound(name.to_string()))?;
            Ok(Entry {
                script: file(script, cwd)?,
                args: Vec::new(),
                interpreter: Some(program.display().to_string()),
                node_args: Vec::new(),
            })
        }
        None => {
            let full = cwd.join(script);
            if full.is_file() {
                return by_file(full, cwd, node);
            }
            if full.is_dir() {
                return Err(ConfigError::ScriptIsDirectory(PathBuf::from(script)));
            }
            command_entry(script, cwd)
        }
    }
}

fn is_node(name: &str) -> bool {
    name == "node" || name == "nodejs" || name.ends_with("/node")
}

fn file(script: &str, cwd: &Path) -> Result<PathBuf, ConfigError> {
    super::resolve_script(Path::new(script), cwd)
}

/// Rule 3.
fn by_file(full: PathBuf, cwd: &Path, node: &Path) -> Result<Entry, ConfigError> {
    let extension = full
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let run_with = |interpreter: &str| -> Result<Entry, ConfigError> {
        let program = which::which(interpreter)
            .map_err(|_| ConfigError::InterpreterNotFound(interpreter.to_string()))?;
        Ok(Entry {
            script: full.clone(),
            args: Vec::new(),
            interpreter: Some(program.display().to_string()),
            node_args: Vec::new(),
        })
    };
    match extension.as_str() {
        "js" | "mjs" | "cjs" | "ts" | "mts" | "cts" => node_entry(full, Vec::new(), node, cwd),
        "py" => run_with("python3"),
        "sh" => run_with("sh"),
        _ if is_executable(&full) && !node_shebang(&full) => Ok(Entry {
            script: full,
            args: Vec::new(),
            interpreter: Some(NONE.to_string()),
            node_args: Vec::new(),
        }),
        _ => node_entry(full, Vec::new(), node, cwd),
    }
}

/// Rules 2 and 4: a program on PATH (or a path to one), maybe with arguments.
fn command_entry(script: &str, cwd: &Path) -> Result<Entry, ConfigError> {
    let words = shell_words::split(script)
        .map_err(|error| ConfigError::Policy(format!("script {script:?}: {error}")))?;
    let Some((program, rest)) = words.split_first() else {
        return Err(ConfigError::ScriptNotFound(PathBuf::from(script)));
    };
    let local = cwd.join(program);
    let found = if local.is_file() {
        local
    } else {
        which::which_in(program, std::env::var_os("PATH"), cwd)
            .map_err(|_| ConfigError::ScriptNotFound(PathBuf::from(script)))?
    };
    let name = found.file_name().map(|n| n.to_string_lossy().into_owned());
    if words.len() > 1 && name.as_deref().is_some_and(is_node) {
        // `node server.js`: Node with the monitor preloaded, node's own flags kept.
        if let Some(index) = rest.iter().position(|word| !word.starts_with('-')) {
            let (flags, tail) = rest.split_at(index);
            if let Some((entry, args)) = tail.split_first() {
                let mut resolved = node_entry(file(entry, cwd)?, flags.to_vec(), &found, cwd)?;
                resolved.args = args.to_vec();
                return Ok(resolved);
            }
        }
    }
    Ok(Entry {
        script: found,
        args: rest.to_vec(),
        interpreter: Some(NONE.to_string()),
        node_args: Vec::new(),
    })
}

/// A file run by node; TypeScript gets what this Node version needs to run it.
fn node_entry(
    script: PathBuf,
    mut node_args: Vec<String>,
    node: &Path,
    cwd: &Path,
) -> Result<Entry, ConfigError> {
    let typescript = script
        .extension()
        .is_some_and(|e| matches!(e.to_str(), Some("ts" | "mts" | "cts")));
    if typescript
        && !node_args
            .iter()
            .any(|a| a.contains("tsx") || a.contains("ts-node"))
    {
        let version = node_version(node);
        let strips = version.is_some_and(|v| v >= (22, 6));
        // Type stripping is on by default from Node 23.6, and on 22.x from 22.18.
        let default_strips = version.is_some_and(|v| v >= (23, 6) || (v.0 == 22 && v.1 >= 18));
        if default_strips {
            // Type stripping is on by default.
        } else if strips {
            node_args.insert(0, "--experimental-strip-types".to_string());
        } else if has_package(cwd, &script, "tsx") {
            node_args.insert(0, "--import=tsx".to_string());
        } else {
            return Err(ConfigError::Policy(format!(
                "{} is TypeScript: it needs Node 22.6 or later (type stripping), or tsx in the \
                 project (npm install --save-dev tsx)",
                script.display()
            )));
        }
    }
    Ok(Entry {
        script,
        args: Vec::new(),
        interpreter: None,
        node_args,
    })
}

/// `node --version` as (major, minor).
pub fn node_version(node: &Path) -> Option<(u32, u32)> {
    let output = std::process::Command::new(node)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether `node_modules/<package>` exists in `cwd`, the script's folder, or a parent of either.
fn has_package(cwd: &Path, script: &Path, package: &str) -> bool {
    [Some(cwd), script.parent()]
        .into_iter()
        .flatten()
        .any(|start| {
            start.ancestors().any(|dir| {
                dir.join("node_modules")
                    .join(package)
                    .join("package.json")
                    .is_file()
            })
        })
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|meta| meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// A `#!` line that runs node (`#!/usr/bin/env node`).
fn node_shebang(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 128];
    let Ok(read) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    let head = &head[..read.min(head.len())];
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    line.starts_with(b"#!") && String::from_utf8_lossy(line).contains("node")
}

/// What a Node-API runtime the monitor can load into is called: node itself, or bun.
pub fn is_bun(interpreter: &str) -> bool {
    Path::new(interpreter)
        .file_name()
        .is_some_and(|name| name == "bun" || name == "bun.exe")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(files: &[(&str, &str, u32)]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("ng-command-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text, mode) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        dir
    }

    #[test]
    fn scripts_resolve_by_kind() {
        let dir = temp(&[
            ("app.js", "", 0o644),
            ("www", "#!/usr/bin/env node\n", 0o755),
            ("run.sh", "#!/bin/sh\n", 0o755),
            ("tool", "#!/bin/sh\n", 0o755),
            ("main.py", "", 0o644),
        ]);
        let node = which::which("node").unwrap();
        let at = |s: &str, i: Option<&str>| resolve_entry(s, i, &dir, &node);
        assert_eq!(at("app.js", None).unwrap().interpreter, None);
        assert_eq!(at("www", None).unwrap().interpreter, None);
        assert_eq!(at("tool", None).unwrap().interpreter.as_deref(), Some(NONE));
        assert!(at("run.sh", None)
            .unwrap()
            .interpreter
            .unwrap()
            .ends_with("/sh"));
        assert!(at("main.py", None)
            .unwrap()
            .interpreter
            .unwrap()
            .contains("python3"));
        let npm = at("npm run start", None).unwrap();
        assert_eq!(npm.interpreter.as_deref(), Some(NONE));
        assert!(npm.script.ends_with("npm"));
        assert_eq!(npm.args, ["run", "start"]);
        let node_line = at("node --inspect=0 app.js", None).unwrap();
        assert_eq!(node_line.interpreter, None);
        assert_eq!(node_line.script, dir.join("app.js"));
        assert_eq!(node_line.node_args, ["--inspect=0"]);
        assert!(matches!(
            at("no-such-program-xyz", None),
            Err(ConfigError::ScriptNotFound(_))
        ));
        assert!(matches!(
            at("app.js", Some("no-such-runtime-xyz")),
            Err(ConfigError::InterpreterNotFound(_))
        ));
        assert_eq!(
            at("tool", Some("none")).unwrap().interpreter.as_deref(),
            Some(NONE)
        );
        assert_eq!(at("app.js", Some("node")).unwrap().interpreter, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
