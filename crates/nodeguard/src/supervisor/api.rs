//! The supervisor actor's inbox: what the control socket, the health probe and systemd notify send
//! it. The `io` layer may use this module (and nothing else of `supervisor`).

use nodeguard_proto::control::{Command, Outcome};
use tokio::sync::oneshot;

/// A control command on its way to the supervisor actor, with the channel for its answer.
pub struct ControlRequest {
    pub command: Command,
    pub reply: oneshot::Sender<Outcome>,
}
