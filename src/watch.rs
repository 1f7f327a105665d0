//! The policy's source: the `--policy` file, watched (a ConfigMap's `..data` swap, an editor's rename, a write in place), and what was last loaded from it.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::mpsc;

use crate::policy::{Policy, PolicyError};

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

/// Where the agent's policy comes from: the `--policy` file or the embedded default.
pub struct PolicySource {
    path: Option<PathBuf>,
    /// The bytes the last load read (None: unreadable, or no load yet). A reload, by
    /// SIGHUP or by the watcher, happens once per change: the watcher's news is
    /// checked against this, so a change SIGHUP already loaded is not loaded again.
    loaded: Option<Vec<u8>>,
    /// News from the watcher thread: events in the watched directories have settled.
    events: Option<mpsc::UnboundedReceiver<()>>,
}

impl PolicySource {
    pub fn new(path: Option<&Path>) -> PolicySource {
        PolicySource {
            path: path.map(Path::to_path_buf),
            loaded: None,
            events: None,
        }
    }

    /// Starts watching the file, if there is one. A change since the last load counts:
    /// the first check is made at once. When watching cannot start, SIGHUP still
    /// reloads (logged).
    pub fn watch(&mut self) {
        let Some(path) = &self.path else { return };
        match spawn(path) {
            Ok((tx, rx)) => {
                let _ = tx.send(());
                self.events = Some(rx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "not watching the policy file; reload it with SIGHUP")
            }
        }
    }

    /// Reads and validates the policy, remembering what was read, valid or not.
    pub fn load(&mut self) -> Result<Policy, PolicyError> {
        let Some(path) = &self.path else {
            return Policy::load_or_default(None);
        };
        let read_error = |error| PolicyError::Read {
            path: path.clone(),
            error,
        };
        let bytes = std::fs::read(path);
        self.loaded = bytes.as_ref().ok().cloned();
        let text = String::from_utf8(bytes.map_err(read_error)?)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// True when the file holds what the last load read: a SIGHUP then has nothing to
    /// load (the watcher may have loaded this change already). Never for the embedded
    /// default, which a SIGHUP reloads as before.
    pub fn unchanged(&self) -> bool {
        self.path
            .as_deref()
            .is_some_and(|path| self.loaded.is_some() && std::fs::read(path).ok() == self.loaded)
    }

    /// Returns once the file's content differs from what was last loaded; never without
    /// a watcher. Cancel-safe (for `select!`).
    pub async fn changed(&mut self) {
        loop {
            let Some(events) = &mut self.events else {
                return std::future::pending().await;
            };
            if events.recv().await.is_none() {
                self.events = None;
                continue;
            }
            let path = self.path.as_deref().expect("a watcher has a path");
            if std::fs::read(path).ok() != self.loaded {
                return;
            }
        }
    }
}

type Channel = (mpsc::UnboundedSender<()>, mpsc::UnboundedReceiver<()>);

/// Watches `path` on a thread of its own; a message arrives on the receiver each time
/// events in the file's directory or its target's have been quiet for [`DEBOUNCE`].
/// Returns a sender too, for news of the caller's own.
fn spawn(path: &Path) -> Result<Channel, WatchError> {
    let mut watcher = Watcher::new(path)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = tx.clone();
    std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || watcher.run(&tx))
        .map_err(WatchError::Thread)?;
    Ok((sender, rx))
}

struct Watcher {
    inotify: Inotify,
    path: PathBuf,
    /// The directories watched: the file's own, and its symlink target's. The kubelet never
    /// changes a file in place, but swaps `..data`, an event in the file's directory; a
    /// symlink to a file elsewhere is edited there, so that directory is watched too, and
    /// re-resolved after every change.
    watched: HashMap<PathBuf, WatchDescriptor>,
}

impl Watcher {
    fn new(path: &Path) -> Result<Watcher, WatchError> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(WatchError::Init)?;
        let mut w = Watcher {
            inotify,
            path: path.to_path_buf(),
            watched: HashMap::new(),
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
        // No IN_MODIFY: it fires on every write to any file in the directory, and the
        // agent's own event log may sit beside its policy (a wake-up of this thread per
        // write, ~38 ns of CPU per logged call where the workload runs). A write in place
        // is seen when its writer closes the file, which is also when it is whole.
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CLOSE_WRITE
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
            if tx.send(()).is_err() {
                return;
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

    /// Whether `source` reports a change within `within`.
    fn changes(
        runtime: &tokio::runtime::Runtime,
        source: &mut PolicySource,
        within: Duration,
    ) -> bool {
        runtime.block_on(async { tokio::time::timeout(within, source.changed()).await.is_ok() })
    }

    #[test]
    fn follows_a_symlink_to_another_directory_and_its_retargeting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let base = tempfile::tempdir().unwrap();
        let (link_dir, a, b) = (
            base.path().join("etc"),
            base.path().join("a"),
            base.path().join("b"),
        );
        for d in [&link_dir, &a, &b] {
            std::fs::create_dir(d).unwrap();
        }
        let policy = |text: &str| format!("default: {text}\n");
        std::fs::write(a.join("policy.yaml"), policy("log")).unwrap();
        std::fs::write(b.join("policy.yaml"), policy("allow")).unwrap();
        let link = link_dir.join("policy.yaml");
        symlink(a.join("policy.yaml"), &link).unwrap();
        let mut source = PolicySource::new(Some(&link));
        source.load().unwrap();
        // Changed between the load and the start of the watch: noticed all the same.
        std::fs::write(a.join("policy.yaml"), policy("allow")).unwrap();
        source.watch();
        assert!(
            changes(&runtime, &mut source, Duration::from_secs(2)),
            "a change before the watch"
        );
        source.load().unwrap();
        let (changed, unchanged) = (Duration::from_secs(2), Duration::from_secs(1));

        // Edited where it lives, not where the link is.
        std::fs::write(a.join("policy.yaml"), policy("deny")).unwrap();
        assert!(
            changes(&runtime, &mut source, changed),
            "an edit of the target"
        );
        assert_eq!(source.load().unwrap().default, crate::policy::Action::Deny);
        // The link pointed elsewhere (atomically: a new link renamed over it).
        let tmp = link_dir.join(".policy.yaml.tmp");
        symlink(b.join("policy.yaml"), &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert!(
            changes(&runtime, &mut source, changed),
            "the link retargeted"
        );
        source.load().unwrap();
        // The new target's directory is watched now; the old one no longer matters.
        std::fs::write(b.join("policy.yaml"), policy("kill")).unwrap();
        assert!(
            changes(&runtime, &mut source, changed),
            "an edit of the new target"
        );
        source.load().unwrap();
        std::fs::write(a.join("policy.yaml"), policy("log")).unwrap();
        assert!(!changes(&runtime, &mut source, unchanged), "the old target");
        // The same content written again, or a change already loaded (as by SIGHUP), is none.
        std::fs::write(b.join("policy.yaml"), policy("kill")).unwrap();
        assert!(
            !changes(&runtime, &mut source, unchanged),
            "the same content"
        );
        std::fs::write(b.join("policy.yaml"), policy("log")).unwrap();
        assert!(!source.unchanged(), "a SIGHUP now has a change to load");
        source.load().unwrap();
        assert!(source.unchanged(), "a SIGHUP now has nothing to load");
        assert!(!changes(&runtime, &mut source, unchanged), "already loaded");
    }

    #[test]
    fn writes_to_another_file_beside_the_policy_do_not_wake_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, "default: log\n").unwrap();
        // The agent's event log beside its policy: open for the agent's life (created
        // before it starts, as a shell's `>` does), written often.
        let mut log = std::fs::File::create(dir.path().join("events.jsonl")).unwrap();
        let (_sender, mut news) = spawn(&policy).unwrap();
        let quiet_after = Instant::now() + DEBOUNCE * 4;
        while Instant::now() < quiet_after {
            std::io::Write::write_all(&mut log, b"{\"event\":1}\n").unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(DEBOUNCE * 2);
        assert!(news.try_recv().is_err(), "woken by another file's writes");
        // A write in place of the policy itself still is news.
        std::fs::write(&policy, "default: allow\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while news.try_recv().is_err() {
            assert!(Instant::now() < deadline, "a write in place unseen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
