//! `switchboard-bench`: the round trip of a notified `getppid`, from no filter up to a separate agent process.
//!
//! Not part of the product: it drives the `switchboard` library and binary from outside and
//! prints the pass/fail targets after its tables.

mod agent;
mod capture_rows;
mod counters;
mod fork;
mod recording;
mod report;
mod rows;
mod survive;
mod writer_rows;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use crate::agent::proc_status_field;
use crate::fork::{build_filters, online_cpus, ForkServer, PINS};
use crate::report::Report;
use crate::rows::{policy_text, Bench};

/// Untimed calls each workload makes first: thread start-up, page faults, the agent's attach.
pub const WARMUP_CALLS: u64 = 1000;
/// Rules in the benchmark policy; only the last one decides `getppid`.
pub const POLICY_RULES: usize = 200;
/// Concurrent workload processes of the scaling rows.
pub const SCALING_PROCESSES: [usize; 3] = [1, 4, 16];
/// Idle listeners held by one agent in the memory row.
pub const IDLE_LISTENERS: usize = 1000;
/// Event queue of the in-process engine, as the agent sizes it.
pub const EVENT_QUEUE: usize = 64 * 1024;
/// How long a child, an agent or a handover may take before the bench gives up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fork-server request: kind, filter, pin, 5 bytes padding, calls (u64 LE).
pub const REQUEST_LEN: usize = 16;
/// Workload result: elapsed ns and calls, both u64 LE; below PIPE_BUF, so writes never interleave.
pub const RESULT_LEN: usize = 16;

/// Which tables `switchboard-bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Rows {
    /// Latency and scaling.
    All,
    /// Rows 1–5: one process, pinned and unpinned, sync wake-up on and off.
    Latency,
    /// 1, 4 and 16 processes; 1,000 idle listeners in one agent.
    Scaling,
    /// Syscall-heavy workloads alone, under `switchboard record` and under `strace -f`.
    Recording,
    /// Longest stall during crash recovery and takeover, 1, 10 and 100 listeners (not in `all`).
    Survive,
    /// A notified mkdir logged with its path captured, against its floor.
    Capture,
    /// The event writer alone: its CPU per logged line, written nowhere, to /dev/null and to a file.
    Writer,
}

/// Where the `switchboard agent` processes the bench starts write their events (their stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentEvents {
    /// `/dev/null`: the agent's own cost, as row 4's in-process engine writes nowhere.
    Null,
    /// A file in the bench's scratch directory (on whatever file system holds `$TMPDIR`), as
    /// `peers.sh` logs: adds what the kernel's page cache costs per line.
    File,
}

/// Measure the round trip of a notified syscall, from no filter to a separate agent.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard-bench", version)]
struct BenchConfig {
    /// Timed getppid calls per workload process and run. Also peers.sh's default: a run of
    /// ~0.4 s dilutes another task's burst on the measured CPU (this VM's kdamond takes
    /// 30–45 ms every ~5 s) five times more than the 20,000 calls this used to be.
    #[arg(long, default_value_t = report::QUOTABLE_CALLS)]
    calls: u64,
    /// Runs per measurement; tables show the median.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Which tables to measure.
    #[arg(long, value_enum, default_value_t = Rows::All)]
    rows: Rows,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report (every run of every cell) to this file, beside the Markdown.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The `switchboard` binary rows 5 and the idle table start as the agent; by default the
    /// one next to this binary (cargo builds both into the same directory).
    #[arg(long)]
    agent_exe: Option<PathBuf>,
    /// An extra argument for every `switchboard agent` the bench starts (row 5 and the idle
    /// table), after its own; repeat it for several. The hook for measuring another process
    /// layout of the agent with the same rows: `--agent-arg=--some-layout-flag`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// Where row 5's agent (and the idle table's) writes its JSON events.
    #[arg(long, value_enum, default_value_t = AgentEvents::Null)]
    agent_events: AgentEvents,
    /// Internal: loop getppid for this many ms and print the longest call (the survive rows' probe).
    #[arg(long, hide = true)]
    stall_probe: Option<u64>,
}

fn main() -> ExitCode {
    recording::run_workload_if_asked();
    match run(BenchConfig::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent binary: `--agent-exe`, else `switchboard` beside this executable.
fn agent_exe(config: &BenchConfig) -> anyhow::Result<PathBuf> {
    if let Some(exe) = &config.agent_exe {
        return Ok(exe.clone());
    }
    let me = std::env::current_exe().context("locating switchboard-bench")?;
    let exe = me.with_file_name("switchboard");
    if !exe.exists() {
        bail!(
            "no agent binary at {} (build it with `cargo build --release --workspace`, or pass --agent-exe)",
            exe.display()
        );
    }
    Ok(exe)
}

/// Runs the benchmark and prints its tables on stdout; progress goes to stderr.
fn run(config: BenchConfig) -> anyhow::Result<()> {
    if let Some(ms) = config.stall_probe {
        survive::stall_probe(ms);
    }
    if config.rows == Rows::Survive {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench.")
            .tempdir()
            .context("creating the scratch directory")?;
        let cells = survive::table(&agent_exe(&config)?, dir.path(), config.runs)?;
        print!("{}", survive::markdown(&cells));
        return Ok(());
    }
    if config.calls == 0 || config.runs == 0 {
        bail!("--calls and --runs must be at least 1");
    }
    if config.rows == Rows::Recording {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench.")
            .tempdir()
            .context("creating the scratch directory")?;
        let rows = recording::measure(&agent_exe(&config)?, dir.path(), config.runs)?;
        if config.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", recording::markdown(&rows, config.runs));
        }
        return Ok(());
    }
    // The fork server is forked first, while this process still has one thread.
    if proc_status_field(std::process::id(), "Threads")? != 1 {
        bail!("bench must start single-threaded, to fork its fork server");
    }
    let online = online_cpus();
    let server = ForkServer::start(build_filters()?, online.clone())?;
    let dir = tempfile::Builder::new()
        .prefix("switchboard-bench.")
        .tempdir()
        .context("creating the scratch directory")?;
    let bench = Bench {
        server,
        online,
        calls: config.calls,
        exe: agent_exe(&config)?,
        agent_args: config.agent_args.clone(),
        agent_events: config.agent_events,
        policy_log: write_file(dir.path(), "policy-log.yaml", &policy_text("log"))?,
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
        agent_events: config.agent_events,
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
    let capture = if matches!(config.rows, Rows::All | Rows::Capture) {
        capture_rows::capture_cells(&bench, config.runs)?
    } else {
        Vec::new()
    };
    let writer = if matches!(config.rows, Rows::All | Rows::Writer) {
        Some(writer_rows::writer_table(&bench, config.runs)?)
    } else {
        None
    };
    if let Some(path) = &config.json_out {
        let json = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if config.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_markdown());
        if !capture.is_empty() {
            print!("{}", capture_rows::capture_markdown(&capture));
        }
        if let Some(writer) = &writer {
            print!("{}", writer_rows::writer_markdown(writer));
        }
    }
    Ok(())
}
/// Writes `text` to `dir/name`.
fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
