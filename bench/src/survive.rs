//! Rows of the survival table: the longest stall of a flagged call while the agent's deciding process is killed and restarted, and while a new agent takes over, with 1, 10 and 100 listeners.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::agent::AgentProcess;
use crate::SETUP_TIMEOUT;

/// Listeners the agent holds in each measurement: one busy, the rest idle.
pub const SURVIVE_LISTENERS: [usize; 3] = [1, 10, 100];

/// How long the busy probe loops; the event comes after `LEAD`.
const PROBE_MS: u64 = 1500;
const LEAD: Duration = Duration::from_millis(400);

/// The policy: only getppid flagged, let through.
pub const SURVIVE_POLICY: &str =
    "default: allow\nrules:\n  - name: probe\n    syscalls: [getppid]\n    action: allow\n";

/// What disrupts the agent while the probe loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// SIGKILL of the deciding process; the holding process restarts it.
    Crash,
    /// `switchboard agent --takeover` on the same socket.
    Takeover,
}

impl Disruption {
    pub fn label(self) -> &'static str {
        match self {
            Disruption::Crash => "crash recovery",
            Disruption::Takeover => "takeover",
        }
    }
}

/// One cell: the longest stall (µs) over the runs.
#[derive(Debug, Clone)]
pub struct SurviveCell {
    pub disruption: Disruption,
    pub listeners: usize,
    pub stalls_us: Vec<u64>,
}

impl SurviveCell {
    pub fn worst_ms(&self) -> f64 {
        self.stalls_us.iter().copied().max().unwrap_or(0) as f64 / 1000.0
    }

    pub fn median_ms(&self) -> f64 {
        let mut sorted = self.stalls_us.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// The probe, run under `switchboard run --agent`: getppid in a loop for `ms`, then prints
/// the longest single call in µs.
pub fn stall_probe(ms: u64) -> ! {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut worst = Duration::ZERO;
    let mut calls = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let _ = nix::unistd::getppid();
        worst = worst.max(t0.elapsed());
        calls += 1;
    }
    println!("max_us={} calls={calls}", worst.as_micros());
    std::process::exit(0)
}

/// A `switchboard run --agent SOCKET -- ARGS`: one listener handed to the agent.
fn run_under(
    exe: &Path,
    policy: &Path,
    socket: &Path,
    args: &[&str],
    stdout: Stdio,
) -> anyhow::Result<Child> {
    Command::new(exe)
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--agent")
        .arg(socket)
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .context("starting switchboard run")
}

/// Kills and reaps every child on drop.
struct Reaped(Vec<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Measures one run: `listeners` listeners, one of them busy, and the disruption at `LEAD`.
pub fn measure(
    exe: &Path,
    bench_exe: &Path,
    dir: &Path,
    policy: &Path,
    listeners: usize,
    disruption: Disruption,
    tag: &str,
) -> anyhow::Result<u64> {
    let agent = AgentProcess::start(exe, dir, tag, policy, true, &[], None)?;
    let mut idle = Reaped(Vec::new());
    for _ in 1..listeners {
        idle.0.push(run_under(
            exe,
            policy,
            &agent.socket,
            &["sleep", "120"],
            Stdio::null(),
        )?);
    }
    agent.wait_for_listeners(listeners - 1)?;
    let probe_arg = PROBE_MS.to_string();
    let bench = bench_exe.to_str().context("bench path")?;
    let probe = run_under(
        exe,
        policy,
        &agent.socket,
        &[bench, "--stall-probe", &probe_arg],
        Stdio::piped(),
    )?;
    agent.wait_for_listeners(listeners)?;
    std::thread::sleep(LEAD);
    let mut successor = Reaped(Vec::new());
    match disruption {
        Disruption::Crash => {
            let decider = agent.decider().context("no deciding process")?;
            kill(Pid::from_raw(decider), Signal::SIGKILL)?;
        }
        Disruption::Takeover => {
            successor.0.push(
                Command::new(exe)
                    .args([
                        "agent",
                        "--takeover",
                        "--log-format",
                        "json",
                        "--metrics-addr",
                        "127.0.0.1:0",
                    ])
                    .arg("--socket")
                    .arg(&agent.socket)
                    .arg("--policy")
                    .arg(policy)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting the successor")?,
            );
        }
    }
    let out = probe.wait_with_output().context("waiting for the probe")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(max_us) = text
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("max_us="))
        .and_then(|v| v.parse().ok())
    else {
        bail!("the probe printed no result: {text:?}");
    };
    drop(idle);
    drop(successor);
    Ok(max_us)
}

/// Every cell of the table, `runs` runs each.
pub fn table(exe: &Path, dir: &Path, runs: usize) -> anyhow::Result<Vec<SurviveCell>> {
    let bench_exe: PathBuf = std::env::current_exe().context("locating switchboard-bench")?;
    let policy = dir.join("policy-survive.yaml");
    std::fs::write(&policy, SURVIVE_POLICY)?;
    let mut cells = Vec::new();
    for disruption in [Disruption::Crash, Disruption::Takeover] {
        for listeners in SURVIVE_LISTENERS {
            let mut stalls_us = Vec::new();
            for run in 0..runs {
                let tag = format!(
                    "survive-{}-{listeners}-{run}",
                    disruption.label().replace(' ', "-")
                );
                eprintln!(
                    "{}, {listeners} listeners, run {}",
                    disruption.label(),
                    run + 1
                );
                stalls_us.push(measure(
                    exe, &bench_exe, dir, &policy, listeners, disruption, &tag,
                )?);
            }
            cells.push(SurviveCell {
                disruption,
                listeners,
                stalls_us,
            });
        }
    }
    let _ = SETUP_TIMEOUT;
    Ok(cells)
}

/// The table in Markdown, with the targets.
pub fn markdown(cells: &[SurviveCell]) -> String {
    let mut out = String::from(
        "\n| longest stall of a flagged call | 1 listener | 10 listeners | 100 listeners |\n|---|---:|---:|---:|\n",
    );
    for disruption in [Disruption::Crash, Disruption::Takeover] {
        out.push_str(&format!(
            "| {} (worst / median of runs) |",
            disruption.label()
        ));
        for cell in cells.iter().filter(|c| c.disruption == disruption) {
            out.push_str(&format!(
                " {:.1} / {:.1} ms |",
                cell.worst_ms(),
                cell.median_ms()
            ));
        }
        out.push('\n');
    }
    let at = |d: Disruption| {
        cells
            .iter()
            .find(|c| c.disruption == d && c.listeners == 100)
            .map_or(f64::NAN, SurviveCell::worst_ms)
    };
    out.push_str(&format!(
        "\nTargets: takeover stall ≤ 100 ms at 100 listeners: {:.1} ms ({}); crash recovery stall ≤ 1 s at 100 listeners: {:.1} ms ({})\n",
        at(Disruption::Takeover),
        if at(Disruption::Takeover) <= 100.0 { "met" } else { "MISSED" },
        at(Disruption::Crash),
        if at(Disruption::Crash) <= 1000.0 { "met" } else { "MISSED" },
    ));
    out
}
