//! nodeguard: a supervisor for Node.js apps that restarts them when they exit and when their event
//! loop stops answering heartbeats. The binary in `main.rs` is a thin shell over this library.

pub mod admission;
pub mod cli;
pub mod client;
pub mod config;
pub mod config_file;
pub mod control;
pub mod duration;
pub mod exit;
pub mod forensics;
pub mod framed;
pub mod health;
pub mod home;
pub mod http;
pub mod listen;
pub mod logfile;
pub mod logread;
pub mod logs;
pub mod machine;
pub mod metrics;
pub mod output;
pub mod platform;
pub mod proctree;
pub mod render;
pub mod spawner;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod worker;
pub mod workers;
