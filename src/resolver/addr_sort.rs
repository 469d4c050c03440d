//! Destination address selection (RFC 6724 section 6), as gRPC's DNS
//! resolvers order what they found: C-core's c-ares resolver runs its
//! `address_sorting` library, gRPC-Go's resolver gets the order Go's own
//! DNS client gives (`net.sortByRFC6724`). pick_first connects in that
//! order, so `::1` comes before `127.0.0.1` (precedence 50 against 35) and
//! an address this host has no route to comes last.
//!
//! The rules a client can apply without knowing its interfaces' flags:
//! 1 (a destination with no source address goes last), 2 (matching scope),
//! 5 (matching label), 6 (higher precedence), 8 (smaller scope), 9 (longest
//! matching prefix, IPv6 only, as Go and C-core restrict it), 10 (the order
//! the server gave). The source of each destination is what the kernel
//! picks for a UDP socket connected to it (no packet is sent).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};

/// Sorts `ips` in place (stable) by RFC 6724's destination rules.
pub(crate) fn sort(ips: &mut [IpAddr]) {
    if ips.len() < 2 {
        return;
    }
    let sources: Vec<Option<IpAddr>> = ips.iter().map(|ip| source_for(*ip)).collect();
    sort_with_sources(ips, &sources);
}

/// The sort with each destination's source address given (`None`: no
/// route).
pub(crate) fn sort_with_sources(ips: &mut [IpAddr], sources: &[Option<IpAddr>]) {
    assert_eq!(ips.len(), sources.len());
    let mut keyed: Vec<(IpAddr, Option<IpAddr>)> =
        ips.iter().copied().zip(sources.iter().copied()).collect();
    // `sort_by` is stable: equal destinations keep the server's order.
    keyed.sort_by(|a, b| compare(*a, *b));
    for (slot, (ip, _)) in ips.iter_mut().zip(keyed) {
        *slot = ip;
    }
}

/// The source address the kernel would use to reach `dst`.
fn source_for(dst: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match dst {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).ok()?;
    // Port 9 (discard), as Go asks; connecting a UDP socket sends nothing.
    socket.connect(SocketAddr::new(dst, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[derive(Clone, Copy)]
struct Attr {
    scope: u8,
    precedence: u8,
    label: u8,
}

/// Everything as IPv6 (an IPv4 address as `::ffff:a.b.c.d`), as the
/// policy table is written.
fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// RFC 6724's default policy table (section 2.1): (prefix, length,
/// precedence, label), longest prefix first.
const POLICY: [(Ipv6Addr, u32, u8, u8); 9] = [
    (Ipv6Addr::LOCALHOST, 128, 50, 0),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96, 35, 4),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, 1, 3),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, 5, 5),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, 30, 2),
    (Ipv6Addr::new(0x3ffe, 0, 0, 0, 0, 0, 0, 0), 16, 1, 12),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, 1, 11),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, 3, 13),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 0, 40, 1),
];

fn attr(ip: IpAddr) -> Attr {
    let bits = u128::from(v6(ip));
    let (precedence, label) = POLICY
        .iter()
        .find(|(prefix, len, _, _)| *len == 0 || (bits ^ u128::from(*prefix)) >> (128 - len) == 0)
        .map_or((0, 0), |&(_, _, p, l)| (p, l));
    Attr {
        scope: scope(ip),
        precedence,
        label,
    }
}

const SCOPE_LINK_LOCAL: u8 = 0x2;
const SCOPE_SITE_LOCAL: u8 = 0x5;
const SCOPE_GLOBAL: u8 = 0xe;

/// RFC 6724 section 3.1 (IPv4 loopback and link-local are link-local).
fn scope(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_link_local() => SCOPE_LINK_LOCAL,
        IpAddr::V4(_) => SCOPE_GLOBAL,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() || s[0] & 0xffc0 == 0xfe80 {
                SCOPE_LINK_LOCAL
            } else if v6.is_multicast() {
                (s[0] & 0xf) as u8
            } else if s[0] & 0xffc0 == 0xfec0 {
                SCOPE_SITE_LOCAL
            } else {
                SCOPE_GLOBAL
            }
        }
    }
}

/// Leading bits `a` and `b` share, over the first 64 (rule 9 as Go and
/// C-core apply it: the prefix, not the interface id).
fn common_prefix(a: Ipv6Addr, b: Ipv6Addr) -> u32 {
    let x = (u128::from(a) ^ u128::from(b)) >> 64;
    (x as u64).leading_zeros()
}

/// `Less` means `a` goes first.
fn compare(
    (da, sa): (IpAddr, Option<IpAddr>),
    (db, sb): (IpAddr, Option<IpAddr>),
) -> std::cmp::Ordering {
    use std::cmp::Ordering::{Equal, Greater, Less};
    // Rule 1: avoid unusable destinations.
    let (sa, sb) = match (sa, sb) {
        (None, None) => return Equal,
        (Some(_), None) => return Less,
        (None, Some(_)) => return Greater,
        (Some(sa), Some(sb)) => (sa, sb),
    };
    let (ada, adb, asa, asb) = (attr(da), attr(db), attr(sa), attr(sb));
    // `true` first.
    let prefer = |a: bool, b: bool| b.cmp(&a);
    // Rule 9's candidates: IPv6 destinations only; an IPv4-mapped one
    // counts as IPv4, as Go's `To4() == nil` test has it.
    let native = |ip: IpAddr| match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Some(v6),
        _ => None,
    };
    // Rule 2: prefer matching scope.
    prefer(ada.scope == asa.scope, adb.scope == asb.scope)
        // Rule 5: prefer matching label.
        .then(prefer(ada.label == asa.label, adb.label == asb.label))
        // Rule 6: prefer higher precedence.
        .then(adb.precedence.cmp(&ada.precedence))
        // Rule 8: prefer smaller scope.
        .then(ada.scope.cmp(&adb.scope))
        // Rule 9: longest matching prefix.
        .then_with(|| match (native(da), native(db)) {
            (Some(da6), Some(db6)) => common_prefix(v6(sb), db6).cmp(&common_prefix(v6(sa), da6)),
            _ => Equal,
        })
    // Rule 10: as given (a stable sort keeps what is still equal).
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sorted(pairs: &[(&str, Option<&str>)]) -> Vec<String> {
        let mut ips: Vec<IpAddr> = pairs.iter().map(|(d, _)| ip(d)).collect();
        let sources: Vec<Option<IpAddr>> = pairs.iter().map(|(_, s)| s.map(ip)).collect();
        sort_with_sources(&mut ips, &sources);
        ips.iter().map(ToString::to_string).collect()
    }

    /// Go's TestSortByRFC6724 cases (net/addrselect_test.go) and the
    /// loopback pair a test DNS server gives.
    #[test]
    fn rfc6724_destination_order() {
        // Loopback: ::1 (precedence 50) before 127.0.0.1 (35).
        assert_eq!(
            sorted(&[("127.0.0.1", Some("127.0.0.1")), ("::1", Some("::1"))]),
            ["::1", "127.0.0.1"]
        );
        // No route to the IPv6 one: it goes last (rule 1).
        assert_eq!(
            sorted(&[("::1", None), ("127.0.0.1", Some("127.0.0.1"))]),
            ["127.0.0.1", "::1"]
        );
        // Global IPv6 with a global IPv6 source before IPv4.
        assert_eq!(
            sorted(&[
                ("74.125.19.99", Some("10.19.97.2")),
                ("2001:4860:0:2001::68", Some("2001:4860:0:2001::68")),
            ]),
            ["2001:4860:0:2001::68", "74.125.19.99"]
        );
        // Only a link-local IPv6 source: IPv4 first (rule 2).
        assert_eq!(
            sorted(&[
                ("2001:4860:0:2001::68", Some("fe80::1")),
                ("74.125.19.99", Some("10.19.97.2")),
            ]),
            ["74.125.19.99", "2001:4860:0:2001::68"]
        );
        // Rule 9: the longer common prefix first.
        assert_eq!(
            sorted(&[
                ("2001:db8:1::1", Some("2001:db8:2::1")),
                ("2001:db8:2::2", Some("2001:db8:2::1")),
            ]),
            ["2001:db8:2::2", "2001:db8:1::1"]
        );
        // Equal by every rule: the server's order.
        assert_eq!(
            sorted(&[
                ("127.0.0.2", Some("127.0.0.1")),
                ("127.0.0.1", Some("127.0.0.1")),
            ]),
            ["127.0.0.2", "127.0.0.1"]
        );
    }

    #[test]
    fn policy_table_classifies() {
        assert_eq!(attr(ip("::1")).precedence, 50);
        assert_eq!(attr(ip("10.0.0.1")).label, 4);
        assert_eq!(attr(ip("2002::1")).precedence, 30);
        assert_eq!(attr(ip("2001:0:1::1")).label, 5);
        assert_eq!(attr(ip("fd00::2")).label, 13);
        assert_eq!(attr(ip("2a00::1")).precedence, 40);
        assert_eq!(scope(ip("fe80::1")), SCOPE_LINK_LOCAL);
        assert_eq!(scope(ip("8.8.8.8")), SCOPE_GLOBAL);
    }
}
