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
    // 64-bit targets: id, address, len, user_data, 4 token words.
    if size_of::<usize>() == 8 {
        assert_eq!(size_of::<sy_pick_result>(), 64);
    }
    assert_eq!(align_of::<sy_pick_result>(), 8);
}

mod tls {
    //! TLS settings from `sy_channel_options` reach the managed transport:
    //! a server whose certificate a private CA signed is trusted with that CA
    //! as roots (and the right server name), and not with the bundled roots.

    use crate::*;
    use std::ptr;
    use switchyard::transport::testserver::{Listen, ServerOptions, TestPki, TestServer};

    fn ok(s: sy_status) {
        assert_eq!(s, sy_status::SY_OK, "{}", last_error());
    }

    fn last_error() -> String {
        let mut buf = vec![0u8; 512];
        let n = sy_last_error(buf.as_mut_ptr().cast(), buf.len());
        buf.truncate(n.min(511));
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// One call through a fresh channel with `setup` applied to its options.
    fn call(port: u16, setup: impl FnOnce(*mut sy_channel_options)) -> (sy_status, u32, Vec<u8>) {
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
        let mut r = ptr::null_mut();
        ok(sy_reader_new(ch, &mut r));
        let mut resp = ptr::null_mut();
        let st = sy_call_unary(
            r,
            c"/echo.Echo/Unary".as_ptr(),
            b"hi".as_ptr(),
            2,
            ptr::null(),
            0,
            ptr::null(),
            5000,
            false,
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
        sy_channel_free(ch);
        sy_runtime_free(rt);
        (st, code, body)
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
