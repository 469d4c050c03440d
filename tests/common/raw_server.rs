//! A raw TCP listener on 127.0.0.1 whose connections a closure handles
//! (say nothing, close at once, send SETTINGS and keep reading), recording
//! when each was accepted and ended: for tests of what a client does with
//! servers that never speak HTTP/2 properly. Shared by the suites that
//! `#[path]`-include it; each uses a part.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server saw of one accepted connection.
#[derive(Clone, Debug)]
pub struct Conn {
    pub accepted: Instant,
    /// When the handler returned (the server closed it, or saw it closed).
    pub ended: Option<Instant>,
    /// The client closed it (EOF / error seen while reading).
    pub client_closed: bool,
}

pub type Conns = Arc<Mutex<Vec<Conn>>>;

/// What the server does with connection `i`; returns true if the client
/// closed it.
pub type Behave = dyn Fn(TcpStream, usize, &AtomicBool) -> bool + Send + Sync;

/// A TCP listener on 127.0.0.1 whose connections `Behave` handles, each on
/// its own thread, recording when each was accepted and ended. Everything
/// ends within 30 s or when dropped.
pub struct Raw {
    pub addr: SocketAddr,
    pub conns: Conns,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<()>>,
}

impl Raw {
    pub fn start(
        behave: impl Fn(TcpStream, usize, &AtomicBool) -> bool + Send + Sync + 'static,
    ) -> Raw {
        Raw::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), behave)
    }

    pub fn start_on(
        listener: TcpListener,
        behave: impl Fn(TcpStream, usize, &AtomicBool) -> bool + Send + Sync + 'static,
    ) -> Raw {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Conns = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let behave: Arc<Behave> = Arc::new(behave);
        let (cs, st) = (conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            let mut threads = Vec::new();
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let now = Instant::now();
                        sock.set_nonblocking(false).unwrap();
                        let i = {
                            let mut g = cs.lock().unwrap();
                            g.push(Conn {
                                accepted: now,
                                ended: None,
                                client_closed: false,
                            });
                            g.len() - 1
                        };
                        let (b, st2, cs2) = (behave.clone(), st.clone(), cs.clone());
                        threads.push(std::thread::spawn(move || {
                            let by_client = b(sock, i, &st2);
                            let mut g = cs2.lock().unwrap();
                            g[i].ended = Some(Instant::now());
                            g[i].client_closed = by_client;
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            st.store(true, Ordering::Release);
            for t in threads {
                let _ = t.join();
            }
        });
        Raw {
            addr,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Connections whose handler returned (the server closed them).
    pub fn closed(&self) -> usize {
        self.conns().iter().filter(|c| c.ended.is_some()).count()
    }

    pub fn times(&self) -> Vec<Instant> {
        self.conns().iter().map(|c| c.accepted).collect()
    }

    pub fn wait_accepted(&self, n: usize, within: Duration) -> Vec<Instant> {
        let end = Instant::now() + within;
        while self.accepted() < n {
            assert!(
                Instant::now() < end,
                "only {} connection attempts in {within:?}",
                self.accepted()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        self.times()
    }

    pub fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An empty SETTINGS frame: the server's whole preface.
pub fn send_settings(sock: &mut TcpStream) {
    let _ = sock.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let _ = sock.flush();
}

/// Reads and discards until the peer closes (true), `stop`, or `until`
/// says so (false).
pub fn keep_reading(sock: &mut TcpStream, stop: &AtomicBool, until: impl Fn() -> bool) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Acquire) && !until() {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

pub fn silent(mut s: TcpStream, _: usize, stop: &AtomicBool) -> bool {
    keep_reading(&mut s, stop, || false)
}

pub fn close_at_once(s: TcpStream, _: usize, _: &AtomicBool) -> bool {
    drop(s);
    false
}

pub fn settings_and_keep(mut s: TcpStream, _: usize, stop: &AtomicBool) -> bool {
    send_settings(&mut s);
    keep_reading(&mut s, stop, || false)
}
