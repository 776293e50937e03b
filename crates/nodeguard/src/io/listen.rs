//! Supervisor-owned listening sockets for cluster mode: each listen address of an app is bound
//! once and inherited by every instance, whose monitor maps the app's `listen(port)` onto it. It
//! stays open while any instance runs or will be restarted (so it never closes during a reload or
//! a crash loop), and closes once every instance is stopped or errored.
//!
//! Without `--listen`, an app with several instances shares on request: the first instance's
//! `server.listen(port, host)` makes the supervisor bind exactly that address, and every instance
//! that asks for it (now or after a restart, reload or scale) is handed the same socket over its
//! monitor connection ([`SharedListeners::share`]). Same lifetime rule: open while any lease is.

use std::io;
use std::net::{IpAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use nodeguard_proto::worker::ShareError;

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
    /// Binds the addresses the instances ask for (several instances, no `--listen`).
    on_request: bool,
    bound: Mutex<Bound>,
}

#[derive(Debug, Default)]
struct Bound {
    /// `None` while closed.
    sockets: Option<Vec<TcpListener>>,
    /// Sockets bound at the instances' request, while a lease is held.
    shared: Vec<(Option<IpAddr>, u16, TcpListener)>,
    /// The ports each instance number had shared (kept while the sockets are closed): its next
    /// process is ready once it listens on all of them. Per instance, as with PM2's
    /// `increment_var: 'PORT'` each instance listens on a port of its own.
    ports: Vec<(u32, u16)>,
    leases: usize,
}

impl SharedListeners {
    /// Binds every address, or none. The sockets stay open (with no lease) until
    /// [`SharedListeners::close_if_unused`] or the last lease is returned.
    pub fn bind(addresses: &[ListenAddress]) -> Result<Self, ListenError> {
        let sockets = bind_all(addresses)?;
        Ok(Self {
            addresses: addresses.to_vec(),
            on_request: false,
            bound: Mutex::new(Bound {
                sockets: Some(sockets),
                ..Bound::default()
            }),
        })
    }

    /// For an app whose instances ask for their addresses as they listen: nothing is bound yet.
    pub fn on_request() -> Self {
        Self {
            on_request: true,
            ..Self::default()
        }
    }

    /// True when the app has no listen addresses at all and shares nothing on request.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && !self.on_request
    }

    /// Whether the instances ask for their addresses (see [`SharedListeners::share`]).
    pub fn shares_on_request(&self) -> bool {
        self.on_request
    }

    /// The ports instance number `instance` had shared so far, for `NODEGUARD_SHARE`.
    pub fn shared_ports(&self, instance: u32) -> Vec<u16> {
        self.lock()
            .ports
            .iter()
            .filter(|(i, _)| *i == instance)
            .map(|(_, port)| *port)
            .collect()
    }

    /// The listening socket for `host:port`, bound on the first request and handed (as a new
    /// descriptor) to every instance that asks. `host` must be an IP address (the monitor
    /// resolves names as Node would); `None` is Node's default, `::` dual-stack (else
    /// `0.0.0.0`). Nothing but the asked address is ever bound. Errors are what the app's
    /// `listen` then fails with.
    pub fn share(
        &self,
        instance: u32,
        host: Option<&str>,
        port: u32,
    ) -> Result<OwnedFd, ShareError> {
        if !self.on_request {
            return Err(share_error(
                "EACCES",
                0,
                "this app's instances do not share sockets on request (it has --listen, or one instance)".into(),
            ));
        }
        let port = match u16::try_from(port) {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(share_error(
                    "EINVAL",
                    0,
                    format!("port {port} cannot be shared: expected 1 to 65535"),
                ))
            }
        };
        let ip = match host {
            None => None,
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return Err(share_error(
                        "EADDRNOTAVAIL",
                        0,
                        format!("host {:?} is not an IP address", truncated(text)),
                    ))
                }
            },
        };
        let shown = match ip {
            Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            Some(IpAddr::V4(v4)) => format!("{v4}:{port}"),
            None => format!("*:{port}"),
        };
        let mut bound = self.lock();
        if bound.leases == 0 {
            return Err(share_error(
                "EAGAIN",
                0,
                format!("cannot share {shown}: no instance of the app is running"),
            ));
        }
        let existing = bound
            .shared
            .iter()
            .find(|(h, p, _)| *h == ip && *p == port)
            .map(|(_, _, listener)| listener.try_clone());
        let listener = match existing {
            Some(clone) => clone,
            None => {
                let host_text = ip.map(|ip| ip.to_string());
                let listener =
                    platform::bind_listener(host_text.as_deref(), port).map_err(|error| {
                        let errno = error.raw_os_error().unwrap_or(0);
                        let code = platform::errno_name(errno).unwrap_or("EUNKNOWN");
                        share_error(code, errno, format!("cannot listen on {shown}: {error}"))
                    })?;
                tracing::info!(address = %shown, "sharing the address the app listens on among its instances");
                let clone = listener.try_clone();
                bound.shared.push((ip, port, listener));
                clone
            }
        };
        if !bound.ports.contains(&(instance, port)) {
            bound.ports.push((instance, port));
        }
        listener.map(OwnedFd::from).map_err(|error| {
            let errno = error.raw_os_error().unwrap_or(0);
            let code = platform::errno_name(errno).unwrap_or("EUNKNOWN");
            share_error(code, errno, format!("cannot hand over {shown}: {error}"))
        })
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
        if bound.leases == 0 && !bound.shared.is_empty() {
            bound.shared.clear();
            tracing::info!("closed the app's shared sockets: no instance will use them");
        }
    }

    /// Closes the sockets if no instance holds a lease (an app added stopped).
    pub fn close_if_unused(&self) {
        let mut bound = self.lock();
        if bound.leases == 0 {
            bound.sockets = None;
            bound.shared.clear();
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

fn share_error(code: &str, errno: i32, message: String) -> ShareError {
    ShareError {
        code: code.to_string(),
        errno,
        message,
    }
}

/// At most 64 characters of a string from a socket, for a message.
fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
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

    fn free_port() -> u16 {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    }

    #[test]
    fn shares_one_socket_on_the_asked_host_and_closes_it_with_the_last_lease() {
        let shared = SharedListeners::on_request();
        assert!(!shared.is_empty() && shared.shares_on_request());
        let port = free_port();
        shared.acquire().unwrap();
        let first = shared.share(0, Some("127.0.0.1"), u32::from(port)).unwrap();
        let second = shared.share(1, Some("127.0.0.1"), u32::from(port)).unwrap();
        let a = TcpListener::from(first);
        let b = TcpListener::from(second);
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(a.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(shared.shared_ports(1), vec![port]);
        assert!(shared.shared_ports(2).is_empty());
        drop((a, b));
        shared.release();
        // Closed with the last lease: the port is free, and the ports are remembered.
        drop(TcpListener::bind(("127.0.0.1", port)).unwrap());
        assert_eq!(shared.shared_ports(0), vec![port]);
    }

    #[test]
    fn bad_requests_are_errors_with_nodes_codes() {
        let shared = SharedListeners::on_request();
        shared.acquire().unwrap();
        let code = |host: Option<&str>, port: u32| shared.share(0, host, port).unwrap_err().code;
        assert_eq!(code(None, 0), "EINVAL");
        assert_eq!(code(None, 70_000), "EINVAL");
        assert_eq!(code(Some("localhost"), 3000), "EADDRNOTAVAIL");
        assert_eq!(code(Some(&"x".repeat(10_000)), 3000), "EADDRNOTAVAIL");
        // An address this host does not have.
        assert_eq!(code(Some("192.0.2.1"), 3000), "EADDRNOTAVAIL");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = shared
            .share(0, Some("127.0.0.1"), u32::from(port))
            .unwrap_err();
        assert_eq!(error.code, "EADDRINUSE");
        assert!(
            error.message.contains(&format!("127.0.0.1:{port}")),
            "{}",
            error.message
        );
        // An app with --listen addresses never binds on request.
        let fixed = SharedListeners::bind(&[]).unwrap();
        assert_eq!(fixed.share(0, None, 3000).unwrap_err().code, "EACCES");
    }
}
