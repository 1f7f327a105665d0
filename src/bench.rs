//! `switchboard bench`: the round trip of a notified `getppid`, from no filter up to a separate agent process.

use std::fmt::Write as _;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use serde_json::{json, Value};

use crate::container::Container;
use crate::events::{EventWriter, LogFormat};
use crate::metrics::Metrics;
use crate::notify::Engine;
use crate::policy::Policy;
use crate::sys::{self, Listener, ListenerError, PidFd};

/// Untimed calls each workload makes first: thread start-up, page faults, the agent's attach.
const WARMUP_CALLS: u64 = 1000;
/// Rules in the benchmark policy; only the last one decides `getppid`.
const POLICY_RULES: usize = 200;
/// Concurrent workload processes of the scaling rows.
const SCALING_PROCESSES: [usize; 3] = [1, 4, 16];
/// Idle listeners held by one agent in the memory row.
const IDLE_LISTENERS: usize = 1000;
/// Event queue of the in-process engine, as the agent sizes it.
const EVENT_QUEUE: usize = 64 * 1024;
/// How long a child, an agent or a handover may take before the bench gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fork-server request: kind, filter, pin, 5 bytes padding, calls (u64 LE).
const REQUEST_LEN: usize = 16;
/// Workload result: elapsed ns and calls, both u64 LE; below PIPE_BUF, so writes never interleave.
const RESULT_LEN: usize = 16;

/// Which tables `switchboard bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rows {
    /// Latency and scaling.
    All,
    /// Rows 1–5: one process, pinned and unpinned, sync wake-up on and off.
    Latency,
    /// 1, 4 and 16 processes; 1,000 idle listeners in one agent.
    Scaling,
}

/// How `bench` was asked to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Timed calls per workload process and run.
    pub calls: u64,
    /// Runs per cell; cells report the median.
    pub runs: usize,
    pub rows: Rows,
    /// Print JSON instead of Markdown.
    pub json: bool,
}

/// Runs the benchmark and prints its tables on stdout; progress goes to stderr.
pub fn run(config: BenchConfig) -> anyhow::Result<()> {
    if config.calls == 0 || config.runs == 0 {
        bail!("--calls and --runs must be at least 1");
    }
    // The fork server is forked first, while this process still has one thread.
    if proc_status_field(std::process::id(), "Threads")? != 1 {
        bail!("bench must start single-threaded, to fork its fork server");
    }
    let online = online_cpus();
    let server = ForkServer::start(build_filters()?, online.clone())?;
    let dir = ScratchDir::create()?;
    let bench = Bench {
        server,
        online,
        calls: config.calls,
        exe: std::env::current_exe().context("locating the switchboard binary")?,
        policy_log: dir.write("policy-log.yaml", &policy_text("log"))?,
        dir,
    };
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cpus: bench.online.len(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into()),
        calls: config.calls,
        runs: config.runs,
        latency: Vec::new(),
        scaling: Vec::new(),
        idle: Vec::new(),
    };
    if matches!(config.rows, Rows::All | Rows::Latency) {
        report.latency = bench.latency(config.runs)?;
    }
    if matches!(config.rows, Rows::All | Rows::Scaling) {
        report.scaling = bench.scaling(config.runs)?;
        report.idle = PINS
            .into_iter()
            .map(|pin| bench.idle(pin, config.runs))
            .collect::<anyhow::Result<_>>()?;
    }
    if config.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(())
}

/// Where the workload and every thread serving it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin {
    /// Everything on CPU 0.
    Cpu0,
    /// Every online CPU.
    Unpinned,
}

const PINS: [Pin; 2] = [Pin::Cpu0, Pin::Unpinned];

impl Pin {
    fn label(self) -> &'static str {
        match self {
            Pin::Cpu0 => "pinned",
            Pin::Unpinned => "unpinned",
        }
    }
}

/// Restricts the calling thread, and so every thread and process it starts later, to `pin`.
fn set_affinity(pin: Pin, online: &[usize]) -> nix::Result<()> {
    let mut set = CpuSet::new();
    match pin {
        Pin::Cpu0 => set.set(0)?,
        Pin::Unpinned => {
            for cpu in online {
                set.set(*cpu)?;
            }
        }
    }
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// The online CPUs, from sysfs (`nproc` would count only those this process may use).
fn online_cpus() -> Vec<usize> {
    let parsed = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| {
            let mut cpus = Vec::new();
            for part in text.trim().split(',') {
                let (first, last) = part.split_once('-').unwrap_or((part, part));
                cpus.extend(first.parse::<usize>().ok()?..=last.parse::<usize>().ok()?);
            }
            Some(cpus)
        });
    parsed.filter(|cpus| !cpus.is_empty()).unwrap_or_else(|| {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    })
}

/// The seccomp filter a workload installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKind {
    None,
    /// Default allow and one errno rule for `acct`: `getppid` runs the filter and is allowed.
    Allow,
    /// Default allow, `getppid` → NOTIFY.
    Notify,
}

struct Filters {
    allow: ScmpFilterContext,
    notify: ScmpFilterContext,
}

fn build_filters() -> anyhow::Result<Filters> {
    let mut allow = ScmpFilterContext::new(ScmpAction::Allow)?;
    allow.add_rule(
        ScmpAction::Errno(libc::EPERM),
        ScmpSyscall::from_name("acct")?,
    )?;
    let mut notify = ScmpFilterContext::new(ScmpAction::Allow)?;
    notify.add_rule(ScmpAction::Notify, ScmpSyscall::from_name("getppid")?)?;
    Ok(Filters { allow, notify })
}

/// What the fork server forks a child for.
#[derive(Debug, Clone, Copy)]
enum Request {
    /// Install the filter, hand the listener over, wait for go, time `calls` calls, report.
    Workload {
        filter: FilterKind,
        pin: Pin,
        calls: u64,
    },
    /// Install the NOTIFY filter, hand the listener over, then block until released.
    Idle { pin: Pin },
}

impl Request {
    fn encode(self) -> [u8; REQUEST_LEN] {
        let mut bytes = [0u8; REQUEST_LEN];
        let (kind, filter, pin, calls) = match self {
            Request::Workload { filter, pin, calls } => (0, filter, pin, calls),
            Request::Idle { pin } => (1, FilterKind::Notify, pin, 0),
        };
        bytes[0] = kind;
        bytes[1] = filter as u8;
        bytes[2] = pin as u8;
        bytes[8..].copy_from_slice(&calls.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8; REQUEST_LEN]) -> Option<Request> {
        let filter = match bytes[1] {
            0 => FilterKind::None,
            1 => FilterKind::Allow,
            2 => FilterKind::Notify,
            _ => return None,
        };
        let pin = match bytes[2] {
            0 => Pin::Cpu0,
            1 => Pin::Unpinned,
            _ => return None,
        };
        let calls = u64::from_le_bytes(bytes[8..].try_into().ok()?);
        match bytes[0] {
            0 => Some(Request::Workload { filter, pin, calls }),
            1 => Some(Request::Idle { pin }),
            _ => None,
        }
    }
}

/// A single-threaded process, forked before the bench starts any thread, that forks
/// the workload children: they may allocate, and they stay small.
struct ForkServer {
    socket: OwnedFd,
    pid: Pid,
}

impl ForkServer {
    fn start(filters: Filters, online: Vec<usize>) -> anyhow::Result<ForkServer> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("creating the fork-server socket")?;
        match sys::fork_single_threaded().context("forking the fork server")? {
            ForkResult::Child => {
                drop(ours);
                serve_forks(theirs, &filters, &online)
            }
            ForkResult::Parent { child } => Ok(ForkServer {
                socket: ours,
                pid: child,
            }),
        }
    }

    /// Asks for one child, handing it `fds` (the fork server closes its copies after the fork).
    fn request(&self, request: Request, fds: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
        let bytes = request.encode();
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .context("asking the fork server for a child")?;
        Ok(())
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // Its children die with it (PR_SET_PDEATHSIG).
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

/// The fork server's loop: one child per request, until the bench closes the socket.
fn serve_forks(socket: OwnedFd, filters: &Filters, online: &[usize]) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Children are reaped by the kernel; nobody waits for them here.
    let _ = sys::ignore_signal(Signal::SIGCHLD);
    loop {
        let mut bytes = [0u8; REQUEST_LEN];
        let mut fds = Vec::new();
        match sys::receive_with_fds(socket.as_fd(), &mut bytes, &mut fds) {
            Ok(chunk) if chunk.bytes == 0 => std::process::exit(0),
            Ok(chunk) if chunk.bytes == REQUEST_LEN => {}
            Ok(_) => continue,
            Err(Errno::EAGAIN) => {
                let _ = wait_readable(socket.as_fd(), None);
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        }
        let Some(request) = Request::decode(&bytes) else {
            continue;
        };
        if let Ok(ForkResult::Child) = sys::fork_single_threaded() {
            drop(socket);
            child_main(request, fds, filters, online);
        }
    }
}

fn child_main(request: Request, fds: Vec<OwnedFd>, filters: &Filters, online: &[usize]) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let result = match request {
        Request::Workload { filter, pin, calls } => {
            workload(filter, pin, calls, fds, filters, online)
        }
        Request::Idle { pin } => idle(pin, fds, filters, online),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("switchboard bench: child {}: {e:#}", std::process::id());
            std::process::exit(1)
        }
    }
}

/// In a child: times `calls` getppid calls after go and writes the result.
fn workload(
    kind: FilterKind,
    pin: Pin,
    calls: u64,
    fds: Vec<OwnedFd>,
    filters: &Filters,
    online: &[usize],
) -> anyhow::Result<()> {
    let [handover, go, results]: [OwnedFd; 3] =
        fds.try_into().map_err(|_| anyhow!("expected three fds"))?;
    set_affinity(pin, online).context("setting the CPU affinity")?;
    install_filter(kind, filters, handover)?;
    // Go is the bench closing the pipe's write end: every workload starts at once.
    let mut byte = [0u8; 1];
    while let Err(Errno::EINTR) = nix::unistd::read(&go, &mut byte) {}
    for _ in 0..WARMUP_CALLS {
        std::hint::black_box(nix::unistd::getppid());
    }
    let start = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(nix::unistd::getppid());
    }
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut record = [0u8; RESULT_LEN];
    record[..8].copy_from_slice(&ns.to_le_bytes());
    record[8..].copy_from_slice(&calls.to_le_bytes());
    nix::unistd::write(&results, &record).context("reporting the result")?;
    Ok(())
}

/// In a child: holds a listener's filter and blocks until the release pipe closes.
fn idle(pin: Pin, fds: Vec<OwnedFd>, filters: &Filters, online: &[usize]) -> anyhow::Result<()> {
    let [handover, release]: [OwnedFd; 2] =
        fds.try_into().map_err(|_| anyhow!("expected two fds"))?;
    set_affinity(pin, online).context("setting the CPU affinity")?;
    install_filter(FilterKind::Notify, filters, handover)?;
    let mut byte = [0u8; 1];
    while let Err(Errno::EINTR) = nix::unistd::read(&release, &mut byte) {}
    Ok(())
}

/// Loads the filter; for NOTIFY, sends our pid and the listener over `handover`.
fn install_filter(kind: FilterKind, filters: &Filters, handover: OwnedFd) -> anyhow::Result<()> {
    let filter = match kind {
        FilterKind::None => return Ok(()),
        FilterKind::Allow => &filters.allow,
        FilterKind::Notify => &filters.notify,
    };
    filter.load().context("installing the seccomp filter")?;
    if kind == FilterKind::Notify {
        let listener = filter.get_notify_fd().context("getting the listener")?;
        let pid = std::process::id().to_le_bytes();
        let sent = sendmsg::<()>(
            handover.as_raw_fd(),
            &[IoSlice::new(&pid)],
            &[ControlMessage::ScmRights(&[listener])],
            MsgFlags::empty(),
            None,
        );
        let _ = nix::unistd::close(listener);
        sent.context("handing the listener over")?;
    }
    Ok(())
}

/// Waits until `fd` is readable or `deadline` passes (never, without one).
fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> anyhow::Result<()> {
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

/// Receives one (pid, listener) a workload child handed over.
fn receive_listener(socket: &OwnedFd) -> anyhow::Result<(i32, Listener)> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let mut bytes = [0u8; 4];
        let mut fds = Vec::new();
        match sys::receive_with_fds(socket.as_fd(), &mut bytes, &mut fds) {
            Ok(chunk) if chunk.bytes == 4 && fds.len() == 1 => {
                let fd = fds.pop().expect("one fd");
                let listener = Listener::from_fd(fd)
                    .map_err(|(_, errno)| anyhow!("a child sent a non-listener ({errno})"))?;
                return Ok((i32::from_le_bytes(bytes), listener));
            }
            Ok(chunk) if chunk.bytes == 0 => {
                bail!("a workload child exited before handing its listener over")
            }
            Ok(_) => bail!("a workload child sent a malformed handover"),
            Err(Errno::EAGAIN) => wait_readable(socket.as_fd(), Some(deadline))
                .context("waiting for a workload child's listener")?,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("receiving a listener"),
        }
    }
}

/// Workload children forked and set up, waiting for go.
struct Batch {
    /// (pid, listener) of each child, for NOTIFY workloads; the caller takes them.
    listeners: Vec<(i32, Listener)>,
    go: OwnedFd,
    results: OwnedFd,
    children: usize,
    calls: u64,
}

/// What one measurement found.
#[derive(Debug, Clone)]
struct Outcome {
    /// Mean ns per timed call, per child.
    ns_per_call: Vec<f64>,
    /// From go to the last result: covers every call, warm-up included.
    wall: Duration,
    /// Every call of every child, warm-up included.
    calls: u64,
    /// Events the engine dropped because its queue was full.
    events_dropped: u64,
}

impl Outcome {
    fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.wall.as_secs_f64()
    }
}

impl Batch {
    /// Starts every child at once and collects their results.
    fn run(self) -> anyhow::Result<Outcome> {
        let Batch {
            go,
            results,
            children,
            calls,
            ..
        } = self;
        let per_child = calls + WARMUP_CALLS;
        let deadline = Instant::now()
            + SETUP_TIMEOUT
            + Duration::from_micros(200)
                .saturating_mul(u32::try_from(per_child * children as u64).unwrap_or(u32::MAX));
        let start = Instant::now();
        drop(go);
        let mut buf = vec![0u8; children * RESULT_LEN];
        let mut filled = 0;
        while filled < buf.len() {
            match nix::unistd::read(&results, &mut buf[filled..]) {
                Ok(0) => bail!(
                    "{} of {children} workload children exited without a result",
                    children - filled / RESULT_LEN
                ),
                Ok(n) => filled += n,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(e).context("reading results"),
            }
            if filled < buf.len() {
                wait_readable(results.as_fd(), Some(deadline))
                    .context("waiting for the workload's results")?;
            }
        }
        let wall = start.elapsed();
        let ns_per_call = buf
            .chunks_exact(RESULT_LEN)
            .map(|record| {
                let ns = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
                let n = u64::from_le_bytes(record[8..].try_into().expect("8 bytes"));
                ns as f64 / n.max(1) as f64
            })
            .collect();
        Ok(Outcome {
            ns_per_call,
            wall,
            calls: per_child * children as u64,
            events_dropped: 0,
        })
    }
}

/// What serves the workload's flagged calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    NoFilter,
    FilterAllow,
    Floor,
    Engine,
    EngineAllow,
    Agent,
}

const LATENCY_ROWS: [Row; 6] = [
    Row::NoFilter,
    Row::FilterAllow,
    Row::Floor,
    Row::Engine,
    Row::EngineAllow,
    Row::Agent,
];

impl Row {
    fn label(self) -> &'static str {
        match self {
            Row::NoFilter => "1. no filter",
            Row::FilterAllow => "2. filter, getppid allowed",
            Row::Floor => "3. floor: bare RECV/CONTINUE thread",
            Row::Engine => "4. engine: 200 rules, log, event + count",
            Row::EngineAllow => "4b. engine: 200 rules, allow, count only",
            Row::Agent => "5. `switchboard agent` over listenerPath (as 4)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Row::NoFilter => "no_filter",
            Row::FilterAllow => "filter_allow",
            Row::Floor => "floor",
            Row::Engine => "engine_log",
            Row::EngineAllow => "engine_allow",
            Row::Agent => "agent",
        }
    }
}

struct Bench {
    server: ForkServer,
    online: Vec<usize>,
    calls: u64,
    exe: PathBuf,
    policy_log: PathBuf,
    dir: ScratchDir,
}

impl Bench {
    /// Forks `n` workload children and takes their listeners.
    fn spawn(&self, n: usize, filter: FilterKind, pin: Pin) -> anyhow::Result<Batch> {
        let (handover, handover_child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("creating the handover socket")?;
        let (go_read, go) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
        let (results, results_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
        let request = Request::Workload {
            filter,
            pin,
            calls: self.calls,
        };
        for _ in 0..n {
            self.server.request(
                request,
                &[
                    handover_child.as_fd(),
                    go_read.as_fd(),
                    results_write.as_fd(),
                ],
            )?;
        }
        drop((handover_child, go_read, results_write));
        let listeners = if filter == FilterKind::Notify {
            (0..n)
                .map(|_| receive_listener(&handover))
                .collect::<anyhow::Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Batch {
            listeners,
            go,
            results,
            children: n,
            calls: self.calls,
        })
    }

    /// One measurement: `n` workload processes served as `row` says.
    fn measure(&self, row: Row, n: usize, pin: Pin, sync: bool) -> anyhow::Result<Outcome> {
        // Engine threads and agent processes started below inherit this.
        set_affinity(pin, &self.online).context("setting the CPU affinity")?;
        match row {
            Row::NoFilter => self.spawn(n, FilterKind::None, pin)?.run(),
            Row::FilterAllow => self.spawn(n, FilterKind::Allow, pin)?.run(),
            Row::Floor => {
                let mut batch = self.spawn(n, FilterKind::Notify, pin)?;
                let mut threads = Vec::new();
                for (_, listener) in batch.listeners.drain(..) {
                    if sync {
                        listener
                            .enable_sync_wakeup()
                            .context("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP")?;
                    }
                    threads.push(
                        std::thread::Builder::new()
                            .name("bench-floor".into())
                            .spawn(move || floor(&listener))?,
                    );
                }
                let outcome = batch.run();
                join_all(threads);
                outcome
            }
            Row::Engine | Row::EngineAllow => {
                let action = if row == Row::Engine { "log" } else { "allow" };
                let policy = Policy::parse(&policy_text(action), "<bench policy>")?;
                let metrics = Arc::new(Metrics::new(Duration::from_secs(3600), usize::MAX));
                let (events, writer) = EventWriter::spawn(
                    LogFormat::Json,
                    Box::new(std::io::sink()),
                    EVENT_QUEUE,
                    metrics.events_dropped.clone(),
                );
                let engine = Engine::new(policy, metrics.clone(), events, sync);
                let mut batch = self.spawn(n, FilterKind::Notify, pin)?;
                let mut threads = Vec::new();
                for (pid, listener) in batch.listeners.drain(..) {
                    let container = Container {
                        container_id: format!("bench-{pid}"),
                        init_pid: pid,
                        ..Container::default()
                    };
                    threads.push(
                        engine
                            .attach(listener, container, PidFd::open(pid).ok())?
                            .thread,
                    );
                }
                let outcome = batch.run();
                join_all(threads);
                writer.flush_and_stop();
                outcome.map(|outcome| Outcome {
                    events_dropped: metrics.events_dropped.get(),
                    ..outcome
                })
            }
            Row::Agent => {
                let agent = self.agent("agent", sync)?;
                let mut batch = self.spawn(n, FilterKind::Notify, pin)?;
                for (pid, listener) in batch.listeners.drain(..) {
                    hand_to_agent(&agent.socket, pid, listener)?;
                }
                agent.wait_for_listeners(n)?;
                batch.run()
            }
        }
    }

    fn agent(&self, tag: &str, sync: bool) -> anyhow::Result<AgentProcess> {
        AgentProcess::start(&self.exe, &self.dir.path, tag, &self.policy_log, sync)
    }

    /// Rows 1–5 in every pin × sync cell, interleaved run by run so drift hits all alike.
    fn latency(&self, runs: usize) -> anyhow::Result<Vec<LatencyCell>> {
        let mut cells = Vec::new();
        for pin in PINS {
            for sync in [true, false] {
                for row in LATENCY_ROWS {
                    cells.push(LatencyCell {
                        row,
                        pin,
                        sync,
                        ns: Vec::new(),
                        events_dropped: 0,
                    });
                }
            }
        }
        for run in 1..=runs {
            eprintln!("bench: latency run {run}/{runs}");
            for cell in &mut cells {
                let outcome = self
                    .measure(cell.row, 1, cell.pin, cell.sync)
                    .with_context(|| {
                        format!(
                            "{}, {}, sync {}",
                            cell.row.label(),
                            cell.pin.label(),
                            cell.sync
                        )
                    })?;
                cell.ns.push(outcome.ns_per_call[0]);
                cell.events_dropped += outcome.events_dropped;
            }
        }
        Ok(cells)
    }

    /// Aggregate calls/s of 1, 4 and 16 processes, each with its own listener and thread.
    fn scaling(&self, runs: usize) -> anyhow::Result<Vec<ScalingCell>> {
        let mut cells = Vec::new();
        for pin in PINS {
            for processes in SCALING_PROCESSES {
                for row in [Row::Floor, Row::Engine] {
                    cells.push(ScalingCell {
                        row,
                        pin,
                        processes,
                        calls_per_second: Vec::new(),
                        events_dropped: 0,
                    });
                }
            }
        }
        for run in 1..=runs {
            eprintln!("bench: scaling run {run}/{runs}");
            for cell in &mut cells {
                let outcome = self
                    .measure(cell.row, cell.processes, cell.pin, true)
                    .with_context(|| {
                        format!(
                            "{} × {}, {}",
                            cell.processes,
                            cell.row.label(),
                            cell.pin.label()
                        )
                    })?;
                cell.calls_per_second.push(outcome.calls_per_second());
                cell.events_dropped += outcome.events_dropped;
            }
        }
        Ok(cells)
    }

    /// One agent holding 1,000 idle listeners against one holding none, busy RTT on both.
    fn idle(&self, pin: Pin, runs: usize) -> anyhow::Result<IdleResult> {
        eprintln!("bench: {IDLE_LISTENERS} idle listeners, {}", pin.label());
        set_affinity(pin, &self.online).context("setting the CPU affinity")?;
        let single = self.agent(&format!("single-{}", pin.label()), true)?;
        let crowded = self.agent(&format!("crowded-{}", pin.label()), true)?;
        let fd_limit = open_file_soft_limit(crowded.pid());

        let (handover, handover_child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("creating the handover socket")?;
        // The idle children block reading this pipe; dropping `release` ends them.
        let (release_read, release) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
        let mut idle_pids = Vec::with_capacity(IDLE_LISTENERS);
        for _ in 0..IDLE_LISTENERS {
            self.server.request(
                Request::Idle { pin },
                &[handover_child.as_fd(), release_read.as_fd()],
            )?;
            let (pid, listener) = receive_listener(&handover)?;
            hand_to_agent(&crowded.socket, pid, listener)?;
            idle_pids.push(pid);
        }
        drop((handover_child, release_read));
        crowded.wait_for_listeners(IDLE_LISTENERS)?;
        let threads_idle = proc_status_field(crowded.pid(), "Threads")?;
        let children_private: u64 = idle_pids
            .iter()
            .filter_map(|pid| private_kib(*pid as u32))
            .sum();

        let mut single_ns = Vec::new();
        let mut crowded_ns = Vec::new();
        // Runs here are short, and the 5% criterion sits near this noise: take three times as many.
        for _ in 0..3 * runs {
            for (agent, base, samples) in [
                (&single, 0, &mut single_ns),
                (&crowded, IDLE_LISTENERS, &mut crowded_ns),
            ] {
                let mut batch = self.spawn(1, FilterKind::Notify, pin)?;
                for (pid, listener) in batch.listeners.drain(..) {
                    hand_to_agent(&agent.socket, pid, listener)?;
                }
                agent.wait_for_listeners(base + 1)?;
                samples.push(batch.run()?.ns_per_call[0]);
                agent.wait_for_listeners(base)?;
            }
        }
        // Both agents have now served the same busy listeners; only the idle ones differ.
        let rss_single = proc_status_field(single.pid(), "VmRSS")?;
        let rss_idle = proc_status_field(crowded.pid(), "VmRSS")?;
        drop(release);
        Ok(IdleResult {
            pin,
            fd_limit,
            rss_single_kib: rss_single,
            rss_idle_kib: rss_idle,
            threads_idle,
            children_private_kib: children_private,
            single_ns,
            crowded_ns,
        })
    }
}

/// Row 3: RECV and CONTINUE, nothing else, until every task of the filter is gone.
fn floor(listener: &Listener) {
    let mut notif = sys::empty_notification();
    loop {
        match listener.receive(&mut notif) {
            Ok(()) => {
                let _ = listener.respond_continue(notif.id);
            }
            Err(ListenerError::Interrupted) => {}
            Err(ListenerError::Gone) if listener.is_hung_up() => return,
            Err(ListenerError::Gone) => {}
            Err(ListenerError::Failed(_)) => return,
        }
    }
}

/// Joins serving threads, which end once their workload exits; a stuck one is left behind.
fn join_all(threads: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for thread in threads {
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            eprintln!("bench: a serving thread did not end after its workload exited");
        }
    }
}

/// The policy of rows 4, 4b and 5: 199 rules that do not decide getppid, then one that does.
///
/// A third are getppid rules for other namespaces (dropped when the table is compiled),
/// a third are rules for other syscalls, a third are getppid rules whose argument
/// condition does not hold (scanned on every call): the deciding rule matches late.
fn policy_text(getppid_action: &str) -> String {
    const OTHERS: [&str; 12] = [
        "mkdir", "unlink", "rename", "chmod", "chown", "mount", "umount2", "ptrace", "bpf",
        "unshare", "setns", "keyctl",
    ];
    let mut text = String::from("default: log\nrules:\n");
    for i in 0..POLICY_RULES - 1 {
        let _ = match i % 3 {
            0 => write!(
                text,
                "  - name: r{i:03}-other-namespace\n    match: {{namespace: [other-{i}-*]}}\n    syscalls: [getppid]\n    action: deny\n"
            ),
            1 => write!(
                text,
                "  - name: r{i:03}-{name}\n    syscalls: [{name}]\n    action: {action}\n",
                name = OTHERS[(i / 3) % OTHERS.len()],
                action = if i % 2 == 0 { "deny" } else { "log" },
            ),
            _ => write!(
                text,
                "  - name: r{i:03}-getppid-arg\n    syscalls: [getppid]\n    args: [{{index: {index}, op: eq, value: {value}}}]\n    action: deny\n",
                index = i % 6,
                value = 0xdead_beef_0000_0000_u64 + i as u64,
            ),
        };
    }
    let _ = write!(
        text,
        "  - name: getppid\n    syscalls: [getppid]\n    action: {getppid_action}\n"
    );
    text
}

/// A `switchboard agent` child process with its own socket; stopped on drop.
struct AgentProcess {
    child: Child,
    socket: PathBuf,
}

impl AgentProcess {
    fn start(
        exe: &Path,
        dir: &Path,
        tag: &str,
        policy: &Path,
        sync: bool,
    ) -> anyhow::Result<AgentProcess> {
        let socket = dir.join(format!("{tag}.sock"));
        let log_path = dir.join(format!("{tag}.log"));
        let _ = std::fs::remove_file(&socket);
        let mut command = Command::new(exe);
        command
            .arg("agent")
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(policy)
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"]);
        if !sync {
            command.arg("--no-sync-wakeup");
        }
        let uid = nix::unistd::getuid();
        if !uid.is_root() {
            command.arg("--allow-uid").arg(uid.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).context("creating the agent's log")?)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut agent = AgentProcess { child, socket };
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while !agent.socket.exists() {
            if let Some(status) = agent.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the agent exited ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("the agent did not bind {}", agent.socket.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(agent)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Threads serving a listener: the engine names them `listener-N`.
    fn listener_threads(&self) -> usize {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("listener-"))
            .count()
    }

    /// Waits until exactly `n` listeners are being served.
    fn wait_for_listeners(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let now = self.listener_threads();
            if now == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent serves {now} listeners, expected {n}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a listener to an agent as a runtime does over `listenerPath` (and `run --agent`).
fn hand_to_agent(socket: &Path, pid: i32, listener: Listener) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(stream) => break stream,
            // Bound but not yet listening.
            Err(e)
                if Instant::now() < deadline
                    && e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
        }
    };
    let container = Container {
        container_id: format!("bench-{pid}"),
        init_pid: pid,
        bundle: "/".into(),
        ..Container::default()
    };
    crate::run::send_listener(&stream, &container, listener)
}

fn proc_status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Memory only this process maps (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup), in KiB.
fn private_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .filter(|line| line.starts_with("Private_"))
        .map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The soft RLIMIT_NOFILE of a process, from /proc/PID/limits.
fn open_file_soft_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A private directory for sockets, policies and agent logs; removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("switchboard-bench.{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

struct LatencyCell {
    row: Row,
    pin: Pin,
    sync: bool,
    ns: Vec<f64>,
    events_dropped: u64,
}

struct ScalingCell {
    row: Row,
    pin: Pin,
    processes: usize,
    calls_per_second: Vec<f64>,
    events_dropped: u64,
}

struct IdleResult {
    pin: Pin,
    fd_limit: Option<u64>,
    /// VmRSS of the agent without idle listeners.
    rss_single_kib: u64,
    rss_idle_kib: u64,
    threads_idle: u64,
    /// Private_Clean + Private_Dirty of every idle child, summed.
    children_private_kib: u64,
    single_ns: Vec<f64>,
    crowded_ns: Vec<f64>,
}

impl IdleResult {
    fn per_listener_kib(&self) -> f64 {
        (self.rss_idle_kib as f64 - self.rss_single_kib as f64) / IDLE_LISTENERS as f64
    }

    /// Median over runs of (busy RTT among idle listeners / alone − 1), in percent.
    fn busy_difference_percent(&self) -> f64 {
        let ratios: Vec<f64> = self
            .crowded_ns
            .iter()
            .zip(&self.single_ns)
            .map(|(crowded, alone)| crowded / alone)
            .collect();
        (median(&ratios) - 1.0) * 100.0
    }
}

/// Ends a table, saying how many events a full queue dropped during it, if any.
fn dropped_footer(out: &mut String, dropped: u64) {
    if dropped > 0 {
        let _ = writeln!(out, "\nEvents dropped (queue full): {dropped}.");
    }
    let _ = writeln!(out);
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

struct Report {
    command: String,
    cpus: usize,
    kernel: String,
    calls: u64,
    runs: usize,
    latency: Vec<LatencyCell>,
    scaling: Vec<ScalingCell>,
    idle: Vec<IdleResult>,
}

impl Report {
    fn latency_median(&self, row: Row, pin: Pin, sync: bool) -> Option<f64> {
        self.latency
            .iter()
            .find(|c| c.row == row && c.pin == pin && c.sync == sync)
            .map(|c| median(&c.ns))
    }

    /// The median over runs of `row`'s ratio to `base` measured in the same run.
    fn paired_ratio(&self, row: Row, base: Row, pin: Pin, sync: bool) -> Option<f64> {
        let cell = |row: Row| {
            self.latency
                .iter()
                .find(|c| c.row == row && c.pin == pin && c.sync == sync)
        };
        let (cell, base) = (cell(row)?, cell(base)?);
        let ratios: Vec<f64> = cell.ns.iter().zip(&base.ns).map(|(a, b)| a / b).collect();
        Some(median(&ratios))
    }

    fn scaling_median(&self, row: Row, pin: Pin, processes: usize) -> Option<f64> {
        self.scaling
            .iter()
            .find(|c| c.row == row && c.pin == pin && c.processes == processes)
            .map(|c| median(&c.calls_per_second))
    }

    fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Machine: {} CPUs online, kernel {} (`uname -r`).  ",
            self.cpus, self.kernel
        );
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        if self.calls < 20_000 || self.runs < 5 {
            let _ = writeln!(
                out,
                "Fewer than 20,000 calls or 5 runs: a quick look, not a result to quote.\n"
            );
        }
        if !self.latency.is_empty() {
            self.latency_markdown(&mut out);
        }
        if !self.scaling.is_empty() {
            self.scaling_markdown(&mut out);
        }
        if !self.idle.is_empty() {
            self.idle_markdown(&mut out);
        }
        self.targets_markdown(&mut out);
        out
    }

    fn latency_markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Round trip of one notified `getppid`: mean over {} calls (after {WARMUP_CALLS} warm-up calls), median of {} runs, µs per call; × is the median over runs of the ratio to row 3 measured in the same run and column. Pinned: the workload and every serving thread on CPU 0; unpinned: all CPUs. Sync: SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (rows 1–2 have no listener, so their sync columns are repeat measurements).\n",
            self.calls, self.runs
        );
        let columns: Vec<(Pin, bool)> = PINS
            .into_iter()
            .flat_map(|pin| [(pin, true), (pin, false)])
            .collect();
        let _ = write!(out, "| |");
        for (pin, sync) in &columns {
            let _ = write!(
                out,
                " {}, sync {} |",
                pin.label(),
                if *sync { "on" } else { "off" }
            );
        }
        let _ = writeln!(out, "\n|---|{}", "---:|".repeat(columns.len()));
        for row in LATENCY_ROWS {
            let _ = write!(out, "| {} |", row.label());
            for (pin, sync) in &columns {
                let value = self.latency_median(row, *pin, *sync).unwrap_or(f64::NAN);
                let ratio = self
                    .paired_ratio(row, Row::Floor, *pin, *sync)
                    .unwrap_or(f64::NAN);
                let _ = write!(out, " {:.2} µs ({ratio:.2}×) |", value / 1000.0);
            }
            let _ = writeln!(out);
        }
        dropped_footer(out, self.latency.iter().map(|c| c.events_dropped).sum());
    }

    fn scaling_markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Aggregate flagged calls/s (thousands) of N processes at once, each with its own filter and listener served by its own thread (row 3: floor threads; row 4: the engine, one worker per listener, events and counts on); sync wake-up on; median of {} runs; from go to the last result, warm-up calls included.\n",
            self.runs
        );
        let _ = write!(out, "| processes |");
        for pin in PINS {
            let p = pin.label();
            let _ = write!(out, " floor, {p} | engine, {p} | engine/floor |");
        }
        let _ = writeln!(out, "\n|---:|{}", "---:|".repeat(3 * PINS.len()));
        for processes in SCALING_PROCESSES {
            let _ = write!(out, "| {processes} |");
            for pin in PINS {
                let floor = self
                    .scaling_median(Row::Floor, pin, processes)
                    .unwrap_or(f64::NAN);
                let engine = self
                    .scaling_median(Row::Engine, pin, processes)
                    .unwrap_or(f64::NAN);
                let _ = write!(
                    out,
                    " {:.0} k | {:.0} k | {:.2}× |",
                    floor / 1000.0,
                    engine / 1000.0,
                    engine / floor
                );
            }
            let _ = writeln!(out);
        }
        dropped_footer(out, self.scaling.iter().map(|c| c.events_dropped).sum());
    }

    fn idle_markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{IDLE_LISTENERS} idle listeners in one `switchboard agent` (policy of row 4, sync wake-up on), against an agent without them: VmRSS and threads of the agent, and the round trip of one busy listener (median of {} alternating runs; the difference is the median of per-run ratios).\n",
            3 * self.runs
        );
        let _ = writeln!(
            out,
            "| | agent VmRSS, no idle | agent VmRSS, {IDLE_LISTENERS} idle | per idle listener | agent threads | busy RTT, alone | busy RTT, among idle | difference | idle child, private memory | agent fd soft limit |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for idle in &self.idle {
            let _ = writeln!(
                out,
                "| {} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {} | {:.2} µs | {:.2} µs | {:+.1}% | {:.0} KiB | {} |",
                idle.pin.label(),
                mib(idle.rss_single_kib),
                mib(idle.rss_idle_kib),
                idle.per_listener_kib(),
                idle.threads_idle,
                median(&idle.single_ns) / 1000.0,
                median(&idle.crowded_ns) / 1000.0,
                idle.busy_difference_percent(),
                idle.children_private_kib as f64 / IDLE_LISTENERS as f64,
                idle.fd_limit.map_or("?".to_string(), |n| n.to_string()),
            );
        }
        let _ = writeln!(out);
    }

    fn targets_markdown(&self, out: &mut String) {
        let mut lines = Vec::new();
        for pin in PINS {
            for row in [Row::Engine, Row::Agent] {
                if let Some(ratio) = self.paired_ratio(row, Row::Floor, pin, true) {
                    lines.push(format!(
                        "row {} ≤ 1.15× floor, {}, sync on: {ratio:.2}× — {}",
                        if row == Row::Engine { "4" } else { "5" },
                        pin.label(),
                        verdict(ratio <= 1.15)
                    ));
                }
            }
            for sync in [true, false] {
                if let Some(ratio) = self.paired_ratio(Row::Engine, Row::EngineAllow, pin, sync) {
                    let moved = (ratio - 1.0) * 100.0;
                    lines.push(format!(
                        "events move row 4 ≤ 5% (4 vs 4b), {}, sync {}: {moved:+.1}% — {}",
                        pin.label(),
                        if sync { "on" } else { "off" },
                        verdict(moved.abs() <= 5.0)
                    ));
                }
            }
        }
        for idle in &self.idle {
            let rss = mib(idle.rss_idle_kib);
            lines.push(format!(
                "{IDLE_LISTENERS} idle listeners < 64 MiB agent RSS, {}: {rss:.1} MiB — {}",
                idle.pin.label(),
                verdict(rss < 64.0)
            ));
            let moved = idle.busy_difference_percent();
            lines.push(format!(
                "busy RTT among {IDLE_LISTENERS} idle within 5%, {}: {moved:+.1}% — {}",
                idle.pin.label(),
                verdict(moved.abs() <= 5.0)
            ));
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "Targets:\n");
            for line in lines {
                let _ = writeln!(out, "- {line}");
            }
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "machine": {"cpus_online": self.cpus, "kernel": self.kernel},
            "command": self.command,
            "calls": self.calls,
            "warmup_calls": WARMUP_CALLS,
            "runs": self.runs,
            "latency_ns": self.latency.iter().map(|c| json!({
                "row": c.row.key(),
                "pinned": c.pin == Pin::Cpu0,
                "sync_wakeup": c.sync,
                "median": median(&c.ns),
                "ratio_to_floor": self.paired_ratio(c.row, Row::Floor, c.pin, c.sync),
                "runs": c.ns,
                "events_dropped": c.events_dropped,
            })).collect::<Vec<_>>(),
            "scaling_calls_per_second": self.scaling.iter().map(|c| json!({
                "row": c.row.key(),
                "pinned": c.pin == Pin::Cpu0,
                "processes": c.processes,
                "median": median(&c.calls_per_second),
                "runs": c.calls_per_second,
                "events_dropped": c.events_dropped,
            })).collect::<Vec<_>>(),
            "idle": self.idle.iter().map(|i| json!({
                "pinned": i.pin == Pin::Cpu0,
                "listeners": IDLE_LISTENERS,
                "agent_rss_kib_idle": i.rss_idle_kib,
                "agent_rss_kib_single": i.rss_single_kib,
                "agent_threads_idle": i.threads_idle,
                "agent_fd_soft_limit": i.fd_limit,
                "idle_children_private_kib_total": i.children_private_kib,
                "busy_ns_alone": median(&i.single_ns),
                "busy_ns_with_idle": median(&i.crowded_ns),
                "busy_ns_alone_runs": i.single_ns,
                "busy_ns_with_idle_runs": i.crowded_ns,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_has_200_rules_and_decides_getppid_last() {
        let policy = Policy::parse(&policy_text("log"), "bench").unwrap();
        assert_eq!(policy.rules.len(), POLICY_RULES);
        let table = crate::decision::DecisionTable::compile(&policy, &Container::default());
        let getppid = crate::syscalls::numbers("getppid")[0];
        let data = libc::seccomp_data {
            nr: getppid.1 as i32,
            arch: crate::syscalls::arches()[getppid.0].audit,
            instruction_pointer: 0,
            args: [0; 6],
        };
        let verdict = table.decide(Some(getppid), &data);
        assert_eq!(verdict.rule, Some("getppid"));
    }

    #[test]
    fn requests_round_trip() {
        let request = Request::Workload {
            filter: FilterKind::Allow,
            pin: Pin::Unpinned,
            calls: 20_000,
        };
        let Some(Request::Workload { filter, pin, calls }) = Request::decode(&request.encode())
        else {
            panic!("not a workload");
        };
        assert_eq!(
            (filter, pin, calls),
            (FilterKind::Allow, Pin::Unpinned, 20_000)
        );
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
