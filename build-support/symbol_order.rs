//! The code-layout half of both build scripts (crates/nodeguard/build.rs for the supervisor,
//! crates/monitor/build.rs for the addon), included by each with `#[path]`: the linker is asked to
//! place the functions of a list (`link/<name>.order`, made by `scripts/order-symbols.js` and
//! `scripts/order-monitor.js`) together at the start of `.text`, and, for those scripts, to write
//! its map of the link.
//!
//! A file both include rather than a crate both depend on: a `[build-dependencies]` path crate
//! would be one more workspace member compiled for the host (and one more package in Cargo.lock)
//! for 80 lines with no dependencies. The crates ship through npm, prebuilt, never `cargo
//! package`d (which would not take a file outside the package).
//!
//! Only with rustc's own `rust-lld`, which understands `--symbol-ordering-file` (the default on
//! x86_64-unknown-linux-gnu since Rust 1.90); elsewhere the layout is the linker's default (the
//! order is a layout choice, never a behaviour). `NODEGUARD_NO_SYMBOL_ORDER=1` turns it off.

use std::path::Path;
use std::process::Command;

/// What differs between the two build scripts.
pub struct SymbolOrder<'a> {
    /// The `cargo:` directive that passes one argument to the linker for this package's artifact,
    /// up to and including its `=` (`cargo:rustc-link-arg-bin=nodeguard=`).
    pub link_arg: &'a str,
    /// The list of functions, relative to the package (`link/supervisor.order`).
    pub order_file: &'a str,
    /// The variable that names where the linker writes its map (`NODEGUARD_LINK_MAP`).
    pub map_variable: &'a str,
    /// When ordering and no map was asked for: a map written anyway under this name in `OUT_DIR`,
    /// where scripts/build.js counts the names of the list the linker found.
    pub default_map: Option<&'a str>,
}

impl SymbolOrder<'_> {
    /// Prints the `cargo:` lines: the files and variables that rerun the build script, then the
    /// linker arguments.
    pub fn setup(&self) {
        println!("cargo:rerun-if-changed={}", self.order_file);
        println!("cargo:rerun-if-env-changed=NODEGUARD_NO_SYMBOL_ORDER");
        println!("cargo:rerun-if-env-changed={}", self.map_variable);
        // The order scripts' map, to tell which function lies at which address. Asked for here
        // rather than with RUSTFLAGS or `cargo rustc` so the build is the shipped one exactly,
        // with the same symbol names.
        let map = std::env::var_os(self.map_variable);
        if let Some(map) = &map {
            println!("{}-Wl,-Map={}", self.link_arg, Path::new(map).display());
        }
        if std::env::var_os("NODEGUARD_NO_SYMBOL_ORDER").is_some_and(|value| value != "0") {
            return;
        }
        let target = std::env::var("TARGET").unwrap_or_default();
        if target != "x86_64-unknown-linux-gnu" || !rustc_links_with_lld() {
            return;
        }
        let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
            return;
        };
        let order = Path::new(&dir).join(self.order_file);
        if !order.is_file() {
            return;
        }
        println!(
            "{}-Wl,--symbol-ordering-file={}",
            self.link_arg,
            order.display()
        );
        // Symbols of an older build that no longer exist are skipped, not errors (each would be
        // one warning line): scripts/build.js counts the names the linker found instead, in the
        // map of the link it made, and says loudly when many are missing.
        println!("{}-Wl,--no-warn-symbol-ordering", self.link_arg);
        if let (None, Some(name), Some(dir)) = (&map, self.default_map, std::env::var_os("OUT_DIR"))
        {
            println!(
                "{}-Wl,-Map={}",
                self.link_arg,
                Path::new(&dir).join(name).display()
            );
        }
    }
}

/// Whether this rustc links x86_64 Linux binaries with its bundled lld by default (1.90 and
/// later). A linker chosen by hand (`target.<triple>.linker`, `-C linker=`,
/// `-C linker-features=-lld`, `-C link-arg=-fuse-ld=...`) opts out too.
fn rustc_links_with_lld() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker")
        || flags.contains("fuse-ld")
        || std::env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let mut numbers = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    major > 1 || (major == 1 && minor >= 90)
}
