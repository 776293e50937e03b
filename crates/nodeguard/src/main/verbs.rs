//! The client verbs (`start`, `stop`, `status`, `logs` …): one request to the daemon each, its
//! answer printed; and `startup`, which writes the systemd unit.

use super::*;

/// The verbs that talk to a running supervisor.
pub(super) fn client_verb(verb: Verb, home: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let paths = home_paths(home)?;
    let runtime = runtime()?;
    match verb {
        Verb::Status {
            json,
            no_color,
            pattern,
            state,
            fields,
        } => {
            let filter = nodeguard::cli::status::StatusFilter {
                pattern,
                state,
                fields: fields.map(|fields| fields.0),
            };
            let payload = runtime.block_on(client::request_payload(&paths, Command::Status))?;
            if json && filter.is_empty() {
                if let Some(raw) = nodeguard::cli::status::raw_apps(&payload) {
                    print_json_rows(raw, true)?;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let Outcome::Status { apps } = client::decode_response(&payload)? else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            if !filter.is_empty() {
                let apps = filter.rows(apps);
                if json {
                    println!("{}", filter.json(&apps)?);
                } else {
                    print!("{}", render::status_table(&apps));
                }
            } else if json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                let colour = nodeguard::cli::colour::wanted(no_color);
                print!("{}", render::status_table_in_colour(&apps, colour));
            }
        }
        Verb::Start(args) => {
            // PM2's `start <name>`: a bare word that is no file but names an app the daemon knows
            // restarts that app (or starts it if stopped).
            if let Some(target) = runtime.block_on(known_app(&paths, &args.script)) {
                let outcome = runtime.block_on(client::request(
                    &paths,
                    Command::Restart {
                        target: Target(target),
                        update_env: None,
                    },
                ))?;
                print_done(outcome)?;
                return Ok(ExitCode::SUCCESS);
            }
            let plan = args.into_plan()?;
            for warning in &plan.warnings {
                eprintln!("nodeguard: warning: {warning}");
            }
            let outcome = runtime.block_on(async {
                if client::ensure_daemon(&paths).await? {
                    println!("nodeguard: daemon started on {}", paths.home.display());
                }
                start_apps(&paths, plan.apps).await
            })?;
            print_done(outcome)?;
        }
        Verb::Stop { targets } => {
            let command = |target| Command::Stop { target };
            print_done_all(&runtime, &paths, targets, command)?;
        }
        Verb::Scale { app, count } => {
            let command = Command::Scale {
                target: Target(app),
                count: count.count,
                relative: count.relative,
            };
            let outcome = runtime.block_on(client::request(&paths, command))?;
            print_done(outcome)?;
        }
        Verb::Reset { targets } => {
            let command = |target| Command::Reset { target };
            print_done_all(&runtime, &paths, targets, command)?;
        }
        Verb::Restart {
            targets,
            update_env,
        } => {
            let update_env = env_update_for(&runtime, &paths, &targets, update_env)?;
            let command = |target| Command::Restart {
                target,
                update_env: update_env.clone(),
            };
            print_done_all(&runtime, &paths, targets, command)?;
        }
        Verb::Reload {
            targets,
            update_env,
        } => {
            let update_env = env_update_for(&runtime, &paths, &targets, update_env)?;
            let mut all = Vec::new();
            for target in targets {
                let outcome = runtime.block_on(client::request(
                    &paths,
                    Command::Reload {
                        target: Target(target),
                        update_env: update_env.clone(),
                    },
                ))?;
                let Outcome::Reloaded { apps, notes } = outcome else {
                    anyhow::bail!("unexpected answer from the supervisor");
                };
                for note in notes {
                    println!("{note}");
                }
                all.extend(apps);
            }
            print!("{}", render::status_table(&all));
        }
        Verb::Delete { targets } => {
            for target in targets {
                let Outcome::Done { apps } = runtime.block_on(client::request(
                    &paths,
                    Command::Delete {
                        target: Target(target),
                    },
                ))?
                else {
                    anyhow::bail!("unexpected answer from the supervisor");
                };
                for app in apps {
                    println!("deleted {} (id {})", app.name, app.id);
                }
            }
        }
        Verb::Jlist | Verb::Prettylist => {
            let pretty = matches!(verb, Verb::Prettylist);
            let payload = runtime.block_on(client::request_payload(&paths, Command::Status))?;
            if let Some(raw) = nodeguard::cli::status::raw_apps(&payload) {
                print_json_rows(raw, pretty)?;
                return Ok(ExitCode::SUCCESS);
            }
            let Outcome::Status { apps } = client::decode_response(&payload)? else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            if pretty {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                println!("{}", serde_json::to_string(&apps)?);
            }
        }
        Verb::StartOrRestart(args) => start_or(&runtime, &paths, *args, false)?,
        Verb::StartOrReload(args) => start_or(&runtime, &paths, *args, true)?,
        Verb::Ping => {
            let Outcome::Pong { pid, version } =
                runtime.block_on(client::request(&paths, Command::Ping))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            println!(
                "nodeguard {version} supervisor running, pid {pid}, home {}",
                paths.home.display()
            );
        }
        Verb::Kill => {
            let Outcome::Pong { pid, .. } =
                runtime.block_on(client::request(&paths, Command::Ping))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            let Outcome::Done { apps } =
                runtime.block_on(client::request(&paths, Command::Kill))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            if !runtime.block_on(client::wait_until_exited(pid, KILL_WAIT)) {
                anyhow::bail!(
                    "stopped {} app(s), but the supervisor (pid {pid}) is still running",
                    apps.len()
                );
            }
            println!("stopped {} app(s); the supervisor has exited", apps.len());
        }
        Verb::Logs {
            target,
            lines,
            follow,
            err,
            out,
        } => {
            let streams = logs::Streams {
                out: !err || out,
                err: !out || err,
            };
            runtime.block_on(logs::show(&paths, target, lines, follow, streams))?;
        }
        Verb::Monit => nodeguard::cli::monit::run(&paths, &runtime)?,
        Verb::Flush { target } => {
            let target = Target(target.unwrap_or_else(|| "all".into()));
            let Outcome::Done { apps } =
                runtime.block_on(client::request(&paths, Command::Flush { target }))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            for app in apps {
                println!("flushed the logs of {}", app.name);
            }
        }
        Verb::Profile(args) => return profile(&runtime, &paths, &args),
        Verb::Describe {
            target,
            json,
            no_color,
        } => {
            let apps = describe(&runtime, &paths, target)?;
            if json {
                let mut apps = apps;
                for app in &mut apps {
                    nodeguard::cli::env::mask_definition(&mut app.definition);
                }
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                let colour = nodeguard::cli::colour::wanted(no_color);
                for app in &apps {
                    print!("{}", render::description_in_colour(app, colour));
                }
            }
        }
        Verb::Env { target, reveal } => {
            let apps = describe(&runtime, &paths, target)?;
            // Instances share one definition: the first describes them all.
            let Some(app) = apps.first() else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            if app.definition.caller_env.is_none() {
                eprintln!(
                    "nodeguard: note: {} was started before nodeguard recorded its caller's \
                     environment: it runs with the daemon's environment plus these variables",
                    app.status.name
                );
            }
            print!("{}", nodeguard::cli::env::listing(&app.definition, reveal));
        }
        Verb::Save => {
            let Outcome::Done { apps } =
                runtime.block_on(client::request(&paths, Command::Save))?
            else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            let file = nodeguard::io::state_file::state_path(&paths.home);
            println!("saved {} app(s) to {}", apps.len(), file.display());
        }
        Verb::Resurrect => {
            let outcome = runtime.block_on(async {
                if client::ensure_daemon(&paths).await? {
                    println!("nodeguard: daemon started on {}", paths.home.display());
                }
                client::request(&paths, Command::Resurrect).await
            })?;
            print_done(outcome)?;
        }
        Verb::Events { target, json } => {
            let end = runtime.block_on(nodeguard::cli::events::follow(&paths, target, json))?;
            if end == nodeguard::cli::events::End::SupervisorGone {
                eprintln!("nodeguard: the supervisor went away; no more events");
            }
        }
        Verb::Daemon(_) | Verb::Startup(_) => not_a_client_verb()?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `daemon` and `startup` are dispatched before `client_verb`; reaching it here is a programming
/// error that must still not panic.
pub(super) fn not_a_client_verb() -> anyhow::Result<()> {
    anyhow::bail!("internal error: a non-client verb was routed to the client")
}

/// `nodeguard startup systemd [--install]`: prints or writes the user unit.
pub(super) fn startup(args: StartupArgs, home: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let nodeguard::cli::InitSystem::Systemd = args.system;
    let exe = std::env::current_exe().context("cannot find the nodeguard binary's path")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    // A system unit's daemon runs as --user: its home is that user's unless --home says.
    let account = match &args.user {
        Some(user) => Some(
            nodeguard::platform::user_account(user)
                .with_context(|| format!("cannot look up the user {user}"))?
                .ok_or_else(|| ConfigError::Policy(format!("--user {user}: no such user")))?,
        ),
        None => None,
    };
    let home = match (&home, &account) {
        (None, Some(account)) => account.home.join(".nodeguard"),
        _ => home_paths(home)?.home,
    };
    let home = if home.is_absolute() {
        home
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(home)
    };
    let state_file = nodeguard::io::state_file::state_path(&home);
    let saved_apps = match nodeguard::io::state_file::read(&state_file) {
        Ok(Some(saved)) => saved
            .apps
            .into_iter()
            .map(|app| app.definition.name.unwrap_or_else(|| app.id.to_string()))
            .collect(),
        Ok(None) => Vec::new(),
        Err(error) => {
            eprintln!("nodeguard: warning: {error}");
            Vec::new()
        }
    };
    let settings = startup::UnitSettings {
        exe,
        home,
        path_env: std::env::var("PATH").ok().filter(|path| !path.is_empty()),
        http: args.http.map(|address| address.to_string()),
        saved_apps,
        state_file,
        system_user: args.user.clone().filter(|_| args.system_unit),
    };
    let unit = startup::unit(&settings).map_err(|error| ConfigError::Policy(error.to_string()))?;
    if !args.install {
        print!("{unit}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(user) = &settings.system_user {
        let path = startup::system_unit_path(user);
        std::fs::write(&path, unit).with_context(|| {
            let hint = if nodeguard::platform::current_uid() == 0 {
                ""
            } else {
                " (a system unit is installed by root: run it with sudo)"
            };
            format!("cannot write {}{hint}", path.display())
        })?;
        println!("wrote {}", path.display());
        println!("now run (stop a daemon already running on that home first: nodeguard kill):");
        println!(
            "  systemctl daemon-reload && systemctl enable --now {}",
            startup::system_unit_name(user)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let path = startup::user_unit_path()
        .context("cannot tell where user units go: neither XDG_CONFIG_HOME nor HOME is set")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, unit).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    println!("now run (stop a daemon already running on this home first: nodeguard kill):");
    println!(
        "  systemctl --user daemon-reload && systemctl --user enable --now {}",
        startup::UNIT_NAME
    );
    println!("to start it at boot rather than at your first login, also run:");
    println!("  loginctl enable-linger \"$USER\"");
    Ok(ExitCode::SUCCESS)
}

/// A client verb's targets, one request each, in order; one table of every app they touched. The
/// first failure ends the run (the targets before it have acted).
fn print_done_all(
    runtime: &tokio::runtime::Runtime,
    paths: &HomePaths,
    targets: Vec<String>,
    command: impl Fn(Target) -> Command,
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for target in targets {
        let outcome = runtime.block_on(client::request(paths, command(Target(target))))?;
        let Outcome::Done { apps } = outcome else {
            anyhow::bail!("unexpected answer from the supervisor");
        };
        all.extend(apps);
    }
    print!("{}", render::status_table(&all));
    Ok(())
}

/// `start <name>`: the name or id of an app the running daemon knows, when `script` is a single
/// word that is not a file. No daemon, or no such app: `None` (and `start` goes on as usual,
/// without starting a daemon for the question).
async fn known_app(paths: &HomePaths, script: &std::path::Path) -> Option<String> {
    let word = script.to_str()?;
    if word.contains('/') || std::path::Path::new(word).exists() {
        return None;
    }
    let Ok(Outcome::Status { apps }) = client::request(paths, Command::Status).await else {
        return None;
    };
    apps.iter()
        .any(|app| app.name == word || word.parse::<u32>().ok() == Some(app.id))
        .then(|| word.to_string())
}

/// `startOrRestart` / `startOrReload`: the apps of the plan the daemon does not know (by name)
/// start; the others restart (or reload).
fn start_or(
    runtime: &tokio::runtime::Runtime,
    paths: &HomePaths,
    args: nodeguard::cli::StartArgs,
    reload: bool,
) -> anyhow::Result<()> {
    let plan = args.into_plan()?;
    for warning in &plan.warnings {
        eprintln!("nodeguard: warning: {warning}");
    }
    runtime.block_on(async {
        if client::ensure_daemon(paths).await? {
            println!("nodeguard: daemon started on {}", paths.home.display());
        }
        let Outcome::Status { apps: known } = client::request(paths, Command::Status).await? else {
            anyhow::bail!("unexpected answer from the supervisor");
        };
        let (running, new): (Vec<_>, Vec<_>) = plan.apps.into_iter().partition(|app| {
            app.name
                .as_ref()
                .is_some_and(|name| known.iter().any(|k| &k.name == name))
        });
        let mut shown = Vec::new();
        for app in running {
            let target = Target(app.name.unwrap_or_default());
            if reload {
                let Outcome::Reloaded { apps, notes } = client::request(
                    paths,
                    Command::Reload {
                        target,
                        update_env: None,
                    },
                )
                .await?
                else {
                    anyhow::bail!("unexpected answer from the supervisor");
                };
                for note in notes {
                    println!("{note}");
                }
                shown.extend(apps);
            } else {
                let Outcome::Done { apps } = client::request(
                    paths,
                    Command::Restart {
                        target,
                        update_env: None,
                    },
                )
                .await?
                else {
                    anyhow::bail!("unexpected answer from the supervisor");
                };
                shown.extend(apps);
            }
        }
        if !new.is_empty() {
            let Outcome::Done { apps } = client::request(paths, Command::start(new)).await? else {
                anyhow::bail!("unexpected answer from the supervisor");
            };
            shown.extend(apps);
        }
        print!("{}", render::status_table(&shown));
        Ok(())
    })
}

/// `--update-env`: this shell's environment, to send with the command, after printing what it
/// changes for each app the target names (asked of the daemon first). `None` without the flag.
async fn env_update(
    paths: &nodeguard::io::home::HomePaths,
    target: &str,
    update: bool,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    if !update {
        return Ok(None);
    }
    let (caller_env, skipped) = nodeguard::config::env::caller_env();
    for name in skipped {
        eprintln!("nodeguard: warning: {name} from your environment is not passed on: it is not UTF-8 text");
    }
    let Outcome::Described { apps } = client::request(
        paths,
        Command::Describe {
            target: Target(target.to_string()),
        },
    )
    .await?
    else {
        anyhow::bail!("unexpected answer from the supervisor");
    };
    let mut seen = std::collections::HashSet::new();
    for app in &apps {
        if seen.insert(app.status.name.clone()) {
            for line in
                nodeguard::cli::env::update_report(&app.status.name, &app.definition, &caller_env)
            {
                println!("{line}");
            }
        }
    }
    Ok(Some(caller_env))
}

/// `start`: on a terminal, a progress line counted from the event stream while the supervisor
/// starts the apps ("812 of 2,000 running, 3 failed (web-17, …)"), cleared before the result is
/// printed. The start itself is one request, answered once every app runs or failed, however
/// long that takes.
async fn start_apps(
    paths: &HomePaths,
    apps: Vec<nodeguard_proto::control::AppDefinition>,
) -> Result<Outcome, client::ClientError> {
    use std::io::{IsTerminal, Write};
    let total: usize = apps
        .iter()
        .map(|app| usize::try_from(app.instances.max(1)).unwrap_or(1))
        .sum();
    let start = Command::start(apps);
    if !std::io::stderr().is_terminal() {
        return client::request(paths, start).await;
    }
    let existing = match client::request(paths, Command::Status).await? {
        Outcome::Status { apps } => apps.iter().map(|app| app.id).collect(),
        _ => std::collections::HashSet::new(),
    };
    let mut progress = nodeguard::cli::progress::StartProgress::new(total, existing);
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let stream_paths = paths.clone();
    let stream = tokio::spawn(async move {
        client::request_stream(&stream_paths, Command::Events { target: None }, |event| {
            sender.send(event).is_ok()
        })
        .await
    });
    let answer = client::request(paths, start);
    tokio::pin!(answer);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let outcome = loop {
        tokio::select! {
            outcome = &mut answer => break outcome,
            Some(event) = events.recv() => {
                progress.see(&event);
            }
            _ = tick.tick() => {
                if let Some(line) = progress.due(std::time::Instant::now()) {
                    let mut stderr = std::io::stderr().lock();
                    let _ = write!(stderr, "\r\x1b[K{line}");
                    let _ = stderr.flush();
                }
            }
        }
    };
    stream.abort();
    if progress.shown() {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K");
        let _ = stderr.flush();
    }
    outcome
}

pub(super) fn print_done(outcome: Outcome) -> anyhow::Result<()> {
    let Outcome::Done { apps } = outcome else {
        anyhow::bail!("unexpected answer from the supervisor");
    };
    print!("{}", render::status_table(&apps));
    Ok(())
}

/// [`env_update`] for each target (its report printed), and the environment to send once.
fn env_update_for(
    runtime: &tokio::runtime::Runtime,
    paths: &nodeguard::io::home::HomePaths,
    targets: &[String],
    update: bool,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let mut env = None;
    for target in targets {
        env = runtime.block_on(env_update(paths, target, update))?;
    }
    Ok(env)
}

/// `describe <target>`: every app it names, with its definition and recent events.
fn describe(
    runtime: &tokio::runtime::Runtime,
    paths: &HomePaths,
    target: String,
) -> anyhow::Result<Vec<nodeguard_proto::control::AppDescription>> {
    let Outcome::Described { apps } = runtime.block_on(client::request(
        paths,
        Command::Describe {
            target: Target(target),
        },
    ))?
    else {
        anyhow::bail!("unexpected answer from the supervisor");
    };
    Ok(apps)
}

/// `nodeguard profile`: the daemon writes each profile into its home as it streams in; each is
/// then moved to where the caller asked.
fn profile(
    runtime: &tokio::runtime::Runtime,
    paths: &HomePaths,
    args: &nodeguard::cli::profile::ProfileArgs,
) -> anyhow::Result<ExitCode> {
    let command = Command::Profile {
        target: Target(args.target.clone()),
        kind: args.kind(),
        duration_ms: Some(nodeguard::core::duration::millis(args.duration)),
    };
    let Outcome::Profiled { profiles, errors } =
        runtime.block_on(client::request(paths, command))?
    else {
        anyhow::bail!("unexpected answer from the supervisor");
    };
    let cwd = std::env::current_dir()?;
    let mut failed = !errors.is_empty();
    for file in &profiles {
        let to = args.destination(file, profiles.len(), &cwd);
        let label = match file.instance {
            Some(instance) => format!("{}:{instance}", file.name),
            None => file.name.clone(),
        };
        match nodeguard::cli::profile::deliver(std::path::Path::new(&file.path), &to) {
            Ok(()) => {
                let hottest = file
                    .hottest
                    .as_ref()
                    .map(|h| format!("; hottest function: {h}"))
                    .unwrap_or_default();
                println!(
                    "{label} (pid {}): wrote {} ({}){hottest}",
                    file.pid,
                    to.display(),
                    nodeguard::core::units::bytes(file.bytes)
                );
            }
            Err(error) => {
                failed = true;
                eprintln!(
                    "nodeguard: {label}: cannot write {} ({error}); the profile is left at {}",
                    to.display(),
                    file.path
                );
            }
        }
    }
    for error in &errors {
        eprintln!("nodeguard: {error}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a `status` answer's rows (compact JSON as the supervisor sent them) in one write:
/// re-indented as `serde_json::to_string_pretty` would, or as they are.
fn print_json_rows(raw: &[u8], pretty: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut text = if pretty {
        nodeguard::cli::status::pretty(raw)
    } else {
        raw.to_vec()
    };
    text.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&text)?;
    stdout.flush()?;
    Ok(())
}
