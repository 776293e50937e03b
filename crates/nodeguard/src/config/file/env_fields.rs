//! An app's environment fields: `env`, PM2's `env_<name>` blocks (chosen with `--env <name>`) and
//! `env_file` (one dotenv file or a list, read now, relative to the app's cwd).

use super::checker::Checker;
use super::*;
use crate::config::env::{read_env_file, Var};

/// What an app's entry says about its environment.
pub(super) struct EnvFields {
    pub(super) env: Vec<Var>,
    pub(super) blocks: Vec<(String, Vec<Var>)>,
    pub(super) file: Vec<Var>,
    /// PM2's `filter_env` as prefixes (`true` is the empty prefix).
    pub(super) filter: Option<Vec<String>>,
}

impl Checker<'_> {
    /// Takes `env`, every `env_<name>` and `env_file` out of `fields`.
    pub(super) fn env_fields(&mut self, fields: &mut Map<String, Value>, cwd: &Path) -> EnvFields {
        let env = fields
            .remove("env")
            .map(|value| self.env_block("env", value))
            .unwrap_or_default();
        let file = match fields.remove("env_file") {
            None => Vec::new(),
            Some(value) => self.env_file(value, cwd),
        };
        let filter = match fields.remove("filter_env") {
            None | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(vec![String::new()]),
            Some(Value::String(prefix)) if !prefix.is_empty() => Some(vec![prefix]),
            Some(Value::Array(items))
                if items
                    .iter()
                    .all(|i| matches!(i, Value::String(s) if !s.is_empty())) =>
            {
                Some(
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                )
            }
            Some(other) => {
                self.problem(
                    "filter_env",
                    format!(
                        "expected true, false, a prefix or a list of prefixes (non-empty strings), got {}",
                        show(&other)
                    ),
                );
                None
            }
        };
        let names: Vec<String> = fields
            .keys()
            .filter(|key| key.starts_with("env_") && key.len() > "env_".len())
            .cloned()
            .collect();
        let mut blocks = Vec::new();
        for key in names {
            if let Some(value) = fields.remove(&key) {
                let vars = self.env_block(&key, value);
                blocks.push((key["env_".len()..].to_string(), vars));
            }
        }
        EnvFields {
            env,
            blocks,
            file,
            filter,
        }
    }

    /// An object of variables (strings, numbers or booleans).
    pub(super) fn env_block(&mut self, field: &str, value: Value) -> Vec<Var> {
        let Value::Object(vars) = value else {
            self.problem(
                field,
                format!("expected an object of variables, got {}", show(&value)),
            );
            return Vec::new();
        };
        let mut env = Vec::new();
        for (key, value) in vars {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                self.problem(
                    field,
                    format!("invalid variable name {}", show(&Value::String(key))),
                );
                continue;
            }
            let text = match value {
                Value::String(text) => text,
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                other => {
                    self.problem(
                        &format!("{field}.{key}"),
                        format!("expected a string, number or boolean, got {}", show(&other)),
                    );
                    continue;
                }
            };
            if text.contains('\0') {
                self.problem(&format!("{field}.{key}"), "must not contain NUL characters");
                continue;
            }
            env.push((key, text));
        }
        env
    }

    /// `env_file`: a path or a list of paths, each read as a dotenv file.
    fn env_file(&mut self, value: Value, cwd: &Path) -> Vec<Var> {
        let values = match value {
            Value::Array(values) => values,
            other => vec![other],
        };
        let mut vars = Vec::new();
        for value in values {
            let Some(path) = self.path("env_file", value, cwd) else {
                continue;
            };
            match read_env_file(&path) {
                Ok(read) => vars = crate::config::env::layered([&vars[..], &read[..]]),
                Err(error) => self.problem("env_file", error.to_string()),
            }
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::{load, AppDefaults};

    fn defaults() -> AppDefaults {
        AppDefaults {
            node: PathBuf::from("node"),
            timing: Timing::default(),
        }
    }

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ng-env-fields-{}-{}",
            std::process::id(),
            files.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        dir
    }

    fn get<'a>(vars: &'a [Var], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// Each variable is set at every level up to its own: the highest level that sets it wins.
    #[test]
    fn env_file_then_env_then_the_chosen_block() {
        let dir = dir_with(&[
            ("app.js", ""),
            (
                "a.env",
                "AT_FILE=file\nAT_ENV=file\nAT_BLOCK=file\nexport TWICE=first\n",
            ),
            ("b.env", "TWICE=second # later file wins\n"),
            (
                "c.json",
                r#"{"apps":[{"name":"api","script":"app.js","env_file":["a.env","b.env"],
                   "env":{"AT_ENV":"env","AT_BLOCK":"env","PORT":3000},
                   "env_production":{"AT_BLOCK":"production","DEBUG":false},
                   "env_staging":{"AT_BLOCK":"staging"}}]}"#,
            ),
        ]);
        let loaded = load(&dir.join("c.json"), &defaults()).expect("loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let app = &loaded.apps[0];
        let production = app.env_for(Some("production"));
        assert_eq!(get(&production, "AT_FILE"), Some("file"));
        assert_eq!(get(&production, "AT_ENV"), Some("env"));
        assert_eq!(get(&production, "AT_BLOCK"), Some("production"));
        assert_eq!(get(&production, "TWICE"), Some("second"));
        assert_eq!(get(&production, "PORT"), Some("3000"));
        assert_eq!(get(&production, "DEBUG"), Some("false"));
        assert_eq!(
            get(&app.env_for(Some("staging")), "AT_BLOCK"),
            Some("staging")
        );
        assert_eq!(get(&app.env_for(None), "AT_BLOCK"), Some("env"));
        // The definition carries env_file under env; the block is the caller's choice.
        let definition = app.definition(Path::new("/usr/bin/node"), false);
        assert_eq!(get(&definition.env, "AT_FILE"), Some("file"));
        assert_eq!(get(&definition.env, "AT_BLOCK"), Some("env"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_env_fields_are_problems() {
        let dir = dir_with(&[
            ("app.js", ""),
            (
                "c.json",
                r#"{"apps":[{"name":"api","script":"app.js","env_file":"missing.env",
                   "env_production":"NODE_ENV=production","env_dev":{"A":{"b":1}}}]}"#,
            ),
        ]);
        let error = load(&dir.join("c.json"), &defaults()).expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("env_file: cannot read env file"), "{text}");
        assert!(text.contains("missing.env"), "{text}");
        assert!(
            text.contains("env_production: expected an object of variables"),
            "{text}"
        );
        assert!(
            text.contains("env_dev.A: expected a string, number or boolean"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
