#![allow(dead_code)]
//! A fake DNS server on 127.0.0.1 (UDP and TCP on one port), built with
//! hickory_proto: a zone of (name, kind) -> answer, with per-kind answers for
//! any name as a fallback, NXDOMAIN otherwise. Options: truncated UDP answers
//! (over 512 bytes, TXT only, or all), CNAME following, a query log.
//! Shared by the DNS suites (`#[path = "common/dns_server.rs"] mod dns_server;`).

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server answers for one (name, kind).
#[derive(Clone, Debug)]
pub enum Ans {
    NxDomain,
    ServFail,
    /// NOERROR with no records (NODATA).
    NoData,
    /// Addresses; only those of the question's family are sent.
    Ips(Vec<IpAddr>),
    /// TXT records, each a list of strings.
    Txt(Vec<Vec<String>>),
    /// TXT records, each a list of character-strings (raw bytes).
    TxtBytes(Vec<Vec<Vec<u8>>>),
    /// (Stored under `RecordType::CNAME`.) The name is an alias: the answer
    /// is the CNAME record, then the canonical name's answers.
    Cname(String),
}

#[derive(Default)]
pub struct Zone {
    pub records: HashMap<(String, RecordType), Ans>,
    /// Answers for any name not in `records`, per kind.
    pub any_name: HashMap<RecordType, Ans>,
    /// A UDP answer over 512 bytes comes back truncated (TC, no records),
    /// as from a server that ignores EDNS.
    pub classic_udp: bool,
    /// UDP answers to TXT questions come back truncated (TC, no records):
    /// the full answer only over TCP.
    pub truncate_txt_over_udp: bool,
    /// Every UDP answer comes back truncated.
    pub truncate_all_over_udp: bool,
    /// (kind, name, "udp"/"tcp") of every question.
    pub seen: Vec<(RecordType, String, &'static str)>,
}

pub struct FakeDns {
    pub addr: SocketAddr,
    pub zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
}

pub fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn lookup(z: &Zone, name: &str, kind: RecordType) -> Option<Ans> {
    z.records
        .get(&(norm(name), kind))
        .or_else(|| z.any_name.get(&kind))
        .cloned()
}

fn answer(zone: &Mutex<Zone>, q: &Message, transport: &'static str) -> Vec<u8> {
    let query = q.queries()[0].clone();
    let name = query.name().clone();
    let kind = query.query_type();
    let mut z = zone.lock().unwrap();
    z.seen.push((kind, norm(&name.to_string()), transport));
    let udp = transport == "udp";
    let classic = z.classic_udp && udp;
    let truncate =
        udp && (z.truncate_all_over_udp || (kind == RecordType::TXT && z.truncate_txt_over_udp));
    let mut prefix = vec![];
    let (name, ans) = match z.records.get(&(norm(&name.to_string()), RecordType::CNAME)) {
        // A CNAME: the alias record, then the canonical name's answers
        // (as a recursive server gives them).
        Some(Ans::Cname(target)) => {
            let canon = Name::from_ascii(format!("{}.", norm(target))).unwrap();
            prefix.push(Record::from_rdata(
                name.clone(),
                60,
                RData::CNAME(CNAME(canon.clone())),
            ));
            let ans = lookup(&z, &canon.to_string(), kind);
            (canon, ans)
        }
        _ => {
            let ans = lookup(&z, &name.to_string(), kind);
            (name, ans)
        }
    };
    drop(z);
    let (code, records) = match ans {
        None | Some(Ans::NxDomain) => (ResponseCode::NXDomain, vec![]),
        Some(Ans::ServFail) => (ResponseCode::ServFail, vec![]),
        Some(Ans::NoData) | Some(Ans::Cname(_)) => (ResponseCode::NoError, vec![]),
        Some(Ans::Ips(ips)) => (
            ResponseCode::NoError,
            ips.into_iter()
                .filter_map(|ip| match (ip, kind) {
                    (IpAddr::V4(v4), RecordType::A) => {
                        Some(Record::from_rdata(name.clone(), 60, RData::A(A::from(v4))))
                    }
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(Record::from_rdata(
                        name.clone(),
                        60,
                        RData::AAAA(AAAA::from(v6)),
                    )),
                    _ => None,
                })
                .collect(),
        ),
        Some(Ans::Txt(recs)) => (
            ResponseCode::NoError,
            recs.into_iter()
                .map(|r| Record::from_rdata(name.clone(), 60, RData::TXT(TXT::new(r))))
                .collect(),
        ),
        Some(Ans::TxtBytes(recs)) => (
            ResponseCode::NoError,
            recs.into_iter()
                .map(|r| {
                    let parts: Vec<&[u8]> = r.iter().map(Vec::as_slice).collect();
                    Record::from_rdata(name.clone(), 60, RData::TXT(TXT::from_bytes(parts)))
                })
                .collect(),
        ),
    };
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_response_code(code)
        .set_authoritative(true)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .add_queries(q.queries().to_vec());
    if truncate {
        m.set_truncated(true);
        return m.to_vec().unwrap();
    }
    m.add_answers(prefix);
    m.add_answers(records);
    let full = m.to_vec().unwrap();
    if classic && full.len() > 512 {
        let mut t = Message::new();
        t.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_response_code(ResponseCode::NoError)
            .set_truncated(true)
            .add_queries(q.queries().to_vec());
        return t.to_vec().unwrap();
    }
    full
}

impl FakeDns {
    pub fn start() -> FakeDns {
        FakeDns::start_on("127.0.0.1:0")
    }

    pub fn start_on(bind: &str) -> FakeDns {
        // UDP and TCP on one port.
        let (udp, tcp) = (0..20)
            .find_map(|_| {
                let u = UdpSocket::bind(bind).ok()?;
                let t = TcpListener::bind(u.local_addr().ok()?).ok()?;
                Some((u, t))
            })
            .expect("a port free for UDP and TCP");
        let addr = udp.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (z, st) = (zone.clone(), stop.clone());
        std::thread::spawn(move || {
            udp.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let _ = udp.send_to(&answer(&z, &q, "udp"), from);
            }
        });
        let (z, st) = (zone.clone(), stop.clone());
        std::thread::spawn(move || {
            tcp.set_nonblocking(true).unwrap();
            while !st.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let z = z.clone();
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    loop {
                        let mut len = [0u8; 2];
                        if s.read_exact(&mut len).is_err() {
                            return;
                        }
                        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if s.read_exact(&mut body).is_err() {
                            return;
                        }
                        let Ok(q) = Message::from_vec(&body) else {
                            return;
                        };
                        let out = answer(&z, &q, "tcp");
                        let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&out);
                        if s.write_all(&framed).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeDns { addr, zone, stop }
    }

    pub fn set(&self, name: &str, kind: RecordType, ans: Ans) {
        self.zone
            .lock()
            .unwrap()
            .records
            .insert((norm(name), kind), ans);
    }

    /// The answer to every `kind` question about a name not set otherwise.
    pub fn set_any_name(&self, kind: RecordType, ans: Ans) {
        self.zone.lock().unwrap().any_name.insert(kind, ans);
    }

    pub fn remove(&self, name: &str, kind: RecordType) {
        self.zone
            .lock()
            .unwrap()
            .records
            .remove(&(norm(name), kind));
    }

    fn split_ips(ips: &[&str]) -> [(RecordType, Vec<IpAddr>); 2] {
        let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.into_iter().partition(IpAddr::is_ipv4);
        [(RecordType::A, v4), (RecordType::AAAA, v6)]
    }

    /// A and AAAA records for `name` (NODATA for a family it lacks).
    pub fn a(&self, name: &str, ips: &[&str]) {
        for (kind, list) in Self::split_ips(ips) {
            let ans = if list.is_empty() {
                Ans::NoData
            } else {
                Ans::Ips(list)
            };
            self.set(name, kind, ans);
        }
    }

    /// A and AAAA records for `name`; a family it lacks is left as it was
    /// (NXDOMAIN unless set).
    pub fn a_only(&self, name: &str, ips: &[&str]) {
        for (kind, list) in Self::split_ips(ips) {
            if !list.is_empty() {
                self.set(name, kind, Ans::Ips(list));
            }
        }
    }

    /// One TXT record for `_grpc_config.name`, in ≤255-byte strings (split
    /// as bytes, even inside a UTF-8 character).
    pub fn txt(&self, name: &str, text: &str) {
        let strings = text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect();
        self.txt_records(name, vec![strings]);
    }

    /// TXT records for `_grpc_config.name`, each a list of raw strings.
    pub fn txt_records(&self, name: &str, records: Vec<Vec<Vec<u8>>>) {
        self.set(
            &format!("_grpc_config.{name}"),
            RecordType::TXT,
            Ans::TxtBytes(records),
        );
    }

    /// Questions of `kind` seen, over `transport` ("udp"/"tcp") or either
    /// (`None`).
    pub fn count<'a>(&self, kind: RecordType, transport: impl Into<Option<&'a str>>) -> usize {
        let transport = transport.into();
        self.zone
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(k, _, t)| *k == kind && transport.is_none_or(|tr| tr == *t))
            .count()
    }

    pub fn server(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
