//! Node-API linking (napi-build), and the addon's code layout: the functions an idle monitored app
//! runs at each heartbeat (listed in `link/monitor.order`, made by `scripts/order-monitor.js`) are
//! placed together at the start of `.text`. The kernel maps file pages 64 KiB at a time around each
//! fault, so with that code spread over the addon's 400 KiB of code nearly all of it stayed in
//! every app's RSS; packed, it takes two such windows (see `src/trim.rs` for the rest).
//!
//! As for the supervisor (crates/nodeguard/build.rs): only with rustc's own `rust-lld`
//! (x86_64 Linux, Rust 1.90 or later); elsewhere the layout is the linker's default.
//! `NODEGUARD_NO_SYMBOL_ORDER=1` turns it off. The names are those of the shipped addon build
//! (fat LTO, partial RELRO, `scripts/build.js`); a stale list only loses part of the gain.

use std::path::Path;
use std::process::Command;

fn main() {
    napi_build::setup();
    println!("cargo:rerun-if-changed=link/monitor.order");
    println!("cargo:rerun-if-env-changed=NODEGUARD_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=NODEGUARD_MONITOR_LINK_MAP");
    // scripts/order-monitor.js: the linker's map of the addon, to tell which function lies at
    // which address. Asked for here rather than with RUSTFLAGS so the build is the shipped one
    // exactly, with the same symbol names.
    if let Some(map) = std::env::var_os("NODEGUARD_MONITOR_LINK_MAP") {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,-Map={}",
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
    let order = Path::new(&dir).join("link").join("monitor.order");
    if !order.is_file() {
        return;
    }
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Symbols of an older build that no longer exist are skipped, not errors.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-warn-symbol-ordering");
}

/// Whether this rustc links x86_64 Linux binaries with its bundled lld by default (1.90 and
/// later). A linker chosen by hand (`target.<triple>.linker`, `-C linker=`,
/// `-C linker-features=-lld`, `-C link-arg=-fuse-ld=...`) opts out too. (The same test as
/// crates/nodeguard/build.rs.)
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
