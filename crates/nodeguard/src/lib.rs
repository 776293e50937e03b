//! nodeguard: a supervisor for Node.js apps that restarts them when they exit and when their event
//! loop stops answering heartbeats. The binary in `main.rs` is a thin shell over this library.

pub mod cli;
pub mod config;
pub mod core;
pub mod io;
pub mod supervisor;
