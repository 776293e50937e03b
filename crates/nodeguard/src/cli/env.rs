//! The environment on the command line: `--env-file` files, `--env <name>` checked against a
//! config file, `nodeguard env <app>` and the report of `--update-env`.

use crate::config::env::{self as vars, Var};
use crate::config::file::AppConfig;
use crate::config::ConfigError;
use nodeguard_proto::control::AppDefinition;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The variables of `--env-file` files (relative to `cwd`), later files winning.
pub fn env_files(files: &[PathBuf], cwd: &Path) -> Result<Vec<Var>, ConfigError> {
    let mut env = Vec::new();
    for file in files {
        let read = vars::read_env_file(&cwd.join(file))
            .map_err(|error| ConfigError::Policy(error.to_string()))?;
        env = vars::layered([&env[..], &read[..]]);
    }
    Ok(env)
}

/// `--env <name>` must name a block at least one app of the file has (a typo would otherwise
/// start every app without its production settings).
pub fn check_env_name(name: &str, file: &Path, apps: &[AppConfig]) -> Result<(), ConfigError> {
    if apps.iter().any(|app| app.has_env_block(name)) {
        return Ok(());
    }
    let mut known: Vec<String> = apps
        .iter()
        .flat_map(|app| {
            app.env_blocks
                .iter()
                .map(|(known, _)| format!("env_{known}"))
        })
        .collect();
    known.sort();
    known.dedup();
    let has = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    Err(ConfigError::Policy(format!(
        "--env {name}: no app in {} has an env_{name} block (blocks there: {has})",
        file.display()
    )))
}

/// What an app's processes are given, nodeguard's own monitor variables aside: its caller's
/// environment (none for an app from before it was recorded) with its own variables over it.
pub fn effective(definition: &AppDefinition) -> Vec<Var> {
    let base = definition.caller_env.as_deref().unwrap_or_default();
    vars::layered([base, &definition.env[..]])
}

/// `nodeguard env`: `NAME=value` lines sorted by name, secret-looking values masked unless
/// `reveal`; a value with control characters (a newline) is quoted as JSON.
pub fn listing(definition: &AppDefinition, reveal: bool) -> String {
    let mut env = effective(definition);
    env.sort();
    let mut out = String::new();
    for (name, value) in &env {
        let shown = if reveal {
            value.clone()
        } else {
            vars::shown_value(name, value)
        };
        let shown = if shown.chars().any(char::is_control) {
            vars::display(&shown)
        } else {
            shown
        };
        let _ = writeln!(out, "{name}={shown}");
    }
    out
}

/// `describe --json` without secrets: every secret-looking value of the definition masked.
pub fn mask_definition(definition: &mut AppDefinition) {
    let mask = |env: &mut Vec<Var>| {
        for (name, value) in env.iter_mut() {
            *value = vars::shown_value(name, value);
        }
    };
    mask(&mut definition.env);
    if let Some(caller_env) = &mut definition.caller_env {
        mask(caller_env);
    }
}

/// `--update-env`: what giving `caller_env` to the app changes, one line each (values masked as
/// in `nodeguard env`), and a line for each variable of the caller whose new value the app's own
/// `env` overrides.
pub fn update_report(app: &str, definition: &AppDefinition, caller_env: &[Var]) -> Vec<String> {
    let caller_env = &vars::filtered(caller_env, definition.filter_env.as_deref())[..];
    let before = effective(definition);
    let after = vars::layered([caller_env, &definition.env[..]]);
    let mut lines = Vec::new();
    if definition.caller_env.is_none() {
        // What the daemon's environment held is not known here: every variable would be "added".
        lines.push(format!(
            "{app}: was started with the daemon's environment; it now gets yours ({} variables)",
            after.len()
        ));
        return lines;
    }
    let changes = vars::diff(&before, &after);
    if changes.is_empty() {
        lines.push(format!("{app}: environment unchanged"));
    }
    for change in changes {
        lines.push(format!("{app}: {change}"));
    }
    let old = definition.caller_env.as_deref().unwrap_or_default();
    for (name, value) in caller_env {
        let was = old.iter().find(|(known, _)| known == name).map(|(_, v)| v);
        let overridden = definition.env.iter().any(|(known, _)| known == name);
        if overridden && was != Some(value) {
            lines.push(format!(
                "{app}: {name} is set by the app's own env (config, env_file or --env-file), \
                 which wins; unchanged"
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(caller_env: Option<&[(&str, &str)]>, env: &[(&str, &str)]) -> AppDefinition {
        let owned = |pairs: &[(&str, &str)]| -> Vec<Var> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let timing = crate::core::machine::Timing::default();
        let mut definition = crate::config::AppCommand {
            name: Some("api".into()),
            script: Path::new("/srv/app.js"),
            args: Vec::new(),
            node: Path::new("/usr/bin/node"),
            node_args: Vec::new(),
            cwd: Path::new("/srv"),
            env: owned(env),
            timing: &timing,
        }
        .definition();
        definition.caller_env = caller_env.map(owned);
        definition
    }

    #[test]
    fn the_listing_is_sorted_masked_and_layered() {
        let app = definition(
            Some(&[("Z", "caller"), ("API_KEY", "k"), ("PORT", "1")]),
            &[("PORT", "2"), ("MULTI", "a\nb")],
        );
        assert_eq!(
            listing(&app, false),
            "API_KEY=****\nMULTI=\"a\\nb\"\nPORT=2\nZ=caller\n"
        );
        assert!(listing(&app, true).starts_with("API_KEY=k\n"));
    }

    #[test]
    fn an_update_reports_changes_and_what_the_apps_own_env_keeps() {
        let caller = |pairs: &[(&str, &str)]| -> Vec<Var> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let app = definition(Some(&[("FOO", "1"), ("PORT", "1")]), &[("PORT", "80")]);
        assert_eq!(
            update_report("api", &app, &caller(&[("FOO", "2"), ("PORT", "9")])),
            [
                "api: FOO changed (1 -> 2)",
                "api: PORT is set by the app's own env (config, env_file or --env-file), which \
                 wins; unchanged"
            ]
        );
        assert_eq!(
            update_report("api", &app, &caller(&[("FOO", "1"), ("PORT", "1")])),
            ["api: environment unchanged"]
        );
        let old = definition(None, &[]);
        assert_eq!(
            update_report("api", &old, &caller(&[("FOO", "1"), ("BAR", "1")])),
            ["api: was started with the daemon's environment; it now gets yours (2 variables)"]
        );
    }
}
