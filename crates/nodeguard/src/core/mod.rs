//! The pure core: the per-app state machine, restart policy, exit kinds and units. No I/O, no
//! sockets, no files, no clocks of its own; everything here is driven by the layers above.

pub mod date_format;
pub mod duration;
pub mod exit;
pub mod heartbeat;
pub mod machine;
pub mod policy;
pub mod report;
pub mod units;
