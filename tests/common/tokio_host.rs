//! A test server's host: a thread running a current-thread tokio runtime
//! that accepts on 127.0.0.1 and hands each connection to the caller's
//! async function (an h2 server, scripted per test file). Dropping the host
//! stops it: the runtime goes, and every connection with it. Included with
//! `#[path = "common/tokio_host.rs"] mod tokio_host;`.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;

pub struct Host {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    /// Listens on a free port; `serve(socket)` runs for every connection.
    pub fn start<F, Fut>(serve: F) -> Host
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        if let Ok((sock, _)) = listener.accept().await {
                            tokio::spawn(serve(sock));
                        }
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Host {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `ipv4:ADDR`, a target naming this host alone.
    pub fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
