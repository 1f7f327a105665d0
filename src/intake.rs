//! Intake: accepts runtimes on the agent socket and takes their listener over the OCI `listenerPath` protocol.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use oci_spec::runtime::ContainerProcessState;
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

use crate::container::Container;
use crate::notify::Engine;
use crate::sys::{self, Listener, PidFd};

/// Largest state a runtime may send; real ones are a few KiB.
pub const MAX_STATE_BYTES: usize = 1 << 20;

/// How long a client may take to send its state.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the listener in the state's `fds`, per the runtime spec.
const SECCOMP_FD_NAME: &str = "seccompFd";

/// Why a connection was refused; `reason()` is its metric label.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("peer uid {0} is not allowed (root and --allow-uid only)")]
    PeerRefused(u32),
    #[error("no complete state within {READ_TIMEOUT:?}")]
    Timeout,
    #[error("state larger than {MAX_STATE_BYTES} bytes")]
    TooLarge,
    #[error("connection closed after {0} bytes, before a complete state")]
    Truncated(usize),
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
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl IntakeError {
    /// The `reason` label of `switchboard_intake_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            IntakeError::PeerRefused(_) => "peer_refused",
            IntakeError::Timeout => "timeout",
            IntakeError::TooLarge => "too_large",
            IntakeError::Truncated(_) => "truncated",
            IntakeError::BadJson(_) => "bad_json",
            IntakeError::NoFd => "no_fd",
            IntakeError::FdCount { .. } => "fd_count",
            IntakeError::NoSeccompFd => "no_seccomp_fd",
            IntakeError::NotAListener(_) => "not_a_listener",
            IntakeError::Io(_) => "io",
        }
    }
}

/// Accepts connections for ever, each handled on its own task so none can hold up another.
pub async fn serve(socket: UnixListener, engine: Arc<Engine>, allowed_uids: Arc<Vec<u32>>) {
    loop {
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let engine = engine.clone();
        let allowed_uids = allowed_uids.clone();
        tokio::spawn(async move {
            if let Err(e) = take_listener(stream, &engine, &allowed_uids).await {
                engine.metrics().intake_error(e.reason());
                tracing::warn!(reason = e.reason(), error = %e, "refused a connection on the agent socket");
            }
        });
    }
}

async fn take_listener(
    stream: UnixStream,
    engine: &Arc<Engine>,
    allowed_uids: &[u32],
) -> Result<(), IntakeError> {
    let uid = stream.peer_cred()?.uid();
    if uid != 0 && !allowed_uids.contains(&uid) {
        return Err(IntakeError::PeerRefused(uid));
    }
    let received = tokio::time::timeout(READ_TIMEOUT, read_state(&stream))
        .await
        .map_err(|_| IntakeError::Timeout)??;
    let mut received = received;
    let listener = received.pick_listener()?;
    let container = Container::from_state(&received.state);
    let init = match PidFd::open(container.init_pid) {
        Ok(pidfd) => Some(pidfd),
        Err(errno) => {
            tracing::warn!(%errno, pid = container.init_pid, "cannot open the container's init; kill rules will not work for it");
            None
        }
    };
    tracing::info!(container = %container.container_id, init_pid = container.init_pid, "listener received");
    engine.attach(listener, container, init)?;
    Ok(())
}

/// Reads until the bytes parse as one complete state; runc keeps the connection open
/// until the first flagged syscalls are answered, so waiting for EOF would deadlock.
async fn read_state(stream: &UnixStream) -> Result<Received, IntakeError> {
    let mut bytes = Vec::with_capacity(4096);
    let mut fds = Vec::new();
    let mut fds_lost = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let received = stream
            .async_io(Interest::READABLE, || {
                sys::receive_with_fds(stream.as_fd(), &mut chunk, &mut fds).map_err(Into::into)
            })
            .await?;
        fds_lost |= received.fds_lost;
        let read = received.bytes;
        if read == 0 {
            return Err(IntakeError::Truncated(bytes.len()));
        }
        bytes.extend_from_slice(&chunk[..read]);
        if bytes.len() > MAX_STATE_BYTES {
            return Err(IntakeError::TooLarge);
        }
        let mut values =
            serde_json::Deserializer::from_slice(&bytes).into_iter::<ContainerProcessState>();
        match values.next() {
            Some(Ok(state)) => {
                return Ok(Received {
                    state,
                    fds,
                    fds_lost,
                })
            }
            Some(Err(e)) if e.is_eof() => continue,
            Some(Err(e)) => return Err(IntakeError::BadJson(e)),
            None => continue,
        }
    }
}

/// What a client sent: its state and every fd that came with it.
struct Received {
    state: ContainerProcessState,
    fds: Vec<OwnedFd>,
    /// More fds arrived than we had room for; the kernel closed the rest.
    fds_lost: bool,
}

impl Received {
    /// Keeps the fd named "seccompFd" if it is a listener; every other fd is closed.
    fn pick_listener(&mut self) -> Result<Listener, IntakeError> {
        let mut fds = std::mem::take(&mut self.fds);
        if fds.is_empty() && !self.fds_lost {
            return Err(IntakeError::NoFd);
        }
        let named = self.state.fds().len();
        if fds.len() != named || self.fds_lost {
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
