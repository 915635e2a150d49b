//! The actor's allocator: the system one, which tells the host when an
//! allocation fails. std then aborts, which on wasm32 is an `unreachable`
//! trap, and its alloc error hook prints nothing on wasm32-unknown-unknown:
//! without this the host could not tell running out of memory from a bug.
//! The message goes through waPC's `__guest_error`, which the host keeps
//! as the call's error:
//! "out of memory: an allocation of 268435457 bytes failed (memory is 290 MiB)".

use crate::wapc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::{self, Write};

#[global_allocator]
static ALLOCATOR: Reporting = Reporting;

struct Reporting;

// SAFETY: every call goes to System unchanged; only a null result is acted on.
unsafe impl GlobalAlloc for Reporting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        reported(System.alloc(layout), layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        reported(System.alloc_zeroed(layout), layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        reported(System.realloc(ptr, layout, new_size), new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn reported(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        report(size);
    }
    ptr
}

/// A message in a fixed buffer: allocating it could only fail again.
struct Message {
    bytes: [u8; 128],
    len: usize,
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn report(size: usize) {
    let mut message = Message { bytes: [0; 128], len: 0 };
    let memory_mib = core::arch::wasm32::memory_size::<0>() * 65536 >> 20;
    // core::fmt writes numbers without allocating; the text fits the buffer
    let written =
        write!(message, "out of memory: an allocation of {} bytes failed (memory is {} MiB)", size, memory_mib);
    if written.is_ok() {
        wapc::guest_error(&message.bytes[..message.len]);
    }
}
