//! Reading what a client's HPACK encoder sent (RFC 7541: the static and a
//! dynamic table, Huffman-coded strings), for the scripted test servers
//! that record request headers. Included with
//! `#[path = "common/hpack.rs"] mod hpack;`.
#![allow(dead_code)]

use std::collections::VecDeque;

#[path = "../../vendor/h2/src/hpack/huffman/table.rs"]
#[allow(dead_code)]
mod huffman_table;

pub fn huffman_decode(bits_in: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut code, mut len) = (0u32, 0u8);
    for byte in bits_in {
        for i in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> i) & 1);
            len += 1;
            if let Some(sym) = (0..256).find(|&s| {
                huffman_table::ENCODE_CODE_LENGTHS[s] == len
                    && huffman_table::ENCODE_CODES[s] == code
            }) {
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    out
}

const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[derive(Default)]
pub struct Hpack {
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Hpack {
    pub fn new() -> Hpack {
        Hpack {
            max: 4096,
            ..Default::default()
        }
    }

    fn entry(&self, idx: usize) -> (Vec<u8>, Vec<u8>) {
        assert!(idx > 0, "HPACK index 0");
        if idx <= STATIC.len() {
            let (n, v) = STATIC[idx - 1];
            return (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        self.dynamic
            .get(idx - STATIC.len() - 1)
            .cloned()
            .unwrap_or_else(|| panic!("HPACK index {idx} out of range"))
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let (n, v) = self.dynamic.pop_back().unwrap();
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn insert(&mut self, n: Vec<u8>, v: Vec<u8>) {
        self.size += n.len() + v.len() + 32;
        self.dynamic.push_front((n, v));
        self.evict();
    }

    pub fn int(b: &[u8], i: &mut usize, n: u32) -> usize {
        let max = (1usize << n) - 1;
        let mut v = usize::from(b[*i]) & max;
        *i += 1;
        if v < max {
            return v;
        }
        let mut shift = 0;
        loop {
            let c = b[*i];
            *i += 1;
            v += usize::from(c & 0x7f) << shift;
            shift += 7;
            if c & 0x80 == 0 {
                return v;
            }
        }
    }

    pub fn string(b: &[u8], i: &mut usize) -> Vec<u8> {
        let huff = b[*i] & 0x80 != 0;
        let len = Self::int(b, i, 7);
        let raw = &b[*i..*i + len];
        *i += len;
        if huff {
            huffman_decode(raw)
        } else {
            raw.to_vec()
        }
    }

    pub fn decode(&mut self, b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c & 0x80 != 0 {
                let idx = Self::int(b, &mut i, 7);
                out.push(self.entry(idx));
                continue;
            }
            if c & 0xe0 == 0x20 {
                self.max = Self::int(b, &mut i, 5);
                self.evict();
                continue;
            }
            let (prefix, index) = if c & 0x40 != 0 { (6, true) } else { (4, false) };
            let idx = Self::int(b, &mut i, prefix);
            let name = if idx == 0 {
                Self::string(b, &mut i)
            } else {
                self.entry(idx).0
            };
            let value = Self::string(b, &mut i);
            if index {
                self.insert(name.clone(), value.clone());
            }
            out.push((name, value));
        }
        out.into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), v))
            .collect()
    }
}

/// The literal fields with a literal name in one header block (what a
/// client's custom metadata and `grpc-timeout` are sent as), ignoring
/// indexed fields and the dynamic table.
pub fn literal_fields(b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        // Indexed field (1xxxxxxx) and table size update (001xxxxx): no
        // literal name. Literals: 01xxxxxx (6-bit index), 000xxxxx (4-bit).
        let prefix = if c & 0x80 != 0 {
            Hpack::int(b, &mut i, 7);
            continue;
        } else if c & 0x40 != 0 {
            6
        } else if c & 0x20 != 0 {
            Hpack::int(b, &mut i, 5);
            continue;
        } else {
            4
        };
        let index = Hpack::int(b, &mut i, prefix);
        let name = (index == 0).then(|| Hpack::string(b, &mut i));
        let value = Hpack::string(b, &mut i);
        if let Some(name) = name {
            out.push((
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
    }
    out
}
