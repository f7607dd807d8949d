//! The process around `run`: its entry, what it does before and after, and how it dies.
//!
//! The shim enters at C's `main` (`#![no_main]`): std's own entry would also read
//! `/proc/self/maps` and map a signal stack for its stack-overflow message, which costs
//! ~0.07 ms of a ~0.45 ms exec on a VM and buys nothing in a process that lives for one call.
//! The two parts of std's entry the shim needs are done here instead.

use std::env;
use std::io::{self, Write};
use std::process;

use crate::cni_error::{CniError, Code};
use crate::netconf::DEFAULT_CNI_VERSION;

/// Called by the C runtime. CNI passes everything in the environment and on stdin, so the
/// arguments go unread. Exit status 0 when the call succeeded, 1 otherwise.
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    open_closed_standard_fds();
    ignore_sigpipe();
    install_panic_hook();
    let output = crate::run(&|name| env::var_os(name), &mut io::stdin().lock());
    if let Err(err) = write_stdout(&output.stdout) {
        log(&format!("writing the reply to stdout failed: {err}"));
        return 1;
    }
    if output.success { 0 } else { 1 }
}

/// A runtime that starts the shim with stdin, stdout or stderr closed would let the socket to
/// plexusd take that descriptor, and whatever is written there while the socket is open (a
/// panic's message on stderr, say) would go to plexusd. Each closed one is pointed at
/// /dev/null, as std's entry does.
fn open_closed_standard_fds() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether `fd` is open; it changes nothing.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        if closed {
            // SAFETY: a NUL-terminated path; open takes the lowest free descriptor, `fd`.
            // Should it fail there is nothing better to do than go on, as std does.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// A plexusd that closes the connection early, or a runtime that stops reading stdout, must
/// give the shim a write error it reports, not a SIGPIPE that kills it without a word.
fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler code; nothing else in the shim handles SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Even a bug must reach the runtime as a CNI error rather than a Rust backtrace. The hook
/// runs before the release profile's abort, and exits first.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let err = CniError::new(
            Code::Internal,
            "plexus shim internal error",
            info.to_string(),
        );
        // The config's version is out of reach here; the runtime does not check it on errors.
        let _ = write_stdout(&err.to_json(DEFAULT_CNI_VERSION));
        log(&info.to_string());
        process::exit(1);
    }));
}

/// Writes and flushes by hand: `print!` would panic if stdout is closed.
fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// Logs are best effort, and never on stdout (the runtime parses it).
fn log(message: &str) {
    let _ = writeln!(io::stderr(), "plexus: {message}");
}
