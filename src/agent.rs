//! The daemon: binds the agent socket, serves metrics, reloads on SIGHUP or a change of the policy file, and exits cleanly on SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{setfsgid, Gid, Group};
use tokio::signal::unix::{signal, SignalKind};

use crate::events::{EventWriter, LogFormat, RecentDenials};
use crate::keep;
use crate::metrics::Metrics;
use crate::notify::{self, Engine};
use crate::recording::Recordings;
use crate::status::Status;
use crate::sys::SharedPage;
use crate::watch::PolicySource;
use crate::{http, intake};

pub use switchboard_shared::DEFAULT_SOCKET;
/// Default metrics address: 9464 is the port commonly used by Prometheus exporters of this kind.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
/// Events that may wait for the writer before new ones are dropped.
const EVENT_QUEUE: usize = 64 * 1024;

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub socket: PathBuf,
    pub policy: Option<PathBuf>,
    pub metrics_addr: SocketAddr,
    /// A second listener serving only `/metrics` and `/healthz`, for a scraper across the
    /// network while `/status` (which names containers) stays on `metrics_addr`.
    pub scrape_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub allowed_uids: Vec<u32>,
    /// Group given read-write access to the socket (mode 0660), for `allowed_uids`.
    pub socket_group: Option<String>,
    /// Connections read at once on the socket; beyond it the oldest is dropped.
    pub max_connections: usize,
    pub series_ttl: Duration,
    /// Cap on `switchboard_syscalls_total` series; the rest fold into one overflow series.
    pub max_series: usize,
    /// Ask the kernel for same-CPU wake-ups (Linux ≥ 6.6); off only for measurements.
    pub sync_wakeup: bool,
    /// Where recording containers' profiles are written; None: they are not recorded.
    pub record_dir: Option<PathBuf>,
    /// Recordings keep small argument values.
    pub record_args: bool,
    /// Take everything over from the agent running at `socket` (start afresh if none runs).
    pub takeover: bool,
    /// After handing everything to a successor, stay idle until SIGTERM instead of exiting
    /// 0: under Kubernetes an exit would restart the container, which would take over back.
    pub wait_after_takeover: bool,
    /// Set in the deciding child only: the fd of its socket to the holding process.
    pub child_fd: Option<i32>,
}

/// Runs the agent until SIGTERM or SIGINT (or a takeover): the holding process, which
/// starts the deciding child (see [`crate::holder`]), or with `child_fd` that child.
pub fn run(config: AgentConfig) -> anyhow::Result<()> {
    notify::ensure_kernel_structs_fit()?;
    raise_fd_limit();
    match config.child_fd {
        Some(fd) => serve_child(&config, fd),
        None => {
            // Refused here, before anything is bound, as it always was.
            PolicySource::new(config.policy.as_deref()).load()?;
            crate::holder::run(&config)
        }
    }
}

/// Binds the agent socket as `config` asks.
pub(crate) fn bind(config: &AgentConfig) -> anyhow::Result<std::os::unix::net::UnixListener> {
    let group = config
        .socket_group
        .as_deref()
        .map(lookup_group)
        .transpose()?;
    bind_socket(&config.socket, group)
}

/// The deciding child: takes the sockets and listeners from the holding process, answers
/// what its predecessor left unanswered, and serves until SIGTERM.
fn serve_child(config: &AgentConfig, fd: i32) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    let mut all = nix::sys::signal::SigSet::all();
    all.remove(nix::sys::signal::Signal::SIGKILL);
    // The holder blocks the signals it reads from a signalfd; the mask survives exec.
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK, Some(&all), None)?;
    // Die with the holder: without it, nothing would restart or stop this process.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let link = crate::sys::take_inherited_fd(fd).context("taking the holder's socket")?;
    let mut source = PolicySource::new(config.policy.as_deref());
    let policy = source.load()?;
    let mut buf = Vec::new();
    let (message, mut fds) =
        keep::receive(link.as_fd(), &mut buf).context("receiving the sockets")?;
    anyhow::ensure!(
        message == keep::Message::Sockets,
        "expected sockets, got {}",
        message.kind()
    );
    keep::expect_fds(&message, &fds, 3, 4, "socket, counters, metrics, [scrape]")?;
    let scrape = (fds.len() == 4).then(|| std::net::TcpListener::from(fds.remove(3)));
    let metrics_listener = std::net::TcpListener::from(fds.remove(2));
    let counters = SharedPage::from_fd(fds.remove(1)).context("mapping the counters")?;
    let socket = std::os::unix::net::UnixListener::from(fds.remove(0));
    let mut restores = Vec::new();
    loop {
        match keep::receive(link.as_fd(), &mut buf).context("receiving the listeners")? {
            (keep::Message::Restored, _) => break,
            (keep::Message::Restore { key, identity }, fds) => restores.push((key, identity, fds)),
            (other, _) => anyhow::bail!("expected restore, got {}", other.kind()),
        }
    }
    source.watch();
    let metrics = Arc::new(Metrics::new(config.series_ttl, config.max_series));
    metrics.carry_over(counters);
    let (events, writer) = EventWriter::spawn(
        config.log_format,
        event_output(),
        EVENT_QUEUE,
        metrics.events_dropped.clone(),
    );
    let recent = writer.recent_denials();
    let engine = Engine::new(policy, metrics.clone(), events, config.sync_wakeup);
    if let Some(dir) = &config.record_dir {
        engine.record_into(Recordings::new(
            Some(dir.clone()),
            config.record_args,
            libc::EPERM.cast_unsigned(),
        ));
    }
    let restored = restores.len();
    for (key, identity, fds) in restores {
        if let Err(e) = restore(&engine, key, identity, fds) {
            tracing::error!(error = %e, key, "cannot serve a listener handed back");
        }
    }
    engine.link_holder(link.try_clone()?);
    keep::send(link.as_fd(), &keep::Message::Serving, &[])?;
    if restored > 0 {
        tracing::info!(listeners = restored, "serving the listeners handed back");
    }
    socket.set_nonblocking(true)?;
    metrics_listener.set_nonblocking(true)?;
    if let Some(scrape) = &scrape {
        scrape.set_nonblocking(true)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control-plane runtime")?;
    let result = runtime.block_on(control_plane(
        config,
        socket,
        metrics_listener,
        scrape,
        engine,
        recent,
        source,
    ));
    runtime.shutdown_timeout(Duration::from_millis(100));
    writer.flush_and_stop();
    result
}

fn restore(
    engine: &Arc<Engine>,
    key: u64,
    identity: keep::Identity,
    mut fds: Vec<std::os::fd::OwnedFd>,
) -> anyhow::Result<()> {
    let init_pid = identity.init_pid;
    let pidfd = (fds.len() == 3).then(|| crate::sys::PidFd::from_fd(fds.remove(2), init_pid));
    let page = SharedPage::from_fd(fds.remove(1))?;
    let listener = crate::sys::Listener::from_fd(fds.remove(0))
        .map_err(|(_, errno)| anyhow::anyhow!("not a listener ({errno})"))?;
    engine.restore(key, listener, identity.into_container(), pidfd, page)?;
    Ok(())
}

async fn control_plane(
    config: &AgentConfig,
    socket: std::os::unix::net::UnixListener,
    metrics_listener: std::net::TcpListener,
    scrape: Option<std::net::TcpListener>,
    engine: Arc<Engine>,
    recent: RecentDenials,
    mut source: PolicySource,
) -> anyhow::Result<()> {
    let socket = tokio::net::UnixListener::from_std(socket)?;
    tracing::info!(socket = %config.socket.display(), "agent socket listening");
    let http_listener = tokio::net::TcpListener::from_std(metrics_listener)?;
    let addr = http_listener.local_addr()?;
    tracing::info!(%addr, "metrics server listening");

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let metrics = engine.metrics().clone();
    let handler: http::Handler = Arc::new(move |path| match path {
        "/metrics" => Some((prometheus::TEXT_FORMAT, metrics.render())),
        "/status" => Some((
            "application/json",
            serde_json::to_string(&Status::collect(&metrics, &recent)).unwrap_or_default(),
        )),
        "/healthz" => Some(("text/plain", "ok\n".to_string())),
        _ => None,
    });
    tokio::spawn(http::serve(http_listener, handler.clone()));
    if let Some(scrape) = scrape {
        let scrape_listener = tokio::net::TcpListener::from_std(scrape)?;
        let addr = scrape_listener.local_addr()?;
        tracing::info!(%addr, "scrape server listening (/metrics and /healthz only)");
        let scrape: http::Handler = Arc::new(move |path| match path {
            "/metrics" | "/healthz" => handler(path),
            _ => None,
        });
        tokio::spawn(http::serve(scrape_listener, scrape));
    }
    tokio::spawn(intake::serve(
        socket,
        engine.clone(),
        intake::IntakeConfig {
            allowed_uids: config.allowed_uids.clone(),
            max_connections: config.max_connections,
        },
    ));

    // Type=notify: systemd starts the runtimes ordered after the unit only once the socket
    // takes connections. A no-op outside systemd (no NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd the agent is ready");
    }
    loop {
        tokio::select! {
            // Once per change: the watcher may have loaded this one already.
            _ = hangup.recv() => if source.unchanged() {
                tracing::info!("SIGHUP: the policy file is as last loaded; nothing to reload");
            } else {
                reload(&mut source, &engine);
            },
            () = source.changed() => {
                tracing::info!("the policy file changed");
                reload(&mut source, &engine);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!(
        listeners = engine.live_count(),
        "stopping; flagged syscalls of still-running containers now fail with ENOSYS"
    );
    Ok(())
}

fn reload(source: &mut PolicySource, engine: &Engine) {
    let reloads = &engine.metrics().policy_reloads;
    match source.load() {
        Ok(policy) => {
            tracing::info!(source = %policy.source, rules = policy.rules.len(), "policy reloaded");
            engine.replace_policy(policy);
            reloads.with_label_values(&["success"]).inc();
        }
        Err(e) => {
            tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
            reloads.with_label_values(&["failure"]).inc();
        }
    }
}

/// Where events go: stdout's file itself. The writer hands it large chunks of whole lines;
/// stdout's line buffering would only scan them for newlines under a lock.
fn event_output() -> Box<dyn std::io::Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(crate::events::output::EventOutput::new(fd)),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// Each served container holds one fd; lift the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(errno) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%errno, soft, "cannot raise the open-file limit; fewer containers can be served");
            }
        }
        Ok(_) => {}
        Err(errno) => tracing::warn!(%errno, "cannot read the open-file limit"),
    }
}

/// The gid of a group name (or number).
fn lookup_group(name: &str) -> anyhow::Result<Gid> {
    if let Some(group) =
        Group::from_name(name).with_context(|| format!("looking up group {name:?}"))?
    {
        return Ok(group.gid);
    }
    match name.parse::<u32>() {
        Ok(gid) => Ok(Gid::from_raw(gid)),
        Err(_) => bail!("--socket-group: no group named {name:?}"),
    }
}

/// Binds the socket with mode 0600 (0660 and `group` when given), replacing a stale
/// socket file but never a live agent's.
fn bind_socket(
    path: &Path,
    group: Option<Gid>,
) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another agent is already listening on {}; stop it or choose another --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    // The socket file gets its mode and group as bind creates it: from the umask and the
    // file-system gid. Setting them afterwards through the path would follow whatever
    // someone swapped in there meanwhile (a symlink to /etc/shadow, say). The umask is
    // process-wide, which is safe only because no other thread exists yet; setfsgid is
    // per-thread.
    let old_umask = umask(Mode::from_bits_truncate(0o777 & !mode));
    let old_fsgid = group.map(setfsgid);
    let bound = std::os::unix::net::UnixListener::bind(path);
    if let Some(old) = old_fsgid {
        setfsgid(old);
    }
    umask(old_umask);
    let listener = bound.with_context(|| format!("binding {}", path.display()))?;
    // A check, not a fix: the directory's setgid bit, for one, overrides the fsgid.
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("checking {}", path.display()))?;
    let wanted_gid = group.map_or(meta.gid(), Gid::as_raw);
    if meta.permissions().mode() & 0o777 != mode || meta.gid() != wanted_gid {
        let _ = std::fs::remove_file(path);
        bail!(
            "{} came out with mode {:o} and gid {} instead of {mode:o} and {wanted_gid}",
            path.display(),
            meta.permissions().mode() & 0o777,
            meta.gid()
        );
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}
