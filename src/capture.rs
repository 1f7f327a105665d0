//! Bounded copies of a trapped call's path and string arguments, fenced by ID_VALID, for events only.
//!
//! Nothing here feeds a decision: the caller (or another of its threads) can rewrite its
//! memory between our read and the kernel's, so a string read here says what the call
//! probably named, never what it will act on (seccomp_unotify(2), "Caveats").

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Once;

use nix::errno::Errno;

use crate::sys::{self, Listener};
use crate::syscalls;

/// Longest path the kernel accepts, NUL included; a longer string is shown as too long.
pub const PATH_MAX: usize = 4096;
/// Most `execve` arguments kept, and most bytes of them.
pub const ARGV_MAX: usize = 32;
const ARGV_BYTES: usize = 2048;
/// Room for one full path; a second string or argv shares it, and is cut if it runs out.
const ARENA: usize = PATH_MAX;
/// Most buffers one listener ever has: a burst of events that outruns the writer by more
/// than this (a few milliseconds of calls) shows the rest as not read.
pub const POOL_MAX: usize = 256;
/// Bytes of `/proc/PID/exe` kept.
const EXE_MAX: usize = 256;
/// How long a worker trusts what it read of its last caller's `comm` and `exe`, for calls
/// from the same pid and instruction pointer: a busy caller makes many events, and reading
/// `/proc` for each would cost more than the call. A program that exec'd (or a recycled
/// pid) calls from elsewhere.
pub const PROGRAM_FRESH: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes the first read of a string asks for; longer strings take more reads.
const FIRST_READ: usize = 256;
/// Reads stop at page ends, so a string that ends before an unmapped page is still read.
const PAGE: u64 = 4096;

/// What one argument is, for reading it and for printing the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A number printed in decimal.
    Int,
    /// A number or pointer we do not follow, printed in hex.
    Hex,
    Fd,
    /// A directory fd of the *at calls: AT_FDCWD by name.
    DirFd,
    /// A NUL-terminated path, read and reported as `path`/`path2`.
    Path,
    /// A NUL-terminated string that is no path (a file system type, an xattr name).
    Str,
    /// `execve`'s NULL-terminated array of strings.
    Argv,
    OpenFlags,
    Mode,
    AtFlags,
    SockDomain,
    SockType,
    MountFlags,
    UmountFlags,
    CloneFlags,
}

/// The arguments of the calls Switchboard prints by name; others print as hex numbers.
pub fn spec(name: &str) -> Option<&'static [Arg]> {
    use Arg::*;
    Some(match name {
        "open" => &[Path, OpenFlags, Mode],
        "openat" => &[DirFd, Path, OpenFlags, Mode],
        "openat2" => &[DirFd, Path, Hex, Int],
        "creat" | "mkdir" | "chmod" => &[Path, Mode],
        "mkdirat" | "fchmodat" => &[DirFd, Path, Mode],
        "fchmodat2" => &[DirFd, Path, Mode, AtFlags],
        "rmdir" | "unlink" | "chroot" | "chdir" | "umount" | "acct" | "swapoff" => &[Path],
        "unlinkat" => &[DirFd, Path, AtFlags],
        "rename" | "link" | "symlink" | "pivot_root" => &[Path, Path],
        "renameat" => &[DirFd, Path, DirFd, Path],
        "renameat2" => &[DirFd, Path, DirFd, Path, Hex],
        "linkat" => &[DirFd, Path, DirFd, Path, AtFlags],
        "symlinkat" => &[Path, DirFd, Path],
        "chown" | "lchown" | "chown32" | "lchown32" => &[Path, Int, Int],
        "fchownat" => &[DirFd, Path, Int, Int, AtFlags],
        "mount" => &[Path, Path, Str, MountFlags, Hex],
        "umount2" => &[Path, UmountFlags],
        "execve" => &[Path, Argv, Hex],
        "execveat" => &[DirFd, Path, Argv, Hex, AtFlags],
        "mknod" => &[Path, Mode, Hex],
        "mknodat" => &[DirFd, Path, Mode, Hex],
        "truncate" | "truncate64" => &[Path, Int],
        "setxattr" | "lsetxattr" => &[Path, Str, Hex, Int, Hex],
        "getxattr" | "lgetxattr" => &[Path, Str, Hex, Int],
        "listxattr" | "llistxattr" => &[Path, Hex, Int],
        "removexattr" | "lremovexattr" => &[Path, Str],
        "access" => &[Path, Hex],
        "faccessat" | "faccessat2" => &[DirFd, Path, Hex, AtFlags],
        "stat" | "lstat" | "stat64" | "lstat64" | "statfs" | "statfs64" | "utime" | "utimes" => {
            &[Path, Hex]
        }
        "newfstatat" | "fstatat64" | "utimensat" => &[DirFd, Path, Hex, AtFlags],
        "statx" => &[DirFd, Path, AtFlags, Hex, Hex],
        "readlink" => &[Path, Hex, Int],
        "readlinkat" => &[DirFd, Path, Hex, Int],
        "swapon" => &[Path, Hex],
        "open_tree" => &[DirFd, Path, Hex],
        "move_mount" => &[DirFd, Path, DirFd, Path, Hex],
        "fsopen" => &[Str, Hex],
        "name_to_handle_at" => &[DirFd, Path, Hex, Hex, AtFlags],
        "inotify_add_watch" => &[Fd, Path, Hex],
        "finit_module" => &[Fd, Str, Int],
        "init_module" => &[Hex, Int, Str],
        "delete_module" => &[Str, Hex],
        "socket" => &[SockDomain, SockType, Int],
        "socketpair" => &[SockDomain, SockType, Int, Hex],
        "unshare" => &[CloneFlags],
        "setns" => &[Fd, CloneFlags],
        "kill" | "tkill" => &[Int, Int],
        "ptrace" => &[Int, Int, Hex, Hex],
        "getppid" | "getpid" | "gettid" | "sync" | "vhangup" => &[],
        _ => return None,
    })
}

/// Arg specs by (arch index, slot), built once from the names.
fn spec_at(location: (usize, usize)) -> Option<&'static [Arg]> {
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<Vec<Option<&'static [Arg]>>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..syscalls::arches().len())
            .map(|arch| {
                (0..syscalls::MAX_NR + 128)
                    .map(|slot| spec(syscalls::name(arch, slot)))
                    .collect()
            })
            .collect()
    });
    table.get(location.0)?.get(location.1).copied().flatten()
}

/// The arguments of the call at `location`, where its name is known to have a spec.
pub fn args_of(location: Option<(usize, usize)>) -> Option<&'static [Arg]> {
    spec_at(location?)
}

/// True when pointers of this arch are 32 bits wide: the upper half of a register is noise.
pub fn is_32_bit(location: Option<(usize, usize)>) -> bool {
    location.is_some_and(|(arch, _)| matches!(syscalls::arches()[arch].name, "x86" | "arm"))
}

/// How reading one string went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Read up to its NUL.
    Whole,
    /// The pointer was NULL.
    Null,
    /// No NUL within `PATH_MAX` bytes.
    TooLong,
    /// Cut short: the capture's room ran out first.
    Clipped,
    /// The read failed: EFAULT for unmapped memory, EPERM/ESRCH when refused or gone.
    Failed(Errno),
}

impl Read {
    /// Why the string is missing or partial, for the event's `unread` field.
    pub fn reason(self) -> Option<String> {
        match self {
            Read::Whole => None,
            Read::Null => Some("NULL pointer".into()),
            Read::TooLong => Some(format!("longer than PATH_MAX ({PATH_MAX} bytes)")),
            Read::Clipped => Some("cut short: capture buffer full".into()),
            Read::Failed(Errno::EFAULT | Errno::EIO) => Some("unmapped memory (EFAULT)".into()),
            Read::Failed(Errno::EPERM) => Some(
                "reading the caller's memory was refused (EPERM): the agent needs CAP_SYS_PTRACE"
                    .into(),
            ),
            Read::Failed(errno) => Some(format!("unreadable ({errno})")),
        }
    }
}

/// One string in the arena.
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    start: u16,
    len: u16,
    pub read: Read,
}

const NO_PIECE: Piece = Piece {
    start: 0,
    len: 0,
    read: Read::Null,
};

/// What the strings of one call read as, fenced: empty if the notification went away.
#[derive(Debug)]
pub struct Capture {
    /// By argument index; None where the argument is no string.
    strings: [Option<Piece>; 6],
    argv: [Piece; ARGV_MAX],
    argv_count: u8,
    /// Why argv is incomplete, if it is.
    pub argv_read: Read,
    /// The notification was no longer valid after the reads: nothing read counts.
    pub discarded: bool,
    used: usize,
    arena: [u8; ARENA],
    /// The caller's program, when this worker had not read it within [`PROGRAM_FRESH`].
    program: Program,
    /// The caller's working directory, read when its first path is relative.
    cwd: Option<Piece>,
    /// The arguments of a `socketcall` sub-call, which sit in the caller's memory.
    pub multiplexed_args: Option<[u64; 6]>,
}

/// The caller's `comm` and `exe`, read while it was parked in the call.
#[derive(Debug, Clone, Copy)]
struct Program {
    pid: u32,
    comm: [u8; 16],
    comm_len: u8,
    exe: [u8; EXE_MAX],
    exe_len: u16,
}

impl Program {
    const NONE: Program = Program {
        pid: 0,
        comm: [0; 16],
        comm_len: 0,
        exe: [0; EXE_MAX],
        exe_len: 0,
    };

    fn read(pid: u32) -> Program {
        let mut p = Program::NONE;
        p.pid = pid;
        if let Ok(n) = sys::read_proc_file(pid, "comm", &mut p.comm) {
            let n = if n > 0 && p.comm[n - 1] == b'\n' {
                n - 1
            } else {
                n
            };
            p.comm_len = u8::try_from(n).unwrap_or(0);
        }
        if let Ok(n) = sys::read_proc_link(pid, "exe", &mut p.exe) {
            p.exe_len = u16::try_from(n).unwrap_or(0);
        }
        p
    }
}

impl Capture {
    const EMPTY: Capture = Capture {
        strings: [None; 6],
        argv: [NO_PIECE; ARGV_MAX],
        argv_count: 0,
        argv_read: Read::Whole,
        discarded: false,
        used: 0,
        arena: [0; ARENA],
        program: Program::NONE,
        cwd: None,
        multiplexed_args: None,
    };

    fn clear(&mut self) {
        self.program = Program::NONE;
        self.cwd = None;
        self.multiplexed_args = None;
        self.strings = [None; 6];
        self.argv_count = 0;
        self.argv_read = Read::Whole;
        self.discarded = false;
        self.used = 0;
    }

    /// True when this capture carries the caller's program (its worker read it anew).
    pub fn has_program(&self) -> bool {
        self.program.pid != 0 && !self.discarded
    }

    /// The caller's `comm`, if it could be read.
    pub fn comm(&self) -> Option<&[u8]> {
        let p = &self.program;
        (p.comm_len > 0 && !self.discarded).then(|| &p.comm[..usize::from(p.comm_len)])
    }

    /// The caller's executable (`/proc/PID/exe`), if it could be read; cut at 256 bytes.
    pub fn exe(&self) -> Option<&[u8]> {
        let p = &self.program;
        (p.exe_len > 0 && !self.discarded).then(|| &p.exe[..usize::from(p.exe_len)])
    }

    /// The caller's working directory, when its first path was relative and it was read.
    pub fn cwd(&self) -> Option<&[u8]> {
        self.cwd
            .filter(|p| p.read == Read::Whole)
            .map(|p| self.bytes(&p))
    }

    fn bytes(&self, piece: &Piece) -> &[u8] {
        let start = usize::from(piece.start);
        &self.arena[start..start + usize::from(piece.len)]
    }

    /// The string argument at `index`: its bytes (a prefix when not whole) and how it read.
    pub fn string(&self, index: usize) -> Option<(&[u8], Read)> {
        let piece = self.strings.get(index).copied().flatten()?;
        Some((self.bytes(&piece), piece.read))
    }

    /// The `execve` arguments read, in order.
    pub fn argv(&self) -> impl Iterator<Item = &[u8]> {
        self.argv[..usize::from(self.argv_count)]
            .iter()
            .map(|p| self.bytes(p))
    }

    /// Copies the string at `addr` into the arena, up to `limit` bytes (NUL excluded).
    fn read_string(&mut self, pid: i32, addr: u64, limit: usize) -> Piece {
        let start = self.used;
        if addr == 0 {
            return Piece {
                start: to_u16(start),
                len: 0,
                read: Read::Null,
            };
        }
        let room = (ARENA - start).min(limit + 1);
        if room == 0 {
            return Piece {
                start: to_u16(start),
                len: 0,
                read: Read::Clipped,
            };
        }
        let mut got = 0;
        let read = loop {
            if got == room {
                break if room == PATH_MAX {
                    Read::TooLong
                } else {
                    Read::Clipped
                };
            }
            let at = addr.wrapping_add(got as u64);
            let to_page_end = usize::try_from(PAGE - at % PAGE).unwrap_or(1);
            // Most paths are short: the first read stops early rather than copy a page.
            let first = if got == 0 { FIRST_READ } else { usize::MAX };
            let chunk = to_page_end.min(room - got).min(first);
            let dst = &mut self.arena[start + got..start + got + chunk];
            match sys::read_remote(pid, at, dst) {
                Ok(0) => break Read::Failed(Errno::EFAULT),
                Ok(n) => {
                    if let Some(nul) = dst[..n].iter().position(|b| *b == 0) {
                        got += nul;
                        break Read::Whole;
                    }
                    got += n;
                }
                Err(errno) => break Read::Failed(errno),
            }
        };
        // A string that never ended keeps only a prefix, so the next one has room.
        let kept = if read == Read::Whole {
            got
        } else {
            got.min(64)
        };
        self.used = start + kept;
        Piece {
            start: to_u16(start),
            len: to_u16(kept),
            read,
        }
    }

    /// Reads every string argument `args` names, from the registers in `values`.
    fn fill(
        &mut self,
        pid: i32,
        values: &[u64; 6],
        args: &[Arg],
        location: Option<(usize, usize)>,
    ) {
        let narrow = is_32_bit(location);
        let pointer = |raw: u64| if narrow { raw & 0xffff_ffff } else { raw };
        let mut refused = false;
        for (index, arg) in args.iter().enumerate() {
            let raw = pointer(values[index]);
            match arg {
                Arg::Path | Arg::Str => {
                    let piece = if pid == 0 {
                        Piece {
                            read: Read::Failed(Errno::ESRCH),
                            ..NO_PIECE
                        }
                    } else {
                        self.read_string(pid, raw, PATH_MAX - 1)
                    };
                    refused |= piece.read == Read::Failed(Errno::EPERM);
                    self.strings[index] = Some(piece);
                }
                Arg::Argv => {
                    self.read_argv(pid, raw, narrow);
                    refused |= self.argv_read == Read::Failed(Errno::EPERM);
                }
                _ => {}
            }
        }
        if refused {
            warn_refused(pid);
        }
        let first_path = args.iter().position(|a| *a == Arg::Path);
        let relative = first_path
            .and_then(|i| self.string(i))
            .is_some_and(|(path, read)| read == Read::Whole && !path.starts_with(b"/"));
        if relative {
            let start = self.used;
            let read =
                match sys::read_proc_link(pid.cast_unsigned(), "cwd", &mut self.arena[start..]) {
                    Ok(n) if start + n < ARENA => {
                        self.used += n;
                        Piece {
                            start: to_u16(start),
                            len: to_u16(n),
                            read: Read::Whole,
                        }
                    }
                    Ok(_) => Piece {
                        read: Read::Clipped,
                        ..NO_PIECE
                    },
                    Err(errno) => Piece {
                        read: Read::Failed(errno),
                        ..NO_PIECE
                    },
                };
            self.cwd = Some(read);
        }
    }

    /// Reads `execve`'s argv array at `addr` and the strings it points to.
    fn read_argv(&mut self, pid: i32, addr: u64, narrow: bool) {
        if addr == 0 {
            self.argv_read = Read::Null;
            return;
        }
        let width = if narrow { 4 } else { 8 };
        let mut pointers = [0u8; ARGV_MAX * 8];
        let want = ARGV_MAX * width;
        let mut got = 0;
        while got < want {
            let at = addr.wrapping_add(got as u64);
            let chunk = usize::try_from(PAGE - at % PAGE)
                .unwrap_or(1)
                .min(want - got);
            match sys::read_remote(pid, at, &mut pointers[got..got + chunk]) {
                Ok(n) if n > 0 => got += n,
                Ok(_) => break,
                Err(errno) => {
                    if got == 0 {
                        self.argv_read = Read::Failed(errno);
                        return;
                    }
                    break;
                }
            }
        }
        let budget_end = (self.used + ARGV_BYTES).min(ARENA);
        for entry in pointers[..got - got % width].chunks_exact(width) {
            let pointer = if narrow {
                u64::from(u32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]))
            } else {
                u64::from_ne_bytes(entry.try_into().unwrap_or([0; 8]))
            };
            if pointer == 0 {
                return;
            }
            if usize::from(self.argv_count) == ARGV_MAX || self.used >= budget_end {
                self.argv_read = Read::Clipped;
                return;
            }
            let piece = self.read_string(pid, pointer, budget_end - self.used);
            self.argv[usize::from(self.argv_count)] = piece;
            self.argv_count += 1;
            if piece.read != Read::Whole {
                self.argv_read = piece.read;
                return;
            }
        }
        // The array went on past what we read (or past mapped memory).
        self.argv_read = Read::Clipped;
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "arena offsets are below 8 KiB"
)]
fn to_u16(n: usize) -> u16 {
    n as u16
}

/// A capture on its way to the writer; dropping it hands its buffer back to its listener.
/// Without a buffer (every one was with the writer), it asks the writer for one more.
#[derive(Debug)]
pub struct Captured {
    buf: Option<Box<Capture>>,
    home: SyncSender<Box<Capture>>,
}

impl std::ops::Deref for Captured {
    type Target = Capture;
    fn deref(&self) -> &Capture {
        self.buf.as_deref().unwrap_or(&Capture::EMPTY)
    }
}

impl Captured {
    /// True when the listener had no buffer free for this event: nothing was read.
    pub fn starved(&self) -> bool {
        self.buf.is_none()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // Home has room for every buffer the listener ever made.
            let _ = self.home.try_send(buf);
        }
    }
}

/// Both ends of a listener's queue of free buffers.
type BufferQueue = (SyncSender<Box<Capture>>, Receiver<Box<Capture>>);

/// One listener's capture buffers: the notification path takes one, the writer's drop
/// gives it back. It starts empty and grows to what the listener's bursts need (at most
/// [`POOL_MAX`]); once grown, no event allocates.
#[derive(Default)]
pub struct CapturePool {
    /// Where buffers come home, and where the worker takes them; made with the first
    /// buffer, so an idle listener holds not even the queue.
    queue: Option<BufferQueue>,
    /// Buffers this listener has made, at home or on their way through the writer.
    made: usize,
    /// The pool is half grown or ran dry: the writer should run now, not at its next poll.
    wake_writer: bool,
    /// The last caller whose program this worker read: (pid, instruction pointer, when).
    last: (u32, u64, Option<quanta::Instant>),
}

/// True for the calls whose events carry strings read from the caller: those with a path,
/// string or argv argument, and `socketcall`, whose sub-call's arguments are in memory.
/// A table lookup, so the calls without any (most of them) pay nothing more.
#[inline]
pub fn reads_memory(location: Option<(usize, usize)>) -> bool {
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<Vec<bool>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..syscalls::arches().len())
            .map(|arch| {
                (0..syscalls::MAX_NR + 128)
                    .map(|slot| {
                        let location = Some((arch, slot));
                        syscalls::via(location) == Some("socketcall")
                            || spec_at((arch, slot)).is_some_and(|args| {
                                args.iter()
                                    .any(|a| matches!(a, Arg::Path | Arg::Str | Arg::Argv))
                            })
                    })
                    .collect()
            })
            .collect()
    });
    location.is_some_and(|(arch, slot)| {
        table
            .get(arch)
            .and_then(|slots| slots.get(slot))
            .copied()
            .unwrap_or(false)
    })
}

impl CapturePool {
    /// True once after the pool grew to half its limit or ran dry: the writer, which
    /// hands buffers back, is asleep for longer than this listener's burst can wait.
    #[inline]
    pub fn writer_needed(&mut self) -> bool {
        std::mem::take(&mut self.wake_writer)
    }

    /// [`CapturePool::capture`] of a call of this process's own, unfenced: for tests.
    #[cfg(test)]
    pub(crate) fn capture_own(
        &mut self,
        values: &[u64; 6],
        location: Option<(usize, usize)>,
    ) -> Option<Captured> {
        let (home, free) = self.queue.get_or_insert_with(|| sync_channel(POOL_MAX));
        let mut buf = free.try_recv().unwrap_or_else(|_| Box::new(Capture::EMPTY));
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        buf.fill(pid, values, args_of(location)?, location);
        Some(Captured {
            buf: Some(buf),
            home: home.clone(),
        })
    }

    /// What an event of notification `notif` needs read while its caller is parked: the
    /// caller's program, unless this worker read it for the same caller within
    /// [`PROGRAM_FRESH`], and the call's strings; fenced with ID_VALID, so a read whose
    /// notification is gone is discarded. None when there is nothing to read, which is
    /// the steady state of a caller making calls without strings: no I/O at all.
    pub fn capture(
        &mut self,
        listener: &Listener,
        notif: &sys::Notification,
        location: Option<(usize, usize)>,
        received: quanta::Instant,
    ) -> Option<Captured> {
        let caller = (notif.pid, notif.data.instruction_pointer);
        let known = (self.last.0, self.last.1) == caller
            && self
                .last
                .2
                .is_some_and(|at| received.saturating_duration_since(at) < PROGRAM_FRESH);
        let strings = reads_memory(location);
        if known && !strings {
            return None;
        }
        let (home, free) = self.queue.get_or_insert_with(|| sync_channel(POOL_MAX));
        let mut buf = match free.try_recv() {
            Ok(buf) => buf,
            // Growing the pool is the one allocation here, and it stops once the pool
            // holds what the listener's bursts need.
            Err(_) if self.made < POOL_MAX => {
                self.made += 1;
                self.wake_writer |= self.made == POOL_MAX / 2;
                Box::new(Capture::EMPTY)
            }
            Err(_) => {
                self.wake_writer = true;
                return Some(Captured {
                    buf: None,
                    home: home.clone(),
                });
            }
        };
        buf.clear();
        let pid = i32::try_from(notif.pid).unwrap_or(0);
        if !known && pid != 0 {
            buf.program = Program::read(notif.pid);
            self.last = (caller.0, caller.1, Some(received));
        }
        if let Some(args) = args_of(location).filter(|_| strings) {
            buf.fill(pid, &notif.data.args, args, location);
        }
        if syscalls::via(location) == Some("socketcall") && pid != 0 {
            // socketcall(call, args): the sub-call's arguments are an array of 32-bit longs.
            let mut raw = [0u8; 24];
            if sys::read_remote(pid, notif.data.args[1] & 0xffff_ffff, &mut raw) == Ok(24) {
                let mut args = [0u64; 6];
                for (arg, bytes) in args.iter_mut().zip(raw.chunks_exact(4)) {
                    *arg = u64::from(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
                }
                buf.multiplexed_args = Some(args);
            }
        }
        // The pid may have been reused between RECV and the reads: only a notification
        // still pending proves what was read was the caller's.
        if !listener.is_pending(notif.id) {
            buf.clear();
            buf.discarded = true;
            self.last = (0, 0, None);
        }
        Some(Captured {
            buf: Some(buf),
            home: home.clone(),
        })
    }
}

#[cold]
fn warn_refused(pid: i32) {
    static WARN: Once = Once::new();
    WARN.call_once(|| {
        tracing::warn!(
            pid,
            "reading a caller's memory was refused (EPERM): events show paths and arguments as unavailable; give the agent CAP_SYS_PTRACE to read them across users"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_of_this_process_read_whole_null_unmapped_and_too_long() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let mut c = Box::new(Capture::EMPTY);
        let path = b"/tmp/a path\0";
        let p = c.read_string(pid, path.as_ptr() as u64, PATH_MAX - 1);
        assert_eq!((c.bytes(&p), p.read), (&b"/tmp/a path"[..], Read::Whole));
        assert_eq!(c.read_string(pid, 0, PATH_MAX - 1).read, Read::Null);
        assert_eq!(
            c.read_string(pid, 8, PATH_MAX - 1).read,
            Read::Failed(Errno::EFAULT)
        );
        c.clear();
        let long = vec![b'a'; PATH_MAX + 10];
        let p = c.read_string(pid, long.as_ptr() as u64, PATH_MAX - 1);
        assert_eq!((p.read, p.len), (Read::TooLong, 64));
        // A string that ends right before a page boundary followed by more bytes.
        const P: usize = 4096;
        let mut page = vec![b'x'; 3 * P];
        let offset = P - (page.as_ptr() as usize % P) + P - 3;
        page[offset + 5] = 0;
        let p = c.read_string(pid, page.as_ptr() as u64 + offset as u64, PATH_MAX - 1);
        assert_eq!((p.read, p.len), (Read::Whole, 5));
    }

    #[test]
    fn argv_reads_up_to_its_null_pointer() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let strings = [&b"ls\0"[..], b"-l\0", b"/tmp\0"];
        let pointers: Vec<u64> = strings
            .iter()
            .map(|s| s.as_ptr() as u64)
            .chain([0])
            .collect();
        let mut c = Box::new(Capture::EMPTY);
        c.read_argv(pid, pointers.as_ptr() as u64, false);
        let argv: Vec<&[u8]> = c.argv().collect();
        assert_eq!(argv, [&b"ls"[..], b"-l", b"/tmp"]);
        assert_eq!(c.argv_read, Read::Whole);
    }

    #[test]
    fn calls_with_paths_have_specs_on_every_arch() {
        for name in ["mkdir", "openat", "execve", "mount", "rename"] {
            for location in syscalls::numbers(name) {
                let args = args_of(Some(location)).unwrap();
                assert!(args.contains(&Arg::Path), "{name}");
            }
        }
    }
}
