//! Its own binary so no other test opens files meanwhile: closing channels and
//! dropping the runtime gives back every socket and pipe.

use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn nothing_leaks_after_close() {
    let servers: Vec<TestServer> = (0..3)
        .map(|_| {
            TestServer::start(
                Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                ServerOptions::default(),
            )
            .unwrap()
        })
        .collect();
    let target = format!(
        "ipv4:{}",
        servers
            .iter()
            .map(|s| s.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let before = fds();
    let rt = Runtime::new().unwrap();
    let cfg = Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#);
    let opts = || ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    let a = Channel::new(&rt, &target, cfg, opts()).unwrap();
    let b = Channel::new(&rt, &target, cfg, opts()).unwrap();
    for ch in [&a, &b] {
        let mut r = ch.reader();
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        for _ in 0..30 {
            r.unary(
                "/echo.Echo/Unary",
                b"x",
                &CallOptions {
                    deadline,
                    wait_for_ready: Some(true),
                    ..Default::default()
                },
            )
            .unwrap();
        }
    }
    assert!(fds() >= before + 6, "six connections should be open");
    a.close();
    drop(a);
    drop(rt); // closes b too
    drop(b);
    // The in-process servers close their ends when they notice EOF, a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fds(), before, "sockets, epoll and waker fds all released");
}
