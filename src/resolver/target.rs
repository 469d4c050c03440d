//! Channel targets, parsed as gRPC's naming doc says: a URI
//! `scheme://authority/endpoint` or `scheme:endpoint` whose scheme names a
//! registered resolver; anything else (no scheme, an unregistered one, not a
//! URI at all) is a DNS name, as if written `dns:///` + the whole string
//! (gRPC-Go's `parseTargetAndFindResolver`). Also the address syntaxes of the
//! built-in schemes, so that their errors are found when the channel is made.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// The port a target without one means (gRPC's naming doc).
pub const DEFAULT_PORT: u16 = 443;

/// The longest Unix socket path (or abstract name) a `sockaddr_un` holds:
/// 108 bytes less the path's NUL (or the abstract name's leading one).
const SUN_PATH_MAX: usize = 107;

/// A parsed target: what a [`ResolverBuilder`](super::ResolverBuilder) is
/// built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URI scheme, lower-cased: which resolver is used.
    pub scheme: String,
    /// The URI authority (`dns://8.8.8.8:53/host`: "8.8.8.8:53"); empty when
    /// the target has none.
    pub authority: String,
    /// The URI path: "/abs/path" for `unix:///abs/path`, percent-decoded
    /// (gRPC-Go's `URL.Path`), or "rel" for `unix:rel`, as written (its
    /// `URL.Opaque`). A `?query` or `#fragment` is not part of it.
    pub path: String,
}

impl Target {
    /// Parses `text` as a URI with a scheme. Use this when the scheme is
    /// known to be wanted; a channel's target goes through the registry's
    /// rule instead (an unregistered scheme means DNS).
    pub fn parse(text: &str) -> Result<Target, String> {
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(format!("target contains the control character {c:?}"));
        }
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("\"{text}\" has no scheme"))?;
        if !valid_scheme(scheme) {
            return Err(format!("\"{scheme}\" is not a URI scheme"));
        }
        let scheme = scheme.to_ascii_lowercase();
        // The query and fragment are no part of the name (gRPC-Go's
        // url.Parse drops them from the path).
        let rest = rest.find(['?', '#']).map_or(rest, |i| &rest[..i]);
        let (authority, path) = match rest.strip_prefix("//") {
            Some(hier) => match hier.find('/') {
                Some(i) => (hier[..i].to_string(), percent_decoded(&hier[i..])?),
                None => (hier.to_string(), String::new()),
            },
            None if rest.starts_with('/') => (String::new(), percent_decoded(rest)?),
            None => (String::new(), rest.to_string()),
        };
        Ok(Target {
            scheme,
            authority,
            path,
        })
    }

    /// The path without its leading '/' (gRPC-Go's `Target.Endpoint()`):
    /// the name to resolve, "host:port" in `dns:///host:port`.
    pub fn endpoint(&self) -> &str {
        self.path.strip_prefix('/').unwrap_or(&self.path)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.authority.is_empty() && !self.path.starts_with('/') {
            write!(f, "{}:{}", self.scheme, self.path)
        } else {
            write!(f, "{}://{}{}", self.scheme, self.authority, self.path)
        }
    }
}

/// A URI path with its `%XX` escapes decoded; an escape that is not two
/// hex digits, or bytes that are not UTF-8, are an error.
fn percent_decoded(path: &str) -> Result<String, String> {
    let bytes =
        unescaped(path, true).ok_or_else(|| format!("\"{path}\" has an invalid %-escape"))?;
    String::from_utf8(bytes).map_err(|_| format!("\"{path}\" does not decode to UTF-8"))
}

/// `s`'s bytes with its `%XX` escapes decoded. A `%` that starts none is
/// an error when `strict`, else kept as it is (C-core's URI parser's
/// leniency, which `ipv6:` zones written raw rely on).
fn unescaped(s: &str, strict: bool) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None if strict => return None,
                None => {}
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(out)
}

/// RFC 3986: a letter, then letters, digits, '+', '-', '.'.
fn valid_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A channel's target as gRPC reads it: `None` for the empty target (the
/// host supplies addresses); a URI whose scheme `registered` knows; else
/// `dns:///` + the whole text.
pub(crate) fn parse_channel_target(
    text: &str,
    registered: impl Fn(&str) -> bool,
) -> Result<Option<Target>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if let Ok(t) = Target::parse(text) {
        if registered(&t.scheme) {
            return Ok(Some(t));
        }
    }
    // Errors name the target as written, not the `dns:///` form tried.
    Target::parse(&format!("dns:///{text}"))
        .map(Some)
        .map_err(|e| e.replace(&format!("\"/{text}\""), &format!("\"{text}\"")))
}

/// The target's default `:authority` (gRPC's): "localhost" for unix
/// sockets, the endpoint as written (`host:port` of `dns:///host:port`, the
/// address of `ipv4:127.0.0.1:50051`) otherwise. `None` when that is no
/// valid authority (an `ipv4:` list of several addresses): each connection
/// then uses its own address's.
pub(crate) fn default_authority(target: &Target) -> Option<String> {
    let a = match target.scheme.as_str() {
        "unix" | "unix-abstract" => return Some("localhost".into()),
        _ => target.endpoint(),
    };
    // `dns:///:50051` is localhost's port, whatever the scheme (gRPC-Go
    // writes "localhost:50051" for any resolver that keeps the default).
    if a.starts_with(':') {
        let a = format!("localhost{a}");
        return valid_authority(&a).then_some(a);
    }
    valid_authority(a).then(|| a.to_string())
}

/// A `passthrough:` target naming a host rather than an address: gRPC
/// hands it to its dialer, which looks the name up. The library's own
/// connections take addresses, so such a target resolves by DNS instead
/// (`dns:///host:port`, the system resolver, re-resolving as connections
/// fail); a host's connector still gets the text as written.
pub(crate) fn passthrough_by_name(target: &Target) -> Option<Target> {
    if target.scheme != "passthrough" {
        return None;
    }
    let a = target.endpoint();
    if a.is_empty()
        || a.parse::<std::net::SocketAddr>().is_ok()
        || a.starts_with("unix:")
        || a.starts_with("unix-abstract:")
    {
        return None;
    }
    Target::parse(&format!("dns:///{a}")).ok()
}

/// Whether `a` can be a call's `:authority` (and so a TLS name's source):
/// `host[:port]`, a port being a number below 65536.
pub fn valid_authority(a: &str) -> bool {
    if a.is_empty() || a.contains(',') || a.contains('@') {
        return false;
    }
    let Ok(parsed) = http::uri::Authority::try_from(a) else {
        return false;
    };
    match a.strip_prefix(parsed.host()) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok()),
        None => false,
    }
}

/// The host of an authority, for the TLS server name: without its port and
/// an IPv6 address's brackets.
pub(crate) fn authority_host(a: &str) -> Option<String> {
    let parsed = http::uri::Authority::try_from(a).ok()?;
    let host = parsed.host();
    Some(
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string(),
    )
}

/// What a built-in scheme makes of its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A fixed address list (ipv4, ipv6, unix, unix-abstract, passthrough).
    Static(Vec<String>),
    /// A name to look up.
    Dns {
        authority: String,
        host: String,
        port: u16,
    },
}

/// The built-in schemes' reading of `target`; `None` for other schemes.
pub(crate) fn builtin_plan(target: &Target) -> Option<Result<Plan, String>> {
    let no_authority = || {
        if target.authority.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: target takes no authority (got \"{}\")",
                target.scheme, target.authority
            ))
        }
    };
    let plan = match target.scheme.as_str() {
        "ipv4" => no_authority().and_then(|()| ip_list(target.endpoint(), Family::V4)),
        "ipv6" => no_authority().and_then(|()| ip_list(target.endpoint(), Family::V6)),
        // The path as written: `unix:///abs` is "/abs", `unix:rel` is "rel".
        // Longer than `sun_path` holds (108 bytes with its NUL, or with
        // an abstract name's leading NUL): refused here, as C-core does,
        // rather than by every connection attempt.
        "unix" => no_authority().and_then(|()| match target.path.as_str() {
            "" => Err("unix: target has no path".into()),
            p if p.len() > SUN_PATH_MAX => Err(format!(
                "unix: path is {} bytes, more than a socket address holds ({SUN_PATH_MAX})",
                p.len()
            )),
            p => Ok(Plan::Static(vec![format!("unix:{p}")])),
        }),
        "unix-abstract" => no_authority().and_then(|()| match target.path.as_str() {
            "" => Err("unix-abstract: target has no name".into()),
            // Unlike C-core: addresses travel through C strings here.
            n if n.contains('\0') => Err("unix-abstract: name contains a NUL byte".into()),
            n if n.len() > SUN_PATH_MAX => Err(format!(
                "unix-abstract: name is {} bytes, more than a socket address holds ({SUN_PATH_MAX})",
                n.len()
            )),
            n => Ok(Plan::Static(vec![format!("unix-abstract:{n}")])),
        }),
        "passthrough" => match target.endpoint() {
            "" => Err("passthrough: target has no address".into()),
            a => Ok(Plan::Static(vec![a.to_string()])),
        },
        "dns" => dns_host_port(target.endpoint()).map(|(host, port)| Plan::Dns {
            authority: target.authority.clone(),
            host,
            port,
        }),
        _ => return None,
    };
    Some(plan)
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// `ipv4:a:port[,a:port...]` / `ipv6:[a]:port[,...]`, as C-core reads them
/// (sockaddr_resolver.cc, parse_address.cc): the path %-decoded (leaving a
/// `%` that starts no escape as it is), every address with its port, an
/// IPv6 one with a zone (`[fe80::1%2]`, `[fe80::1%25lo]`) by number or by
/// interface name.
fn ip_list(list: &str, family: Family) -> Result<Plan, String> {
    let (scheme, mut out) = match family {
        Family::V4 => ("ipv4", Vec::new()),
        Family::V6 => ("ipv6", Vec::new()),
    };
    let list = lenient_percent_decoded(list);
    // Empty items are skipped, as C-core (whose schemes these are) does:
    // "ipv4:1.2.3.4:1," lists one address.
    for item in list.split(',').filter(|i| !i.is_empty()) {
        let addr = match family {
            Family::V4 => ipv4_item(item),
            Family::V6 => ipv6_item(item),
        }
        .map_err(|e| format!("{scheme}: \"{item}\": {e}"))?;
        out.push(addr.to_string());
    }
    if out.is_empty() {
        return Err(format!("{scheme}: target lists no addresses"));
    }
    Ok(Plan::Static(out))
}

/// `%XX` escapes decoded, a `%` that starts none kept (see `unescaped`).
fn lenient_percent_decoded(s: &str) -> String {
    String::from_utf8_lossy(&unescaped(s, false).unwrap_or_default()).into_owned()
}

fn ipv4_item(item: &str) -> Result<SocketAddr, String> {
    let (host, p) = item
        .split_once(':')
        .ok_or("no port given (an ipv4: address needs one, as in C-core)")?;
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| format!("\"{host}\" is not an IPv4 address"))?;
    Ok(SocketAddr::new(IpAddr::V4(ip), port(p)?))
}

fn ipv6_item(item: &str) -> Result<SocketAddr, String> {
    let Some(rest) = item.strip_prefix('[') else {
        // Unbracketed: an address alone, which has no port.
        return Err(match item.parse::<Ipv6Addr>() {
            Ok(_) => "no port given (write [address]:port, as C-core needs)".to_string(),
            Err(_) => format!("\"{item}\" is not an IPv6 address (write [address]:port)"),
        });
    };
    let (h, tail) = rest.split_once(']').ok_or("no ']' after '['")?;
    let port = match tail {
        "" => return Err("no port given (write [address]:port, as C-core needs)".into()),
        t => match t.strip_prefix(':') {
            Some(p) => port(p)?,
            None => return Err(format!("unexpected \"{t}\" after ']'")),
        },
    };
    let (host, zone) = match h.split_once('%') {
        Some((host, zone)) => (host, Some(zone)),
        None => (h, None),
    };
    let ip: Ipv6Addr = host
        .parse()
        .map_err(|_| format!("\"{host}\" is not an IPv6 address"))?;
    let scope_id = match zone {
        None => 0,
        Some(zone) => scope_id(zone)?,
    };
    Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope_id)))
}

/// An IPv6 zone: a number, or an interface's name (C-core's
/// `if_nametoindex`).
fn scope_id(zone: &str) -> Result<u32, String> {
    if let Ok(n) = zone.parse::<u32>() {
        return Ok(n);
    }
    let unknown = || format!("zone \"{zone}\" is no number and no interface");
    if cfg!(miri) {
        // No foreign calls under Miri.
        return Err(unknown());
    }
    let name = std::ffi::CString::new(zone).map_err(|_| unknown())?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(unknown()),
        n => Ok(n),
    }
}

fn port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("missing port after ':'".into());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port \"{p}\" is not a number"));
    }
    p.parse()
        .map_err(|_| format!("port {p} is out of range (0-65535)"))
}

/// A DNS target's port: a number, or a TCP service name (`http`), as
/// gRPC-Go's dialer (`net.LookupPort`) and C-core's getaddrinfo take it:
/// looked up in `/etc/services`, then in Go's built-in table.
fn dns_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || p.bytes().all(|b| b.is_ascii_digit()) {
        return port(p);
    }
    service_port(p).ok_or_else(|| format!("port \"{p}\" is not a number or a known service name"))
}

/// The TCP port of the service `name` (case-insensitive).
fn service_port(name: &str) -> Option<u16> {
    let name = name.to_ascii_lowercase();
    let listed = std::fs::read_to_string("/etc/services")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let line = line.split('#').next().unwrap_or("");
                let mut words = line.split_whitespace();
                let service = words.next()?;
                let (port, proto) = words.next()?.split_once('/')?;
                (proto == "tcp" && (service == name || words.any(|alias| alias == name)))
                    .then(|| port.parse().ok())
                    .flatten()
            })
        });
    // Go's `net` package's own table, for machines without the file.
    const BUILT_IN: [(&str, u16); 14] = [
        ("ftp", 21),
        ("ftps", 990),
        ("gopher", 70),
        ("http", 80),
        ("https", 443),
        ("imap2", 143),
        ("imap3", 220),
        ("imaps", 993),
        ("pop3", 110),
        ("pop3s", 995),
        ("smtp", 25),
        ("submissions", 465),
        ("ssh", 22),
        ("telnet", 23),
    ];
    listed.or_else(|| BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, p)| *p))
}

/// gRPC-Go's DNS target rule (`internal/resolver/dns.parseTarget`): an IP
/// literal alone (v4, or v6 without brackets) takes the default port;
/// `host:port` and `[v6]:port` their port; a missing host means localhost; a
/// trailing ':' is an error; anything else is a host with the default port.
/// A port may be a service name (`dns_port`).
pub(crate) fn dns_host_port(endpoint: &str) -> Result<(String, u16), String> {
    if endpoint.is_empty() {
        return Err("dns: target has no host".into());
    }
    if endpoint.parse::<IpAddr>().is_ok() {
        return Ok((endpoint.to_string(), DEFAULT_PORT));
    }
    match split_host_port(endpoint) {
        Ok((host, p)) => {
            let port = dns_port(p).map_err(|e| format!("dns: \"{endpoint}\": {e}"))?;
            let host = if host.is_empty() { "localhost" } else { host };
            Ok((host.to_string(), port))
        }
        Err(first) => match split_host_port(&format!("{endpoint}:{DEFAULT_PORT}")) {
            Ok((host, _)) if !host.is_empty() => Ok((host.to_string(), DEFAULT_PORT)),
            _ => Err(format!("dns: \"{endpoint}\" is not host[:port]: {first}")),
        },
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`.
fn split_host_port(s: &str) -> Result<(&str, &str), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or("missing ']'")?;
        let p = tail.strip_prefix(':').ok_or("missing port")?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or("missing port")?;
        if h.contains(':') {
            return Err("too many colons (an IPv6 address with a port needs brackets)".into());
        }
        (h, p)
    };
    if host.contains(['[', ']']) || port.contains(['[', ']']) {
        return Err("unexpected '[' or ']'".into());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(s: &str) -> bool {
        matches!(
            s,
            "dns" | "ipv4" | "ipv6" | "unix" | "unix-abstract" | "passthrough"
        )
    }

    fn plan(text: &str) -> Result<Plan, String> {
        let t = parse_channel_target(text, registered)?.expect("not empty");
        builtin_plan(&t).expect("a built-in scheme")
    }

    fn fixed(list: &[&str]) -> Result<Plan, String> {
        Ok(Plan::Static(list.iter().map(|s| s.to_string()).collect()))
    }

    fn dns(authority: &str, host: &str, port: u16) -> Result<Plan, String> {
        Ok(Plan::Dns {
            authority: authority.into(),
            host: host.into(),
            port,
        })
    }

    #[test]
    fn good_targets() {
        let table: &[(&str, Result<Plan, String>)] = &[
            (
                "ipv4:127.0.0.1:1,127.0.0.2:2",
                fixed(&["127.0.0.1:1", "127.0.0.2:2"]),
            ),
            // Empty items skipped, as C-core does.
            (
                "ipv4:127.0.0.1:1,,127.0.0.2:2,",
                fixed(&["127.0.0.1:1", "127.0.0.2:2"]),
            ),
            ("IPV4:127.0.0.1:80", fixed(&["127.0.0.1:80"])),
            ("ipv4:///127.0.0.1:5", fixed(&["127.0.0.1:5"])),
            ("ipv6:[::1]:5", fixed(&["[::1]:5"])),
            (
                "ipv6:[2001:db8::1]:80,[::2]:1",
                fixed(&["[2001:db8::1]:80", "[::2]:1"]),
            ),
            // %-decoded, zones by number (C-core's uri_test,
            // parse_address_test).
            (
                "ipv4:127.0.0.1%3A1234%2C127.0.0.2:1",
                fixed(&["127.0.0.1:1234", "127.0.0.2:1"]),
            ),
            ("ipv6:%5B::1%5D:1234", fixed(&["[::1]:1234"])),
            (
                "ipv6:[2001:db8::1%252]:12345",
                fixed(&["[2001:db8::1%2]:12345"]),
            ),
            ("ipv6:[fe80::1%2]:1", fixed(&["[fe80::1%2]:1"])),
            ("unix:///tmp/s", fixed(&["unix:/tmp/s"])),
            ("unix:/tmp/s", fixed(&["unix:/tmp/s"])),
            ("unix:rel/s", fixed(&["unix:rel/s"])),
            ("unix-abstract:name", fixed(&["unix-abstract:name"])),
            (
                "unix-abstract:/with/slash",
                fixed(&["unix-abstract:/with/slash"]),
            ),
            ("passthrough:///127.0.0.1:80", fixed(&["127.0.0.1:80"])),
            ("passthrough:host:1", fixed(&["host:1"])),
            ("dns:///localhost:50051", dns("", "localhost", 50051)),
            ("dns:localhost:50051", dns("", "localhost", 50051)),
            (
                "dns://127.0.0.1:53/example.com:8080",
                dns("127.0.0.1:53", "example.com", 8080),
            ),
            ("dns:///example.com", dns("", "example.com", 443)),
            ("dns:///[::1]:80", dns("", "::1", 80)),
            ("dns:///[::1]", dns("", "::1", 443)),
            ("dns:///::1", dns("", "::1", 443)),
            ("dns:///:80", dns("", "localhost", 80)),
            // No scheme, or one nobody registered: the whole text is a DNS name.
            ("localhost", dns("", "localhost", 443)),
            ("localhost:50051", dns("", "localhost", 50051)),
            ("127.0.0.1:50051", dns("", "127.0.0.1", 50051)),
            ("[::1]:50051", dns("", "::1", 50051)),
            ("127.0.0.1", dns("", "127.0.0.1", 443)),
            (":50051", dns("", "localhost", 50051)),
            // Service names, as gRPC-Go's dialer looks them up.
            ("dns:///127.0.0.1:http", dns("", "127.0.0.1", 80)),
            ("localhost:HTTPS", dns("", "localhost", 443)),
            ("[::1]:ssh", dns("", "::1", 22)),
        ];
        for (text, want) in table {
            assert_eq!(&plan(text), want, "{text}");
        }
    }

    #[test]
    fn bad_targets() {
        let long_unix = format!("unix:/{}", "a".repeat(SUN_PATH_MAX));
        let long_abstract = format!("unix-abstract:{}", "a".repeat(SUN_PATH_MAX + 1));
        let table: &[(&str, &str)] = &[
            ("ipv4:", "lists no addresses"),
            ("ipv4:1.2.3.4:", "missing port"),
            ("ipv4:1.2.3.4:x", "not a number"),
            ("ipv4:1.2.3.4:65536", "out of range"),
            ("ipv6:,", "lists no addresses"),
            ("ipv4:,,", "lists no addresses"),
            ("ipv4:[::1]:1", "not an IPv4 address"),
            ("ipv4://host/1.2.3.4:1", "takes no authority"),
            ("ipv6:127.0.0.1:1", "not an IPv6 address"),
            ("ipv6:::1:99999", "not an IPv6 address"),
            ("ipv6:[::1]:", "missing port"),
            ("ipv6:[::1]:70000", "out of range"),
            ("ipv6:[::1", "no ']'"),
            ("ipv6:[::1]x", "unexpected"),
            ("unix:", "no path"),
            ("unix://host/tmp/s", "takes no authority"),
            ("unix-abstract:", "no name"),
            ("passthrough:///", "no address"),
            ("dns:///", "no host"),
            ("dns:///h:notaport", "not a number or a known service name"),
            ("dns:///h:", "missing port"),
            ("dns:///[::1]:", "missing port"),
            ("dns:///h:123456", "out of range"),
            ("[::1", "not host[:port]"),
            ("xds://x/y", "not a number"),
            ("a b\n", "control character"),
            // No port: C-core refuses (parse_address.cc "no port given").
            ("ipv4:127.0.0.1", "no port given"),
            ("ipv4:127.0.0.1:1,127.0.0.2", "no port given"),
            ("ipv6:[::1]", "no port given"),
            ("ipv6:::1", "no port given"),
            ("ipv6:[fe80::1%nosuchif0]:1", "no number and no interface"),
            // Longer than a sockaddr_un holds (C-core refuses too).
            (long_unix.as_str(), "more than a socket address holds"),
            (long_abstract.as_str(), "more than a socket address holds"),
            // Named as written, not as the `dns:///` form it was tried in.
            ("%zz:1", "\"%zz:1\" has an invalid %-escape"),
            ("dns:///%zz:1", "\"dns:///%zz:1\" has an invalid %-escape"),
        ];
        for (text, why) in table {
            match plan(text) {
                Ok(p) => panic!("{text:?} should be rejected, got {p:?}"),
                Err(e) => assert!(e.contains(why), "{text:?}: {e:?} should say {why:?}"),
            }
        }
    }

    #[test]
    fn uri_parts() {
        let t = Target::parse("dns://8.8.8.8:53/example.com:1").unwrap();
        assert_eq!(
            (t.scheme.as_str(), t.authority.as_str(), t.path.as_str()),
            ("dns", "8.8.8.8:53", "/example.com:1")
        );
        assert_eq!(t.endpoint(), "example.com:1");
        assert_eq!(t.to_string(), "dns://8.8.8.8:53/example.com:1");
        let t = Target::parse("My-Scheme+x.y:opaque/part").unwrap();
        assert_eq!(
            (t.scheme.as_str(), t.path.as_str()),
            ("my-scheme+x.y", "opaque/part")
        );
        assert_eq!(t.to_string(), "my-scheme+x.y:opaque/part");
        assert!(Target::parse("1abc:x").is_err());
        assert!(Target::parse("noscheme").is_err());
        assert_eq!(parse_channel_target("  ", registered), Ok(None));
        // An unregistered scheme is part of the DNS name.
        let t = parse_channel_target("custom:///x", registered)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.scheme.as_str(), t.path.as_str()),
            ("dns", "/custom:///x")
        );
        let t = parse_channel_target("custom:///x", |s| s == "custom")
            .unwrap()
            .unwrap();
        assert_eq!((t.scheme.as_str(), t.endpoint()), ("custom", "x"));
    }

    #[test]
    fn default_authorities() {
        let auth = |t: &str| default_authority(&Target::parse(t).unwrap());
        assert_eq!(
            auth("dns:///svc.test:8080").as_deref(),
            Some("svc.test:8080")
        );
        assert_eq!(
            auth("dns://127.0.0.1:53/svc.test:8080").as_deref(),
            Some("svc.test:8080")
        );
        assert_eq!(auth("ipv4:127.0.0.1:1").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(auth("ipv6:[::1]:1").as_deref(), Some("[::1]:1"));
        assert_eq!(auth("unix:///tmp/s").as_deref(), Some("localhost"));
        assert_eq!(auth("unix-abstract:x").as_deref(), Some("localhost"));
        // Several addresses are no authority: each connection uses its own.
        assert_eq!(auth("ipv4:127.0.0.1:1,127.0.0.1:2"), None);
        assert_eq!(auth("dns:///:8080").as_deref(), Some("localhost:8080"));
        assert_eq!(auth("custom:///:8080").as_deref(), Some("localhost:8080"));
        assert_eq!(authority_host("[::1]:1").as_deref(), Some("::1"));
        assert_eq!(authority_host("svc.test:1").as_deref(), Some("svc.test"));
    }

    #[test]
    fn authorities_are_host_and_an_optional_numeric_port() {
        for ok in [
            "localhost",
            "localhost:443",
            "127.0.0.1:50051",
            "[::1]:443",
            "[::1]",
            "example.com",
            "a-b.example.com:65535",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "caf\u{e9}.com",
            "[::1",
            "a:1:2",
            "a%zz",
            "host:notaport",
            "a:99999999999",
            "a:65536",
            "a,b",
            "u@h",
            "a:",
            "a b",
            "a/b",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn paths_are_percent_decoded_without_query_or_fragment() {
        let t = Target::parse("dns:///host:443?x=1").unwrap();
        assert_eq!((t.endpoint(), t.authority.as_str()), ("host:443", ""));
        let t = Target::parse("dns://127.0.0.1:53/foo%2Ebar:80#frag").unwrap();
        assert_eq!(
            (t.endpoint(), t.authority.as_str()),
            ("foo.bar:80", "127.0.0.1:53")
        );
        assert_eq!(Target::parse("unix:///tmp/a%20b").unwrap().path, "/tmp/a b");
        assert_eq!(Target::parse("unix:/tmp/a%20b").unwrap().path, "/tmp/a b");
        // An opaque path stays as written (gRPC-Go's URL.Opaque).
        assert_eq!(Target::parse("unix:rel%20x").unwrap().path, "rel%20x");
        for bad in ["dns:///a%zz", "dns:///a%4", "dns:///a%+1", "dns:///%ff%fe"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
