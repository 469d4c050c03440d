//! A small DNS client for the `dns` resolver: one question to one server
//! over UDP (TCP when the answer is truncated), with bounded waits. Used
//! when the target names a server (`dns://127.0.0.1:5353/host:port`) and
//! for TXT lookups, which the system resolver cannot do. Blocking: call it
//! off the loop (the resolver's own thread).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// How long one UDP attempt waits for its answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP attempts per question (a lost datagram is retried).
const ATTEMPTS: u32 = 3;
/// What we tell the server we can take over UDP (EDNS0), so that a long
/// TXT service config fits without falling back to TCP.
const UDP_PAYLOAD: u16 = 4096;

/// The DNS server named in a target's authority: `IP` or `IP:port` (port 53
/// when missing; IPv6 in brackets when a port is given). Names are refused:
/// resolving the resolver's own name would need another resolver.
pub(crate) fn parse_server(authority: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = authority.parse::<SocketAddr>() {
        return Ok(sa);
    }
    // A port alone: localhost's, as gRPC-Go reads it (`dns://:53/...`).
    if let Some(port) = authority
        .strip_prefix(':')
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    let bare = authority
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(authority);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 53)),
        Err(_) => Err(format!(
            "dns: the DNS server in the target's authority must be an IP address with an \
             optional port (\"127.0.0.1:53\", \"[::1]:53\"), got \"{authority}\""
        )),
    }
}

/// The first `nameserver` of `/etc/resolv.conf`, for the TXT lookups of
/// targets that name no server (the system resolver has no TXT query).
pub(crate) fn system_server() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// The answers of one kind for `name`: empty when the name or the kind does
/// not exist (NXDOMAIN, or no records), an error when the server fails,
/// refuses or does not answer in time.
pub(crate) fn query(
    server: SocketAddr,
    name: &str,
    kind: RecordType,
) -> Result<Vec<RData>, String> {
    let fqdn = Name::from_str_relaxed(name)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| format!("\"{name}\" is no DNS name: {e}"))?;
    let id = query_id();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(fqdn, kind));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD);
    msg.set_edns(edns);
    let bytes = msg
        .to_vec()
        .map_err(|e| format!("DNS query for {name} could not be encoded: {e}"))?;
    let mut answer = udp_exchange(server, &bytes, id)
        .map_err(|e| format!("DNS query {kind} {name} to {server}: {e}"))?;
    if answer.truncated() {
        answer = tcp_exchange(server, &bytes, id)
            .map_err(|e| format!("DNS query {kind} {name} to {server} over TCP: {e}"))?;
    }
    match answer.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Vec::new()),
        code => {
            return Err(format!(
                "DNS server {server} answered {code} for {kind} {name}"
            ))
        }
    }
    Ok(answer
        .answers()
        .iter()
        .filter(|r| r.record_type() == kind)
        .map(|r| r.data().clone())
        .collect())
}

/// A and AAAA answers for `host` from `server` (the A answers first, as
/// the server gave them; the resolver sorts them, `addr_sort`). An error
/// only when both questions failed.
pub(crate) fn lookup_ips(server: SocketAddr, host: &str) -> Result<Vec<IpAddr>, String> {
    let v4 = query(server, host, RecordType::A);
    let v6 = query(server, host, RecordType::AAAA);
    if let (Err(e), Err(_)) = (&v4, &v6) {
        return Err(e.clone());
    }
    let ips = v4
        .unwrap_or_default()
        .into_iter()
        .chain(v6.unwrap_or_default())
        .filter_map(|d| match d {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    Ok(ips)
}

/// Every TXT record of `name`, each one's strings joined (RFC 7208 style:
/// a long record is split into strings of at most 255 bytes).
pub(crate) fn lookup_txt(server: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    Ok(query(server, name, RecordType::TXT)?
        .into_iter()
        .filter_map(|d| match d {
            // Joined as bytes, then read (a string boundary may fall
            // inside a character, as C-core's and gRPC-Go's joins allow).
            RData::TXT(t) => Some(String::from_utf8_lossy(&t.txt_data().concat()).into_owned()),
            _ => None,
        })
        .collect())
}

fn query_id() -> u16 {
    crate::clock::Rng::from_entropy().next_u64() as u16
}

fn udp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, String> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("no UDP socket: {e}"))?;
    // Connected: datagrams from anyone but the server are dropped by the
    // kernel (no spoofed answers from elsewhere).
    socket
        .connect(server)
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    let mut buf = vec![0u8; usize::from(UDP_PAYLOAD)];
    for _ in 0..ATTEMPTS {
        socket
            .send(query)
            .map_err(|e| format!("sending the query failed: {e}"))?;
        let deadline = Instant::now() + ATTEMPT_TIMEOUT;
        // Stray datagrams (a late answer to an earlier attempt, garbage) are
        // skipped until the attempt's deadline.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| format!("socket: {e}"))?;
            match socket.recv(&mut buf) {
                Ok(n) => match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.id() == id && m.message_type() == MessageType::Response => {
                        return Ok(m)
                    }
                    _ => continue,
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP port unreachable: nobody listens there.
                Err(e) => return Err(format!("no answer: {e}")),
            }
        }
    }
    Err(format!(
        "no answer after {ATTEMPTS} attempts of {} s",
        ATTEMPT_TIMEOUT.as_secs()
    ))
}

fn tcp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, String> {
    let timeout = ATTEMPT_TIMEOUT * ATTEMPTS;
    let mut s =
        TcpStream::connect_timeout(&server, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket: {e}"))?;
    let len = u16::try_from(query.len()).map_err(|_| "query too long".to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| format!("read: {e}"))?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
    let m = Message::from_vec(&body).map_err(|e| format!("bad answer: {e}"))?;
    if m.id() != id {
        return Err("answer to another query".into());
    }
    Ok(m)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::Record;

    #[test]
    fn servers_in_authorities() {
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            Ok(([127, 0, 0, 1], 5353).into())
        );
        assert_eq!(parse_server("127.0.0.1"), Ok(([127, 0, 0, 1], 53).into()));
        assert_eq!(parse_server("[::1]:5353").unwrap().port(), 5353);
        assert_eq!(parse_server("[::1]").unwrap().port(), 53);
        // gRPC-Go's reading of a port alone: localhost's.
        assert_eq!(parse_server(":5353"), Ok(([127, 0, 0, 1], 5353).into()));
        for bad in ["dns.example:53", ":", ":x", ":70000"] {
            let e = parse_server(bad).unwrap_err();
            assert!(e.contains("must be an IP address"), "{bad}: {e}");
        }
    }

    /// A one-shot server on 127.0.0.1 that answers the first query with
    /// what `answer` makes of it.
    fn serve_once(answer: impl FnOnce(Message) -> Vec<u8> + Send + 'static) -> SocketAddr {
        let mut answer = Some(answer);
        serve(1, move |q| answer.take().map(|f| f(q)).unwrap_or_default())
    }

    /// A server on 127.0.0.1 that answers up to `queries` queries, each
    /// with what `answer` makes of it (for 10 s at most).
    pub(crate) fn serve(
        queries: usize,
        mut answer: impl FnMut(Message) -> Vec<u8> + Send + 'static,
    ) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            for _ in 0..queries {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    return;
                };
                let q = Message::from_vec(&buf[..n]).unwrap();
                let _ = s.send_to(&answer(q), from);
            }
        });
        addr
    }

    pub(crate) fn reply(q: &Message, code: ResponseCode, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_response_code(code)
            .add_queries(q.queries().to_vec())
            .add_answers(records);
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_of_the_asked_kind_are_returned() {
        let server = serve_once(|q| {
            let name = q.queries()[0].name().clone();
            let a = Record::from_rdata(name.clone(), 60, RData::A(A::new(127, 0, 0, 1)));
            let txt = Record::from_rdata(name, 60, RData::TXT(TXT::new(vec!["x".into()])));
            reply(&q, ResponseCode::NoError, vec![a, txt])
        });
        let got = query(server, "svc.test", RecordType::A).unwrap();
        assert_eq!(got, vec![RData::A(A::new(127, 0, 0, 1))]);
    }

    #[test]
    fn nxdomain_is_no_answers_and_servfail_an_error() {
        let server = serve_once(|q| reply(&q, ResponseCode::NXDomain, vec![]));
        assert_eq!(query(server, "none.test", RecordType::A), Ok(vec![]));
        let server = serve_once(|q| reply(&q, ResponseCode::ServFail, vec![]));
        let e = query(server, "x.test", RecordType::A).unwrap_err();
        assert!(
            e.contains("Server Failure") || e.contains("SERVFAIL"),
            "{e}"
        );
    }

    #[test]
    fn an_answer_to_another_query_is_not_taken() {
        // The server answers with the wrong id, then never again: the
        // client must not take it, and gives up after its attempts.
        let server = serve_once(|q| {
            let mut m = Message::new();
            m.set_id(q.id().wrapping_add(1))
                .set_message_type(MessageType::Response);
            m.to_vec().unwrap()
        });
        let e = query(server, "x.test", RecordType::A).unwrap_err();
        assert!(e.contains("no answer"), "{e}");
    }

    #[test]
    fn txt_strings_of_one_record_are_joined() {
        let server = serve_once(|q| {
            let name = q.queries()[0].name().clone();
            let t = TXT::new(vec!["grpc_config=[".into(), "]".into()]);
            reply(
                &q,
                ResponseCode::NoError,
                vec![Record::from_rdata(name, 60, RData::TXT(t))],
            )
        });
        assert_eq!(
            lookup_txt(server, "_grpc_config.svc.test").unwrap(),
            vec!["grpc_config=[]".to_string()]
        );
    }
}
