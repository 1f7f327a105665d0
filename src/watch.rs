//! Notices when the policy file changes (a ConfigMap's `..data` swap, an editor's rename, a write in place) and asks the control loop to reload it.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::mpsc;

/// Quiet time after the last event before the file is read: the kubelet's update and an
/// editor's save are several steps (new directory, new symlink, rename; or write, rename).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("starting inotify: {0}")]
    Init(#[source] Errno),
    #[error("watching {}: {errno}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        errno: Errno,
    },
    #[error("starting the policy watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Watches `path` on a thread of its own; a message arrives on the receiver each time the
/// file's content differs from what it was at the previous message (or at the start).
pub fn spawn(path: &Path) -> Result<mpsc::UnboundedReceiver<()>, WatchError> {
    let mut watcher = Watcher::new(path)?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || watcher.run(&tx))
        .map_err(WatchError::Thread)?;
    Ok(rx)
}

struct Watcher {
    inotify: Inotify,
    path: PathBuf,
    /// The directories watched: the file's own, and its symlink target's. The kubelet never
    /// changes a file in place, but swaps `..data`, an event in the file's directory; a
    /// symlink to a file elsewhere is edited there, so that directory is watched too, and
    /// re-resolved after every change.
    watched: HashMap<PathBuf, WatchDescriptor>,
    /// The content last reported (None: unreadable). Reloading only on a real change keeps
    /// the kubelet's periodic resyncs, attribute changes and a bad file left in place from
    /// counting as reloads more than once.
    last: Option<Vec<u8>>,
}

impl Watcher {
    fn new(path: &Path) -> Result<Watcher, WatchError> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(WatchError::Init)?;
        let mut w = Watcher {
            inotify,
            path: path.to_path_buf(),
            watched: HashMap::new(),
            last: std::fs::read(path).ok(),
        };
        // The file's own directory must be watchable; its target's is best effort.
        let dir = parent(path);
        let wd = w.add(&dir).map_err(|errno| WatchError::Watch {
            path: dir.clone(),
            errno,
        })?;
        w.watched.insert(dir, wd);
        w.rewatch();
        Ok(w)
    }

    fn add(&self, dir: &Path) -> Result<WatchDescriptor, Errno> {
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_ONLYDIR;
        self.inotify.add_watch(dir, mask)
    }

    /// Watches the directories the path resolves through now and drops the others.
    fn rewatch(&mut self) {
        let mut wanted = vec![parent(&self.path)];
        if let Ok(target) = std::fs::canonicalize(&self.path) {
            wanted.push(parent(&target));
        }
        let stale: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !wanted.contains(d))
            .cloned()
            .collect();
        for dir in stale {
            if let Some(wd) = self.watched.remove(&dir) {
                // Fails when the directory is gone, which removed the watch already.
                let _ = self.inotify.rm_watch(wd);
            }
        }
        for dir in wanted {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match self.add(&dir) {
                Ok(wd) => {
                    self.watched.insert(dir, wd);
                }
                Err(errno) => {
                    tracing::warn!(dir = %dir.display(), %errno, "cannot watch the policy's directory; edits there need SIGHUP")
                }
            }
        }
    }

    fn run(&mut self, tx: &mpsc::UnboundedSender<()>) {
        loop {
            match self.inotify.read_events() {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => {
                    tracing::warn!(%errno, "policy watcher stopped; reload with SIGHUP");
                    return;
                }
            }
            self.settle();
            self.rewatch();
            let now = std::fs::read(&self.path).ok();
            if now != self.last {
                self.last = now;
                if tx.send(()).is_err() {
                    return;
                }
            }
        }
    }

    /// Reads events until none came for [`DEBOUNCE`].
    fn settle(&self) {
        let timeout = PollTimeout::try_from(DEBOUNCE).unwrap_or(PollTimeout::MAX);
        loop {
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) => {
                    if self.inotify.read_events().is_err() {
                        return;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// The directory holding `path` ("." for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    /// Whether a change arrives within `within`.
    fn arrives(rx: &mut mpsc::UnboundedReceiver<()>, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if rx.try_recv().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn changed(rx: &mut mpsc::UnboundedReceiver<()>) -> bool {
        arrives(rx, Duration::from_secs(2))
    }

    /// No change within 1 s, five times the debounce.
    fn unchanged(rx: &mut mpsc::UnboundedReceiver<()>) -> bool {
        !arrives(rx, Duration::from_secs(1))
    }

    #[test]
    fn follows_a_symlink_to_another_directory_and_its_retargeting() {
        let base = tempfile::tempdir().unwrap();
        let (link_dir, a, b) = (
            base.path().join("etc"),
            base.path().join("a"),
            base.path().join("b"),
        );
        for d in [&link_dir, &a, &b] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(a.join("policy.yaml"), "one").unwrap();
        std::fs::write(b.join("policy.yaml"), "two").unwrap();
        let link = link_dir.join("policy.yaml");
        symlink(a.join("policy.yaml"), &link).unwrap();
        let mut rx = spawn(&link).unwrap();

        // Edited where it lives, not where the link is.
        std::fs::write(a.join("policy.yaml"), "one, edited").unwrap();
        assert!(changed(&mut rx), "an edit of the target");
        // The link pointed elsewhere (atomically, as `ln -sfn` + rename does).
        let tmp = link_dir.join(".policy.yaml.tmp");
        symlink(b.join("policy.yaml"), &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert!(changed(&mut rx), "the link retargeted");
        // The new target's directory is watched now, the old one no longer matters.
        std::fs::write(b.join("policy.yaml"), "two, edited").unwrap();
        assert!(changed(&mut rx), "an edit of the new target");
        std::fs::write(a.join("policy.yaml"), "one, edited again").unwrap();
        assert!(unchanged(&mut rx), "the old target is no longer the policy");
        // Same content rewritten: no change.
        std::fs::write(b.join("policy.yaml"), "two, edited").unwrap();
        assert!(unchanged(&mut rx), "the same content again");
    }
}
