//! The shim's whole interface to the kernel: a dozen system calls, made directly on x86_64
//! and through libc's `syscall()` elsewhere.
//!
//! The shipped shim has no C library (`nolibc`): glibc's start-up alone costs ~0.6 ms per exec
//! on a VM (README "Performance"), more than everything else the shim does. So every call the
//! shim makes goes through here, in every build, and the tests exercise the same code the
//! runtime executes. Failures are `Errno`s, as the kernel returns them.

use core::ffi::{c_int, c_long};
use core::fmt;
use core::time::Duration;

use alloc::vec::Vec;

/// An error number from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub c_int);

impl Errno {
    pub const AGAIN: Self = Self(libc::EAGAIN);
    pub const TIMEDOUT: Self = Self(libc::ETIMEDOUT);
    pub const BADF: Self = Self(libc::EBADF);
    pub const INVAL: Self = Self(libc::EINVAL);
    pub const NAMETOOLONG: Self = Self(libc::ENAMETOOLONG);

    /// What strerror(3) says, for the errors a CNI call can meet; the number for the rest.
    fn description(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EPERM => "Operation not permitted",
            libc::ENOENT => "No such file or directory",
            libc::EINTR => "Interrupted system call",
            libc::EIO => "Input/output error",
            libc::EBADF => "Bad file descriptor",
            libc::EAGAIN => "Resource temporarily unavailable",
            libc::ENOMEM => "Cannot allocate memory",
            libc::EACCES => "Permission denied",
            libc::ENOTDIR => "Not a directory",
            libc::EINVAL => "Invalid argument",
            libc::EMFILE => "Too many open files",
            libc::ENOSPC => "No space left on device",
            libc::EPIPE => "Broken pipe",
            libc::ENAMETOOLONG => "File name too long",
            libc::ENOTSOCK => "Socket operation on non-socket",
            libc::EPROTOTYPE => "Protocol wrong type for socket",
            libc::ECONNRESET => "Connection reset by peer",
            libc::ETIMEDOUT => "Connection timed out",
            libc::ECONNREFUSED => "Connection refused",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    /// The way std prints an OS error, so messages read as they did before the shim lost libc.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "{text} (os error {})", self.0),
            None => write!(f, "os error {}", self.0),
        }
    }
}

pub type Result<T> = core::result::Result<T, Errno>;

/// A raw system call; a negative return is an error number.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(number: c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; the kernel clobbers only rcx and r11.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") args[0], in("rsi") args[1], in("rdx") args[2],
            in("r10") args[3], in("r8") args[4], in("r9") args[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Elsewhere through the C library's `syscall`: only x86_64 builds the shim without libc
/// (`nolibc`), so the others have it.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn syscall(number: c_long, args: [usize; 6]) -> isize {
    // SAFETY: as above; libc's wrapper reports failures in errno instead.
    let ret =
        unsafe { libc::syscall(number, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if ret == -1 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        -(errno as isize)
    } else {
        ret as isize
    }
}

/// Makes the call and turns a negative return into an `Errno`, retrying calls a stop and
/// continue (SIGSTOP, SIGCONT) interrupted: the shim installs no signal handlers, but Linux
/// still ends a blocking socket call that has a timeout with EINTR then.
fn call(number: c_long, args: [usize; 6]) -> Result<usize> {
    loop {
        // SAFETY: each wrapper below passes arguments that are valid for its call.
        let ret = unsafe { syscall(number, args) };
        match usize::try_from(ret) {
            Ok(value) => return Ok(value),
            Err(_) if ret == -(libc::EINTR as isize) => continue,
            Err(_) => return Err(Errno(-ret as c_int)),
        }
    }
}

/// An open file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(c_int);

pub const STDIN: c_int = 0;
pub const STDOUT: c_int = 1;
pub const STDERR: c_int = 2;

pub fn read(fd: c_int, buf: &mut [u8]) -> Result<usize> {
    call(
        libc::SYS_read,
        [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
    )
}

pub fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        let written = call(
            libc::SYS_write,
            [fd as usize, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0],
        )?;
        bytes = &bytes[written..];
    }
    Ok(())
}

/// Appends everything up to end of file, growing `out` as data arrives.
pub fn read_to_end(fd: c_int, out: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match read(fd, &mut chunk)? {
            0 => return Ok(()),
            got => out.extend_from_slice(&chunk[..got]),
        }
    }
}

/// Whether `fd` is an open descriptor.
pub fn is_open(fd: c_int) -> bool {
    call(
        libc::SYS_fcntl,
        [fd as usize, libc::F_GETFD as usize, 0, 0, 0, 0],
    ) != Err(Errno::BADF)
}

/// Opens /dev/null for reading and writing on the lowest free descriptor, as open(2) does.
pub fn open_dev_null() -> Result<c_int> {
    let path = c"/dev/null";
    let fd = call(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            libc::O_RDWR as usize,
            0,
            0,
            0,
        ],
    )?;
    Ok(fd as c_int)
}

/// The kernel's `struct sigaction`, which is not libc's.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// SIG_IGN for `signal`: an ignored signal needs no handler, so no restorer either.
pub fn ignore_signal(signal: c_int) -> Result<()> {
    let action = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let mask_size = core::mem::size_of::<u64>();
    call(
        libc::SYS_rt_sigaction,
        [
            signal as usize,
            &raw const action as usize,
            0,
            mask_size,
            0,
            0,
        ],
    )
    .map(drop)
}

/// `len` bytes of fresh, zeroed memory, readable and writable. Pages are only backed once
/// touched, so asking for more than is used costs nothing.
#[cfg_attr(not(plexus_nolibc), allow(dead_code))]
pub fn map_anonymous(len: usize) -> Result<*mut u8> {
    let address = call(
        libc::SYS_mmap,
        [
            0,
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as usize,
            usize::MAX, // fd -1
            0,
        ],
    )?;
    Ok(address as *mut u8)
}

pub fn exit(status: c_int) -> ! {
    // SAFETY: exit_group takes a status and does not return.
    unsafe { syscall(libc::SYS_exit_group, [status as usize, 0, 0, 0, 0, 0]) };
    unreachable!("exit_group returned")
}

impl Fd {
    pub fn raw(&self) -> c_int {
        self.0
    }

    /// A unix stream socket connected to `path`, or `Errno::AGAIN` when the daemon has not
    /// accepted within `timeout`. A blocking connect on a unix socket waits while the
    /// listener's backlog is full; Linux bounds that wait by the socket's send timeout, so
    /// setting it first needs neither a helper thread nor a non-blocking connect.
    pub fn connect_unix(path: &str, timeout: Duration) -> Result<Self> {
        let address = unix_address(path)?;
        let fd = call(
            libc::SYS_socket,
            [
                libc::AF_UNIX as usize,
                (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as usize,
                0,
                0,
                0,
                0,
            ],
        )?;
        let socket = Self(fd as c_int);
        socket.set_timeout(libc::SO_SNDTIMEO, timeout)?;
        let connected = call(
            libc::SYS_connect,
            [
                fd,
                &raw const address as usize,
                core::mem::size_of::<libc::sockaddr_un>(),
                0,
                0,
                0,
            ],
        );
        match connected {
            // A connect retried after EINTR may find the first attempt done.
            Ok(_) | Err(Errno(libc::EISCONN)) => Ok(socket),
            Err(err) => Err(err),
        }
    }

    /// Bounds every later read and write; a call that waits longer fails with EAGAIN.
    pub fn set_io_timeout(&self, timeout: Duration) -> Result<()> {
        self.set_timeout(libc::SO_RCVTIMEO, timeout)?;
        self.set_timeout(libc::SO_SNDTIMEO, timeout)
    }

    fn set_timeout(&self, option: c_int, timeout: Duration) -> Result<()> {
        let value = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        call(
            libc::SYS_setsockopt,
            [
                self.0 as usize,
                libc::SOL_SOCKET as usize,
                option as usize,
                &raw const value as usize,
                core::mem::size_of::<libc::timeval>(),
                0,
            ],
        )
        .map(drop)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // Nothing to do about a failed close of a socket the shim is done with.
        let _ = call(libc::SYS_close, [self.0 as usize, 0, 0, 0, 0, 0]);
    }
}

/// `path` as a `sockaddr_un`, NUL-terminated as the kernel prefers.
fn unix_address(path: &str) -> Result<libc::sockaddr_un> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid, empty address.
    let mut address: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.bytes().any(|byte| byte == 0) {
        return Err(Errno::INVAL);
    }
    if path.len() >= address.sun_path.len() {
        return Err(Errno::NAMETOOLONG);
    }
    for (slot, byte) in address.sun_path.iter_mut().zip(path.bytes()) {
        *slot = byte as libc::c_char;
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_std_prints_them() {
        assert_eq!(
            Errno(libc::ENOENT).to_string(),
            std::io::Error::from_raw_os_error(libc::ENOENT).to_string()
        );
        assert_eq!(Errno(4095).to_string(), "os error 4095");
    }

    #[test]
    fn a_socket_path_too_long_or_with_nul_is_refused_before_any_call() {
        let long = "/".repeat(200);
        assert_eq!(unix_address(&long).unwrap_err(), Errno::NAMETOOLONG);
        assert_eq!(unix_address("/a\0b").unwrap_err(), Errno::INVAL);
    }

    #[test]
    fn only_open_descriptors_are_open() {
        let fd = Fd(open_dev_null().unwrap());
        assert!(is_open(fd.raw()));
        // Far above any descriptor the test harness's threads may be opening meanwhile.
        assert!(!is_open(1 << 20));
    }
}
