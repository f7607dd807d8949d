//! The shipped shim's runtime, without a C library: its entry point, its allocator, its panic,
//! and the few memory routines compiled Rust calls.
//!
//! glibc's start-up, even linked statically, costs ~0.6 ms per exec on a VM (each `cpuid` it
//! issues traps to the hypervisor), which was most of the shim's cost per CNI call; this
//! runtime starts in ~0.1 ms (README "Performance"). `make` builds it with `--cfg
//! plexus_nolibc` and `-C panic=abort`, linked with `-nostartfiles -nostdlib`; everything the
//! shim asks of the kernel goes through `sys`.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, global_asm};
use core::ffi::{c_char, c_int};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use alloc::string::ToString;

use crate::process::{self, Environ};
use crate::sys;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the shim's nolibc runtime is written for x86_64; build it over glibc elsewhere");

// The kernel starts a process here with the stack holding argc, argv, NULL, envp, NULL and the
// auxiliary vector, and nothing else set up.
global_asm!(
    ".globl _start",
    "_start:",
    // The outermost frame, for debuggers and backtraces.
    "xor ebp, ebp",
    "mov rdi, rsp",
    // The ABI wants the stack 16-byte aligned at a call.
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// # Safety
/// Called once, by `_start`, with the stack the kernel built.
unsafe extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: the kernel's layout: argc, then argc pointers and a NULL, then the environment.
    let environ = unsafe {
        let argc = *stack;
        Environ::new(stack.add(1 + argc + 1).cast::<*const c_char>())
    };
    sys::exit(process::start(environ))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    // A panic while reporting one (out of memory, say) must not recurse.
    if PANICKING.swap(true, Ordering::Relaxed) {
        sys::exit(1);
    }
    process::internal_error(&info.to_string())
}

/// Hands out memory from mapped regions and takes back only the latest allocation: the shim
/// lives for one call and allocates a few buffers, so freeing more would only cost time.
/// Growing the latest allocation (a buffer being read into) happens in place.
struct Bump {
    next: AtomicUsize,
    end: AtomicUsize,
}

/// Each region's size, unless one allocation needs more; pages only count once touched.
const REGION: usize = 1 << 20;

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    next: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
};

impl Bump {
    /// Room for `layout` at the end of the current region, or in a new one.
    fn take(&self, layout: Layout) -> *mut u8 {
        let fits = |next: usize, end: usize| {
            let start = next.checked_next_multiple_of(layout.align())?;
            let stop = start.checked_add(layout.size())?;
            (next != 0 && stop <= end).then_some((start, stop))
        };
        let (next, end) = (
            self.next.load(Ordering::Relaxed),
            self.end.load(Ordering::Relaxed),
        );
        let (start, stop) = match fits(next, end) {
            Some(span) => span,
            None => {
                let len = layout.size().saturating_add(layout.align()).max(REGION);
                let Ok(region) = sys::map_anonymous(len) else {
                    return core::ptr::null_mut();
                };
                let region = region as usize;
                self.end.store(region + len, Ordering::Relaxed);
                match fits(region, region + len) {
                    Some(span) => span,
                    None => return core::ptr::null_mut(),
                }
            }
        };
        self.next.store(stop, Ordering::Relaxed);
        start as *mut u8
    }
}

// SAFETY: the shim has one thread. Every block handed out lies in a mapped region, is aligned
// as asked and overlaps no other live block: `next` only moves back over the latest one.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.take(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = self.next.compare_exchange(
            ptr as usize + layout.size(),
            ptr as usize,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (next, end) = (
            self.next.load(Ordering::Relaxed),
            self.end.load(Ordering::Relaxed),
        );
        let is_latest = ptr as usize + layout.size() == next;
        if is_latest && ptr as usize + new_size <= end {
            self.next.store(ptr as usize + new_size, Ordering::Relaxed);
            return ptr;
        }
        // SAFETY: the caller's contract, passed on; a fresh block does not overlap `ptr`.
        unsafe {
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return core::ptr::null_mut();
            };
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
            }
            moved
        }
    }
}

// The routines compiled Rust expects from the C library. Speed does not matter at the shim's
// sizes; the loops read through `read_volatile` so that the compiler cannot turn them back
// into calls to themselves.

/// # Safety
/// As memcpy(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller's contract; the direction flag is clear, as the ABI guarantees.
    unsafe {
        asm!("rep movsb", inout("rcx") len => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// As memmove(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    if len == 0 || (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + len {
        // SAFETY: copying forwards never overwrites a byte before it is read here.
        return unsafe { memcpy(dst, src, len) };
    }
    // SAFETY: the caller's contract; backwards from the last byte, then the flag is cleared
    // again as the ABI requires.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") len => _, inout("rdi") dst.add(len - 1) => _,
             inout("rsi") src.add(len - 1) => _, options(nostack));
    }
    dst
}

/// # Safety
/// As memset(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dst: *mut u8, byte: c_int, len: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe {
        asm!("rep stosb", inout("rcx") len => _, inout("rdi") dst => _, in("al") byte as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// As memcmp(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, len: usize) -> c_int {
    for i in 0..len {
        // SAFETY: the caller's contract: both spans are `len` bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return c_int::from(x) - c_int::from(y);
        }
    }
    0
}

/// # Safety
/// As bcmp(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, len: usize) -> c_int {
    // SAFETY: the caller's contract, the same as memcmp's.
    unsafe { memcmp(a, b, len) }
}

/// # Safety
/// As strlen(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn strlen(string: *const c_char) -> usize {
    let mut len = 0;
    // SAFETY: the caller's contract: the string ends in a NUL.
    while unsafe { string.add(len).read_volatile() } != 0 {
        len += 1;
    }
    len
}

// A debug build compiles the shim's dependencies for unwinding, so their code names the
// unwinder. With `panic = abort` nothing ever unwinds: these are never called, and only stand
// in for the symbols.

#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    sys::exit(134)
}
