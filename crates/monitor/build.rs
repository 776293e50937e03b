//! Node-API linking (napi-build), and the addon's code layout: the functions an idle monitored app
//! runs at each heartbeat (listed in `link/monitor.order`, made by `scripts/order-monitor.js`) are
//! placed together at the start of `.text`. The kernel maps file pages 64 KiB at a time around each
//! fault, so with that code spread over the addon's 400 KiB of code nearly all of it stayed in
//! every app's RSS; packed, it takes two such windows (see `src/trim.rs` for the rest).
//!
//! The layout is set up as for the supervisor, by build-support/symbol_order.rs (which linkers;
//! `NODEGUARD_NO_SYMBOL_ORDER=1` turns it off). The names are those of the shipped addon build
//! (fat LTO, partial RELRO, `scripts/build.js`); a stale list only loses part of the gain.

#[path = "../../build-support/symbol_order.rs"]
mod symbol_order;

fn main() {
    napi_build::setup();
    symbol_order::SymbolOrder {
        link_arg: "cargo:rustc-cdylib-link-arg=",
        order_file: "link/monitor.order",
        map_variable: "NODEGUARD_MONITOR_LINK_MAP",
        default_map: None,
    }
    .setup();
}
