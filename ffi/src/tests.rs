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

#[test]
fn pick_result_layout_is_frozen() {
    // 64-bit targets: id, address, len, user_data, 4 token words.
    if size_of::<usize>() == 8 {
        assert_eq!(size_of::<sy_pick_result>(), 64);
    }
    assert_eq!(align_of::<sy_pick_result>(), 8);
}
