//! The process around `run`: what it does before and after, and how it dies. Both entries
//! (`entry` over the C library, `nolibc` without one) hand over to `start`.

use core::ffi::{CStr, c_char, c_int};

use alloc::format;
use alloc::vec::Vec;

use crate::cni_error::{CniError, Code};
use crate::netconf::DEFAULT_CNI_VERSION;
use crate::sys;

/// The environment the process was started with.
#[derive(Clone, Copy)]
pub struct Environ(*const *const c_char);

impl Environ {
    /// # Safety
    /// `envp` is a process's environment: a NULL-terminated array of NUL-terminated strings
    /// that live, unchanged, as long as the process.
    pub unsafe fn new(envp: *const *const c_char) -> Self {
        Self(envp)
    }

    /// The value of `name`, as the runtime set it; the first one if it is set twice, as
    /// getenv(3) does.
    pub fn get(self, name: &str) -> Option<&'static [u8]> {
        let mut entry = self.0;
        loop {
            // SAFETY: `new`'s contract: entries up to the NULL are valid pointers.
            let pointer = unsafe { *entry };
            if pointer.is_null() {
                return None;
            }
            // SAFETY: as above; each entry is a NUL-terminated string living for the process.
            let variable = unsafe { CStr::from_ptr(pointer) }.to_bytes();
            let value = variable
                .strip_prefix(name.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="));
            if value.is_some() {
                return value;
            }
            // SAFETY: not past the NULL, which ended the loop above.
            entry = unsafe { entry.add(1) };
        }
    }
}

/// Runs the CNI call the environment and stdin describe. Exit status 0 when it succeeded,
/// 1 otherwise.
#[cfg_attr(test, allow(dead_code))]
pub fn start(environ: Environ) -> c_int {
    open_closed_standard_fds();
    // A plexusd that closes the connection early, or a runtime that stops reading stdout,
    // must give the shim a write error it reports, not a SIGPIPE that kills it without a word.
    if let Err(err) = sys::ignore_signal(libc::SIGPIPE) {
        log(&format!("ignoring SIGPIPE failed: {err}"));
    }
    let mut stdin = Vec::new();
    let stdin = sys::read_to_end(sys::STDIN, &mut stdin).map(|()| stdin);
    let output = crate::run(&|name| environ.get(name).map(<[u8]>::to_vec), stdin);
    if let Err(err) = sys::write_all(sys::STDOUT, &output.stdout) {
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
    for fd in [sys::STDIN, sys::STDOUT, sys::STDERR] {
        // open takes the lowest free descriptor, `fd`. Should it fail there is nothing better
        // to do than go on, as std does.
        if !sys::is_open(fd) {
            let _ = sys::open_dev_null();
        }
    }
}

/// Even a bug must reach the runtime as a CNI error rather than a bare exit status.
#[cfg_attr(test, allow(dead_code))]
pub fn internal_error(message: &str) -> ! {
    let err = CniError::new(Code::Internal, "plexus shim internal error", message);
    // The config's version is out of reach here; the runtime does not check it on errors.
    let _ = sys::write_all(sys::STDOUT, &err.to_json(DEFAULT_CNI_VERSION));
    log(message);
    sys::exit(1)
}

/// Logs are best effort, and never on stdout (the runtime parses it).
fn log(message: &str) {
    let _ = sys::write_all(sys::STDERR, format!("plexus: {message}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_is_found_by_its_whole_name_and_the_first_one_wins() {
        let entries = [
            c"CNI_COMMAND_X=no".as_ptr(),
            c"CNI_COMMAND=ADD".as_ptr(),
            c"CNI_COMMAND=DEL".as_ptr(),
            c"CNI_ARGS=".as_ptr(),
            c"CNI_NETNS=/a=b".as_ptr(),
            std::ptr::null(),
        ];
        // SAFETY: NULL-terminated, and the strings are static.
        let environ = unsafe { Environ::new(entries.as_ptr()) };
        assert_eq!(environ.get("CNI_COMMAND"), Some(&b"ADD"[..]));
        assert_eq!(environ.get("CNI_ARGS"), Some(&b""[..]));
        assert_eq!(environ.get("CNI_NETNS"), Some(&b"/a=b"[..]));
        assert_eq!(environ.get("CNI_PATH"), None);
        assert_eq!(environ.get("CNI"), None);
    }
}
