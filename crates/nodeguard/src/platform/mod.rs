//! Operating-system specifics, kept behind one module: process groups and signals, the Linux
//! parent-death signal, and peer credentials on Unix sockets. Unix only for now; Windows support
//! (job objects, named pipes) would be a sibling module with the same functions.

pub mod memory;
#[cfg(unix)]
pub mod oom;
#[cfg(unix)]
mod spawn;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use spawn::*;
#[cfg(unix)]
pub use unix::*;

#[cfg(not(unix))]
compile_error!("nodeguard's supervisor currently supports Linux and macOS only");
