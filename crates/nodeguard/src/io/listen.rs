//! Supervisor-owned listening sockets for cluster mode: each listen address of an app is bound
//! once and inherited by every instance, whose monitor maps the app's `listen(port)` onto it. It
//! stays open while any instance runs or will be restarted (so it never closes during a reload or
//! a crash loop), and closes once every instance is stopped or errored.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, PoisonError};

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

/// The listen addresses of one app and, while any instance may use them, their bound sockets.
/// Shared (`Arc`) by its instances. Each instance holds a lease from its spawn until it comes to
/// rest (stopped or errored); when the last lease goes the sockets close, so new connections are
/// refused at once and the port is free for others, and the next lease binds them again.
#[derive(Debug, Default)]
pub struct SharedListeners {
    addresses: Vec<ListenAddress>,
    bound: Mutex<Bound>,
}

#[derive(Debug, Default)]
struct Bound {
    /// `None` while closed.
    sockets: Option<Vec<TcpListener>>,
    leases: usize,
}

impl SharedListeners {
    /// Binds every address, or none. The sockets stay open (with no lease) until
    /// [`SharedListeners::close_if_unused`] or the last lease is returned.
    pub fn bind(addresses: &[ListenAddress]) -> Result<Self, ListenError> {
        let sockets = bind_all(addresses)?;
        Ok(Self {
            addresses: addresses.to_vec(),
            bound: Mutex::new(Bound {
                sockets: Some(sockets),
                leases: 0,
            }),
        })
    }

    /// True when the app has no listen addresses at all.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bound> {
        self.bound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a lease: the sockets stay open until it is returned. Binds them again if they were
    /// closed; that can fail (the port was taken meanwhile).
    pub fn acquire(&self) -> Result<(), ListenError> {
        let mut bound = self.lock();
        if bound.sockets.is_none() && !self.addresses.is_empty() {
            bound.sockets = Some(bind_all(&self.addresses)?);
        }
        bound.leases += 1;
        Ok(())
    }

    /// Returns a lease; the last one closes the sockets.
    pub fn release(&self) {
        let mut bound = self.lock();
        bound.leases = bound.leases.saturating_sub(1);
        if bound.leases == 0 && bound.sockets.take().is_some() {
            tracing::info!(addresses = %self.describe(), "closed the app's listening sockets: no instance will use them");
        }
    }

    /// Closes the sockets if no instance holds a lease (an app added stopped).
    pub fn close_if_unused(&self) {
        let mut bound = self.lock();
        if bound.leases == 0 {
            bound.sockets = None;
        }
    }

    /// Whether the sockets are open now.
    pub fn is_open(&self) -> bool {
        self.lock().sockets.is_some()
    }

    fn describe(&self) -> String {
        self.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The descriptors a child must inherit (none while closed).
    pub fn fds(&self) -> Vec<RawFd> {
        self.lock()
            .sockets
            .iter()
            .flatten()
            .map(AsRawFd::as_raw_fd)
            .collect()
    }

    /// The value of `NODEGUARD_LISTEN`: `port=fd` pairs, comma-separated (empty while closed).
    pub fn env_value(&self) -> String {
        let bound = self.lock();
        let Some(sockets) = &bound.sockets else {
            return String::new();
        };
        self.addresses
            .iter()
            .zip(sockets)
            .map(|(address, listener)| format!("{}={}", address.port, listener.as_raw_fd()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Binds every address, or none.
fn bind_all(addresses: &[ListenAddress]) -> Result<Vec<TcpListener>, ListenError> {
    let mut sockets = Vec::new();
    for address in addresses {
        let listener =
            platform::bind_listener(address.host.as_deref(), address.port).map_err(|source| {
                ListenError {
                    address: address.to_string(),
                    source,
                }
            })?;
        tracing::info!(%address, "listening for the app's instances");
        sockets.push(listener);
    }
    Ok(sockets)
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
    fn the_last_lease_closes_the_sockets_and_the_next_binds_them_again() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let address = ListenAddress {
            host: Some("127.0.0.1".into()),
            port,
        };
        let shared = SharedListeners::bind(std::slice::from_ref(&address)).unwrap();
        shared.acquire().unwrap();
        shared.acquire().unwrap();
        shared.release();
        assert!(shared.is_open(), "one lease is still held");
        shared.release();
        assert!(!shared.is_open());
        assert!(shared.fds().is_empty());
        // The port is free for anyone now.
        drop(TcpListener::bind(("127.0.0.1", port)).unwrap());
        shared.acquire().unwrap();
        assert_eq!(shared.fds().len(), 1);
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
