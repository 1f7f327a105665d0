//! The holding process: keeps the agent socket, every listener and the counters while a deciding child it restarts does the work.
//!
//! The kernel fails a listener's flagged calls with ENOSYS only once the last fd on it
//! closes; while this process holds a dup, calls queue. So `switchboard agent` is this
//! small loop, which parses nothing a container or runtime sends (the child does, and
//! hands over what it parsed, see [`crate::keep`]), and a child (`--child-fd`) that
//! decides, logs and counts. When the child dies the loop starts another and hands it
//! every listener back; `--takeover` hands everything to a successor agent.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;

use crate::agent::AgentConfig;
use crate::handoff;
use crate::keep::{self, Identity, KeepError, Message};
use crate::metrics::restart_word;
use crate::sys::SharedPage;

/// How long a takeover waits for each answer of the other side before giving up.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// A child that dies sooner than this after its start counts towards the back-off.
const QUICK_DEATH: Duration = Duration::from_secs(1);

/// Longest pause between restarts of a child that keeps dying at once.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One listener as the holder keeps it: its identity and fds (listener, page, [init pidfd]).
struct Held {
    identity: Identity,
    fds: Vec<OwnedFd>,
}

/// Everything that outlives a deciding child.
pub struct Holdings {
    socket: OwnedFd,
    counters: SharedPage,
    metrics: OwnedFd,
    scrape: Option<OwnedFd>,
    listeners: BTreeMap<u64, Held>,
}

impl Holdings {
    /// Binds the agent socket and the metrics addresses, with zeroed counters.
    fn fresh(config: &AgentConfig) -> anyhow::Result<Holdings> {
        let socket = crate::agent::bind(config)?;
        let metrics = std::net::TcpListener::bind(config.metrics_addr)
            .with_context(|| format!("binding the metrics address {}", config.metrics_addr))?;
        let scrape = config
            .scrape_addr
            .map(|addr| {
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("binding the scrape address {addr}"))
            })
            .transpose()?;
        Ok(Holdings {
            socket: socket.into(),
            counters: SharedPage::create().context("creating the counters page")?,
            metrics: metrics.into(),
            scrape: scrape.map(Into::into),
            listeners: BTreeMap::new(),
        })
    }

    fn count_restart(&self, reason: &str) {
        self.counters.words()[restart_word(reason)]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends the sockets, then every listener, then `Restored`.
    fn send_all(&self, to: BorrowedFd<'_>, first: &Message) -> Result<(), KeepError> {
        let mut fds = vec![
            self.socket.as_fd(),
            self.counters.fd(),
            self.metrics.as_fd(),
        ];
        fds.extend(self.scrape.as_ref().map(AsFd::as_fd));
        keep::send(to, first, &fds)?;
        for (key, held) in &self.listeners {
            let fds: Vec<_> = held.fds.iter().map(AsFd::as_fd).collect();
            let restore = Message::Restore {
                key: *key,
                identity: held.identity.clone(),
            };
            keep::send(to, &restore, &fds)?;
        }
        keep::send(to, &Message::Restored, &[])
    }

    /// Takes in what `message` (from the child or an old agent) says about listeners.
    fn apply(&mut self, message: Message, fds: Vec<OwnedFd>) -> Result<(), KeepError> {
        match message {
            Message::Hold { key, identity } | Message::Restore { key, identity } => {
                keep::expect_fds(&Message::Restored, &fds, 2, 3, "listener, page, [pidfd]")?;
                self.listeners.insert(key, Held { identity, fds });
            }
            Message::Release { key } => {
                self.listeners.remove(&key);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Where a takeover successor finds the holding process of the agent at `socket`.
pub fn control_path(socket: &Path) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(".takeover");
    PathBuf::from(path)
}

/// How one child's life ended.
enum Ended {
    /// SIGTERM or SIGINT: stop serving.
    Stop,
    /// It died; `served` says whether it had started serving.
    Died { served: bool },
    /// A successor took everything over.
    HandedOver,
}

/// Runs the holding process until SIGTERM, SIGINT or a takeover.
pub fn run(config: &AgentConfig) -> anyhow::Result<()> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    // Blocked here (the child unblocks them) and read from a signalfd, so the loop is one poll.
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .context("blocking signals")?;
    let signalfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("creating a signalfd")?;
    let mut holdings = match config.takeover.then(|| take_over(config)).transpose()? {
        Some(Some(holdings)) => {
            holdings.count_restart("takeover");
            holdings
        }
        Some(None) | None => Holdings::fresh(config)?,
    };
    let control_path = control_path(&config.socket);
    let control = listen_seqpacket(&control_path)
        .with_context(|| format!("binding {}", control_path.display()))?;
    let mut served_once = false;
    let mut backoff = Duration::ZERO;
    loop {
        let started = Instant::now();
        let (child, link) = spawn_child(&holdings)?;
        match supervise(child, &link, &mut holdings, &signalfd, &control)? {
            Ended::Stop => {
                let _ = std::fs::remove_file(&config.socket);
                let _ = std::fs::remove_file(&control_path);
                return Ok(());
            }
            Ended::HandedOver => {
                if config.wait_after_takeover {
                    // Listeners and counters are the successor's now; keep only what answers
                    // a TCP liveness probe, until the pod is deleted.
                    holdings.listeners.clear();
                    tracing::info!("taken over; idle until SIGTERM");
                    wait_for_stop(&signalfd);
                } else {
                    tracing::info!("taken over; exiting");
                }
                return Ok(());
            }
            Ended::Died { served } => {
                if !served && !served_once {
                    bail!("the deciding process exited before it started serving");
                }
                served_once |= served;
                holdings.count_restart("crash");
                // Only a child that dies before serving backs off: one that served was
                // killed (OOM, an operator) and its listeners wait for the next.
                backoff = if !served && started.elapsed() < QUICK_DEATH {
                    (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF)
                } else {
                    Duration::ZERO
                };
                tracing::error!(listeners = holdings.listeners.len(), pause = ?backoff, "the deciding process died; starting another with every listener");
                std::thread::sleep(backoff);
            }
        }
    }
}

/// Starts `/proc/self/exe` with this process's arguments and `--child-fd`, and hands it
/// everything held.
fn spawn_child(holdings: &Holdings) -> anyhow::Result<(Child, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("creating the child's socket pair")?;
    // Inherited across exec: this process has one thread, so no other spawn can leak it.
    fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty())).context("passing the socket on")?;
    let child = Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .arg("--child-fd")
        .arg(theirs.as_raw_fd().to_string())
        .spawn()
        .context("starting the deciding process")?;
    drop(theirs);
    if let Err(e) = holdings.send_all(ours.as_fd(), &Message::Sockets) {
        tracing::error!(error = %e, "cannot hand the listeners to the deciding process");
    }
    Ok((child, ours))
}

/// Serves the child's messages, signals and takeover requests until the child's life ends.
fn supervise(
    mut child: Child,
    link: &OwnedFd,
    holdings: &mut Holdings,
    signalfd: &SignalFd,
    control: &OwnedFd,
) -> anyhow::Result<Ended> {
    let mut buf = Vec::new();
    let mut served = false;
    loop {
        let mut fds = [
            PollFd::new(link.as_fd(), PollFlags::POLLIN),
            PollFd::new(signalfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other.context("poll")?,
        };
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let (link_ready, signal_ready, control_ready) = (ready(0), ready(1), ready(2));
        if link_ready {
            match keep::receive(link.as_fd(), &mut buf) {
                Ok((Message::Serving, _)) => served = true,
                Ok((message, fds)) => {
                    if let Err(e) = holdings.apply(message, fds) {
                        tracing::error!(error = %e, "a message from the deciding process was refused");
                    }
                }
                Err(KeepError::Closed) => {
                    let status = child.wait().context("waiting for the deciding process")?;
                    tracing::error!(%status, "the deciding process exited");
                    return Ok(Ended::Died { served });
                }
                Err(e) => {
                    tracing::error!(error = %e, "a message from the deciding process was refused")
                }
            }
        }
        if signal_ready {
            while let Ok(Some(info)) = signalfd.read_signal() {
                let signal = i32::try_from(info.ssi_signo)
                    .ok()
                    .and_then(|s| Signal::try_from(s).ok());
                match signal {
                    Some(Signal::SIGHUP) => {
                        let _ = kill(child_pid(&child), Signal::SIGHUP);
                    }
                    Some(_) => {
                        let _ = kill(child_pid(&child), Signal::SIGTERM);
                        let _ = child.wait();
                        return Ok(Ended::Stop);
                    }
                    None => {}
                }
            }
        }
        if control_ready {
            if let Ok(stream) = crate::sys::accept(control.as_fd()) {
                let stream = UnixStream::from(stream);
                match hand_over(stream, &mut child, link, holdings, &mut buf) {
                    Ok(true) => return Ok(Ended::HandedOver),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "takeover refused; still serving"),
                }
                if child.try_wait().ok().flatten().is_some() {
                    // The takeover failed after the child was stopped: start another.
                    drain(link, holdings, &mut buf);
                    return Ok(Ended::Died { served: true });
                }
            }
        }
    }
}

fn child_pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(0))
}

/// Takes in every message the dead child left in the socket.
fn drain(link: &OwnedFd, holdings: &mut Holdings, buf: &mut Vec<u8>) {
    loop {
        // The child is dead: its end is closed, so this never waits for long.
        let mut fds = [PollFd::new(link.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == 0 {
            return;
        }
        match keep::receive(link.as_fd(), buf) {
            Ok((message, fds)) => {
                let _ = holdings.apply(message, fds);
            }
            Err(KeepError::Closed) => return,
            Err(KeepError::Io(_)) => return,
            Err(_) => {}
        }
    }
}

/// The old agent's side of a takeover; true once the successor has everything.
fn hand_over(
    stream: UnixStream,
    child: &mut Child,
    link: &OwnedFd,
    holdings: &mut Holdings,
    buf: &mut Vec<u8>,
) -> anyhow::Result<bool> {
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .context("reading the peer's credentials")?;
    if peer.uid() != 0 && peer.uid() != nix::unistd::getuid().as_raw() {
        bail!("peer uid {} may not take over", peer.uid());
    }
    stream.set_nonblocking(true)?;
    let deadline = || Some(Instant::now() + TAKEOVER_TIMEOUT);
    match receive_by(&stream, buf, deadline()) {
        Ok((Message::Takeover, _)) => {}
        Ok((other, _)) => bail!("expected takeover, got {}", other.kind()),
        Err(e) => {
            bail!(refuse(&stream, format!("cannot read the request: {e:#}")));
        }
    }
    keep::send(
        stream.as_fd(),
        &Message::Offer {
            listeners: holdings.listeners.len(),
        },
        &[],
    )?;
    match receive_by(&stream, buf, deadline())? {
        (Message::Accept, _) => {}
        (Message::Refuse { reason }, _) => bail!("the successor refused: {reason}"),
        (other, _) => bail!("expected accept, got {}", other.kind()),
    }
    // Only one process may decide: stop ours, then take in what it sent before it died.
    let _ = kill(child_pid(child), Signal::SIGKILL);
    let _ = child.wait();
    drain(link, holdings, buf);
    holdings.send_all(stream.as_fd(), &Message::Handover)?;
    match receive_by(&stream, buf, deadline())? {
        (Message::Done, _) => Ok(true),
        (other, _) => bail!("expected done, got {}", other.kind()),
    }
}

/// Tells the other side of a takeover why it cannot go on (best effort); returns the reason.
fn refuse(stream: &UnixStream, reason: String) -> String {
    let refusal = Message::Refuse { reason };
    let _ = keep::send(stream.as_fd(), &refusal, &[]);
    match refusal {
        Message::Refuse { reason } => reason,
        _ => unreachable!(),
    }
}

fn receive_by(
    stream: &UnixStream,
    buf: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> anyhow::Result<(Message, Vec<OwnedFd>)> {
    handoff::wait_readable(stream.as_fd(), deadline)?;
    Ok(keep::receive(stream.as_fd(), buf)?)
}

/// The successor's side: everything from the agent running at `config.socket`, or None
/// when no agent runs there.
fn take_over(config: &AgentConfig) -> anyhow::Result<Option<Holdings>> {
    let path = control_path(&config.socket);
    let stream = match connect_seqpacket(&path) {
        Ok(stream) => stream,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED) => {
            tracing::info!("no agent to take over; starting");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    let mut buf = Vec::new();
    let deadline = || Some(Instant::now() + TAKEOVER_TIMEOUT);
    keep::send(stream.as_fd(), &Message::Takeover, &[])?;
    let offered = match receive_by(&stream, &mut buf, deadline()) {
        Ok((Message::Offer { listeners }, _)) => listeners,
        Ok((Message::Refuse { reason }, _)) => {
            bail!("the running agent refused the takeover: {reason}")
        }
        Ok((other, _)) => bail!(
            "takeover refused: the running agent answered {}",
            other.kind()
        ),
        Err(e) => {
            let reason = refuse(
                &stream,
                format!("cannot read the running agent's answer: {e:#}"),
            );
            bail!("takeover refused: {reason}; the running agent keeps serving");
        }
    };
    keep::send(stream.as_fd(), &Message::Accept, &[])?;
    let (message, mut fds) = receive_by(&stream, &mut buf, deadline())?;
    if message != Message::Handover {
        bail!("takeover failed: expected handover, got {}", message.kind());
    }
    keep::expect_fds(&message, &fds, 3, 4, "socket, counters, metrics, [scrape]")?;
    let scrape = (fds.len() == 4).then(|| fds.remove(3));
    let metrics = own_or_inherited(config.metrics_addr, fds.remove(2))?;
    let scrape = match (config.scrape_addr, scrape) {
        (Some(addr), Some(inherited)) => Some(own_or_inherited(addr, inherited)?),
        (Some(addr), None) => Some(std::net::TcpListener::bind(addr)?.into()),
        (None, _) => None,
    };
    let counters = SharedPage::from_fd(fds.remove(1)).context("mapping the counters")?;
    let socket = fds.remove(0);
    let mut holdings = Holdings {
        socket,
        counters,
        metrics,
        scrape,
        listeners: BTreeMap::new(),
    };
    loop {
        match receive_by(&stream, &mut buf, deadline())? {
            (Message::Restored, _) => break,
            (message, fds) => holdings.apply(message, fds)?,
        }
    }
    keep::send(stream.as_fd(), &Message::Done, &[])?;
    tracing::info!(
        offered,
        listeners = holdings.listeners.len(),
        "took over the running agent"
    );
    Ok(Some(holdings))
}

/// The successor's own listener on `addr` when it can bind one (in a pod of its own, its
/// network namespace differs from the old agent's, whose sockets die with its pod), else
/// the old agent's (same namespace, port taken by it; or port 0: keep the one in use).
fn own_or_inherited(addr: std::net::SocketAddr, inherited: OwnedFd) -> anyhow::Result<OwnedFd> {
    if addr.port() == 0 {
        return Ok(inherited);
    }
    match std::net::TcpListener::bind(addr) {
        Ok(own) => Ok(own.into()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(inherited),
        Err(e) => Err(e).with_context(|| format!("binding {addr}")),
    }
}

/// A new SOCK_SEQPACKET Unix socket: message boundaries hold, so each message keeps its fds.
fn seqpacket_socket() -> Result<OwnedFd, nix::errno::Errno> {
    let flags = SockFlag::SOCK_CLOEXEC;
    nix::sys::socket::socket(AddressFamily::Unix, SockType::SeqPacket, flags, None)
}

fn connect_seqpacket(path: &Path) -> Result<UnixStream, nix::errno::Errno> {
    use nix::sys::socket::{connect, UnixAddr};
    let fd = seqpacket_socket()?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

/// A SOCK_SEQPACKET socket listening at `path` (replacing a stale file), mode 0600.
fn listen_seqpacket(path: &Path) -> Result<OwnedFd, nix::errno::Errno> {
    use nix::sys::socket::{bind, listen, Backlog, UnixAddr};
    use nix::sys::stat::{umask, Mode};
    let _ = std::fs::remove_file(path);
    let fd = seqpacket_socket()?;
    // Single-threaded here, so the process-wide umask is ours alone.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &UnixAddr::new(path)?);
    umask(old);
    bound?;
    listen(&fd, Backlog::new(4)?)?;
    Ok(fd)
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_stop(signalfd: &SignalFd) {
    loop {
        let mut fds = [PollFd::new(signalfd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::NONE);
        while let Ok(Some(info)) = signalfd.read_signal() {
            if info.ssi_signo != Signal::SIGHUP as u32 {
                return;
            }
        }
    }
}
