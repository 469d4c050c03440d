//! `sy_channel_snapshot_json`: what a channel and each of its subchannels are
//! doing (gRPC's channelz), as JSON text.

use crate::channel::{channel_ref, sy_channel};
use crate::error::Error;
use crate::macros::{boundary, boundary_or, refuse_in_callback};
use crate::status::sy_status;
use std::ffi::{c_char, CString};

/// Writes a snapshot of the channel, taken on its event loop, as one JSON
/// object to `*out_json` (NUL-terminated UTF-8, owned by the caller: free it
/// with `sy_snapshot_json_free`) and its length without the NUL to
/// `*out_len` (may be NULL). Fields: `target`, `policy`, `state`
/// (`"READY"`, ...), the channel's own `calls_started`, `calls_succeeded`,
/// `calls_failed`, `calls_in_flight` and `last_call_unix_ms` (each library
/// call once, also one that failed before a pick; zero on a host-transport
/// channel), and `subchannels`, an array of objects with `id`, `address`,
/// `state`, `last_error` (string or null) and those five counts. On a
/// channel with the library's connections the subchannels' calls are its
/// own (`sy_call_unary*`), counted per attempt;
/// on a host-transport channel each pick is a call on the picked subchannel
/// (`sy_reader_pick`/`sy_pick`), its done the outcome (a gRPC code other than
/// 0 fails it; a kept pick dropped by the next pick fails as cancelled),
/// counted by the picking reader without a shared write; its
/// `last_call_unix_ms` is when a snapshot first saw the count move. Any thread except inside this library's callbacks
/// (SY_WRONG_CONTEXT); SY_CLOSED after `sy_channel_close`.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_channel_snapshot_json(
    ch: *const sy_channel,
    out_json: *mut *mut c_char,
    out_len: *mut usize,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        let out = try_out!(out_json, "out_json");
        refuse_in_callback("sy_channel_snapshot_json waits for the event loop")?;
        let json = ch.channel.snapshot()?.to_json();
        let len = json.len();
        // serde_json escapes control characters: no NUL inside.
        let json = CString::new(json)
            .map_err(|_| Error::new(sy_status::SY_PANIC, "snapshot JSON holds a NUL"))?;
        // SAFETY: non-NULL out-parameters (out_len checked here).
        unsafe {
            out.write(json.into_raw());
            if !out_len.is_null() {
                out_len.write(len);
            }
        }
        Ok(())
    })
}

/// Frees a string from `sy_channel_snapshot_json`. NULL is ignored. Any
/// thread.
#[no_mangle]
pub extern "C" fn sy_snapshot_json_free(json: *mut c_char) {
    boundary_or((), || {
        if !json.is_null() {
            // SAFETY: the contract: a pointer `sy_channel_snapshot_json`
            // made with `CString::into_raw`, freed once.
            drop(unsafe { CString::from_raw(json) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sy_channel_free, sy_channel_new_with_options, sy_runtime_free, sy_runtime_new};
    use crate::{sy_channel_options_free, sy_channel_options_new, sy_channel_options_set_insecure};
    use std::ptr::null_mut;

    #[test]
    fn snapshot_json_of_a_channel_through_the_abi() {
        use switchyard_testserver::{Listen, ServerOptions, TestServer};
        let backend = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let target = CString::new(format!("ipv4:{}", backend.addr())).unwrap();
        let mut rt = null_mut();
        assert_eq!(sy_runtime_new(&mut rt), sy_status::SY_OK);
        let mut opts = null_mut();
        assert_eq!(sy_channel_options_new(&mut opts), sy_status::SY_OK);
        assert_eq!(
            sy_channel_options_set_insecure(opts, true),
            sy_status::SY_OK
        );
        let mut ch = null_mut();
        let st = sy_channel_new_with_options(
            rt,
            target.as_ptr(),
            std::ptr::null(),
            opts,
            std::ptr::null(),
            None,
            null_mut(),
            None,
            &mut ch,
        );
        assert_eq!(st, sy_status::SY_OK);
        sy_channel_options_free(opts);

        let mut json = null_mut();
        assert_eq!(
            sy_channel_snapshot_json(ch, null_mut(), null_mut()),
            sy_status::SY_NULL_PARAMETER
        );
        let mut len = 0usize;
        assert_eq!(
            sy_channel_snapshot_json(ch, &mut json, &mut len),
            sy_status::SY_OK
        );
        // SAFETY: a NUL-terminated string from the call above.
        let text = unsafe { std::ffi::CStr::from_ptr(json) }
            .to_str()
            .unwrap()
            .to_string();
        sy_snapshot_json_free(json);
        sy_snapshot_json_free(null_mut());
        assert_eq!(text.len(), len);
        let expected = format!("\"target\":\"{}\"", target.to_str().unwrap());
        assert!(text.contains(&expected), "{text}");
        assert!(text.contains("\"policy\":\"pick_first\""), "{text}");
        assert!(text.contains("\"subchannels\":["), "{text}");

        sy_channel_free(ch);
        sy_runtime_free(rt);
    }
}
