//! Unit tests of the ABI. Numbers and layouts that are ABI: once released they never change meaning.

use crate::{sy_pick_decision, sy_pick_result, sy_state, sy_status, sy_status_str};
use std::ffi::CStr;
use std::mem::{align_of, size_of};

#[test]
fn status_numbers_are_frozen() {
    use sy_status::*;
    let frozen = [
        (SY_OK, 0),
        (SY_NULL_PARAMETER, 1),
        (SY_INVALID_ARGUMENT, 2),
        (SY_INVALID_UTF8, 3),
        (SY_INVALID_SERVICE_CONFIG, 4),
        (SY_INVALID_TARGET, 5),
        (SY_NOT_FOUND, 6),
        (SY_WRONG_CONTEXT, 7),
        (SY_CLOSED, 100),
        (SY_RUNTIME_GONE, 101),
        (SY_TIMEOUT, 102),
        (SY_IO, 103),
        (SY_NO_SUBCHANNEL, 200),
        (SY_UNAVAILABLE, 201),
        (SY_DROPPED, 202),
        (SY_DEADLINE_EXCEEDED, 203),
        (SY_RPC_FAILED, 204),
        (SY_PANIC, 900),
    ];
    assert_eq!(
        frozen.len(),
        sy_status::ALL.len(),
        "a new code needs freezing here"
    );
    for (s, n) in frozen {
        assert_eq!(s as u32, n, "{s:?}");
        // SAFETY: sy_status_str returns a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(sy_status_str(n)) }
            .to_str()
            .unwrap();
        assert_eq!(name, format!("{s:?}"));
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(sy_status_str(12345)) };
    assert_eq!(unknown.to_str().unwrap(), "SY_UNKNOWN_STATUS");
}

#[test]
fn state_and_decision_numbers_are_frozen() {
    use sy_pick_decision::*;
    use sy_state::*;
    assert_eq!(
        [
            SY_STATE_IDLE as u32,
            SY_STATE_CONNECTING as u32,
            SY_STATE_READY as u32,
            SY_STATE_TRANSIENT_FAILURE as u32,
            SY_STATE_SHUTDOWN as u32
        ],
        [0, 1, 2, 3, 4]
    );
    assert_eq!(
        [
            SY_PICK_COMPLETE as u32,
            SY_PICK_QUEUE as u32,
            SY_PICK_FAIL as u32,
            SY_PICK_DROP as u32
        ],
        [0, 1, 2, 3]
    );
}

mod pick_token;

#[test]
fn pick_result_layout_is_frozen() {
    // 64-bit targets: id, address, len, user_data, 7 token words (the
    // subchannel, two chained done hooks of two words each, the
    // subchannel's slot, the hold).
    if size_of::<usize>() == 8 {
        assert_eq!(size_of::<sy_pick_result>(), 88);
    }
    assert_eq!(align_of::<sy_pick_result>(), 8);
}

mod tls {
    //! TLS settings from `sy_channel_options` reach the managed transport:
    //! a server whose certificate a private CA signed is trusted with that CA
    //! as roots (and the right server name), and not with the bundled roots.

    use crate::*;
    use std::ptr;
    use switchyard_testserver::{Listen, ServerOptions, TestPki, TestServer};

    pub(super) fn ok(s: sy_status) {
        assert_eq!(s, sy_status::SY_OK, "{}", last_error());
    }

    const METHOD: &str = "/echo.Echo/Unary";

    pub(super) fn last_error() -> String {
        let mut buf = vec![0u8; 512];
        let n = sy_last_error(buf.as_mut_ptr().cast(), buf.len());
        buf.truncate(n.min(511));
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// One call (a 5 s deadline) on `ch` through a reader of its own: the
    /// status, the gRPC code and the response body.
    pub(super) fn call_once(ch: *mut sy_channel) -> (sy_status, u32, Vec<u8>) {
        let mut r = ptr::null_mut();
        ok(sy_reader_new(ch, &mut r));
        let mut resp = ptr::null_mut();
        let opts = sy_call_options {
            timeout_ms: 5000,
            has_timeout: true,
            ..Default::default()
        };
        let st = sy_call_unary(
            r,
            METHOD.as_ptr().cast(),
            METHOD.len(),
            b"hi".as_ptr(),
            2,
            &opts,
            &mut resp,
        );
        let code = if st == sy_status::SY_OK {
            0
        } else {
            sy_last_grpc_code()
        };
        let body = if resp.is_null() {
            Vec::new()
        } else {
            // SAFETY: a live buffer of sy_buffer_len bytes.
            unsafe { std::slice::from_raw_parts(sy_buffer_data(resp), sy_buffer_len(resp)) }
                .to_vec()
        };
        sy_buffer_free(resp);
        sy_reader_free(r);
        (st, code, body)
    }

    /// One call through a fresh channel with `setup` applied to its options.
    pub(super) fn call(
        port: u16,
        setup: impl FnOnce(*mut sy_channel_options),
    ) -> (sy_status, u32, Vec<u8>) {
        let mut rt = ptr::null_mut();
        ok(sy_runtime_new(&mut rt));
        let mut o = ptr::null_mut();
        ok(sy_channel_options_new(&mut o));
        setup(o);
        let target = std::ffi::CString::new(format!("127.0.0.1:{port}")).unwrap();
        let mut ch = ptr::null_mut();
        ok(sy_channel_new_with_options(
            rt,
            target.as_ptr(),
            ptr::null(),
            o,
            ptr::null(),
            None,
            ptr::null_mut(),
            None,
            &mut ch,
        ));
        sy_channel_options_free(o);
        let out = call_once(ch);
        sy_channel_free(ch);
        sy_runtime_free(rt);
        out
    }

    /// One call through the short path (`sy_channel_new_simple`) with
    /// options `o`, which this frees.
    pub(super) fn simple_call(port: u16, o: *mut sy_channel_options) -> (sy_status, u32, Vec<u8>) {
        let mut rt = ptr::null_mut();
        ok(sy_runtime_new(&mut rt));
        let target = std::ffi::CString::new(format!("127.0.0.1:{port}")).unwrap();
        let mut ch = ptr::null_mut();
        ok(sy_channel_new_simple(
            rt,
            target.as_ptr(),
            ptr::null(),
            o,
            &mut ch,
        ));
        sy_channel_options_free(o);
        let out = call_once(ch);
        sy_channel_free(ch);
        sy_runtime_free(rt);
        out
    }

    /// The one-call builders set what their names say: `_new_tls` with a
    /// private CA reaches a TLS server (and without roots, the bundled ones
    /// do not trust it); `_new_insecure` reaches a plaintext one.
    #[test]
    #[cfg_attr(miri, ignore = "real sockets and TLS (ring's C): not under Miri")]
    fn one_call_options_builders() {
        let pki = TestPki::new();
        let tls = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions {
                tls: Some(pki.server_tls(&[b"h2"])),
                ..Default::default()
            },
        )
        .unwrap();
        let mut o = ptr::null_mut();
        ok(sy_channel_options_new_tls(
            pki.ca_pem.as_ptr(),
            pki.ca_pem.len(),
            &mut o,
        ));
        ok(sy_channel_options_set_tls_server_name(
            o,
            c"localhost".as_ptr(),
        ));
        let (st, _, body) = simple_call(tls.port(), o);
        assert_eq!(st, sy_status::SY_OK, "{}", last_error());
        assert!(body.starts_with(b"hi|port="), "{body:?}");

        let mut o = ptr::null_mut();
        ok(sy_channel_options_new_tls(ptr::null(), 0, &mut o));
        let (st, code, _) = simple_call(tls.port(), o);
        assert_eq!(
            (st, code),
            (sy_status::SY_RPC_FAILED, 14),
            "{}",
            last_error()
        );
        tls.stop();

        let plain = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let mut o = ptr::null_mut();
        ok(sy_channel_options_new_insecure(&mut o));
        let (st, _, body) = simple_call(plain.port(), o);
        assert_eq!(st, sy_status::SY_OK, "{}", last_error());
        assert!(body.starts_with(b"hi|port="), "{body:?}");
        plain.stop();
    }

    /// `sy_channel_new_insecure` is the plaintext channel in one call: it
    /// reaches a plaintext server with the service config's policy, and
    /// refuses bad input without writing `*out`.
    #[test]
    #[cfg_attr(miri, ignore = "real sockets and TLS (ring's C): not under Miri")]
    fn insecure_channel_in_one_call() {
        let plain = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let mut rt = ptr::null_mut();
        ok(sy_runtime_new(&mut rt));
        let target = std::ffi::CString::new(format!("ipv4:127.0.0.1:{}", plain.port())).unwrap();
        let config = c"{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
        let mut ch = ptr::null_mut();
        ok(sy_channel_new_insecure(
            rt,
            target.as_ptr(),
            config.as_ptr(),
            &mut ch,
        ));
        let (st, _, body) = call_once(ch);
        assert_eq!(st, sy_status::SY_OK, "{}", last_error());
        assert!(body.starts_with(b"hi|port="), "{body:?}");
        let mut json = ptr::null_mut();
        ok(sy_channel_snapshot_json(ch, &mut json, ptr::null_mut()));
        // SAFETY: a NUL-terminated string from sy_channel_snapshot_json.
        let snapshot = unsafe { std::ffi::CStr::from_ptr(json) }
            .to_string_lossy()
            .into_owned();
        sy_snapshot_json_free(json);
        assert!(
            snapshot.contains("\"policy\":\"round_robin\""),
            "{snapshot}"
        );
        sy_channel_free(ch);
        plain.stop();

        // Bad input: refused, `*out` untouched.
        let sentinel = ptr::NonNull::<sy_channel>::dangling().as_ptr();
        let mut out = sentinel;
        let bad_utf8 = c"\xff\xfe";
        for (rt, target, want) in [
            (ptr::null(), target.as_ptr(), sy_status::SY_NULL_PARAMETER),
            (rt.cast_const(), ptr::null(), sy_status::SY_NULL_PARAMETER),
            (
                rt.cast_const(),
                bad_utf8.as_ptr(),
                sy_status::SY_INVALID_UTF8,
            ),
            (
                rt.cast_const(),
                c"nope:///x".as_ptr(),
                sy_status::SY_INVALID_TARGET,
            ),
        ] {
            assert_eq!(
                sy_channel_new_insecure(rt, target, config.as_ptr(), &mut out),
                want,
                "{}",
                last_error()
            );
            assert_eq!(out, sentinel);
        }
        assert_eq!(
            sy_channel_new_insecure(rt, target.as_ptr(), config.as_ptr(), ptr::null_mut()),
            sy_status::SY_NULL_PARAMETER
        );
        sy_runtime_free(rt);
    }

    /// Durations from C up to u64::MAX ms are either refused when set or
    /// harmless: never an overflow (a panic) on the loop when connecting.
    #[test]
    #[cfg_attr(miri, ignore = "real sockets and TLS (ring's C): not under Miri")]
    fn extreme_durations_do_not_break_the_channel() {
        let server = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let huge = u64::MAX;
        for (time, timeout) in [(huge, huge), (huge, 0), (1, huge), (huge / 2, huge / 2)] {
            let (st, _, body) = call(server.port(), |o| {
                ok(sy_channel_options_set_insecure(o, true));
                let s = sy_channel_options_set_keepalive(o, time, timeout, true);
                assert!(
                    matches!(s, sy_status::SY_OK | sy_status::SY_INVALID_ARGUMENT),
                    "{s:?}"
                );
                let s = sy_channel_options_set_backoff(o, huge, huge, huge);
                assert!(
                    matches!(s, sy_status::SY_OK | sy_status::SY_INVALID_ARGUMENT),
                    "{s:?}"
                );
            });
            assert_eq!(
                st,
                sy_status::SY_OK,
                "keepalive {time}/{timeout}: {}",
                last_error()
            );
            assert!(body.starts_with(b"hi|port="), "{body:?}");
        }
        server.stop();
    }

    #[test]
    #[cfg_attr(miri, ignore = "real sockets and TLS (ring's C): not under Miri")]
    fn roots_and_server_name_from_options() {
        let pki = TestPki::new();
        let server = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions {
                tls: Some(pki.server_tls(&[b"h2"])),
                ..Default::default()
            },
        )
        .unwrap();
        let port = server.port();

        let (st, _, body) = call(port, |o| {
            ok(sy_channel_options_set_tls_roots_pem(
                o,
                pki.ca_pem.as_ptr(),
                pki.ca_pem.len(),
            ));
            ok(sy_channel_options_set_tls_server_name(
                o,
                c"localhost".as_ptr(),
            ));
        });
        assert_eq!(st, sy_status::SY_OK, "{}", last_error());
        assert!(body.starts_with(b"hi|port="), "{body:?}");

        // The certificate names "localhost", not "127.0.0.1".
        let (st, code, _) = call(port, |o| {
            ok(sy_channel_options_set_tls_roots_pem(
                o,
                pki.ca_pem.as_ptr(),
                pki.ca_pem.len(),
            ));
        });
        assert_eq!(
            (st, code),
            (sy_status::SY_RPC_FAILED, 14),
            "{}",
            last_error()
        );

        // Default options: the bundled roots do not know the private CA.
        let (st, code, _) = call(port, |_| {});
        assert_eq!(
            (st, code),
            (sy_status::SY_RPC_FAILED, 14),
            "{}",
            last_error()
        );

        // Plaintext to a TLS server fails too.
        let (st, _, _) = call(port, |o| ok(sy_channel_options_set_insecure(o, true)));
        assert_eq!(st, sy_status::SY_RPC_FAILED);
        server.stop();
    }

    /// Credentials that do not match the server's (TLS to a plaintext
    /// server, plaintext to a TLS one) fail with an error that names the
    /// likely cause, not just a TLS or HTTP/2 parse error.
    #[test]
    #[cfg_attr(miri, ignore = "real sockets and TLS (ring's C): not under Miri")]
    fn credentials_mismatch_names_the_likely_cause() {
        let plain = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let (st, code, _) = call(plain.port(), |_| {});
        let err = last_error();
        assert_eq!((st, code), (sy_status::SY_RPC_FAILED, 14), "{err}");
        assert!(
            err.contains("the server answered in plaintext") && err.contains("insecure"),
            "{err}"
        );
        plain.stop();

        let pki = TestPki::new();
        let tls = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions {
                tls: Some(pki.server_tls(&[b"h2"])),
                ..Default::default()
            },
        )
        .unwrap();
        let (st, code, _) = call(tls.port(), |o| ok(sy_channel_options_set_insecure(o, true)));
        let err = last_error();
        assert_eq!((st, code), (sy_status::SY_RPC_FAILED, 14), "{err}");
        assert!(
            err.contains("the server answered in TLS") && err.contains("TLS credentials"),
            "{err}"
        );
        tls.stop();
    }
}

/// The size limits set through `sy_channel_options` reach the calls: a
/// reply over the receive limit fails with RESOURCE_EXHAUSTED, one over the
/// header list limit with INTERNAL, and the defaults let both through.
#[test]
fn size_limits_from_options() {
    use crate::*;
    use switchyard_testserver::{Listen, ServerOptions, TestServer};
    let server = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap();
    let port = server.port();
    let insecure = |o| tls::ok(sy_channel_options_set_insecure(o, true));

    let (st, code, body) = tls::call(port, insecure);
    assert_eq!((st, code), (sy_status::SY_OK, 0), "{}", tls::last_error());
    // The echo answers "hi|port=N": more than 8 bytes.
    assert!(body.len() > 8, "{body:?}");
    let (st, code, _) = tls::call(port, |o| {
        insecure(o);
        tls::ok(sy_channel_options_set_max_recv_message_size(o, 8));
    });
    assert_eq!(
        (st, code),
        (sy_status::SY_RPC_FAILED, 8),
        "{}",
        tls::last_error()
    );
    // The response headers alone (":status", content-type) exceed 40 bytes.
    let (st, code, _) = tls::call(port, |o| {
        insecure(o);
        tls::ok(sy_channel_options_set_max_header_list_size(o, 40));
    });
    assert_eq!(
        (st, code),
        (sy_status::SY_RPC_FAILED, 13),
        "{}",
        tls::last_error()
    );
    // 0 restores the defaults.
    let (st, code, _) = tls::call(port, |o| {
        insecure(o);
        tls::ok(sy_channel_options_set_max_recv_message_size(o, 8));
        tls::ok(sy_channel_options_set_max_recv_message_size(o, 0));
        tls::ok(sy_channel_options_set_max_header_list_size(o, 40));
        tls::ok(sy_channel_options_set_max_header_list_size(o, 0));
    });
    assert_eq!((st, code), (sy_status::SY_OK, 0), "{}", tls::last_error());
    server.stop();

    let mut o = std::ptr::null_mut();
    tls::ok(sy_channel_options_new(&mut o));
    if usize::BITS > 32 {
        assert_eq!(
            sy_channel_options_set_max_recv_message_size(o, u32::MAX as usize + 1),
            sy_status::SY_INVALID_ARGUMENT
        );
    }
    assert_eq!(
        sy_channel_options_set_max_recv_message_size(std::ptr::null_mut(), 1),
        sy_status::SY_NULL_PARAMETER
    );
    assert_eq!(
        sy_channel_options_set_max_header_list_size(std::ptr::null_mut(), 1),
        sy_status::SY_NULL_PARAMETER
    );
    sy_channel_options_free(o);
}

/// The authority set through `sy_channel_options` is what the server sees;
/// the new setters refuse bad input and change nothing then.
#[test]
fn authority_idle_and_dns_options() {
    use crate::*;
    use switchyard_testserver::{Listen, ServerOptions, TestServer};
    let server = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap();
    let port = server.port();
    let (st, _, _) = tls::call(port, |o| {
        tls::ok(sy_channel_options_set_insecure(o, true));
        tls::ok(sy_channel_options_set_authority(
            o,
            c"api.example.com:443".as_ptr(),
        ));
        tls::ok(sy_channel_options_set_idle_timeout(o, 0));
        tls::ok(sy_channel_options_set_dns_service_config(o, 1));
        tls::ok(sy_channel_options_set_resolver_service_config(o, 0));
        tls::ok(sy_channel_options_set_health_checking(o, 0));
        tls::ok(sy_channel_options_set_retries(o, 0));
        tls::ok(sy_channel_options_set_min_resolution_interval(o, 50));
    });
    assert_eq!(st, sy_status::SY_OK, "{}", tls::last_error());
    assert_eq!(
        server.last_authority().as_deref(),
        Some("api.example.com:443")
    );
    // "" restores the target's own.
    let (st, _, _) = tls::call(port, |o| {
        tls::ok(sy_channel_options_set_insecure(o, true));
        tls::ok(sy_channel_options_set_authority(o, c"x.test".as_ptr()));
        tls::ok(sy_channel_options_set_authority(o, c"".as_ptr()));
    });
    assert_eq!(st, sy_status::SY_OK, "{}", tls::last_error());
    assert_eq!(server.last_authority(), Some(format!("127.0.0.1:{port}")));
    server.stop();

    let mut o = std::ptr::null_mut();
    tls::ok(sy_channel_options_new(&mut o));
    for bad in [c"two words", c"a/b", c"a,b"] {
        assert_eq!(
            sy_channel_options_set_authority(o, bad.as_ptr()),
            sy_status::SY_INVALID_ARGUMENT
        );
    }
    assert_eq!(
        sy_channel_options_set_authority(o, std::ptr::null()),
        sy_status::SY_NULL_PARAMETER
    );
    assert_eq!(
        sy_channel_options_set_min_resolution_interval(o, 0),
        sy_status::SY_INVALID_ARGUMENT
    );
    assert_eq!(
        sy_channel_options_set_idle_timeout(std::ptr::null_mut(), 1),
        sy_status::SY_NULL_PARAMETER
    );
    assert_eq!(
        sy_channel_options_set_dns_service_config(std::ptr::null_mut(), 1),
        sy_status::SY_NULL_PARAMETER
    );
    assert_eq!(
        sy_channel_options_set_resolver_service_config(std::ptr::null_mut(), 1),
        sy_status::SY_NULL_PARAMETER
    );
    assert_eq!(
        sy_channel_options_set_retries(std::ptr::null_mut(), 1),
        sy_status::SY_NULL_PARAMETER
    );
    sy_channel_options_free(o);
}

#[test]
fn pick_error_code_is_its_status_code() {
    use switchyard::{Code, PickError, Status};
    for e in [
        PickError::NoSubConnAvailable,
        PickError::Unavailable(Status::unavailable("down")),
        PickError::Dropped(Status::new(Code::ResourceExhausted, "shed")),
        PickError::DeadlineExceeded("waited".into()),
        PickError::Closed,
    ] {
        assert_eq!(e.code(), e.status().code(), "{e}");
    }
}

#[test]
fn state_and_code_names() {
    use switchyard::{Code, ConnectivityState};
    for n in 0..5u32 {
        let s = ConnectivityState::from_u8(n as u8).unwrap();
        // SAFETY: sy_state_str returns a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(crate::sy_state_str(n)) };
        assert_eq!(name.to_str().unwrap(), s.as_str());
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(crate::sy_state_str(5)) };
    assert_eq!(unknown.to_str().unwrap(), "UNKNOWN");
    let names = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    for (n, name) in names.iter().enumerate() {
        assert_eq!(Code::from_u32(n as u32).unwrap().name(), *name);
    }
}

mod lengths {
    //! Lengths from C are checked before they are trusted: a length no object
    //! can have (a negative number converted to `size_t`) is
    //! SY_INVALID_ARGUMENT, never a slice over it (which aborted a debug
    //! build inside `sy_pick` and read out of bounds in release).

    use crate::callback::sy_host_transport;
    use crate::*;
    use std::ffi::{c_char, c_void};
    use std::ptr;

    extern "C" fn no_transport(_: *mut c_void, _: u64, _: *const c_char, _: usize, _: *mut c_void) {
    }

    /// A host transport that does nothing.
    fn no_host() -> sy_host_transport {
        sy_host_transport {
            ctx: ptr::null_mut(),
            create: None,
            connect: Some(no_transport),
            shutdown: Some(no_transport),
            health: None,
        }
    }

    /// A transport setting set, even to its default's value, is refused
    /// for a host channel (the header: for library-managed channels only);
    /// 0 (unset) is not.
    #[test]
    fn a_host_channel_refuses_a_header_list_limit_set_to_any_value() {
        let mut rt = ptr::null_mut();
        assert_eq!(sy_runtime_new(&mut rt), sy_status::SY_OK);
        let host = no_host();
        for (bytes, want) in [
            (16 << 20, sy_status::SY_INVALID_ARGUMENT),
            (1000, sy_status::SY_INVALID_ARGUMENT),
            (0, sy_status::SY_OK),
        ] {
            let mut o = ptr::null_mut();
            assert_eq!(sy_channel_options_new(&mut o), sy_status::SY_OK);
            assert_eq!(
                sy_channel_options_set_max_header_list_size(o, bytes),
                sy_status::SY_OK
            );
            let mut ch = ptr::null_mut();
            let st = sy_channel_new_with_options(
                rt,
                c"".as_ptr(),
                ptr::null(),
                o,
                &host,
                None,
                ptr::null_mut(),
                None,
                &mut ch,
            );
            assert_eq!(st, want, "{bytes} bytes");
            sy_channel_free(ch);
            sy_channel_options_free(o);
        }
        sy_runtime_free(rt);
    }

    #[test]
    fn sy_pick_refuses_a_method_length_no_object_has() {
        let mut rt = ptr::null_mut();
        assert_eq!(sy_runtime_new(&mut rt), sy_status::SY_OK);
        let host = no_host();
        let mut ch = ptr::null_mut();
        let st = sy_channel_new(
            rt,
            c"".as_ptr(),
            ptr::null(),
            &host,
            None,
            ptr::null_mut(),
            None,
            &mut ch,
        );
        assert_eq!(st, sy_status::SY_OK);
        let mut reader = ptr::null_mut();
        assert_eq!(sy_reader_new(ch, &mut reader), sy_status::SY_OK);
        let method = c"x".as_ptr();
        for len in [usize::MAX, isize::MAX as usize + 1] {
            for timeout_ms in [0, 50] {
                // SAFETY: zeroed is a valid (never picked) result.
                let mut out: sy_pick_result = unsafe { std::mem::zeroed() };
                out.subchannel_id = 77;
                let st = sy_pick(reader, method, len, ptr::null(), timeout_ms, true, &mut out);
                assert_eq!(st, sy_status::SY_INVALID_ARGUMENT, "len {len}");
                assert_eq!(sy_last_status(), sy_status::SY_INVALID_ARGUMENT as u32);
                assert_eq!(out.subchannel_id, 77, "out written on failure");
            }
        }
        // A real length still goes through (nothing to pick yet).
        // SAFETY: as above.
        let mut out: sy_pick_result = unsafe { std::mem::zeroed() };
        assert_eq!(
            sy_pick(reader, method, 1, ptr::null(), 0, false, &mut out),
            sy_status::SY_NO_SUBCHANNEL
        );
        sy_reader_free(reader);
        sy_channel_free(ch);
        sy_runtime_free(rt);
    }
}

mod reentry {
    //! A C policy's pick callback that calls back into the reader running it
    //! is refused with SY_WRONG_CONTEXT and changes nothing: it used to move
    //! the reader to a newer picker and free the one still running, or free
    //! the epoch that the outer pick's done then wrote.

    use crate::callback::sy_host_transport;
    use crate::*;
    use std::ffi::{c_char, c_void};
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
    use std::sync::Mutex;

    static VICTIM: AtomicPtr<sy_reader> = AtomicPtr::new(ptr::null_mut());
    /// Another reader of the channel, holding a kept pick.
    static OTHER: AtomicPtr<sy_reader> = AtomicPtr::new(ptr::null_mut());
    static SEEN: Mutex<Vec<sy_status>> = Mutex::new(Vec::new());
    static CONNECTED: AtomicU64 = AtomicU64::new(0);

    unsafe extern "C" fn pick(_: *mut c_void, _: *const sy_pick_args, out: *mut usize) -> u32 {
        let v = VICTIM.swap(ptr::null_mut(), Ordering::SeqCst);
        if !v.is_null() {
            // SAFETY: zeroed is a valid (never picked) result.
            let mut res: sy_pick_result = unsafe { std::mem::zeroed() };
            let method = c"/pkg.Svc/M";
            let mut seen = vec![
                sy_pick(v, ptr::null(), 0, ptr::null(), 0, false, &mut res),
                sy_pick(v, method.as_ptr(), 10, ptr::null(), 0, false, &mut res),
                sy_pick(v, ptr::null(), 0, ptr::null(), 10, true, &mut res),
                sy_reader_refresh(v),
            ];
            // The reader's kept-pick calls, with and without an outcome.
            let mut kept = std::mem::MaybeUninit::<sy_borrowed_pick>::uninit();
            let done = sy_outcome {
                grpc_code: 0,
                latency_ns: 0,
                metrics: ptr::null(),
                metrics_len: 0,
            };
            seen.push(sy_reader_next(
                v,
                ptr::null(),
                ptr::null(),
                kept.as_mut_ptr(),
            ));
            seen.push(sy_reader_next(v, &done, ptr::null(), kept.as_mut_ptr()));
            // A waiting pick on another reader: refused before its
            // outcome is reported (its kept pick is still there after).
            let waiting = sy_pick_request {
                method: ptr::null(),
                method_len: 0,
                request_hash: 0,
                has_request_hash: false,
                wait_for_ready: true,
                timeout_ms: 10,
            };
            let other = OTHER.load(Ordering::SeqCst);
            seen.push(sy_reader_next(other, &done, &waiting, kept.as_mut_ptr()));
            sy_reader_free(v);
            seen.push(sy_status::from_u32(sy_last_status()).unwrap());
            // SAFETY: zeroed above, and a refused pick writes nothing.
            let token = unsafe { res._token.assume_init() };
            assert_eq!(token, [0; SY_PICK_TOKEN_WORDS], "written on failure");
            SEEN.lock().unwrap().extend(seen);
        }
        // SAFETY: the library's out-parameter.
        unsafe { out.write(0) };
        sy_pick_decision::SY_PICK_COMPLETE as u32
    }

    extern "C" fn build(_: *mut c_void) -> *mut c_void {
        ptr::null_mut()
    }

    extern "C" fn update_addresses(
        _: *mut c_void,
        cc: *mut sy_cc,
        _: *const sy_address,
        len: usize,
    ) -> bool {
        assert_eq!(len, 1);
        let mut id = 0;
        assert_eq!(sy_cc_new_subconn(cc, 0, &mut id), sy_status::SY_OK);
        assert_eq!(sy_cc_connect(cc, id), sy_status::SY_OK);
        true
    }

    extern "C" fn subchannel_state(
        _: *mut c_void,
        cc: *mut sy_cc,
        id: u64,
        state: u32,
        _: *const c_char,
    ) {
        if state != sy_state::SY_STATE_READY as u32 {
            return;
        }
        let picker = sy_picker {
            ctx: ptr::null_mut(),
            pick: Some(pick),
            done: None,
            free: None,
            subchannels: &id,
            subchannels_len: 1,
            error_code: 0,
            error_message: ptr::null(),
            done_info: None,
        };
        assert_eq!(sy_cc_update_state(cc, state, &picker), sy_status::SY_OK);
    }

    extern "C" fn connect(_: *mut c_void, id: u64, _: *const c_char, _: usize, _: *mut c_void) {
        CONNECTED.store(id, Ordering::SeqCst);
    }

    extern "C" fn shutdown(_: *mut c_void, _: u64, _: *const c_char, _: usize, _: *mut c_void) {}

    #[test]
    fn a_pick_callback_cannot_use_its_own_reader() {
        let cbs = sy_balancer_callbacks {
            build: Some(build),
            update_addresses: Some(update_addresses),
            subchannel_state: Some(subchannel_state),
            resolver_error: None,
            exit_idle: None,
            close: None,
            free_builder: None,
        };
        assert_eq!(
            sy_balancer_register(c"rust_reentry_probe".as_ptr(), &cbs, ptr::null_mut()),
            sy_status::SY_OK
        );
        let mut rt = ptr::null_mut();
        assert_eq!(sy_runtime_new(&mut rt), sy_status::SY_OK);
        let host = sy_host_transport {
            ctx: ptr::null_mut(),
            create: None,
            connect: Some(connect),
            shutdown: Some(shutdown),
            health: None,
        };
        let config = cr#"{"loadBalancingConfig":[{"rust_reentry_probe":{}}]}"#;
        let mut ch = ptr::null_mut();
        let st = sy_channel_new(
            rt,
            c"".as_ptr(),
            config.as_ptr(),
            &host,
            None,
            ptr::null_mut(),
            None,
            &mut ch,
        );
        assert_eq!(st, sy_status::SY_OK);
        let addr = sy_address {
            address: c"127.0.0.1:9".as_ptr(),
            weight: 0,
            user_data: ptr::null_mut(),
        };
        assert_eq!(sy_channel_update_addresses(ch, &addr, 1), sy_status::SY_OK);
        assert_eq!(sy_channel_sync(ch), sy_status::SY_OK);
        let id = CONNECTED.load(Ordering::SeqCst);
        assert_ne!(id, 0, "the policy connected its subchannel");
        let ready = sy_state::SY_STATE_READY as u32;
        assert_eq!(
            sy_channel_report_subconn_state(ch, id, ready, ptr::null()),
            sy_status::SY_OK
        );
        assert_eq!(sy_channel_sync(ch), sy_status::SY_OK);

        let mut other = ptr::null_mut();
        assert_eq!(sy_reader_new(ch, &mut other), sy_status::SY_OK);
        let mut kept = std::mem::MaybeUninit::<sy_borrowed_pick>::uninit();
        assert_eq!(
            sy_reader_pick(other, ptr::null(), kept.as_mut_ptr()),
            sy_status::SY_OK
        );
        OTHER.store(other, Ordering::SeqCst);
        let mut reader = ptr::null_mut();
        assert_eq!(sy_reader_new(ch, &mut reader), sy_status::SY_OK);
        VICTIM.store(reader, Ordering::SeqCst);
        // SAFETY: zeroed is a valid (never picked) result.
        let mut res: sy_pick_result = unsafe { std::mem::zeroed() };
        assert_eq!(
            sy_pick(reader, ptr::null(), 0, ptr::null(), 0, false, &mut res),
            sy_status::SY_OK
        );
        assert_eq!(
            *SEEN.lock().unwrap(),
            [sy_status::SY_WRONG_CONTEXT; 8],
            "pick, pick with a method, waiting pick, refresh, next, next with an outcome, \
             another reader's waiting next, free"
        );
        assert_eq!(res.subchannel_id, id);
        assert_eq!(
            sy_pick_done(&mut res, 0, 1, ptr::null(), 0),
            sy_status::SY_OK
        );
        // Untouched by the refused calls: still a working reader.
        assert_eq!(
            sy_pick(reader, ptr::null(), 0, ptr::null(), 0, false, &mut res),
            sy_status::SY_OK
        );
        assert_eq!(
            sy_pick_done(&mut res, 0, 1, ptr::null(), 0),
            sy_status::SY_OK
        );
        sy_reader_free(reader);
        // The other reader's kept pick was not finished by the refused call.
        assert_eq!(
            sy_reader_done(other, 0, 1, ptr::null(), 0),
            sy_status::SY_OK
        );
        sy_reader_free(other);
        sy_channel_free(ch);
        sy_runtime_free(rt);
    }
}

/// `SY_NO_WAIT` (0) and `SY_WAIT_FOREVER` mean the same in `sy_pick` and
/// `sy_channel_wait_for_state_change` as in the calls: no wait at all, and
/// no limit.
#[test]
fn no_wait_and_wait_forever_in_picks_and_state_waits() {
    use crate::*;
    use std::ptr;
    use switchyard_testserver::{Listen, ServerOptions, TestServer};
    use tls::ok;

    let channel_to = |rt, port: u16| {
        let mut o = ptr::null_mut();
        ok(sy_channel_options_new_insecure(&mut o));
        let target = std::ffi::CString::new(format!("127.0.0.1:{port}")).unwrap();
        let mut ch = ptr::null_mut();
        ok(sy_channel_new_simple(
            rt,
            target.as_ptr(),
            ptr::null(),
            o,
            &mut ch,
        ));
        sy_channel_options_free(o);
        let mut r = ptr::null_mut();
        ok(sy_reader_new(ch, &mut r));
        (ch, r)
    };
    let pick = |r, timeout_ms| {
        let mut out = std::mem::MaybeUninit::<sy_pick_result>::zeroed();
        let st = sy_pick(
            r,
            ptr::null(),
            0,
            ptr::null(),
            timeout_ms,
            false,
            out.as_mut_ptr(),
        );
        if st == sy_status::SY_OK {
            // SAFETY: written on SY_OK.
            let mut p = unsafe { out.assume_init() };
            ok(sy_pick_done(&mut p, 0, 0, ptr::null(), 0));
        }
        st
    };
    let mut rt = ptr::null_mut();
    ok(sy_runtime_new(&mut rt));

    // A backend that accepts TCP but never answers: the channel stays
    // CONNECTING (for the 20 s minimum connect timeout).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (ch, r) = channel_to(rt, silent.local_addr().unwrap().port());
    ok(sy_channel_connect(ch));
    let mut state = 0;
    ok(sy_channel_wait_for_state_change(
        ch,
        sy_state::SY_STATE_IDLE as u32,
        10_000,
        &mut state,
    ));
    assert_eq!(state, sy_state::SY_STATE_CONNECTING as u32);
    assert_eq!(pick(r, SY_NO_WAIT), sy_status::SY_NO_SUBCHANNEL);
    assert_eq!(
        sy_channel_wait_for_state_change(ch, state, SY_NO_WAIT, ptr::null_mut()),
        sy_status::SY_TIMEOUT
    );
    sy_reader_free(r);
    sy_channel_free(ch);

    // A real backend: waiting without limit ends when the channel is READY.
    let server = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap();
    let (ch, r) = channel_to(rt, server.port());
    ok(sy_channel_connect(ch));
    ok(sy_channel_wait_for_state_change(
        ch,
        sy_state::SY_STATE_IDLE as u32,
        SY_WAIT_FOREVER,
        &mut state,
    ));
    assert_ne!(state, sy_state::SY_STATE_IDLE as u32);
    ok(pick(r, SY_WAIT_FOREVER));
    ok(sy_channel_state(ch, &mut state));
    assert_eq!(state, sy_state::SY_STATE_READY as u32);
    sy_reader_free(r);
    sy_channel_free(ch);
    sy_runtime_free(rt);
    server.stop();
}

/// Roots whose PEM decodes but holds no certificate (here DER `00 00 00`)
/// are refused when set, as the header says ("no parsable certificate"),
/// with `*out` and the options unchanged: they were taken, and every
/// connection of the channel then failed with "bad root certificate".
#[test]
fn roots_that_are_pem_but_no_certificate_are_refused_when_set() {
    use crate::*;
    let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let sentinel = 0x1usize as *mut sy_channel_options;
    let mut o = sentinel;
    assert_eq!(
        sy_channel_options_new_tls(pem.as_ptr(), pem.len(), &mut o),
        sy_status::SY_INVALID_ARGUMENT
    );
    assert_eq!(o, sentinel, "out written on failure");
    let msg = tls::last_error();
    assert!(
        msg.starts_with("SY_INVALID_ARGUMENT: roots PEM: bad root certificate"),
        "{msg}"
    );
    let mut o = std::ptr::null_mut();
    assert_eq!(sy_channel_options_new(&mut o), sy_status::SY_OK);
    assert_eq!(
        sy_channel_options_set_tls_roots_pem(o, pem.as_ptr(), pem.len()),
        sy_status::SY_INVALID_ARGUMENT
    );
    // Nothing was set: the options still make a plaintext channel.
    assert_eq!(sy_channel_options_set_insecure(o, true), sy_status::SY_OK);
    let mut rt = std::ptr::null_mut();
    assert_eq!(sy_runtime_new(&mut rt), sy_status::SY_OK);
    let mut ch = std::ptr::null_mut();
    assert_eq!(
        sy_channel_new_simple(
            rt,
            c"ipv4:127.0.0.1:1".as_ptr(),
            std::ptr::null(),
            o,
            &mut ch
        ),
        sy_status::SY_OK,
        "{}",
        tls::last_error()
    );
    sy_channel_free(ch);
    sy_channel_options_free(o);
    sy_runtime_free(rt);
}

/// The last call's lookups check their arguments before the thread's
/// record: a NULL `size` (or `buf` with a length, or a length no buffer
/// has) is SY_NULL_PARAMETER / SY_INVALID_ARGUMENT whether or not a call
/// has failed on this thread, not SY_NOT_FOUND, and nothing is written.
#[test]
fn last_call_lookups_check_arguments_before_the_record() {
    use crate::*;
    // A fresh thread: no call has failed on it.
    std::thread::spawn(|| {
        let mut buf = [0u8; 8];
        let mut size = 77usize;
        let null = std::ptr::null_mut();
        assert_eq!(
            sy_last_call_details(buf.as_mut_ptr(), 8, null),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_last_call_details(null.cast(), 8, &mut size),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_last_call_message(buf.as_mut_ptr(), 8, null),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_last_call_message(buf.as_mut_ptr(), usize::MAX, &mut size),
            sy_status::SY_INVALID_ARGUMENT
        );
        assert_eq!(
            sy_last_call_trailer(c"k".as_ptr(), 0, buf.as_mut_ptr(), 8, null),
            sy_status::SY_NULL_PARAMETER
        );
        let mut key = [0 as std::ffi::c_char; 8];
        let mut key_size = 77usize;
        assert_eq!(
            sy_last_call_trailer_at(
                0,
                key.as_mut_ptr(),
                8,
                &mut key_size,
                buf.as_mut_ptr(),
                8,
                null
            ),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_last_call_header_at(
                0,
                key.as_mut_ptr(),
                8,
                &mut key_size,
                buf.as_mut_ptr(),
                8,
                null
            ),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_last_call_header_at(
                0,
                null.cast(),
                8,
                &mut key_size,
                buf.as_mut_ptr(),
                8,
                &mut size
            ),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!((size, key_size), (77, 77), "written on failure");
        // With good arguments, no record is SY_NOT_FOUND as before.
        assert_eq!(
            sy_last_call_details(buf.as_mut_ptr(), 8, &mut size),
            sy_status::SY_NOT_FOUND
        );
        assert_eq!(
            sy_last_call_message(std::ptr::null_mut(), 0, &mut size),
            sy_status::SY_NOT_FOUND
        );
        assert_eq!(size, 77);
    })
    .join()
    .unwrap();
}
