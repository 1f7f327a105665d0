//! The one home of unsafe code: seccomp listener ioctls and pidfds, behind a safe API.
//!
//! The listener ioctls are issued here rather than through libseccomp's
//! `ScmpNotifReq::receive`/`ScmpNotifResp::respond`: `receive` allocates a notification
//! per call (`seccomp_notify_alloc`) and converts it to owned Rust values, which the
//! notification path must not do, and libseccomp 2.5 has no call for
//! `SECCOMP_IOCTL_NOTIF_SET_FLAGS`, so no `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One notification as the kernel hands it over (`struct seccomp_notif`).
pub(crate) type Notification = libc::seccomp_notif;

/// Tells the kernel to wake the agent on the CPU of the trapped task (Linux ≥ 6.6).
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE` as `seccomp_notif_resp.flags` holds it (libc has it as u64).
#[allow(clippy::cast_possible_truncation, reason = "the flag is bit 0")]
const FLAG_CONTINUE: u32 = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;

/// A zeroed notification buffer, as RECV requires.
pub fn empty_notification() -> Notification {
    // SAFETY: seccomp_notif is a plain C struct of integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// How the kernel answered a listener request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerError {
    /// The notification is gone: its task died or the syscall was interrupted.
    Gone,
    /// A signal interrupted the wait; try again.
    Interrupted,
    /// Anything else: the listener is unusable.
    Failed(Errno),
}

impl From<Errno> for ListenerError {
    fn from(errno: Errno) -> Self {
        match errno {
            Errno::ENOENT => ListenerError::Gone,
            Errno::EINTR => ListenerError::Interrupted,
            other => ListenerError::Failed(other),
        }
    }
}

/// A seccomp user-notification listener fd, verified to be one.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Takes ownership of `fd` if it is a seccomp listener; gives it back otherwise.
    ///
    /// ID_VALID on a bogus id fails with ENOENT on a listener and ENOTTY (or EINVAL)
    /// on anything else, which makes it a cheap type check.
    ///
    /// Fails with EOVERFLOW, without touching the fd, if this kernel's notification structs
    /// are larger than this build's: RECV would write past the buffer [`Listener::receive`] owns.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, (OwnedFd, Errno)> {
        match kernel_structs_fit() {
            Ok(true) => {}
            Ok(false) => return Err((fd, Errno::EOVERFLOW)),
            Err(errno) => return Err((fd, errno)),
        }
        match id_valid(fd.as_fd(), u64::MAX) {
            Err(Errno::ENOENT) | Ok(()) => Ok(Listener { fd }),
            Err(errno) => Err((fd, errno)),
        }
    }

    /// Asks the kernel to hand notifications over on the trapped task's CPU.
    pub fn enable_sync_wakeup(&self) -> Result<(), Errno> {
        // SAFETY: SET_FLAGS takes its flags by value; the fd is a live listener we own.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            )
        };
        Errno::result(rc).map(drop)
    }

    /// Blocks until a notification arrives and fills `notif` with it.
    #[inline]
    pub fn receive(&self, notif: &mut Notification) -> Result<(), ListenerError> {
        *notif = empty_notification();
        // SAFETY: `notif` is a valid, zeroed seccomp_notif the kernel writes into; a Listener
        // exists only once `from_fd` saw that the kernel's struct is no larger.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                notif as *mut Notification,
            )
        };
        Errno::result(rc).map(drop).map_err(ListenerError::from)
    }

    /// Like [`Listener::receive`], but the kernel writes the notification into `page`, so
    /// it survives this process: a successor finds it there if it was never answered.
    #[inline]
    pub fn receive_shared(
        &self,
        page: &SharedPage,
        notif: &mut Notification,
    ) -> Result<(), ListenerError> {
        let area = page.base.as_ptr().cast::<Notification>();
        // SAFETY: the area is in bounds, aligned and large enough for a seccomp_notif (asserted
        // at compile time); only this listener's worker writes it; zeroed as RECV requires.
        unsafe { std::ptr::write_volatile(area, empty_notification()) };
        // SAFETY: as above; the kernel writes a seccomp_notif there, no larger than ours (see
        // `from_fd`).
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                area,
            )
        };
        Errno::result(rc).map_err(ListenerError::from)?;
        *notif = page.last_notification();
        Ok(())
    }

    /// Lets the trapped syscall run as if no filter had trapped it.
    #[inline]
    pub fn respond_continue(&self, id: u64) -> Result<(), ListenerError> {
        self.respond(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: FLAG_CONTINUE,
        })
    }

    /// Fails the trapped syscall with `errno`.
    #[inline]
    pub fn respond_errno(&self, id: u64, errno: i32) -> Result<(), ListenerError> {
        self.respond(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        })
    }

    #[inline]
    fn respond(&self, mut resp: libc::seccomp_notif_resp) -> Result<(), ListenerError> {
        // SAFETY: `resp` is a valid seccomp_notif_resp that lives across the call.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &mut resp as *mut libc::seccomp_notif_resp,
            )
        };
        Errno::result(rc).map(drop).map_err(ListenerError::from)
    }

    /// Waits for a notification or a hang-up; returns true on hang-up.
    pub fn wait_readable(&self, timeout: PollTimeout) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Err(Errno::EINTR) => continue,
                Err(_) => return true,
                Ok(_) => break,
            }
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
    }

    /// True while notification `id` is pending: its task is still blocked in the
    /// syscall, so a pid read from the notification still names that task.
    pub fn is_pending(&self, id: u64) -> bool {
        id_valid(self.fd.as_fd(), id).is_ok()
    }

    /// True when every task of the filter is gone and no notification can come.
    pub fn is_hung_up(&self) -> bool {
        self.wait_readable(PollTimeout::ZERO)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Listener> for OwnedFd {
    fn from(listener: Listener) -> OwnedFd {
        listener.fd
    }
}

fn id_valid(fd: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    // SAFETY: ID_VALID reads one u64 through the pointer, which outlives the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &id as *const u64,
        )
    };
    Errno::result(rc).map(drop)
}

/// [`kernel_struct_sizes_fit`], asked once per process.
fn kernel_structs_fit() -> Result<bool, Errno> {
    static FIT: std::sync::OnceLock<Result<bool, Errno>> = std::sync::OnceLock::new();
    *FIT.get_or_init(kernel_struct_sizes_fit)
}

/// False when the running kernel's notification structs are larger than ours, in
/// which case RECV would write past our buffer.
pub(crate) fn kernel_struct_sizes_fit() -> Result<bool, Errno> {
    // SAFETY: seccomp_notif_sizes is three u16; zero is valid.
    let mut sizes: libc::seccomp_notif_sizes = unsafe { std::mem::zeroed() };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one seccomp_notif_sizes through the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    Errno::result(rc)?;
    Ok(
        usize::from(sizes.seccomp_notif) <= std::mem::size_of::<Notification>()
            && usize::from(sizes.seccomp_notif_resp)
                <= std::mem::size_of::<libc::seccomp_notif_resp>(),
    )
}

/// Copies up to `buf.len()` bytes at `addr` in process `pid` into `buf`, in one
/// `process_vm_readv`; returns how many were copied (short when the range reaches an
/// unmapped page). Never writes anything of the target's: the copy is the caller's.
pub fn read_remote(pid: i32, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let Ok(base) = usize::try_from(addr) else {
        return Err(Errno::EFAULT);
    };
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: base as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec covers exactly `buf`, which is live and writable across the
    // call; the remote iovec is only an address in the other process, which the kernel
    // checks (EFAULT) and never dereferences in ours.
    let rc = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    usize::try_from(Errno::result(rc)?).map_err(|_| Errno::EIO)
}

/// `/proc/PID/NAME` as a NUL-terminated path in a stack buffer: no allocation.
fn proc_path(pid: u32, name: &str, path: &mut [u8; 64]) -> Result<(), Errno> {
    let mut digits = itoa::Buffer::new();
    let parts: [&[u8]; 4] = [
        b"/proc/",
        digits.format(pid).as_bytes(),
        b"/",
        name.as_bytes(),
    ];
    let mut at = 0;
    for part in parts {
        let end = at + part.len();
        if end >= path.len() {
            return Err(Errno::ENAMETOOLONG);
        }
        path[at..end].copy_from_slice(part);
        at = end;
    }
    path[at] = 0;
    Ok(())
}

/// Reads the start of `/proc/PID/NAME` into `buf` without allocating; returns its length.
pub fn read_proc_file(pid: u32, name: &str, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut path = [0u8; 64];
    proc_path(pid, name, &mut path)?;
    // SAFETY: `path` is NUL-terminated (proc_path wrote the NUL inside the array).
    let raw = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    let raw = Errno::result(raw)?;
    // SAFETY: open just returned this fd; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    nix::unistd::read(&fd, buf)
}

/// Reads the target of the link `/proc/PID/NAME` into `buf` without allocating; returns its
/// length (`buf.len()` when it may have been cut).
pub fn read_proc_link(pid: u32, name: &str, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut path = [0u8; 64];
    proc_path(pid, name, &mut path)?;
    // SAFETY: `path` is NUL-terminated; readlink writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::readlink(path.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(Errno::result(rc)?).map_err(|_| Errno::EIO)
}

/// `pidfd_open` flag for a pidfd on one thread rather than a thread-group leader
/// (Linux 6.9; the value is `O_EXCL`).
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// A process handle that can never hit a recycled pid.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Opens a pidfd for the process `pid` (a thread-group leader).
    pub fn open(pid: i32) -> Result<Self, Errno> {
        Self::open_with(pid, 0)
    }

    /// Opens a pidfd for the task `tid`, a process or any thread of one. EINVAL when
    /// `tid` is a thread and the kernel predates PIDFD_THREAD.
    pub fn open_task(tid: i32) -> Result<Self, Errno> {
        match Self::open_with(tid, 0) {
            // Kernels refuse a non-leader with EINVAL (before 6.9) or ENOENT.
            Err(Errno::EINVAL | Errno::ENOENT) => Self::open_with(tid, PIDFD_THREAD),
            opened => opened,
        }
    }

    fn open_with(pid: i32, flags: libc::c_uint) -> Result<Self, Errno> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
        let raw = RawFd::try_from(Errno::result(rc)?).map_err(|_| Errno::EBADF)?;
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PidFd { fd, pid })
    }

    /// A pidfd another process opened for `pid` and handed over.
    pub fn from_fd(fd: OwnedFd, pid: i32) -> PidFd {
        PidFd { fd, pid }
    }

    /// The fd, to hand the pidfd to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The pid (or tid) it was opened for, in the agent's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends SIGKILL to the process (to a thread's whole process, as SIGKILL always does).
    pub fn kill(&self) -> Result<(), Errno> {
        self.send(libc::SIGKILL)
    }

    /// True while the process has not been reaped (signal 0 still reaches it).
    pub fn is_alive(&self) -> bool {
        self.send(0).is_ok()
    }

    fn send(&self, signal: libc::c_int) -> Result<(), Errno> {
        // SAFETY: pidfd_send_signal with a null siginfo and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        Errno::result(rc).map(drop)
    }
}

/// Bytes of a [`SharedPage`]: one page.
pub const SHARED_PAGE_BYTES: usize = 4096;

/// Bytes at the start of a [`SharedPage`] that RECV writes the notification into.
const NOTIFICATION_AREA: usize = 128;

/// 64-bit words of a [`SharedPage`] after its notification area.
pub const SHARED_WORDS: usize = (SHARED_PAGE_BYTES - NOTIFICATION_AREA) / 8;

const _: () = assert!(std::mem::size_of::<Notification>() <= NOTIFICATION_AREA);

/// One page of memory backed by a memfd, mapped shared, so that it outlives the process
/// that writes it: whoever holds the fd maps the same bytes. It holds a listener's last
/// received notification (RECV writes straight into it) and words of counters.
#[derive(Debug)]
pub struct SharedPage {
    fd: OwnedFd,
    base: std::ptr::NonNull<u8>,
}

// SAFETY: the mapping is only ever accessed through atomics (`words`) or by the one worker
// that owns the listener (`Listener::receive_shared`); the pointer itself is plain data.
unsafe impl Send for SharedPage {}
// SAFETY: as above: shared access goes through `AtomicU64`s, which are Sync.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// A new zeroed page.
    pub fn create() -> std::io::Result<SharedPage> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags, returns a new fd or -1.
        let rc = unsafe { libc::memfd_create(c"switchboard-listener".as_ptr(), libc::MFD_CLOEXEC) };
        let raw = Errno::result(rc)?;
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        nix::unistd::ftruncate(
            &fd,
            libc::off_t::try_from(SHARED_PAGE_BYTES).unwrap_or(4096),
        )?;
        Self::map(fd)
    }

    /// Maps a page another process created and handed over; refused unless it is a memfd
    /// of at least a page (so no access can fault).
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<SharedPage> {
        let stat = nix::sys::stat::fstat(&fd)?;
        if usize::try_from(stat.st_size).unwrap_or(0) < SHARED_PAGE_BYTES
            || stat.st_mode & libc::S_IFMT != libc::S_IFREG
        {
            return Err(std::io::Error::other(
                "not a shared page (a regular file of a page at least)",
            ));
        }
        // A memfd cannot shrink once sealed; without seals, a peer that could shrink it is
        // the holder, which never does.
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> std::io::Result<SharedPage> {
        // SAFETY: a fresh shared mapping of the fd's first page; the kernel picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SHARED_PAGE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(base.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(SharedPage { fd, base })
    }

    /// The memfd, to hand the page to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The counter words after the notification area.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is SHARED_PAGE_BYTES long and page-aligned, so the words after
        // NOTIFICATION_AREA are in bounds and 8-aligned; AtomicU64 has the layout of u64 and
        // any bit pattern is valid; the mapping lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.base
                    .as_ptr()
                    .add(NOTIFICATION_AREA)
                    .cast::<std::sync::atomic::AtomicU64>(),
                SHARED_WORDS,
            )
        }
    }

    /// The notification last written by RECV into this page (zeroed before each RECV).
    pub fn last_notification(&self) -> Notification {
        // SAFETY: the area is in bounds, 8-aligned and large enough (asserted above); any bit
        // pattern is a valid seccomp_notif; a volatile read because the kernel wrote it.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().cast::<Notification>()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no reference into it outlives self.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), SHARED_PAGE_BYTES);
        }
    }
}

/// Accepts a connection on a listening socket, close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let raw = nix::sys::socket::accept4(
        listener.as_raw_fd(),
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: accept4 just returned this new fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Takes ownership of an fd this process inherited at a number it was told (`--child-fd`),
/// after checking that it is open; marks it close-on-exec.
pub fn take_inherited_fd(raw: RawFd) -> Result<OwnedFd, Errno> {
    nix::fcntl::fcntl(
        // SAFETY: borrowed only for this check, which fails with EBADF on a closed number.
        unsafe { BorrowedFd::borrow_raw(raw) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    // SAFETY: the fd is open (checked above) and this process was started to own it: its
    // parent passed it for exactly this, and nothing else in this process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Most fds one `receive_with_fds` makes room for; the kernel closes any beyond
/// and sets MSG_CTRUNC. A runtime sends one.
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 16;

/// What one `receive_with_fds` got.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedChunk {
    pub bytes: usize,
    /// More fds arrived than there was room for; the kernel closed the rest.
    pub fds_lost: bool,
}

/// Room for one SCM_RIGHTS message of `MAX_FDS_PER_MESSAGE` fds, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuffer([u8; CONTROL_SPACE]);

// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
#[allow(clippy::cast_possible_truncation, reason = "16 fds' worth of bytes")]
const CONTROL_SPACE: usize = unsafe {
    libc::CMSG_SPACE((MAX_FDS_PER_MESSAGE * std::mem::size_of::<RawFd>()) as u32) as usize
};

/// One non-blocking recvmsg on a Unix socket. Every fd that arrives is owned at
/// once and appended to `fds`, so it is closed unless the caller keeps it; this holds
/// for a truncated control message too (MSG_CTRUNC), where nix's `cmsgs()` would fail
/// before handing over the fds the kernel did install.
///
/// Not the `sendfd` crate's `recv_with_fd`: it hands back `RawFd`s, so taking ownership
/// would need unsafe code outside this module; it does not report MSG_CTRUNC (fds lost
/// to a short buffer go unnoticed), cannot pass MSG_DONTWAIT for the non-blocking intake,
/// and allocates its control buffer per call. Its send side only takes `UnixStream`s and
/// `RawFd`s, which nix's `sendmsg` (used by `handoff`) already covers.
pub fn receive_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<ReceivedChunk, Errno> {
    let mut control = ControlBuffer([0; CONTROL_SPACE]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.0.as_mut_ptr().cast();
    header.msg_controllen = CONTROL_SPACE as _;
    // SAFETY: the iovec and control buffer point into live buffers of the lengths given,
    // which outlive the call; the kernel writes at most those lengths.
    let rc = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut header,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    let bytes = usize::try_from(Errno::result(rc)?).map_err(|_| Errno::EINVAL)?;
    // SAFETY: after recvmsg, msg_controllen is the part of `control` the kernel filled,
    // and CMSG_FIRSTHDR/CMSG_NXTHDR stay within it, returning null past its end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&header) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null, so it points at a whole cmsghdr inside `control`.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is pure arithmetic.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            // The kernel trims cmsg_len to what fit, so this counts only installed fds.
            let count = len.saturating_sub(header_len) / std::mem::size_of::<RawFd>();
            // SAFETY: CMSG_DATA points just past this header, inside `control`.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count` keeps the read inside the cmsg_len the kernel wrote;
                // the data may be unaligned, hence read_unaligned.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: SCM_RIGHTS just installed this fd in our table; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `header` and `cmsg` are the ones above; NXTHDR returns null at the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&header, cmsg) };
    }
    Ok(ReceivedChunk {
        bytes,
        fds_lost: header.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Forks, so that the child may allocate and take locks: refused with EBUSY unless this
/// process has a single thread (none can then hold a lock across the fork), or with the
/// error of reading `/proc/self/task` if that cannot be counted.
pub fn fork_single_threaded() -> Result<nix::unistd::ForkResult, Errno> {
    if thread_count()? != 1 {
        return Err(Errno::EBUSY);
    }
    // SAFETY: checked just above that this is the only thread; only this thread could start
    // another, so none exists at the fork and no lock can be held across it.
    unsafe { nix::unistd::fork() }
}

/// Threads of this process, from `/proc/self/task`.
fn thread_count() -> Result<usize, Errno> {
    let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let mut count = 0;
    for task in std::fs::read_dir("/proc/self/task").map_err(io)? {
        task.map_err(io)?;
        count += 1;
    }
    Ok(count)
}

/// The foreground process group of the terminal on stdin; None when stdin is no terminal.
pub(crate) fn foreground_group() -> Option<nix::unistd::Pid> {
    // SAFETY: tcgetpgrp only reads the fd's terminal state; a non-terminal fd fails with ENOTTY.
    let rc = unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) };
    (rc > 0).then(|| nix::unistd::Pid::from_raw(rc))
}

/// Makes `group` the foreground process group of the terminal on stdin.
pub(crate) fn set_foreground_group(group: nix::unistd::Pid) -> Result<(), Errno> {
    // SAFETY: tcsetpgrp takes an fd and a pgid by value.
    let rc = unsafe { libc::tcsetpgrp(libc::STDIN_FILENO, group.as_raw()) };
    Errno::result(rc).map(drop)
}

/// Sets a signal's disposition back to the default.
pub(crate) fn default_signal(signal: nix::sys::signal::Signal) -> Result<(), Errno> {
    use nix::sys::signal::SigHandler;
    // SAFETY: SIG_DFL runs no handler code, so nothing can be async-signal-unsafe.
    unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) }.map(drop)
}

/// Has malloc map every block of 128 KiB or more on its own and unmap it when freed. By
/// default glibc raises that threshold to the size of the last such block freed, and from
/// then on keeps freed blocks of that size in its heaps: a busy listener's event queue
/// (up to 8 MiB) would stay resident after the listener ends.
pub fn unmap_large_blocks_when_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's tuning; any value is valid for this option.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Sets a signal's disposition to ignore.
pub fn ignore_signal(signal: nix::sys::signal::Signal) -> Result<(), Errno> {
    use nix::sys::signal::SigHandler;
    // SAFETY: SIG_IGN runs no handler code, so nothing can be async-signal-unsafe.
    unsafe { nix::sys::signal::signal(signal, SigHandler::SigIgn) }.map(drop)
}

/// Asks the CPU to bring the cache lines of `slot` into its caches now, without waiting
/// for them: a hint that never faults, whatever the address. A plain prefetch (PREFETCHT0):
/// PREFETCHW, which would also claim the lines for writing, needs the `prfchw` target
/// feature that the default x86-64 target lacks.
#[inline]
pub fn prefetch<T>(slot: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = slot.cast::<i8>();
        for line in (0..std::mem::size_of::<T>()).step_by(64) {
            // wrapping_add: the address is only a hint, never dereferenced.
            // SAFETY: PREFETCHT0 reads and writes no memory and cannot fault, even on an
            // unmapped address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use nix::sys::socket::{
        sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
    };

    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    fn send(socket: &OwnedFd, bytes: &[u8], n_fds: usize) {
        let pipes: Vec<_> = (0..n_fds).map(|_| nix::unistd::pipe().unwrap().0).collect();
        let raw: Vec<RawFd> = pipes.iter().map(AsRawFd::as_raw_fd).collect();
        sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    #[test]
    fn received_fds_are_owned_and_truncation_is_reported() {
        let (ours, theirs) = pair();
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        assert_eq!(
            receive_with_fds(ours.as_fd(), &mut buf, &mut fds).unwrap_err(),
            Errno::EAGAIN
        );
        send(&theirs, b"two", 2);
        let chunk = receive_with_fds(ours.as_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!((chunk.bytes, chunk.fds_lost, fds.len()), (3, false, 2));
        fds.clear();
        // More than there is room for: the kernel closes the rest and says so.
        send(&theirs, b"many", MAX_FDS_PER_MESSAGE + 4);
        let chunk = receive_with_fds(ours.as_fd(), &mut buf, &mut fds).unwrap();
        assert!(chunk.fds_lost);
        assert_eq!(fds.len(), MAX_FDS_PER_MESSAGE);
    }

    #[test]
    fn only_a_listener_becomes_a_listener() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        let (fd, errno) = Listener::from_fd(read).unwrap_err();
        assert!(matches!(errno, Errno::ENOTTY | Errno::EINVAL), "{errno}");
        assert!(fd.as_raw_fd() >= 0);
    }

    #[test]
    fn this_kernel_fits_our_structs() {
        assert_eq!(kernel_struct_sizes_fit(), Ok(true));
    }

    #[test]
    fn fork_refuses_while_other_threads_run() {
        // The test harness runs this test on a thread of its own, besides main.
        assert!(thread_count().unwrap() > 1);
        match fork_single_threaded() {
            Err(errno) => assert_eq!(errno, Errno::EBUSY),
            Ok(nix::unistd::ForkResult::Child) => std::process::exit(0),
            Ok(nix::unistd::ForkResult::Parent { .. }) => panic!("forked with other threads"),
        }
    }
}
