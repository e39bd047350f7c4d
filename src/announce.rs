//! Which media address to announce in ICE candidates when the sockets bind a wildcard.
//!
//! A socket bound to `0.0.0.0` or `::` has no address a client could reach, so something else
//! must be announced. An operator behind a 1:1 NAT sets `rtc_public_ip`; otherwise Confab
//! announces the address of the interface that holds the route to the outside world (the
//! default route), which is what a container or a host with one public interface wants. The
//! route is looked up by connecting an unbound UDP socket: the kernel picks the source address
//! and sends nothing.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// A destination on the far side of the default route, used only to ask the kernel for a source
/// address. Documentation addresses (RFC 5737, RFC 3849): no packet is ever sent to them.
const IPV4_PROBE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);
const IPV6_PROBE: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    9,
);

/// Why no address could be chosen for a wildcard bind.
#[derive(Debug, thiserror::Error)]
#[error(
    "rtc_bind_ip {bind} is a wildcard and no interface address was found to announce ({source}); \
     set rtc_public_ip (CONFAB_RTC_PUBLIC_IP) to the address clients reach"
)]
pub struct AnnounceError {
    bind: IpAddr,
    source: io::Error,
}

/// The IP the media workers announce: `public_ip` when set, else a specific `bind_ip` itself,
/// else (wildcard bind) the default route's source address of the same family.
pub fn announce_ip(bind_ip: IpAddr, public_ip: Option<IpAddr>) -> Result<IpAddr, AnnounceError> {
    if let Some(ip) = public_ip {
        return Ok(ip);
    }
    if !bind_ip.is_unspecified() {
        return Ok(bind_ip);
    }
    let probe = if bind_ip.is_ipv4() {
        IPV4_PROBE
    } else {
        IPV6_PROBE
    };
    route_source(bind_ip, probe).map_err(|source| AnnounceError {
        bind: bind_ip,
        source,
    })
}

/// The local address the kernel would send from, from a socket bound to `bind_ip`, towards
/// `destination`. Connecting a UDP socket only consults the routing table.
pub fn route_source(bind_ip: IpAddr, destination: SocketAddr) -> io::Result<IpAddr> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
    socket.connect(destination)?;
    let ip = socket.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the route has no source address",
        ));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const WILDCARD: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    #[test]
    fn a_public_ip_wins_over_any_bind() {
        let public = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(announce_ip(WILDCARD, Some(public)).unwrap(), public);
        assert_eq!(announce_ip(LOOPBACK, Some(public)).unwrap(), public);
    }

    #[test]
    fn a_specific_bind_is_announced_as_is() {
        assert_eq!(announce_ip(LOOPBACK, None).unwrap(), LOOPBACK);
    }

    #[test]
    fn a_wildcard_socket_gets_the_source_address_of_the_route() {
        // Towards a loopback destination the kernel picks the loopback address: the same lookup
        // a wildcard bind does towards the default route, kept on loopback.
        let destination = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9);
        assert_eq!(route_source(WILDCARD, destination).unwrap(), LOOPBACK);
    }
}
