//! Cluster mode without `--listen`: a monitor's `Share` request (the app called
//! `server.listen(port, host)`) answered with the app's shared listening socket, and the note an
//! app with `--listen` gets when it listens elsewhere.

use std::os::fd::AsFd;

use nodeguard_proto::worker::SupervisorMessage;
use nodeguard_proto::{encode_frame, MAX_WORKER_FRAME};

use crate::core::machine::Event;
use crate::platform;

use super::*;

impl WorkerTask {
    /// Answers a `Share` request: the socket for `host:port` (bound once for the whole app) goes
    /// with the answer, or the error the app's listen fails with (logged in one line).
    pub(super) fn on_share(&mut self, id: u64, host: Option<String>, port: u32) -> Option<Event> {
        let shared = self
            .listeners
            .share(self.spec.instance, host.as_deref(), port);
        let (message, fd) = match shared {
            Ok(fd) => (SupervisorMessage::Shared { id, error: None }, Some(fd)),
            Err(error) => {
                tracing::warn!(code = %error.code, "cannot share a listening socket with the app: {}", error.message);
                (
                    SupervisorMessage::Shared {
                        id,
                        error: Some(error),
                    },
                    None,
                )
            }
        };
        let connection = self.connection.as_mut()?;
        let frame = match encode_frame(&message, MAX_WORKER_FRAME) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%error, "cannot encode a message to the monitor");
                return None;
            }
        };
        let written = match &fd {
            Some(fd) => {
                let stream = connection.writer.as_ref();
                stream.try_io(tokio::io::Interest::WRITABLE, || {
                    platform::send_with_fd(stream.as_fd(), &frame, fd.as_fd())
                })
            }
            None => connection.writer.try_write(&frame),
        };
        // Our copy of the descriptor closes here; the app's and the supervisor's stay open.
        drop(fd);
        match written {
            Ok(written) if written == frame.len() => None,
            Ok(_) | Err(_) => {
                tracing::warn!("cannot write to the monitor; dropping the connection");
                self.connection = None;
                Some(Event::MonitorLost)
            }
        }
    }

    /// An app with `--listen` listened on a TCP port the supervisor does not own: says so in
    /// the supervisor's log, `describe` and the app's own log ("web:0 listened on 3721, not 3720").
    pub(super) fn on_listened_elsewhere(&mut self, port: u32) {
        let owned: Vec<String> = self
            .spec
            .listen
            .iter()
            .map(|address| address.port.to_string())
            .collect();
        if owned.is_empty() {
            return;
        }
        let text = format!(
            "{} listened on {port}, not {}: it bound that port itself, so connections to the \
             shared socket do not reach that server",
            self.spec.display_name(),
            owned.join(" or ")
        );
        // Once per process and port, whatever the monitor sends.
        let entry = match self.machine.pid() {
            Some(pid) => format!("pid {pid}: {text}"),
            None => text.clone(),
        };
        if self
            .events
            .iter()
            .any(|event| event.kind == "listened_elsewhere" && event.message == entry)
        {
            return;
        }
        tracing::warn!("{text}");
        self.announce(Happening::Report {
            kind: "listened_elsewhere".to_string(),
            message: text.clone(),
            detail: Detail::default(),
        });
        self.remember(AppEvent {
            at: crate::io::logfile::timestamp(std::time::SystemTime::now()),
            kind: "listened_elsewhere".to_string(),
            message: entry,
        });
        if let Some(origin) = self.origin.clone() {
            let output = self.ctx.output.clone();
            tokio::spawn(async move { output.note(&origin, format!("[nodeguard] {text}")).await });
        }
    }
}
