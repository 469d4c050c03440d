//! Targets and the resolvers behind them (gRPC naming: `ipv4:`, `ipv6:`,
//! `unix:`, `dns:`, `passthrough:`; an empty target means the host supplies
//! addresses itself).

use crate::subconn::Address;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// Addresses come from `Channel::update_addresses`.
    Manual,
    /// A fixed list, delivered once.
    Static(Vec<String>),
    /// Looked up with the system resolver on a helper thread.
    Dns { host: String, port: u16 },
}

const DEFAULT_PORT: u16 = 443;

pub(crate) fn parse_target(target: &str) -> Result<Resolver, String> {
    let t = target.trim();
    if t.is_empty() {
        return Ok(Resolver::Manual);
    }
    if let Some(list) = t.strip_prefix("ipv4:") {
        return ip_list(list, |a| a.is_ipv4()).map(Resolver::Static);
    }
    if let Some(list) = t.strip_prefix("ipv6:") {
        return ip_list(list, |a| a.is_ipv6()).map(Resolver::Static);
    }
    if let Some(path) = t.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("unix: target has no path".into());
        }
        return Ok(Resolver::Static(vec![format!("unix:{path}")]));
    }
    if let Some(rest) = t.strip_prefix("passthrough:") {
        let addr = rest.trim_start_matches('/');
        if addr.is_empty() {
            return Err("passthrough: target has no address".into());
        }
        return Ok(Resolver::Static(vec![addr.to_string()]));
    }
    let host_port = if let Some(rest) = t.strip_prefix("dns:") {
        // dns:[//authority/]host[:port]
        match rest.strip_prefix("//") {
            Some(r) => r
                .split_once('/')
                .map(|(_, hp)| hp)
                .ok_or("dns: target has no host")?,
            None => rest,
        }
    } else if let Some((scheme, _)) = t.split_once("://") {
        return Err(format!("unsupported target scheme \"{scheme}\""));
    } else {
        t
    };
    let (host, port) = split_host_port(host_port)?;
    Ok(Resolver::Dns { host, port })
}

fn ip_list(list: &str, family: fn(&SocketAddr) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let a: SocketAddr = part
            .parse()
            .map_err(|_| format!("\"{part}\" is not an IP address with a port"))?;
        if !family(&a) {
            return Err(format!("\"{part}\" is not of the target's address family"));
        }
        out.push(a.to_string());
    }
    if out.is_empty() {
        return Err("target lists no addresses".into());
    }
    Ok(out)
}

fn split_host_port(hp: &str) -> Result<(String, u16), String> {
    if hp.is_empty() {
        return Err("target has no host".into());
    }
    if let Some(rest) = hp.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or("unterminated [ in target")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port \"{p}\""))?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(format!("unexpected \"{tail}\" after ]")),
        };
        return Ok((host.to_string(), port));
    }
    match hp.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse().map_err(|_| format!("bad port \"{p}\""))?;
            Ok((h.to_string(), port))
        }
        _ => Ok((hp.to_string(), DEFAULT_PORT)),
    }
}

/// Resolves `host:port` with the system resolver (blocking: call off the loop).
pub(crate) fn lookup(host: &str, port: u16) -> Result<Vec<Address>, String> {
    let addrs: Vec<Address> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("DNS resolution of {host} failed: {e}"))?
        .map(|a| Address::new(a.to_string()))
        .collect();
    if addrs.is_empty() {
        return Err(format!("DNS resolution of {host} returned no addresses"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(parse_target("").unwrap(), Resolver::Manual);
        assert_eq!(
            parse_target("ipv4:127.0.0.1:1,127.0.0.2:2").unwrap(),
            Resolver::Static(vec!["127.0.0.1:1".into(), "127.0.0.2:2".into()])
        );
        assert_eq!(
            parse_target("ipv6:[::1]:5").unwrap(),
            Resolver::Static(vec!["[::1]:5".into()])
        );
        assert_eq!(
            parse_target("unix:///tmp/s").unwrap(),
            Resolver::Static(vec!["unix:/tmp/s".into()])
        );
        assert_eq!(
            parse_target("dns:///localhost:50051").unwrap(),
            Resolver::Dns {
                host: "localhost".into(),
                port: 50051
            }
        );
        assert_eq!(
            parse_target("localhost").unwrap(),
            Resolver::Dns {
                host: "localhost".into(),
                port: 443
            }
        );
    }

    #[test]
    fn malformed_targets_are_errors() {
        for bad in [
            "ipv4:",
            "ipv4:1.2.3.4",
            "ipv4:[::1]:1",
            "ipv6:127.0.0.1:1",
            "unix:",
            "xds://x/y",
            "dns:///h:notaport",
            "[::1",
        ] {
            assert!(parse_target(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn lookup_localhost() {
        let a = lookup("localhost", 80).unwrap();
        assert!(a.iter().all(|a| a.addr.ends_with(":80")));
    }
}
