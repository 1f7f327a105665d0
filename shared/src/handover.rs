//! Syscalls a runtime makes between loading the filter and handing the listener over, which must never be NOTIFY.
//!
//! A NOTIFY syscall blocks until someone answers on the listener. Until the
//! runtime has passed the listener fd out of the container's init, nobody can:
//! the container hangs in `create`. What each runtime does in that window:
//!
//! - runc 1.1 (`libcontainer/standard_init_linux.go`, `setns_init_linux.go`):
//!   `seccomp.InitSeccomp` ends in `patchbpf.PatchAndLoad` → `seccomp(2)`, then
//!   `syncParentSeccomp` (`init_linux.go`) runs `writeSyncWithFd` →
//!   `utils.WriteJSON` → `write(2)` of the fd number on the init pipe; the parent
//!   takes the fd with `pidfd_getfd` and sends it to `listenerPath` itself. After
//!   the write, the child's `read`/`close` may be NOTIFY (runc's own comment in
//!   `InitSeccomp` and its `seccomp-notify.bats` test `read`, `close`, `fcntl`).
//!   runc refuses NOTIFY on `write` and a NOTIFY `defaultAction` for this reason.
//! - runc 1.2+ (`syncParentSeccomp`, `sync.go` `doWriteSync`): the same
//!   `write(2)` via `WritePacket`, and the comment there: it deliberately avoids
//!   `sendmsg(2)` "because a container might have an SCMP_ACT_NOTIFY action on
//!   sendmsg(2)". runc 1.2.0-rc.2 wrapped the listener in an `*os.File` after the
//!   load, which calls `fcntl(2)`, and hung with NOTIFY on `fcntl` (runc issue
//!   #4328, fixed by reverting in PR #4337).
//! - The window runs Go code on the thread that loaded the filter (runc locks
//!   init to it; the filter binds that thread and threads it clones). JSON
//!   marshalling allocates, so the Go runtime may `mmap`, `munmap`, `madvise`,
//!   park or wake on `futex`, spin (`sched_yield`, `nanosleep`), take the
//!   preemption signal (`rt_sigreturn`), or in a GC assist preempt another
//!   goroutine (`getpid`, `tgkill`). It does not `clone` there: a locked thread
//!   hands thread creation to Go's template thread, started unfiltered by
//!   `LockOSThread`, so `clone`, `clone3` and the new thread's `rt_sigprocmask`,
//!   `sigaltstack`, `gettid` stay outside the filter and remain allowed.
//! - crun before 1.6 sent the listener from the container's init with
//!   `sendmsg(2)` and hung with NOTIFY on it (crun issue #1002); since then a
//!   helper forked before the load sends it (crun commit 17337c48, in 1.6).
//!   `switchboard run` hands over with `sendmsg` too, and its child may grow
//!   its heap (`brk`) on the way.
//! - On an error in the window the init exits (`exit_group`, `exit`); NOTIFY on
//!   them turns a failed start into a hung one, as the listener is still unsent.
//!
//! `read`, `recvmsg` and `close` run only after the fd is out (runc: "read()/close()
//! ... _can_ use SCMP_ACT_NOTIFY"), so they, too, may be NOTIFY.

/// Syscall names the hook never makes NOTIFY, each with the reason.
pub const RUNTIME_HANDOVER: [(&str, &str); 17] = [
    ("write", "runc writes the listener fd number to its parent with write(2) after loading the filter"),
    ("writev", "a runtime in C may write the listener fd number with writev(2), the vector form of write(2)"),
    ("sendmsg", "runtimes that send the listener from the container (crun before 1.6, switchboard run) use sendmsg(2)"),
    ("fcntl", "runc 1.2.0-rc.2 calls fcntl(2) on the listener before handing it over (runc issue #4328)"),
    ("futex", "the Go runtime in runc init may park or wake threads with futex(2) while handing the listener over"),
    ("mmap", "the Go runtime in runc init may allocate with mmap(2) while handing the listener over"),
    ("munmap", "the Go runtime in runc init may free memory with munmap(2) while handing the listener over"),
    ("madvise", "the Go runtime in runc init may call madvise(2) while handing the listener over"),
    ("sched_yield", "the Go runtime in runc init may yield with sched_yield(2) while handing the listener over"),
    ("nanosleep", "the Go runtime in runc init may sleep with nanosleep(2) while handing the listener over"),
    ("clock_nanosleep", "a runtime in C sleeps with clock_nanosleep(2), the form of nanosleep(2) libc uses"),
    ("rt_sigreturn", "a signal (such as Go's preemption signal) taken while handing the listener over returns with rt_sigreturn(2)"),
    ("getpid", "the Go runtime in runc init calls getpid(2) to preempt another goroutine while handing the listener over"),
    ("tgkill", "the Go runtime in runc init preempts other threads with tgkill(2) while handing the listener over"),
    ("brk", "switchboard run's child may grow its heap with brk(2) while handing the listener over"),
    ("exit", "a runtime whose setup fails before handing the listener over exits with exit(2)"),
    ("exit_group", "a runtime whose setup fails before handing the listener over exits with exit_group(2)"),
];

/// Syscalls runc 1.1 init makes after loading the filter and handing the listener over, up to
/// and including the exec (`standard_init_linux.go`, `utils.CloseExecFrom`). A listener sees
/// them, so a container's recording has them; a plain process's recording cannot, and a
/// profile without them stops runc before the workload starts ("ensure /proc/self/fd is on
/// procfs: operation not permitted"). Recorded profiles allow them with the handover list.
pub const RUNTIME_AFTER_LOAD: [(&str, &str); 7] = [
    (
        "close",
        "runc init closes its sync pipe, log pipe and exec fifo before the exec",
    ),
    (
        "fstatfs",
        "runc init checks that /proc/self/fd is on procfs before marking fds close-on-exec",
    ),
    (
        "openat",
        "runc init opens /proc/self/fd to mark fds close-on-exec, and opens the exec fifo",
    ),
    (
        "getdents64",
        "runc init lists /proc/self/fd to mark fds close-on-exec",
    ),
    (
        "read",
        "the Go runtime in runc init reads while listing /proc/self/fd",
    ),
    (
        "epoll_ctl",
        "Go registers the files runc init opens with its poller",
    ),
    ("execve", "runc init execs the container's process"),
];

/// Why `syscall` can never be NOTIFY, if it is one of the handover syscalls.
pub fn reason(syscall: &str) -> Option<&'static str> {
    RUNTIME_HANDOVER
        .iter()
        .find(|(name, _)| *name == syscall)
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_the_runtime_minimum() {
        for name in ["write", "sendmsg", "fcntl", "brk"] {
            assert!(
                RUNTIME_HANDOVER.iter().any(|(n, _)| *n == name),
                "{name} missing"
            );
        }
        assert!(reason("read").is_none());
        assert!(reason("mkdir").is_none());
    }
}
