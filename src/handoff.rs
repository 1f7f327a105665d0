//! Passing a seccomp listener between processes: from a forked child to its parent, and to an agent as a runtime does.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::{ContainerProcessStateBuilder, ContainerState, StateBuilder};

use crate::container::Container;
use crate::sys::{self, Listener};

/// The OCI version runc 1.1 writes in the state it sends over `listenerPath`.
const OCI_VERSION: &str = "1.0.2";

/// What the agent writes back once it serves a listener. Runtimes never read it (runc
/// closes the connection unread); `switchboard run --agent` waits for it so that CMD never
/// starts under a filter nobody answers. Refusals close the connection without it.
pub(crate) const TAKEN: &[u8] = b"taken\n";

/// How long `hand_to_agent` waits for [`TAKEN`]: the agent reads a state for at most 5 s,
/// and a bundle's capabilities for 2 s more.
const TAKEN_TIMEOUT: Duration = Duration::from_secs(15);

/// What `run --agent` says when the agent hung up without taking the listener, whether
/// before the state was sent or after.
const AGENT_HUNG_UP: &str = "the agent closed the connection without taking the listener (its log says why: a uid not given with --allow-uid, say)";

/// Waits until `fd` is readable or `deadline` passes (never, without one).
pub fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> anyhow::Result<()> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!("timed out");
                }
                PollTimeout::try_from(left.min(Duration::from_secs(1))).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e).context("poll"),
        }
    }
}

/// Receives one message from a child that hands its listener over: the bytes it sent with
/// it in `payload`, and the listener, or None if the message carried no fd (the child
/// failed, or exited: then the byte count is 0).
pub fn receive_listener(
    socket: BorrowedFd<'_>,
    payload: &mut [u8],
    deadline: Option<Instant>,
) -> anyhow::Result<(usize, Option<Listener>)> {
    let mut fds = Vec::new();
    let chunk = loop {
        match sys::receive_with_fds(socket, payload, &mut fds) {
            Ok(chunk) => break chunk,
            Err(Errno::EAGAIN) => {
                wait_readable(socket, deadline).context("waiting for the child's listener")?
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("receiving the listener from the child"),
        }
    };
    if fds.len() > 1 || chunk.fds_lost {
        bail!("the child sent more than one fd");
    }
    let Some(fd) = fds.pop() else {
        return Ok((chunk.bytes, None));
    };
    let listener = Listener::from_fd(fd).map_err(|(_, errno)| {
        anyhow!("the child sent something that is not a seccomp listener ({errno})")
    })?;
    Ok((chunk.bytes, Some(listener)))
}

/// Connects to the agent at `socket` and sends it `listener` as a runtime does; until
/// `deadline` (if any), a socket bound but not yet listening is tried again.
pub fn hand_to_agent(
    socket: &Path,
    container: &Container,
    listener: Listener,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(e)
                if deadline.is_some_and(|d| Instant::now() < d)
                    && e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("connecting to the agent at {}", socket.display()))
            }
        }
    };
    send_listener(&stream, container, listener)?;
    wait_taken(&stream)
}

/// Waits for the agent's [`TAKEN`]; the connection closing first means it refused.
fn wait_taken(stream: &UnixStream) -> anyhow::Result<()> {
    let deadline = Instant::now() + TAKEN_TIMEOUT;
    let mut answer = Vec::with_capacity(TAKEN.len());
    let mut buf = [0u8; 16];
    while answer.len() < TAKEN.len() {
        wait_readable(stream.as_fd(), Some(deadline))
            .context("waiting for the agent to take the listener")?;
        match nix::sys::socket::recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            // A refusal before reading closes with the state unread: a reset, not an EOF.
            Ok(0) | Err(Errno::ECONNRESET) => bail!(AGENT_HUNG_UP),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for the agent to take the listener"),
        }
    }
    if !answer.starts_with(TAKEN) {
        bail!(
            "the agent answered {:?}, not that it took the listener",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

/// Sends `listener` over a connected agent socket as a runtime does: a
/// ContainerProcessState naming it "seccompFd", with the fd as SCM_RIGHTS.
pub(crate) fn send_listener(
    stream: &UnixStream,
    container: &Container,
    listener: Listener,
) -> anyhow::Result<()> {
    let state = ContainerProcessStateBuilder::default()
        .version(OCI_VERSION)
        .fds(vec!["seccompFd".to_string()])
        .pid(container.init_pid)
        .state(
            StateBuilder::default()
                .version(OCI_VERSION)
                .id(container.container_id.clone())
                .status(ContainerState::Running)
                .pid(container.init_pid)
                .bundle(container.bundle.clone())
                .build()
                .context("building the container state")?,
        )
        .build()
        .context("building the container process state")?;
    let state = serde_json::to_string(&state).context("encoding the container state")?;
    let fd: OwnedFd = listener.into();
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(state.as_bytes())];
    let sent = match sendmsg::<()>(
        stream.as_fd().as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(sent) => sent,
        // An agent refusing the connection may close it before the state is even sent.
        Err(Errno::EPIPE | Errno::ECONNRESET) => bail!(AGENT_HUNG_UP),
        Err(e) => return Err(e).context("sending the listener to the agent"),
    };
    if sent != state.len() {
        bail!(
            "the agent took only {sent} of {} bytes of the state",
            state.len()
        );
    }
    Ok(())
}
