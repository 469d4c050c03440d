//! interop/server.py as child processes: real grpcio (gRPC C-core) backends.

use crate::common::Fleet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Python starts slowly (importing grpc), answers commands quickly.
const START: Duration = Duration::from_secs(30);
const REPLY: Duration = Duration::from_secs(10);

/// The venv interop/setup.sh makes, next to this build's target directory.
fn python() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let python = target.join("interop-venv/bin/python");
    assert!(
        python.exists(),
        "the interop tests need real gRPC servers and {} is missing: \
         run `bash interop/setup.sh` first (it installs grpcio into that venv)",
        python.display()
    );
    python
}

/// One test at a time: the timing assertions (deadlines, backoff) must not
/// compete with several Python servers starting on a small machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running interop/server.py; killed (and reaped) on drop.
pub struct PyServer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    ports: Vec<u16>,
}

impl PyServer {
    pub fn spawn(args: &[&str]) -> PyServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/server.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start interop/server.py");
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sink, mut pipe) = (stderr.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut server = PyServer {
            child,
            stdin,
            lines,
            stderr,
            ports: Vec::new(),
        };
        let ready = server.line(START, "READY");
        server.ports = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| server.fail(&format!("expected READY, got {ready:?}")))
            .split(' ')
            .map(|p| p.parse().unwrap())
            .collect();
        server
    }

    /// `n` plaintext echo + health backends.
    pub fn backends(n: usize) -> PyServer {
        PyServer::spawn(&["--count", &n.to_string()])
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    fn line(&mut self, wait: Duration, what: &str) -> String {
        match self.lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(_) => self.fail(&format!("no {what} from interop/server.py within {wait:?}")),
        }
    }

    /// From now on backend `i` attaches an ORCA load report to every echo
    /// response: this application utilization, qps and errors per second.
    pub fn orca(&mut self, i: usize, utilization: f64, qps: f64, eps: f64) {
        let port = self.ports[i];
        self.command(&format!("orca {port} {utilization} {qps} {eps}"));
    }

    fn fail(&mut self, why: &str) -> ! {
        let status = self.child.try_wait().ok().flatten();
        let stderr = self.stderr.lock().unwrap().clone();
        panic!("{why} (exit status {status:?}); its stderr:\n{stderr}");
    }

    /// Makes backend `i` fail every echo call UNAVAILABLE (`on`) or not.
    pub fn set_failing(&mut self, i: usize, on: bool) {
        let on = if on { "on" } else { "off" };
        self.command(&format!("failing {} {on}", self.ports[i]));
    }

    /// Backend `i` stops gracefully (grpcio's `server.stop(grace)`, not
    /// waited for): GOAWAY now, calls in flight cancelled after `grace`.
    pub fn stop_gracefully(&mut self, i: usize, grace: Duration) {
        let port = self.ports[i];
        self.command(&format!("stop {port} {}", grace.as_secs_f64()));
    }

    /// The most Delay and Sleep calls backend `i` has had in progress at once.
    pub fn peak(&mut self, i: usize) -> usize {
        let port = self.ports[i];
        self.number(&format!("peak {port}"))
    }

    /// How many Delay and Sleep calls backend `i` saw end (deadline, cancel)
    /// before their wait was over.
    pub fn ended_early(&mut self, i: usize) -> usize {
        let port = self.ports[i];
        self.number(&format!("ended {port}"))
    }

    fn number(&mut self, cmd: &str) -> usize {
        let reply = self.command(cmd);
        reply
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("{cmd:?} answered {reply:?}")))
    }

    /// Sends one control command and waits for its "OK"; returns what
    /// follows the "OK" (the number a query asked for).
    fn command(&mut self, cmd: &str) -> String {
        if writeln!(self.stdin, "{cmd}").is_err() {
            self.fail(&format!("cannot send {cmd:?}"));
        }
        let reply = self.line(REPLY, "reply");
        match reply.strip_prefix("OK") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => rest.trim().to_string(),
            _ => self.fail(&format!("{cmd:?} answered {reply:?}")),
        }
    }
}

impl Fleet for PyServer {
    fn addrs(&self) -> Vec<SocketAddr> {
        (0..self.ports.len()).map(|i| self.addr(i)).collect()
    }

    fn set_serving(&mut self, i: usize, serving: bool) {
        let on = if serving { "on" } else { "off" };
        self.command(&format!("serving {} {on}", self.ports[i]));
    }

    fn stop(&mut self, i: usize) {
        self.command(&format!("stop {}", self.ports[i]));
    }

    fn restart(&mut self, i: usize) {
        self.command(&format!("start {}", self.ports[i]));
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-{name}-{}-{}",
            std::process::id(),
            crate::common::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
