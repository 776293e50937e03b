//! Supervisor-owned listening sockets for cluster mode: each listen address of an app is bound
//! once, kept for the app's life (so the port never closes, not even during a reload), and
//! inherited by every instance, whose monitor maps the app's `listen(port)` onto it.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

use crate::config::ListenAddress;
use crate::platform;

/// Why an app's listen addresses could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ListenError {
    pub address: String,
    #[source]
    pub source: io::Error,
}

/// The bound sockets of one app. Shared (`Arc`) by its instances; closed when the last goes.
#[derive(Debug, Default)]
pub struct SharedListeners {
    sockets: Vec<(ListenAddress, TcpListener)>,
}

impl SharedListeners {
    /// Binds every address, or none.
    pub fn bind(addresses: &[ListenAddress]) -> Result<Self, ListenError> {
        let mut sockets = Vec::new();
        for address in addresses {
            let listener = platform::bind_listener(address.host.as_deref(), address.port).map_err(
                |source| ListenError {
                    address: address.to_string(),
                    source,
                },
            )?;
            tracing::info!(%address, "listening for the app's instances");
            sockets.push((address.clone(), listener));
        }
        Ok(Self { sockets })
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The descriptors a child must inherit.
    pub fn fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(|(_, l)| l.as_raw_fd()).collect()
    }

    /// The value of `NODEGUARD_LISTEN`: `port=fd` pairs, comma-separated.
    pub fn env_value(&self) -> String {
        self.sockets
            .iter()
            .map(|(address, listener)| format!("{}={}", address.port, listener.as_raw_fd()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_address_and_announces_port_fd_pairs() {
        let address = ListenAddress {
            host: Some("127.0.0.1".into()),
            port: 0,
        };
        let shared = SharedListeners::bind(std::slice::from_ref(&address)).unwrap();
        let fds = shared.fds();
        assert_eq!(fds.len(), 1);
        assert_eq!(shared.env_value(), format!("0={}", fds[0]));
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let address = ListenAddress {
            host: Some("127.0.0.1".into()),
            port,
        };
        let error = SharedListeners::bind(&[address]).unwrap_err();
        assert!(error
            .to_string()
            .starts_with(&format!("cannot listen on 127.0.0.1:{port}")));
    }
}
