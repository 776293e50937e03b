//! The daemon's own command line, read without clap: `start` and the systemd unit launch
//! `nodeguard daemon [--resurrect] [--home DIR] [--http ADDR] [--http-token-file PATH]`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{parse_http_address, DaemonArgs};

/// `Some((args, home))` when the arguments (after the program name) are `daemon` followed only by
/// its own options, each at most once, as `--flag value`. The daemon then never builds clap's
/// command tree: that code (the derive's `augment_args` of every verb, the parser, the validator,
/// some 300 kB of the binary) would otherwise be mapped into every daemon for the rest of its life.
/// Anything else, a `--flag=value` spelling, a bad address, `--http-token-file` without `--http`,
/// `--help` or a typo, is `None` and goes through clap as before, with clap's own messages.
pub fn plain_daemon(
    args: impl IntoIterator<Item = OsString>,
) -> Option<(DaemonArgs, Option<PathBuf>)> {
    let mut args = args.into_iter();
    if args.next()? != "daemon" {
        return None;
    }
    let mut daemon = DaemonArgs {
        resurrect: false,
        http: None,
        http_token_file: None,
    };
    let mut home = None;
    while let Some(flag) = args.next() {
        match flag.to_str()? {
            "--resurrect" if !daemon.resurrect => daemon.resurrect = true,
            "--home" if home.is_none() => home = Some(PathBuf::from(value(args.next())?)),
            "--http" if daemon.http.is_none() => {
                daemon.http = Some(parse_http_address(value(args.next())?.to_str()?).ok()?);
            }
            "--http-token-file" if daemon.http_token_file.is_none() => {
                daemon.http_token_file = Some(PathBuf::from(value(args.next())?));
            }
            _ => return None,
        }
    }
    if daemon.http_token_file.is_some() && daemon.http.is_none() {
        return None;
    }
    Some((daemon, home))
}

/// An option's value as clap would take it: present, not empty, not itself an option.
fn value(next: Option<OsString>) -> Option<OsString> {
    next.filter(|value| !value.is_empty() && !value.to_string_lossy().starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn both(line: &[&str]) -> Option<(DaemonArgs, Option<PathBuf>)> {
        let fast = plain_daemon(line.iter().map(OsString::from));
        if let Some((args, home)) = &fast {
            // Whatever the fast path takes, clap takes the same way.
            let cli = crate::cli::Cli::try_parse_from(
                std::iter::once("nodeguard").chain(line.iter().copied()),
            )
            .expect("clap parses what the fast path took");
            let Some(crate::cli::Verb::Daemon(parsed)) = cli.command else {
                panic!("clap did not see the daemon verb");
            };
            assert_eq!(parsed.resurrect, args.resurrect);
            assert_eq!(parsed.http, args.http);
            assert_eq!(parsed.http_token_file, args.http_token_file);
            assert_eq!(&cli.home, home);
        }
        fast
    }

    #[test]
    fn takes_what_start_and_the_systemd_unit_pass() {
        let (args, home) = both(&["daemon", "--home", "/h"]).expect("fast");
        assert!(!args.resurrect && args.http.is_none());
        assert_eq!(home, Some(PathBuf::from("/h")));
        let (args, _) = both(&[
            "daemon",
            "--resurrect",
            "--home",
            "/h",
            "--http",
            "127.0.0.1:9615",
        ])
        .expect("fast");
        assert!(args.resurrect);
        assert_eq!(args.http, Some("127.0.0.1:9615".parse().expect("address")));
        let (args, home) = both(&["daemon"]).expect("fast");
        assert!(!args.resurrect && home.is_none());
        let (args, _) =
            both(&["daemon", "--http", "[::1]:80", "--http-token-file", "/t"]).expect("fast");
        assert_eq!(args.http_token_file, Some(PathBuf::from("/t")));
    }

    #[test]
    fn leaves_everything_else_to_clap() {
        for line in [
            &["status"][..],
            &["--home", "/h", "daemon"],
            &["daemon", "--home=/h"],
            &["daemon", "--home"],
            &["daemon", "--home", ""],
            &["daemon", "--home", "--resurrect"],
            &["daemon", "--resurrect", "--resurrect"],
            &["daemon", "--home", "/a", "--home", "/b"],
            &["daemon", "--http", "localhost"],
            &["daemon", "--http-token-file", "/t"],
            &["daemon", "--help"],
            &["daemon", "extra"],
        ] {
            assert!(both(line).is_none(), "{line:?}");
        }
    }
}
