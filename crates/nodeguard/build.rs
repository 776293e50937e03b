//! Lays out the binary's code so the supervisor touches few pages of it: the functions a running
//! supervisor executes (listed in `link/supervisor.order`, made by `scripts/order-symbols.js`)
//! are placed together at the start of `.text`, and the CLI, the TUI, config parsing and the rest
//! after them. The kernel maps a binary's file pages around each page fault (fault-around, 64 KiB),
//! so code spread over the whole file made nearly all of it resident in every supervisor; packed,
//! the pages of code it never runs stay out of its RSS.
//!
//! Only with a linker that understands `--symbol-ordering-file`: rustc's own `rust-lld`, the
//! default on x86_64-unknown-linux-gnu since Rust 1.90. Elsewhere the build is unchanged (the
//! order is a layout choice, never a behaviour). `NODEGUARD_NO_SYMBOL_ORDER=1` turns it off. The
//! names are those of the shipped build (fat LTO) with the toolchain and Cargo.lock of the day the
//! list was made: a fast build's, or a stale list's, are partly missing, and the linker skips them.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/supervisor.order");
    println!("cargo:rerun-if-env-changed=NODEGUARD_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=NODEGUARD_LINK_MAP");
    // scripts/order-symbols.js: the linker's map of the binary, to tell which function lies at
    // which address. Asked for here rather than with RUSTFLAGS or `cargo rustc` so the build is the
    // shipped one exactly, with the same symbol names.
    if let Some(map) = std::env::var_os("NODEGUARD_LINK_MAP") {
        println!(
            "cargo:rustc-link-arg-bin=nodeguard=-Wl,-Map={}",
            Path::new(&map).display()
        );
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
    let order = Path::new(&dir).join("link").join("supervisor.order");
    if !order.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=nodeguard=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Symbols of an older build that no longer exist are skipped, not errors (each would be one
    // warning line): scripts/build.js counts the names the linker found instead, in this map of
    // the link it made, and says loudly when many are missing.
    println!("cargo:rustc-link-arg-bin=nodeguard=-Wl,--no-warn-symbol-ordering");
    if std::env::var_os("NODEGUARD_LINK_MAP").is_none() {
        if let Some(dir) = std::env::var_os("OUT_DIR") {
            println!(
                "cargo:rustc-link-arg-bin=nodeguard=-Wl,-Map={}",
                Path::new(&dir).join("nodeguard.map").display()
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
