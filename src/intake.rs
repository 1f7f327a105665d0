//! Intake: accepts runtimes on the agent socket and takes their listener over the OCI `listenerPath` protocol.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use oci_spec::runtime::ContainerProcessState;
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;

use crate::container::{self, Container};
use crate::decision::Ceiling;
use crate::notify::Engine;
use crate::sys::{self, Listener, PidFd};

/// Largest state a runtime may send; real ones are a few KiB.
pub(crate) const MAX_STATE_BYTES: usize = 1 << 20;

/// How long a client may take to send its state.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the listener in the state's `fds`, per the runtime spec.
const SECCOMP_FD_NAME: &str = "seccompFd";

/// Why a connection was refused; `reason()` is its metric label.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IntakeError {
    #[error("peer uid {0} is not allowed (root and --allow-uid only)")]
    PeerRefused(u32),
    #[error("no complete state within {READ_TIMEOUT:?}")]
    Timeout,
    #[error("state larger than {MAX_STATE_BYTES} bytes")]
    TooLarge,
    #[error("connection closed after {0} bytes, before a complete state")]
    Truncated(usize),
    /// Connected and closed without a byte or fd: a liveness probe (a second agent checking
    /// whether this socket is live), not a runtime that broke off; not counted.
    #[error("connection closed without sending anything")]
    Empty,
    #[error("state is not valid JSON of the runtime-spec's ContainerProcessState: {0}")]
    BadJson(serde_json::Error),
    #[error("no file descriptor was sent")]
    NoFd,
    #[error("{received} file descriptors were sent but the state names {named}")]
    FdCount { received: usize, named: usize },
    #[error("the state's fds do not name {SECCOMP_FD_NAME:?}")]
    NoSeccompFd,
    #[error("the fd sent as {SECCOMP_FD_NAME:?} is not a seccomp listener ({0})")]
    NotAListener(Errno),
    #[error("more than {MAX_FDS} file descriptors were sent ({0} kept until then)")]
    TooManyFds(usize),
    #[error("dropped to make room: {0} connections were being read at once")]
    TooManyConnections(usize),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Every counted `reason`, exported at 0 from start-up so that dashboards and `absent()`
/// alerts see the series before the first refusal.
const COUNTED_REASONS: [&str; 13] = [
    "peer_refused",
    "timeout",
    "too_large",
    "truncated",
    "bad_json",
    "no_fd",
    "fd_count",
    "no_seccomp_fd",
    "not_a_listener",
    "too_many_fds",
    "too_many_connections",
    "io",
    BUNDLE_REFUSED,
];

impl IntakeError {
    /// The `reason` label of `switchboard_intake_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            IntakeError::PeerRefused(_) => "peer_refused",
            IntakeError::Timeout => "timeout",
            IntakeError::TooLarge => "too_large",
            IntakeError::Truncated(_) => "truncated",
            IntakeError::Empty => "empty",
            IntakeError::BadJson(_) => "bad_json",
            IntakeError::NoFd => "no_fd",
            IntakeError::FdCount { .. } => "fd_count",
            IntakeError::NoSeccompFd => "no_seccomp_fd",
            IntakeError::NotAListener(_) => "not_a_listener",
            IntakeError::TooManyFds(_) => "too_many_fds",
            IntakeError::TooManyConnections(_) => "too_many_connections",
            IntakeError::Io(_) => "io",
        }
    }
}

/// Default cap on connections being read at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Most fds one connection may send; a runtime sends one.
const MAX_FDS: usize = sys::MAX_FDS_PER_MESSAGE;

/// Fewest and most bytes one read asks for: the buffer starts small and at most doubles
/// per read, so it grows only as bytes arrive.
const READ_CHUNK: (usize, usize) = (1024, 16 * 1024);

/// After a read that emptied the socket without completing the state, wait this long
/// before the next: a client trickling bytes then costs at most ~100 wake-ups a second,
/// while a runtime, which sends its state in one message, never waits.
const TRICKLE_PAUSE: Duration = Duration::from_millis(10);

/// How long reading a bundle's config.json may take before it counts as refused.
const BUNDLE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Bundle reads that may be under way at once, stuck ones included (a read on a hung
/// file system never returns); beyond this, the capabilities count as unknown.
const MAX_BUNDLE_READS: usize = 16;

/// What intake accepts.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Uids besides root whose listeners are served.
    pub allowed_uids: Vec<u32>,
    /// Connections being read at once; beyond it, the oldest is dropped.
    pub max_connections: usize,
}

/// Accepts connections for ever, each handled on its own task so none can hold up another.
pub async fn serve(socket: UnixListener, engine: Arc<Engine>, config: IntakeConfig) {
    for reason in COUNTED_REASONS {
        engine.metrics().intake_errors.with_label_values(&[reason]);
    }
    let bundle_reads = Arc::new(AtomicUsize::new(0));
    // Connections still reading their state, oldest first, each with its "still reading" flag.
    let mut pending: VecDeque<(AbortHandle, Arc<AtomicBool>)> = VecDeque::new();
    loop {
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Strangers are refused before they can take a slot from the runtimes.
        let uid = match peer_uid(&stream, &config.allowed_uids) {
            Ok(uid) => uid,
            Err(e) => {
                refused(&engine, &e);
                continue;
            }
        };
        // A connection past its state holds a runtime's listener; only readers are capped.
        pending.retain(|(task, reading)| !task.is_finished() && reading.load(Ordering::Acquire));
        if pending.len() >= config.max_connections.max(1) {
            // Dropping the oldest rather than the newest: a runtime sends its state as soon as
            // it connects, so a flood of idle connections only ever evicts its own.
            if let Some((oldest, _)) = pending.pop_front() {
                // On this single-threaded runtime an unfinished task is parked at an await,
                // so the abort takes effect before it gets any further.
                oldest.abort();
                refused(
                    &engine,
                    &IntakeError::TooManyConnections(config.max_connections),
                );
            }
        }
        let engine = engine.clone();
        let bundle_reads = bundle_reads.clone();
        let reading = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let reading = reading.clone();
            async move {
                if let Err(e) = take_listener(stream, uid, &reading, &engine, &bundle_reads).await {
                    refused(&engine, &e);
                }
            }
        });
        pending.push_back((task.abort_handle(), reading));
    }
}

fn refused(engine: &Engine, e: &IntakeError) {
    if matches!(e, IntakeError::Empty) {
        tracing::debug!("a connection closed without sending anything (a liveness probe)");
        return;
    }
    engine.metrics().intake_error(e.reason());
    tracing::warn!(reason = e.reason(), error = %e, "refused a connection on the agent socket");
}

fn peer_uid(stream: &UnixStream, allowed_uids: &[u32]) -> Result<u32, IntakeError> {
    let uid = stream.peer_cred()?.uid();
    if uid != 0 && !allowed_uids.contains(&uid) {
        return Err(IntakeError::PeerRefused(uid));
    }
    Ok(uid)
}

async fn take_listener(
    stream: UnixStream,
    uid: u32,
    reading: &AtomicBool,
    engine: &Arc<Engine>,
    bundle_reads: &Arc<AtomicUsize>,
) -> Result<(), IntakeError> {
    let received = tokio::time::timeout(READ_TIMEOUT, read_state(&stream))
        .await
        .map_err(|_| IntakeError::Timeout)??;
    reading.store(false, Ordering::Release);
    let mut received = received;
    let listener = received.pick_listener()?;
    let mut container = Container::from_state(&received.state);
    // Only root (the runtime) is believed about which process is the container's init;
    // any other peer could name a process of someone else's for a kill rule to end.
    let trusted = uid == 0;
    if let Some(record) = container.record.clone() {
        let capabilities = if trusted {
            match read_capabilities(Path::new(&container.bundle), bundle_reads).await {
                Ok(caps) => Some(caps),
                Err(why) => {
                    engine.metrics().intake_error(BUNDLE_REFUSED);
                    tracing::warn!(reason = BUNDLE_REFUSED, container = %container.container_id, error = %why,
                        "cannot read the bundle's capabilities; the record's capability-conditioned syscalls get their strictest answer");
                    None
                }
            }
        } else {
            // Nor is a bundle path from a non-root peer opened by the (root) agent.
            None
        };
        container.capabilities.clone_from(&capabilities);
        // libseccomp builds the filter in milliseconds: off the control-plane thread.
        let ceiling = tokio::task::spawn_blocking(move || {
            Ceiling::for_container(&record, capabilities.as_deref())
        })
        .await
        .map_err(|e| IntakeError::Io(std::io::Error::other(e)))?;
        container.original = Some(Arc::new(ceiling));
    }
    let init = if trusted {
        match PidFd::open(container.init_pid) {
            Ok(pidfd) => Some(pidfd),
            Err(errno) => {
                tracing::warn!(%errno, pid = container.init_pid, "cannot open the container's init; kill rules will not work for it");
                None
            }
        }
    } else {
        tracing::info!(uid, pid = container.init_pid, "the peer is not root: the pid its state names is not trusted, and no kill rule signals it");
        None
    };
    tracing::info!(container = %container.container_id, init_pid = container.init_pid, "listener received");
    engine.attach(listener, container, init)?;
    // For `switchboard run --agent`; a runtime has usually closed its end already.
    let _ = stream.try_write(crate::handoff::TAKEN);
    Ok(())
}

/// The `reason` label counted when a bundle's capabilities cannot be read; the container is still served.
pub(crate) const BUNDLE_REFUSED: &str = "bundle_config";

/// `container::bounding_capabilities` on a blocking thread, with a timeout and a cap on
/// reads under way, so a FIFO, a huge file or a hung file system never holds up the control plane.
async fn read_capabilities(
    bundle: &Path,
    under_way: &Arc<AtomicUsize>,
) -> Result<Vec<String>, String> {
    /// Counts a read as under way until its thread is done with it, even after a timeout.
    struct UnderWay(Arc<AtomicUsize>);
    impl Drop for UnderWay {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    if under_way.fetch_add(1, Ordering::AcqRel) >= MAX_BUNDLE_READS {
        under_way.fetch_sub(1, Ordering::AcqRel);
        return Err(format!("{MAX_BUNDLE_READS} bundle reads already under way"));
    }
    let token = UnderWay(under_way.clone());
    let bundle = bundle.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let _token = token;
        container::bounding_capabilities(&bundle)
    });
    match tokio::time::timeout(BUNDLE_READ_TIMEOUT, read).await {
        Err(_) => Err(format!("no answer within {BUNDLE_READ_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("the reading thread failed: {e}")),
        Ok(Ok(result)) => result.map_err(|e| e.to_string()),
    }
}

/// Reads until one complete state has arrived; runc keeps the connection open
/// until the first flagged syscalls are answered, so waiting for EOF would deadlock.
/// Nothing is allocated before the first byte arrives, each byte is scanned once and
/// the JSON is parsed once, when its outermost object closes.
async fn read_state(stream: &UnixStream) -> Result<Received, IntakeError> {
    // `buf[..filled]` is what arrived; the rest was zeroed once and is reused, so no byte
    // is zeroed twice however small the reads.
    let mut buf = Vec::new();
    let mut filled = 0;
    let mut fds = Vec::new();
    let mut framing = Framing::default();
    loop {
        stream.readable().await?;
        let want = filled
            .clamp(READ_CHUNK.0, READ_CHUNK.1)
            .min(MAX_STATE_BYTES + 1 - filled);
        if buf.len() < filled + want {
            buf.resize(filled + want, 0);
        }
        let room = &mut buf[filled..filled + want];
        let result = stream.try_io(Interest::READABLE, || {
            sys::receive_with_fds(stream.as_fd(), room, &mut fds).map_err(Into::into)
        });
        if fds.len() > MAX_FDS || result.as_ref().is_ok_and(|r| r.fds_lost) {
            return Err(IntakeError::TooManyFds(fds.len()));
        }
        let received = match result {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => other?,
        };
        if received.bytes == 0 {
            if filled == 0 && fds.is_empty() {
                return Err(IntakeError::Empty);
            }
            return Err(IntakeError::Truncated(filled));
        }
        filled += received.bytes;
        if filled > MAX_STATE_BYTES {
            return Err(IntakeError::TooLarge);
        }
        if let Some(end) = framing.feed(&buf[..filled]) {
            let state = serde_json::from_slice::<ContainerProcessState>(&buf[..end])
                .map_err(IntakeError::BadJson)?;
            return Ok(Received { state, fds });
        }
        if received.bytes < want {
            tokio::time::sleep(TRICKLE_PAUSE).await;
        }
    }
}

/// Finds where the first top-level JSON object ends, looking at each byte once.
#[derive(Debug, Default)]
struct Framing {
    scanned: usize,
    /// Open objects and arrays; 0 before the first `{`.
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl Framing {
    /// Scans what arrived since the last call. Returns the length of the first complete
    /// object, or of everything when the bytes cannot start one, so the parser names the error.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate().skip(self.scanned) {
            self.scanned = i + 1;
            if self.depth == 0 {
                match b {
                    b'{' => self.depth = 1,
                    b if b.is_ascii_whitespace() => {}
                    _ => return Some(bytes.len()),
                }
            } else if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
            }
        }
        None
    }
}

/// What a client sent: its state and every fd that came with it.
struct Received {
    state: ContainerProcessState,
    fds: Vec<OwnedFd>,
}

impl Received {
    /// Keeps the fd named "seccompFd" if it is a listener; every other fd is closed.
    fn pick_listener(&mut self) -> Result<Listener, IntakeError> {
        let mut fds = std::mem::take(&mut self.fds);
        if fds.is_empty() {
            return Err(IntakeError::NoFd);
        }
        let named = self.state.fds().len();
        if fds.len() != named {
            return Err(IntakeError::FdCount {
                received: fds.len(),
                named,
            });
        }
        let index = self
            .state
            .fds()
            .iter()
            .position(|name| name == SECCOMP_FD_NAME)
            .ok_or(IntakeError::NoSeccompFd)?;
        let fd = fds.swap_remove(index);
        Listener::from_fd(fd).map_err(|(_, errno)| IntakeError::NotAListener(errno))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&str]) -> Option<usize> {
        let mut framing = Framing::default();
        let mut bytes = Vec::new();
        let mut found = None;
        for chunk in chunks {
            bytes.extend_from_slice(chunk.as_bytes());
            found = framing.feed(&bytes);
        }
        found
    }

    #[test]
    fn framing_ends_at_the_outer_brace_only() {
        let state = r#" {"a":{"b":["}",{"c":"\"}"}]},"d":"\\"}tail"#;
        let end = state.find("tail").unwrap();
        assert_eq!(frame(&[state]), Some(end));
        let bytes: Vec<String> = state.chars().map(String::from).collect();
        let mut framing = Framing::default();
        let mut seen = String::new();
        let mut found = None;
        for b in &bytes {
            seen.push_str(b);
            if let Some(end) = framing.feed(seen.as_bytes()) {
                found = Some(end);
                break;
            }
        }
        assert_eq!(found, Some(end));
        assert_eq!(frame(&[r#"{"a":"}"#]), None);
        assert_eq!(frame(&["  \n", "x{}"]), Some(6));
    }

    fn received(fds_named: &[&str], fds: Vec<OwnedFd>) -> Received {
        let state = serde_json::json!({
            "ociVersion": "1.0.2",
            "fds": fds_named,
            "pid": 1,
            "state": {"ociVersion": "1.0.2", "id": "c", "status": "creating", "bundle": "/"},
        });
        Received {
            state: serde_json::from_value(state).unwrap(),
            fds,
        }
    }

    fn pipe_end() -> OwnedFd {
        nix::unistd::pipe().unwrap().0
    }

    #[test]
    fn pick_listener_names_what_is_wrong() {
        let reason = |mut r: Received| r.pick_listener().unwrap_err().reason();
        assert_eq!(reason(received(&["seccompFd"], vec![])), "no_fd");
        assert_eq!(
            reason(received(&["seccompFd"], vec![pipe_end(), pipe_end()])),
            "fd_count"
        );
        assert_eq!(
            reason(received(&["other"], vec![pipe_end()])),
            "no_seccomp_fd"
        );
        // A pipe named seccompFd is refused by the kernel's own ID_VALID check.
        assert_eq!(
            reason(received(&["seccompFd"], vec![pipe_end()])),
            "not_a_listener"
        );
    }
}
