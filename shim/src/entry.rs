//! The entry of a shim built over the C library (a workspace build; `nolibc` is the shipped
//! one's).
//!
//! It enters at C's `main` (`#![no_main]`): std's own entry would also read
//! `/proc/self/maps` and map a signal stack for its stack-overflow message, which buys nothing
//! in a process that lives for one call. What the shim needs of an entry is in `process`.

use std::ffi::{c_char, c_int};

use crate::process::{self, Environ};

/// Called by the C runtime. CNI passes everything in the environment and on stdin, so the
/// arguments go unread.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    // The hook runs before the release profile's abort, and exits first.
    std::panic::set_hook(Box::new(|info| process::internal_error(&info.to_string())));
    // SAFETY: glibc passes `main` the process's environment as its third argument.
    process::start(unsafe { Environ::new(envp) })
}
