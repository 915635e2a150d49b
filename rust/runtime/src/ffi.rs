//! The C ABI between this runtime and TVM-generated kernels: DLPack tensors,
//! TVM-FFI's `Any` value and "safe call" convention, and the host functions
//! that every TVM object file imports (see `tvm/ffi/c_api.h`,
//! `tvm/ffi/extra/c_env_api.h` and `tvm/runtime/c_backend_api.h`).
//!
//! Every symbol the kernels import must be defined here: one left undefined
//! would silently become an `env` import of the final module.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::ffi::{c_void, CStr};
use std::os::raw::c_char;

/// `DLDevice`: kernels are compiled for the CPU (`kDLCPU` = 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

pub const CPU: DLDevice = DLDevice { device_type: 1, device_id: 0 };

/// `DLDataType`: type code (int, uint, float, bfloat, bool), bits and lanes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

/// `DLTensor`, as the kernels read it.
#[repr(C)]
#[derive(Debug)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

/// `TVMFFIAny`: a 16-byte tagged value. The 8-byte payload is kept as raw
/// bits; pointers go in its low bytes (wasm32 is little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TVMFFIAny {
    pub type_index: i32,
    pub zero_padding: u32,
    pub value: u64,
}

const TYPE_NONE: i32 = 0;
const TYPE_INT: i32 = 1;
const TYPE_DLTENSOR_PTR: i32 = 7;

impl TVMFFIAny {
    pub fn none() -> Self {
        TVMFFIAny { type_index: TYPE_NONE, zero_padding: 0, value: 0 }
    }

    pub fn int(v: i64) -> Self {
        TVMFFIAny { type_index: TYPE_INT, zero_padding: 0, value: v as u64 }
    }

    pub fn tensor(t: *mut DLTensor) -> Self {
        TVMFFIAny { type_index: TYPE_DLTENSOR_PTR, zero_padding: 0, value: t as usize as u64 }
    }
}

/// TVM-FFI's safe-call signature, shared by every exported kernel
/// (`__tvm_ffi_<name>`): non-zero means failure, with the message reported
/// through [`TVMFFIErrorSetRaisedFromCStrParts`] first.
pub type SafeCall = unsafe extern "C" fn(
    handle: *mut c_void,
    args: *const TVMFFIAny,
    num_args: i32,
    result: *mut TVMFFIAny,
) -> i32;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = RefCell::new(None);
}

/// Takes the message of the last kernel error, if one was reported.
pub fn take_last_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

/// Sets the last kernel error: the thread pool's, after a launch.
#[cfg(feature = "threads")]
pub(crate) fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(message));
}

unsafe fn c_str(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        Some(CStr::from_ptr(ptr).to_string_lossy().into_owned())
    }
}

/// Kernels report an error (kind, then message parts, any part may be null)
/// just before they return non-zero.
///
/// # Safety
/// Pointers must be null or valid NUL-terminated strings, as TVM passes them.
#[no_mangle]
pub unsafe extern "C" fn TVMFFIErrorSetRaisedFromCStrParts(
    kind: *const c_char,
    parts: *const *const c_char,
    num_parts: i32,
) {
    // Inside a parallel loop, perhaps on a worker: kept by the pool instead.
    #[cfg(feature = "threads")]
    if crate::threads::in_launch() {
        return crate::threads::record_error(kind, parts, num_parts);
    }
    let mut message = c_str(kind).unwrap_or_else(|| "Error".to_string());
    message.push_str(": ");
    if !parts.is_null() {
        for i in 0..num_parts.max(0) as usize {
            if let Some(part) = c_str(*parts.add(i)) {
                message.push_str(&part);
            }
        }
    }
    // TVM's messages span lines; errors are reported on one.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(message));
}

/// System-lib modules register their kernels from a static constructor. This
/// runtime binds kernels by symbol at link time instead, so registration has
/// nothing to record; it must still exist and succeed.
///
/// # Safety
/// Never dereferences its arguments.
#[no_mangle]
pub unsafe extern "C" fn TVMFFIEnvModRegisterSystemLibSymbol(
    _name: *const c_char,
    _symbol: *mut c_void,
) -> i32 {
    0
}

// Workspace blocks carry their size in a header so that free can rebuild the
// layout; the header is one alignment unit so the block stays aligned.
const WORKSPACE_ALIGN: usize = 64;

fn workspace_layout(nbytes: u64) -> Option<Layout> {
    let total = usize::try_from(nbytes).ok()?.checked_add(WORKSPACE_ALIGN)?;
    Layout::from_size_align(total, WORKSPACE_ALIGN).ok()
}

/// Scratch memory for kernels that need more than their arguments.
///
/// # Safety
/// Called by TVM kernels; the result is freed by [`TVMBackendFreeWorkspace`].
#[no_mangle]
pub unsafe extern "C" fn TVMBackendAllocWorkspace(
    _device_type: i32,
    _device_id: i32,
    nbytes: u64,
    _dtype_code_hint: i32,
    _dtype_bits_hint: i32,
) -> *mut c_void {
    let layout = match workspace_layout(nbytes) {
        Some(layout) => layout,
        None => return std::ptr::null_mut(),
    };
    #[cfg(feature = "threads")]
    let base = crate::threads::with_alloc_lock(|| alloc(layout));
    #[cfg(not(feature = "threads"))]
    let base = alloc(layout);
    if base.is_null() {
        return base as *mut c_void;
    }
    (base as *mut u64).write(nbytes);
    base.add(WORKSPACE_ALIGN) as *mut c_void
}

/// # Safety
/// `ptr` must come from [`TVMBackendAllocWorkspace`] and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn TVMBackendFreeWorkspace(
    _device_type: i32,
    _device_id: i32,
    ptr: *mut c_void,
) -> i32 {
    if ptr.is_null() {
        return 0;
    }
    let base = (ptr as *mut u8).sub(WORKSPACE_ALIGN);
    let nbytes = (base as *const u64).read();
    match workspace_layout(nbytes) {
        Some(layout) => {
            #[cfg(feature = "threads")]
            crate::threads::with_alloc_lock(|| dealloc(base, layout));
            #[cfg(not(feature = "threads"))]
            dealloc(base, layout);
            0
        }
        None => -1,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn any_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<TVMFFIAny>(), 16);
    }

    #[test]
    fn workspace_round_trip_is_aligned() {
        unsafe {
            let p = TVMBackendAllocWorkspace(1, 0, 1000, 2, 32);
            assert_eq!(p as usize % WORKSPACE_ALIGN, 0);
            assert_eq!(TVMBackendFreeWorkspace(1, 0, p), 0);
        }
    }

    #[test]
    fn error_parts_are_joined() {
        let kind = b"ValueError\0";
        let parts = [b"bad \0".as_ptr() as *const c_char, std::ptr::null(), b"shape\0".as_ptr() as *const c_char];
        unsafe { TVMFFIErrorSetRaisedFromCStrParts(kind.as_ptr() as *const c_char, parts.as_ptr(), 3) };
        assert_eq!(take_last_error().as_deref(), Some("ValueError: bad shape"));
        let multi_line = [b"bad\n  shape\0".as_ptr() as *const c_char];
        unsafe { TVMFFIErrorSetRaisedFromCStrParts(kind.as_ptr() as *const c_char, multi_line.as_ptr(), 1) };
        assert_eq!(take_last_error().as_deref(), Some("ValueError: bad shape"));
    }
}
