//! A scripted HTTP/2 server for the tests that replay gRPC-Go's wire
//! tables: it gathers `batch` complete requests (or waits 2 s), then writes
//! whatever the script makes of their stream ids, and repeats. Frames are
//! hand-encoded (`h2_frames`, which the including file declares). Included
//! with `#[path = "common/scripted_h2.rs"] mod scripted_h2;`.
#![allow(dead_code)]

use super::h2_frames::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub type Script = Arc<dyn Fn(&[u32]) -> Vec<u8> + Send + Sync>;

pub struct Server {
    pub addr: SocketAddr,
    pub stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Every request's header block (HEADERS payload, padding and priority
    /// removed; the client never needs CONTINUATION for these).
    pub blocks: Arc<Mutex<Vec<Vec<u8>>>>,
    pub thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        batch: usize,
        script: impl Fn(&[u32]) -> Vec<u8> + Send + Sync + 'static,
    ) -> Server {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let (st, acc, req, blk) = (
            stop.clone(),
            accepted.clone(),
            requests.clone(),
            blocks.clone(),
        );
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut conns = Vec::new();
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                match listener.accept() {
                    Ok((sock, _)) => {
                        acc.fetch_add(1, Ordering::AcqRel);
                        let (st, script, req, blk) =
                            (st.clone(), script.clone(), req.clone(), blk.clone());
                        conns.push(thread::spawn(move || {
                            let _ = serve(sock, batch, &script, &st, &req, &blk);
                        }));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
            st.store(true, Ordering::Release);
            for c in conns {
                let _ = c.join();
            }
        });
        Server {
            addr,
            stop,
            accepted,
            requests,
            blocks,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn serve(
    mut sock: TcpStream,
    batch: usize,
    script: &Script,
    stop: &AtomicBool,
    requests: &AtomicUsize,
    blocks: &Mutex<Vec<Vec<u8>>>,
) -> io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    sock.set_nodelay(true)?;
    // SETTINGS_HEADER_TABLE_SIZE 0: the client's encoder keeps no dynamic
    // table, so each request's block decodes on its own.
    sock.write_all(&frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0]))?;
    let mut buf = Vec::new();
    let mut preface = false;
    let mut pending: Vec<u32> = Vec::new();
    let mut first_at: Option<Instant> = None;
    let end = Instant::now() + Duration::from_secs(30);
    while !stop.load(Ordering::Acquire) && Instant::now() < end {
        // Parse what is buffered.
        loop {
            if !preface {
                if buf.len() >= 24 {
                    buf.drain(..24);
                    preface = true;
                    continue;
                }
                break;
            }
            if buf.len() < 9 {
                break;
            }
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let f = Frame {
                kind: buf[3],
                flags: buf[4],
                stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                payload: buf[9..9 + len].to_vec(),
            };
            buf.drain(..9 + len);
            if f.kind == HEADERS {
                let mut p = &f.payload[..];
                let mut pad = 0;
                if f.flags & 0x8 != 0 {
                    pad = p[0] as usize;
                    p = &p[1..];
                }
                if f.flags & 0x20 != 0 {
                    p = &p[5..];
                }
                blocks.lock().unwrap().push(p[..p.len() - pad].to_vec());
            }
            match f.kind {
                SETTINGS if f.flags & ACK == 0 => sock.write_all(&frame(SETTINGS, ACK, 0, &[]))?,
                PING if f.flags & ACK == 0 => sock.write_all(&frame(PING, ACK, 0, &f.payload))?,
                DATA if !f.payload.is_empty() => {
                    let n = (f.payload.len() as u32).to_be_bytes();
                    sock.write_all(&frame(WINDOW_UPDATE, 0, 0, &n))?;
                }
                _ => {}
            }
            if matches!(f.kind, HEADERS | DATA) && f.flags & END_STREAM != 0 {
                requests.fetch_add(1, Ordering::AcqRel);
                pending.push(f.stream);
                first_at.get_or_insert_with(Instant::now);
            }
        }
        let waited = first_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2));
        if !pending.is_empty() && (pending.len() >= batch || waited) {
            let out = script(&pending);
            sock.write_all(&out)?;
            pending.clear();
            first_at = None;
        }
        let mut tmp = [0u8; 16_384];
        match sock.read(&mut tmp) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
