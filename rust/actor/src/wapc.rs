//! The guest side of waPC, as wapc-guest 0.3 defines it: the host calls
//! `__guest_call(op_len, msg_len)`; the guest asks for the operation name and
//! the payload with `__guest_request`, and answers with `__guest_response`
//! (returning 1) or `__guest_error` (returning 0). Every import comes from
//! module `wapc`, the only one besides WASI that a waSCC host resolves.

#[link(wasm_import_module = "wapc")]
extern "C" {
    fn __guest_request(op_ptr: *mut u8, msg_ptr: *mut u8);
    fn __guest_response(ptr: *const u8, len: usize);
    fn __guest_error(ptr: *const u8, len: usize);
}

/// What an operation handler returns: the response payload, or an error
/// message for the host.
pub type Outcome = Result<Vec<u8>, String>;

/// Runs one waPC call with `handler(operation, payload)`.
pub fn guest_call(op_len: i32, msg_len: i32, handler: fn(&str, &[u8]) -> Outcome) -> i32 {
    let outcome = receive(op_len, msg_len).and_then(|(op, msg)| handler(&op, &msg));
    match outcome {
        Ok(payload) => {
            // SAFETY: the host copies `len` bytes out of our live buffer.
            unsafe { __guest_response(payload.as_ptr(), payload.len()) };
            1
        }
        Err(message) => {
            guest_error(message.as_bytes());
            0
        }
    }
}

/// Gives the host an error message for the current call; it keeps the last
/// one it was given.
pub fn guest_error(message: &[u8]) {
    // SAFETY: the host copies `len` bytes out of our live buffer.
    unsafe { __guest_error(message.as_ptr(), message.len()) };
}

fn receive(op_len: i32, msg_len: i32) -> Result<(String, Vec<u8>), String> {
    let op_len = usize::try_from(op_len).map_err(|_| format!("negative operation length {}", op_len))?;
    let msg_len = usize::try_from(msg_len).map_err(|_| format!("negative payload length {}", msg_len))?;
    let mut op = vec![0u8; op_len];
    let mut msg = vec![0u8; msg_len];
    // SAFETY: the host writes op_len and msg_len bytes, the sizes it gave us.
    unsafe { __guest_request(op.as_mut_ptr(), msg.as_mut_ptr()) };
    let op = String::from_utf8(op).map_err(|_| "the operation name is not UTF-8".to_string())?;
    Ok((op, msg))
}
