//! Lays out the binary's code so the supervisor touches few pages of it: the functions a running
//! supervisor executes (listed in `link/supervisor.order`, made by `scripts/order-symbols.js`)
//! are placed together at the start of `.text`, and the CLI, the TUI, config parsing and the rest
//! after them. The kernel maps a binary's file pages around each page fault (fault-around, 64 KiB),
//! so code spread over the whole file made nearly all of it resident in every supervisor; packed,
//! the pages of code it never runs stay out of its RSS.
//!
//! How, and with which linkers, is in build-support/symbol_order.rs (shared with the monitor's
//! build script). The names are those of the shipped build (fat LTO) with the toolchain and
//! Cargo.lock of the day the list was made: a fast build's, or a stale list's, are partly missing,
//! and the linker skips them. The link map is always asked for when ordering (in `OUT_DIR`, or
//! where `NODEGUARD_LINK_MAP` says): scripts/build.js counts the list's names the linker found.

#[path = "../../build-support/symbol_order.rs"]
mod symbol_order;

fn main() {
    symbol_order::SymbolOrder {
        link_arg: "cargo:rustc-link-arg-bin=nodeguard=",
        order_file: "link/supervisor.order",
        map_variable: "NODEGUARD_LINK_MAP",
        default_map: Some("nodeguard.map"),
    }
    .setup();
}
