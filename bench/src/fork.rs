//! The fork server and the workload children it forks: filters, pinning, timed calls.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use nix::errno::Errno;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use switchboard::handoff;
use switchboard::sys::{self, Listener};

use crate::{REQUEST_LEN, RESULT_LEN, SETUP_TIMEOUT, WARMUP_CALLS};

/// Where the workload and every thread serving it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Everything on CPU 0.
    Cpu0,
    /// Every online CPU.
    Unpinned,
}

pub const PINS: [Pin; 2] = [Pin::Cpu0, Pin::Unpinned];

impl Pin {
    pub fn label(self) -> &'static str {
        match self {
            Pin::Cpu0 => "pinned",
            Pin::Unpinned => "unpinned",
        }
    }
}

/// Restricts the calling thread, and so every thread and process it starts later, to `pin`.
pub fn set_affinity(pin: Pin, online: &[usize]) -> nix::Result<()> {
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
pub fn online_cpus() -> Vec<usize> {
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
pub enum FilterKind {
    None,
    /// Default allow and one errno rule for `acct`: `getppid` runs the filter and is allowed.
    Allow,
    /// Default allow, `getppid` → NOTIFY.
    Notify,
    /// Default allow, `mkdir`/`mkdirat` → NOTIFY; the workload makes `mkdir(MKDIR_PATH)`.
    NotifyMkdir,
}

/// The fixed path of the mkdir rows: its parent does not exist, so a let-through call
/// fails at once with ENOENT and changes nothing.
pub const MKDIR_PATH: &std::ffi::CStr = c"/nonexistent-switchboard-bench/dir";

pub struct Filters {
    pub allow: ScmpFilterContext,
    pub notify: ScmpFilterContext,
    pub notify_mkdir: ScmpFilterContext,
}

pub fn build_filters() -> anyhow::Result<Filters> {
    let mut allow = ScmpFilterContext::new(ScmpAction::Allow)?;
    allow.add_rule(
        ScmpAction::Errno(libc::EPERM),
        ScmpSyscall::from_name("acct")?,
    )?;
    let mut notify = ScmpFilterContext::new(ScmpAction::Allow)?;
    notify.add_rule(ScmpAction::Notify, ScmpSyscall::from_name("getppid")?)?;
    let mut notify_mkdir = ScmpFilterContext::new(ScmpAction::Allow)?;
    for name in ["mkdir", "mkdirat"] {
        notify_mkdir.add_rule(ScmpAction::Notify, ScmpSyscall::from_name(name)?)?;
    }
    Ok(Filters {
        allow,
        notify,
        notify_mkdir,
    })
}

/// What the fork server forks a child for.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// Install the filter, hand the listener over, then in each of `turns` turns wait for
    /// go, time its share of `calls` calls and report it.
    Workload {
        filter: FilterKind,
        pin: Pin,
        calls: u64,
        turns: u32,
    },
    /// Install the NOTIFY filter, hand the listener over, then block until released.
    Idle { pin: Pin },
}

impl Request {
    pub fn encode(self) -> [u8; REQUEST_LEN] {
        let mut bytes = [0u8; REQUEST_LEN];
        let (kind, filter, pin, calls, turns) = match self {
            Request::Workload {
                filter,
                pin,
                calls,
                turns,
            } => (0, filter, pin, calls, turns),
            Request::Idle { pin } => (1, FilterKind::Notify, pin, 0, 0),
        };
        bytes[0] = kind;
        bytes[1] = filter as u8;
        bytes[2] = pin as u8;
        bytes[4..8].copy_from_slice(&turns.to_le_bytes());
        bytes[8..].copy_from_slice(&calls.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8; REQUEST_LEN]) -> Option<Request> {
        let filter = match bytes[1] {
            0 => FilterKind::None,
            1 => FilterKind::Allow,
            2 => FilterKind::Notify,
            3 => FilterKind::NotifyMkdir,
            _ => return None,
        };
        let pin = match bytes[2] {
            0 => Pin::Cpu0,
            1 => Pin::Unpinned,
            _ => return None,
        };
        let turns = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
        let calls = u64::from_le_bytes(bytes[8..].try_into().ok()?);
        match bytes[0] {
            0 => Some(Request::Workload {
                filter,
                pin,
                calls,
                turns,
            }),
            1 => Some(Request::Idle { pin }),
            _ => None,
        }
    }
}

/// A single-threaded process, forked before the bench starts any thread, that forks
/// the workload children: they may allocate, and they stay small.
pub struct ForkServer {
    pub socket: OwnedFd,
    pub pid: Pid,
}

impl ForkServer {
    pub fn start(filters: Filters, online: Vec<usize>) -> anyhow::Result<ForkServer> {
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
    pub fn request(&self, request: Request, fds: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
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
pub fn serve_forks(socket: OwnedFd, filters: &Filters, online: &[usize]) -> ! {
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
                let _ = handoff::wait_readable(socket.as_fd(), None);
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

pub fn child_main(request: Request, fds: Vec<OwnedFd>, filters: &Filters, online: &[usize]) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let result = match request {
        Request::Workload {
            filter,
            pin,
            calls,
            turns,
        } => workload(filter, pin, calls, turns, fds, filters, online),
        Request::Idle { pin } => idle(pin, fds, filters, online),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("switchboard-bench: child {}: {e:#}", std::process::id());
            std::process::exit(1)
        }
    }
}

/// In a child: times `calls` getppid calls in `turns` turns, each after its go, and writes
/// each turn's result.
pub fn workload(
    kind: FilterKind,
    pin: Pin,
    calls: u64,
    turns: u32,
    fds: Vec<OwnedFd>,
    filters: &Filters,
    online: &[usize],
) -> anyhow::Result<()> {
    let [handover, go, results]: [OwnedFd; 3] =
        fds.try_into().map_err(|_| anyhow!("expected three fds"))?;
    set_affinity(pin, online).context("setting the CPU affinity")?;
    install_filter(kind, filters, &handover)?;
    // Go is a byte on the pipe (one per turn), or the bench closing its write end: then
    // every workload of a batch starts at once.
    let mut byte = [0u8; 1];
    let wait_for_go = || {
        let mut byte = [0u8; 1];
        while let Err(Errno::EINTR) = nix::unistd::read(&go, &mut byte) {}
    };
    let call = || {
        if kind == FilterKind::NotifyMkdir {
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o755);
            let _ = std::hint::black_box(nix::unistd::mkdir(MKDIR_PATH, mode));
        } else {
            std::hint::black_box(nix::unistd::getppid());
        }
    };
    let turns = u64::from(turns.max(1));
    for turn in 0..turns {
        wait_for_go();
        if turn == 0 {
            for _ in 0..WARMUP_CALLS {
                call();
            }
        }
        let share = turn_share(calls, turns, turn);
        let start = Instant::now();
        for _ in 0..share {
            call();
        }
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut record = [0u8; RESULT_LEN];
        record[..8].copy_from_slice(&ns.to_le_bytes());
        record[8..].copy_from_slice(&share.to_le_bytes());
        nix::unistd::write(&results, &record).context("reporting the result")?;
    }
    // Stay, and so keep the listener's thread alive, until the bench has read the serving
    // threads' counters and closes its end.
    let _ = nix::unistd::read(&handover, &mut byte);
    Ok(())
}

/// The calls of turn `turn` of `turns`: the last turn takes what does not divide evenly.
fn turn_share(calls: u64, turns: u64, turn: u64) -> u64 {
    calls / turns + if turn == turns - 1 { calls % turns } else { 0 }
}

/// In a child: holds a listener's filter and blocks until the release pipe closes.
pub fn idle(
    pin: Pin,
    fds: Vec<OwnedFd>,
    filters: &Filters,
    online: &[usize],
) -> anyhow::Result<()> {
    let [handover, release]: [OwnedFd; 2] =
        fds.try_into().map_err(|_| anyhow!("expected two fds"))?;
    set_affinity(pin, online).context("setting the CPU affinity")?;
    install_filter(FilterKind::Notify, filters, &handover)?;
    let mut byte = [0u8; 1];
    while let Err(Errno::EINTR) = nix::unistd::read(&release, &mut byte) {}
    Ok(())
}

/// Loads the filter; for NOTIFY, sends our pid and the listener over `handover`.
pub fn install_filter(
    kind: FilterKind,
    filters: &Filters,
    handover: &OwnedFd,
) -> anyhow::Result<()> {
    let filter = match kind {
        FilterKind::None => return Ok(()),
        FilterKind::Allow => &filters.allow,
        FilterKind::Notify => &filters.notify,
        FilterKind::NotifyMkdir => &filters.notify_mkdir,
    };
    filter.load().context("installing the seccomp filter")?;
    if matches!(kind, FilterKind::Notify | FilterKind::NotifyMkdir) {
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

/// Workload children forked and set up, waiting for go.
pub struct Batch {
    /// (pid, listener) of each child, for NOTIFY workloads; the caller takes them.
    pub listeners: Vec<(i32, Listener)>,
    pub go: OwnedFd,
    pub results: OwnedFd,
    /// Our end of the handover socket: the children wait for it to close before they exit.
    pub handover: OwnedFd,
    pub children: usize,
    pub calls: u64,
    /// Turns each child splits its calls into ([`run_alternating`]); 1 for [`Batch::run`].
    pub turns: u32,
    /// The children's pids, for NOTIFY workloads: their CPU time is counted as `workload`.
    pub workload: Vec<u32>,
}

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Mean ns per timed call, per child.
    pub ns_per_call: Vec<f64>,
    /// From go to the last result: covers every call, warm-up included (alternating: the
    /// sum of this side's turns).
    pub wall: Duration,
    /// Every call of every child, warm-up included.
    pub calls: u64,
    /// Events the engine dropped because its queue was full.
    pub events_dropped: u64,
    /// CPU time and context switches of the threads serving the workload, during its calls.
    pub threads: crate::counters::Usage,
    /// CPU time of every thread outside the bench's process tree meanwhile.
    pub others: crate::counters::OthersCpu,
}

impl Outcome {
    pub fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.wall.as_secs_f64()
    }
}

/// Reads `records` results of `RESULT_LEN` bytes from `results`, by `deadline`.
fn read_results(results: &OwnedFd, records: usize, deadline: Instant) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; records * RESULT_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        match nix::unistd::read(results, &mut buf[filled..]) {
            Ok(0) => bail!(
                "{} of {records} workload results never came: a child exited",
                records - filled / RESULT_LEN
            ),
            Ok(n) => filled += n,
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(e).context("reading results"),
        }
        if filled < buf.len() {
            handoff::wait_readable(results.as_fd(), Some(deadline))
                .context("waiting for the workload's results")?;
        }
    }
    Ok(buf)
}

/// (elapsed ns, calls) of one result record.
fn decode_result(record: &[u8]) -> (u64, u64) {
    let ns = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
    let calls = u64::from_le_bytes(record[8..].try_into().expect("8 bytes"));
    (ns, calls)
}

/// How long `calls` calls may take before the bench gives up.
fn deadline_for(calls: u64) -> Instant {
    Instant::now()
        + SETUP_TIMEOUT
        + Duration::from_micros(200).saturating_mul(u32::try_from(calls).unwrap_or(u32::MAX))
}

impl Batch {
    /// Starts every child at once and collects their results.
    pub fn run(self) -> anyhow::Result<Outcome> {
        self.run_observed(&[])
    }

    /// [`Batch::run`], with the CPU time and switches of the threads of processes `observed`
    /// from go to the last result (serving threads live until the children exit, after this).
    pub fn run_observed(self, observed: &[u32]) -> anyhow::Result<Outcome> {
        let Batch {
            go,
            results,
            handover,
            children,
            calls,
            turns,
            workload,
            ..
        } = self;
        anyhow::ensure!(turns == 1, "a batch of {turns} turns runs alternating");
        let ours = crate::counters::process_tree(std::process::id());
        let others_before = crate::counters::Others::take(&ours);
        let before = crate::counters::Snapshot::take(observed, &workload);
        let per_child = calls + WARMUP_CALLS;
        let deadline = deadline_for(per_child * children as u64);
        let start = Instant::now();
        drop(go);
        let buf = read_results(&results, children, deadline)?;
        let wall = start.elapsed();
        let threads = crate::counters::Snapshot::take(observed, &workload).since(&before);
        // A child forked after the first look (rows 1 and 2 wait for none) is still ours.
        let mut ours = ours;
        ours.extend(crate::counters::process_tree(std::process::id()));
        let others = crate::counters::Others::take(&ours).since(&others_before);
        drop(handover);
        let ns_per_call = buf
            .chunks_exact(RESULT_LEN)
            .map(|record| {
                let (ns, n) = decode_result(record);
                ns as f64 / n.max(1) as f64
            })
            .collect();
        Ok(Outcome {
            ns_per_call,
            wall,
            calls: per_child * children as u64,
            events_dropped: 0,
            others,
            threads,
        })
    }
}

/// A pause after each turn of an alternating run, longer than the event writer's 10 ms
/// poll: a turn's events are written before the other side's turn starts.
const TURN_SETTLE: Duration = Duration::from_millis(12);

/// Two one-child batches of the same turns, run turn by turn in alternation (A B, B A,
/// A B, …), so whatever slows the machine for longer than a turn slows both alike. Each
/// side's threads block while the other side runs, so the CPU of the threads of `observed`
/// and of the workloads during a turn and its settling pause is that turn's side's; the
/// bench's own thread, which reads these counters between turns, is left out of them.
/// A side's time per call is its workload's timed calls plus what the serving threads
/// spent in the turn's settling pause (from the bench seeing the turn's result to the
/// other side's start; the ~tens of µs between the last call and that are counted nowhere).
pub fn run_alternating(pair: [Batch; 2], observed: &[u32]) -> anyhow::Result<[Outcome; 2]> {
    let turns = pair[0].turns;
    anyhow::ensure!(
        pair.iter().all(|b| b.turns == turns && b.children == 1),
        "alternating batches need one child each and the same turns"
    );
    let workload: Vec<u32> = pair.iter().flat_map(|b| b.workload.clone()).collect();
    let ours = crate::counters::process_tree(std::process::id());
    let deadline = deadline_for(pair.iter().map(|b| b.calls + WARMUP_CALLS).sum());
    let mut sides: [Outcome; 2] = std::array::from_fn(|_| Outcome {
        ns_per_call: vec![0.0],
        wall: Duration::ZERO,
        calls: WARMUP_CALLS,
        events_dropped: 0,
        threads: crate::counters::Usage::default(),
        others: crate::counters::OthersCpu::default(),
    });
    let mut elapsed = [(0u64, 0u64); 2];
    let look = || {
        (
            crate::counters::Snapshot::take(observed, &workload),
            crate::counters::Others::take(&ours),
        )
    };
    let (mut threads_then, mut others_then) = look();
    for turn in 0..turns {
        let order = if turn % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let batch = &pair[side];
            let start = Instant::now();
            nix::unistd::write(&batch.go, &[1]).context("starting a turn")?;
            let record = read_results(&batch.results, 1, deadline)?;
            let wall = start.elapsed();
            let at_end = crate::counters::Snapshot::take(observed, &[]);
            std::thread::sleep(TURN_SETTLE);
            let (threads_now, others_now) = look();
            let late = threads_now.since(&at_end).serving_cpu_ns();
            let outcome = &mut sides[side];
            outcome.wall += wall;
            outcome.threads.add(&threads_now.since(&threads_then));
            outcome.others.add(others_now.since(&others_then));
            (threads_then, others_then) = (threads_now, others_now);
            let (ns, calls) = decode_result(&record);
            // What the serving threads did after the turn's last call (the event writer
            // catching up) is the turn's: on one CPU it delays the next call.
            elapsed[side].0 += ns + late;
            elapsed[side].1 += calls;
        }
    }
    for (outcome, (ns, calls)) in sides.iter_mut().zip(elapsed) {
        outcome.ns_per_call = vec![ns as f64 / calls.max(1) as f64];
        outcome.calls += calls;
    }
    // The children exit once their handover sockets close.
    drop(pair);
    Ok(sides)
}

/// Receives one (pid, listener) a workload child handed over.
pub fn receive_listener(socket: &OwnedFd) -> anyhow::Result<(i32, Listener)> {
    let mut pid = [0u8; 4];
    let deadline = Instant::now() + SETUP_TIMEOUT;
    match handoff::receive_listener(socket.as_fd(), &mut pid, Some(deadline))
        .context("waiting for a workload child's listener")?
    {
        (4, Some(listener)) => Ok((i32::from_le_bytes(pid), listener)),
        (0, None) => bail!("a workload child exited before handing its listener over"),
        _ => bail!("a workload child sent a malformed handover"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_share_every_call() {
        for (calls, turns) in [(100_000, 20), (2_000, 20), (7, 3), (5, 1), (3, 5)] {
            let shares: Vec<u64> = (0..turns).map(|t| turn_share(calls, turns, t)).collect();
            assert_eq!(
                shares.iter().sum::<u64>(),
                calls,
                "{calls} in {turns}: {shares:?}"
            );
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() < turns);
        }
    }

    #[test]
    fn requests_round_trip() {
        let request = Request::Workload {
            filter: FilterKind::Allow,
            pin: Pin::Unpinned,
            calls: 20_000,
            turns: 20,
        };
        let Some(Request::Workload {
            filter,
            pin,
            calls,
            turns,
        }) = Request::decode(&request.encode())
        else {
            panic!("not a workload");
        };
        assert_eq!(
            (filter, pin, calls, turns),
            (FilterKind::Allow, Pin::Unpinned, 20_000, 20)
        );
    }
}
