//! The edges: sockets (control, worker, HTTP), files (home, state file, logs), systemd notify,
//! process trees and the platform's system calls. Depends on `core` and `config`, and on the
//! actor's inbox types in `supervisor::api`, never on the actors themselves.

pub mod admission;
pub mod control_client;
pub mod control_server;
pub mod dashboard;
pub mod forensics;
pub mod framed;
pub mod health;
pub mod home;
pub mod hooks;
pub mod http;
pub mod listen;
pub mod logfile;
pub mod logread;
pub mod metrics;
pub mod monitor_socket;
pub mod output;
pub mod pidfile;
pub mod proctree;
pub mod profiles;
pub mod sourcemap;
pub mod state_file;
pub mod systemd;
pub mod user_sockets;
pub mod watch;
