//! Kill answers: the caller dies before it can run again, and so does what it belongs to (container cgroup, pid namespace or `switchboard run`'s process group).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::lock::Locked;
use crate::sys::{Listener, PidFd};

/// How long a v1 freezer may take to freeze a container before its tasks are killed anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(500);

/// What ending "the container" reaches, resolved when its listener is attached.
#[derive(Debug)]
pub(crate) enum Scope {
    /// A cgroup v2 directory of the container's own: writing `cgroup.kill` SIGKILLs every
    /// process in it, and forks racing the kill fail. `init` is the fallback.
    Cgroup2 { dir: OwnedFd, init: PidFd },
    /// A cgroup v1 freezer directory of the container's own: freeze, SIGKILL each task, thaw.
    Freezer { dir: OwnedFd, init: PidFd },
    /// The container's init alone: in a pid namespace its death takes every process with it.
    Init(PidFd),
    /// `switchboard run`'s command, in a process group of its own.
    ProcessGroup(&'static ProcessGroup),
    /// Nothing beyond the caller: the container's init is not known or not trusted.
    CallerOnly,
}

/// The process group of a command we forked, which it leads while we have not reaped it.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: Pid,
    /// Set once the leader is reaped: its pid, and so the pgid, may then be reused.
    reaped: Mutex<bool>,
}

impl ProcessGroup {
    /// The group `leader` (our unreaped child, `setpgid` to itself) leads. Leaked: one per `run`.
    pub fn new(leader: Pid) -> &'static ProcessGroup {
        Box::leak(Box::new(ProcessGroup {
            pgid: leader,
            reaped: Mutex::new(false),
        }))
    }

    /// Runs `reap` (which reaps the leader, already a zombie) while no kill can use the pgid.
    pub fn reap<T>(&self, reap: impl FnOnce() -> T) -> T {
        let mut reaped = self.reaped.locked();
        let out = reap();
        *reaped = true;
        out
    }

    fn kill(&self) -> Result<(), Errno> {
        let reaped = self.reaped.locked();
        if *reaped {
            return Err(Errno::ESRCH);
        }
        killpg(self.pgid, Signal::SIGKILL)
    }
}

impl Scope {
    /// The scope of a container whose init is `init`: its own cgroup when it has one,
    /// else its init, else only callers.
    pub fn for_container(init: Option<PidFd>) -> Scope {
        let Some(init) = init else {
            return Scope::CallerOnly;
        };
        match own_cgroup(&init) {
            Some((Hierarchy::Unified, dir)) => Scope::Cgroup2 { dir, init },
            Some((Hierarchy::Freezer, dir)) => Scope::Freezer { dir, init },
            None => Scope::Init(init),
        }
    }

    /// Ends every process in the scope; false when there is nothing beyond the caller
    /// or it could not be done.
    pub fn end(&self) -> bool {
        let ended = match self {
            Scope::Cgroup2 { dir, init } => {
                write_at(dir, "cgroup.kill", b"1").or_else(|errno| {
                    tracing::warn!(%errno, "cgroup.kill failed; killing the container's init");
                    init.kill()
                })
            }
            Scope::Freezer { dir, init } => freeze_and_kill(dir).or_else(|errno| {
                tracing::warn!(%errno, "killing through the freezer failed; killing the container's init");
                init.kill()
            }),
            Scope::Init(init) => init.kill(),
            Scope::ProcessGroup(group) => group.kill(),
            Scope::CallerOnly => return false,
        };
        if let Err(errno) = &ended {
            tracing::error!(%errno, "ending the container failed");
        }
        ended.is_ok()
    }
}

/// A pidfd on the task blocked in notification `id` (`tid`, as RECV reported it), or None
/// when it cannot be had safely. The pidfd is opened first and the notification checked
/// after: a still-pending id proves the task never left the syscall, so `tid` was not
/// recycled before the pidfd pinned it.
pub(crate) fn open_caller(listener: &Listener, id: u64, tid: u32) -> Option<PidFd> {
    let tid = i32::try_from(tid).ok().filter(|tid| *tid > 0)?;
    let caller = match PidFd::open_task(tid) {
        Ok(caller) => caller,
        // A thread, on a kernel without PIDFD_THREAD: its process, which SIGKILL ends anyway.
        Err(Errno::EINVAL) => PidFd::open(thread_group_of(tid)?).ok()?,
        Err(_) => return None,
    };
    listener.is_pending(id).then_some(caller)
}

fn thread_group_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// The cgroup hierarchies a container can be ended through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hierarchy {
    Unified,
    Freezer,
}

impl Hierarchy {
    /// Whether a `/proc/PID/cgroup` line's controller list is this hierarchy's.
    fn is(self, controllers: &str) -> bool {
        match self {
            Hierarchy::Unified => controllers.is_empty(),
            Hierarchy::Freezer => controllers.split(',').any(|c| c == "freezer"),
        }
    }

    /// The file that proves a directory of this hierarchy can end its processes.
    fn control_file(self) -> &'static str {
        match self {
            Hierarchy::Unified => "cgroup.kill",
            Hierarchy::Freezer => "freezer.state",
        }
    }

    /// Where it is mounted: (root of the mount within the hierarchy, mount point).
    fn mount(self) -> Option<(String, PathBuf)> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        mountinfo.lines().find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mount: Vec<&str> = mount.split(' ').collect();
            let fs: Vec<&str> = fs.split(' ').collect();
            let wanted = match self {
                Hierarchy::Unified => fs.first() == Some(&"cgroup2"),
                Hierarchy::Freezer => {
                    fs.first() == Some(&"cgroup") && fs.get(2).is_some_and(|opts| self.is(opts))
                }
            };
            if !wanted {
                return None;
            }
            Some((mount.get(3)?.to_string(), PathBuf::from(mount.get(4)?)))
        })
    }
}

/// The path of `pid`'s cgroup in `hierarchy`, from `/proc/PID/cgroup`.
fn cgroup_of(pid: &str, hierarchy: Hierarchy) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        hierarchy.is(controllers).then(|| path.to_string())
    })
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `path` is `ancestor` or lies below it.
fn is_within(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A directory, opened, of the cgroup `init` was put in by its runtime, in the first
/// hierarchy that can end it. Only a cgroup of the container's own qualifies: not the
/// cgroup of init's parent (`switchboard run --agent` hands over a command that shares
/// its user's session cgroup), and not one holding the agent.
fn own_cgroup(init: &PidFd) -> Option<(Hierarchy, OwnedFd)> {
    let pid = init.pid();
    let parent = parent_of(pid)?;
    let found = [Hierarchy::Unified, Hierarchy::Freezer]
        .into_iter()
        .find_map(|hierarchy| {
            let path = cgroup_of(&pid.to_string(), hierarchy)?;
            let parents = cgroup_of(&parent.to_string(), hierarchy)?;
            let agents = cgroup_of("self", hierarchy)?;
            if path == "/" || path == parents || is_within(&agents, &path) {
                return None;
            }
            let (root, mount_point) = hierarchy.mount()?;
            let relative = if root == "/" {
                path.as_str()
            } else {
                path.strip_prefix(root.trim_end_matches('/'))?
            };
            let dir = mount_point.join(relative.trim_start_matches('/'));
            let dir = open_dir(&dir)?;
            openat(
                &dir,
                hierarchy.control_file(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            Some((hierarchy, dir))
        });
    // Reaped during the reads, `pid` may have named another process by then.
    if !init.is_alive() {
        return None;
    }
    if found.is_none() {
        tracing::info!(
            pid,
            "no cgroup of the container's own; a kill ends its init"
        );
    }
    found
}

fn open_dir(path: &Path) -> Option<OwnedFd> {
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .ok()
        .map(OwnedFd::from)
}

/// Writes `bytes` to the file `name` in `dir`. Through the directory's fd, a cgroup removed
/// since (the container ended) fails with ENOENT instead of reaching a new one at its path.
fn write_at(dir: &OwnedFd, name: &str, bytes: &[u8]) -> Result<(), Errno> {
    let fd = openat(
        dir.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    std::fs::File::from(fd)
        .write_all(bytes)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn read_at(dir: &OwnedFd, name: &str) -> Result<String, Errno> {
    use std::io::Read;
    let fd = openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(text)
}

/// cgroup v1 has no cgroup.kill: freeze the cgroup so no task can run, fork or exit (and so
/// no pid in it can be reused), SIGKILL each, and thaw so they die.
#[cold]
fn freeze_and_kill(dir: &OwnedFd) -> Result<(), Errno> {
    write_at(dir, "freezer.state", b"FROZEN")?;
    let deadline = Instant::now() + FREEZE_WAIT;
    // FREEZING until every task stopped; a task in an uninterruptible sleep can hold it there,
    // and then the kill goes ahead on a partly frozen cgroup rather than not at all.
    while read_at(dir, "freezer.state")?.trim() != "FROZEN" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed = read_at(dir, "cgroup.procs").map(|procs| {
        for pid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    });
    let thawed = write_at(dir, "freezer.state", b"THAWED");
    killed.and(thawed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use switchboard_test_support::require_root;

    /// A fresh cgroup directory under `hierarchy`'s mount, removed on drop.
    struct TestCgroup(PathBuf);

    impl TestCgroup {
        /// A cgroup for `test`, or None (after a SKIP line) without root or `hierarchy`.
        fn for_test(test: &str, hierarchy: Hierarchy) -> Option<TestCgroup> {
            if !require_root(test) {
                return None;
            }
            let cgroup = TestCgroup::new(hierarchy);
            if cgroup.is_none() {
                eprintln!("SKIP {test}: no writable {hierarchy:?} cgroup hierarchy");
            }
            cgroup
        }

        fn new(hierarchy: Hierarchy) -> Option<TestCgroup> {
            let (root, mount_point) = hierarchy.mount()?;
            let own = cgroup_of("self", hierarchy)?;
            let own = own.strip_prefix(root.trim_end_matches('/')).unwrap_or(&own);
            let path = mount_point
                .join(own.trim_start_matches('/'))
                .join(format!("sb-kill-test-{}", std::process::id()));
            std::fs::create_dir(&path).ok()?;
            Some(TestCgroup(path))
        }

        /// A shell moved into the cgroup that starts a `sleep` of its own once it is in,
        /// and reports it: a process tree whose parent (this test) is outside the cgroup.
        fn spawn_tree(&self) -> (Child, i32) {
            let marker = tempfile::NamedTempFile::new().unwrap();
            let script = format!(
                "echo $$ > {}/cgroup.procs || exit 1; sleep 60 & echo $! > {}; wait",
                self.0.display(),
                marker.path().display()
            );
            let mut shell = Command::new("sh").args(["-c", &script]).spawn().unwrap();
            let found = (0..500).find_map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                std::fs::read_to_string(marker.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            });
            let Some(grandchild) = found else {
                let _ = shell.kill();
                panic!("the shell did not start its sleep in {}", self.0.display());
            };
            (shell, grandchild)
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            for _ in 0..100 {
                if std::fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn within_means_equal_or_below() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a/b", "/"));
        assert!(!is_within("/ab", "/a"));
        assert!(!is_within("/", "/a"));
    }

    fn assert_tree_ends(scope: &Scope, mut shell: Child, grandchild: i32) {
        assert!(scope.end(), "{scope:?}");
        use std::os::unix::process::ExitStatusExt;
        let status = shell.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            // A zombie still has /proc/PID but no cgroup line; a recycled pid is a new process.
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        });
        assert!(gone, "the grandchild {grandchild} outlived the kill");
    }

    #[test]
    fn a_container_cgroup_is_ended_as_a_whole() {
        let test = "a_container_cgroup_is_ended_as_a_whole";
        let Some(cgroup) = TestCgroup::for_test(test, Hierarchy::Unified) else {
            return;
        };
        let (shell, grandchild) = cgroup.spawn_tree();
        let scope = Scope::for_container(Some(PidFd::open(shell.id().cast_signed()).unwrap()));
        assert!(matches!(scope, Scope::Cgroup2 { .. }), "{scope:?}");
        assert_tree_ends(&scope, shell, grandchild);
    }

    /// cgroup v1 has no cgroup.kill: the freezer path, on a v1 freezer cgroup of its own.
    #[test]
    fn a_v1_freezer_cgroup_is_frozen_killed_and_thawed() {
        let test = "a_v1_freezer_cgroup_is_frozen_killed_and_thawed";
        let Some(cgroup) = TestCgroup::for_test(test, Hierarchy::Freezer) else {
            return;
        };
        let (shell, grandchild) = cgroup.spawn_tree();
        let init = PidFd::open(shell.id().cast_signed()).unwrap();
        let scope = Scope::Freezer {
            dir: open_dir(&cgroup.0).unwrap(),
            init,
        };
        assert_tree_ends(&scope, shell, grandchild);
        assert_eq!(
            std::fs::read_to_string(cgroup.0.join("freezer.state"))
                .unwrap()
                .trim(),
            "THAWED"
        );
    }

    #[test]
    fn a_process_in_its_parents_cgroup_is_no_container() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let scope = Scope::for_container(Some(PidFd::open(child.id().cast_signed()).unwrap()));
        assert!(matches!(scope, Scope::Init(_)), "{scope:?}");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_thread_gets_a_pidfd_too() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        // Not a process: refused (EINVAL before Linux 6.9, ENOENT since).
        assert!(PidFd::open(tid).is_err());
        let pidfd = PidFd::open_task(tid).unwrap();
        assert!(pidfd.is_alive());
        assert_eq!(thread_group_of(tid), Some(std::process::id().cast_signed()));
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }
}
