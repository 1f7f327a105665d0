//! The report: per-cell samples, their medians and ratios, as Markdown tables or typed JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::fork::{Outcome, Pin, PINS};
use crate::rows::{Row, LATENCY_ROWS};
use crate::{AgentEvents, IDLE_LISTENERS, SCALING_PROCESSES, WARMUP_CALLS};

pub struct LatencyCell {
    pub row: Row,
    pub pin: Pin,
    pub sync: bool,
    pub ns: Vec<f64>,
    /// Run by run, the floor (row 3) this cell was measured against: a floor workload run
    /// in alternating turns with it, so a slow spell of the machine longer than a turn
    /// slows both alike. The floor's own row and rows 1–2: the mean of the run's floors.
    pub floor_ns: Vec<f64>,
    /// The serving threads' CPU and switches, run by run.
    pub threads: Vec<PerCall>,
    /// Run by run, the CPU tasks outside the bench (kernel threads included) used during
    /// this row's turns or its floor's, the larger, ms: how much of the machine someone
    /// else took while this cell was measured.
    pub others_ms: Vec<f64>,
    /// Ratios to the floor of the pairs set aside because another task burst during them,
    /// in the order they were made.
    pub remeasured: Vec<f64>,
    pub events_dropped: u64,
}

impl LatencyCell {
    /// Keeps one run's measurement, compared with `floor_ns`; `around` are it and its
    /// floor's, for the others' CPU.
    pub fn keep(&mut self, outcome: &Outcome, floor_ns: f64, around: &[&Outcome]) {
        self.ns.push(outcome.ns_per_call[0]);
        self.floor_ns.push(floor_ns);
        self.threads.push(PerCall::of(outcome));
        self.events_dropped += outcome.events_dropped;
        let others = around.iter().map(|o| o.others.total_ns).max().unwrap_or(0);
        self.others_ms.push(others as f64 / 1e6);
    }
}

pub struct ScalingCell {
    pub row: Row,
    pub pin: Pin,
    pub processes: usize,
    pub calls_per_second: Vec<f64>,
    pub events_dropped: u64,
}

pub struct IdleResult {
    pub pin: Pin,
    pub fd_limit: Option<u64>,
    /// VmRSS of the agent without idle listeners.
    pub rss_single_kib: u64,
    pub rss_idle_kib: u64,
    pub threads_idle: u64,
    /// Private_Clean + Private_Dirty of every idle child, summed.
    pub children_private_kib: u64,
    pub single_ns: Vec<f64>,
    pub crowded_ns: Vec<f64>,
}

impl IdleResult {
    pub fn per_listener_kib(&self) -> f64 {
        (self.rss_idle_kib as f64 - self.rss_single_kib as f64) / IDLE_LISTENERS as f64
    }

    /// Median over runs of (busy RTT among idle listeners / alone − 1), in percent.
    pub fn busy_difference_percent(&self) -> f64 {
        (median(&ratios(&self.crowded_ns, &self.single_ns)) - 1.0) * 100.0
    }
}

/// What the threads of one role cost per call of the workload (warm-up calls included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RoleCost {
    pub cpu_ns: f64,
    pub voluntary_switches: f64,
    pub involuntary_switches: f64,
}

/// One run's serving threads (`worker`, `writer`, `other`), per call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerCall(pub BTreeMap<&'static str, RoleCost>);

impl PerCall {
    pub fn of(outcome: &Outcome) -> PerCall {
        let calls = outcome.calls.max(1) as f64;
        PerCall(
            outcome
                .threads
                .0
                .iter()
                .map(|(role, u)| {
                    let cost = RoleCost {
                        cpu_ns: u.cpu_ns as f64 / calls,
                        voluntary_switches: u.voluntary as f64 / calls,
                        involuntary_switches: u.involuntary as f64 / calls,
                    };
                    (*role, cost)
                })
                .collect(),
        )
    }
}

/// Ends a table, saying how many events a full queue dropped during it, if any.
pub fn dropped_footer(out: &mut String, dropped: u64) {
    if dropped > 0 {
        let _ = writeln!(out, "\nEvents dropped (queue full): {dropped}.");
    }
    let _ = writeln!(out);
}

/// How a cell's samples spread over runs: what a reader needs to see how stable a median is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    /// Nearest rank: the smallest sample at least 90% of the runs are at or below.
    pub p90: f64,
    pub max: f64,
}

impl Spread {
    /// `None` without samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (first, last) = (*sorted.first()?, *sorted.last()?);
        // ceil(0.9 n) - 1, in integers: n ≥ 1 here.
        let rank = (9 * sorted.len()).div_ceil(10) - 1;
        Some(Spread {
            min: first,
            median: median(&sorted),
            p90: sorted[rank],
            max: last,
        })
    }

    /// `min / median / p90 / max`, each scaled by `scale` and printed with `decimals`.
    fn markdown(&self, scale: f64, decimals: usize) -> String {
        let [a, b, c, d] = [self.min, self.median, self.p90, self.max].map(|v| v * scale);
        format!("{a:.decimals$} / {b:.decimals$} / {c:.decimals$} / {d:.decimals$}")
    }
}

/// Run by run, `samples` over `base` (each pair measured in the same run).
pub fn ratios(samples: &[f64], base: &[f64]) -> Vec<f64> {
    samples.iter().zip(base).map(|(a, b)| a / b).collect()
}

pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Issue 19's targets for rows 4 and 5 against the floor: the median ratio over runs, and every run.
pub const MEDIAN_TARGET: f64 = 1.05;
pub const RUN_TARGET: f64 = 1.10;

/// The calls per run the bench makes unless told otherwise, and the fewest it calls a result.
pub const QUOTABLE_CALLS: u64 = 100_000;

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub struct Report {
    pub command: String,
    pub cpus: usize,
    pub kernel: String,
    pub calls: u64,
    pub runs: usize,
    pub agent_events: AgentEvents,
    pub latency: Vec<LatencyCell>,
    pub scaling: Vec<ScalingCell>,
    pub idle: Vec<IdleResult>,
}

/// The header of a table with one column per (pin, sync) cell.
fn column_header(out: &mut String, columns: &[(Pin, bool)]) {
    let _ = write!(out, "| |");
    for (pin, sync) in columns {
        let sync = if *sync { "on" } else { "off" };
        let _ = write!(out, " {}, sync {sync} |", pin.label());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(columns.len()));
}

impl Report {
    fn latency_cell(&self, row: Row, pin: Pin, sync: bool) -> Option<&LatencyCell> {
        self.latency
            .iter()
            .find(|c| c.row == row && c.pin == pin && c.sync == sync)
    }

    pub fn latency_median(&self, row: Row, pin: Pin, sync: bool) -> Option<f64> {
        self.latency_cell(row, pin, sync).map(|c| median(&c.ns))
    }

    /// The median over runs of `row`'s ratio to `base` measured in the same run (the floor:
    /// the one alternating with it).
    pub fn paired_ratio(&self, row: Row, base: Row, pin: Pin, sync: bool) -> Option<f64> {
        Some(self.ratio_spread(row, base, pin, sync)?.median)
    }

    /// `row`'s ratio to `base` run by run (each measured in the same run), and its spread.
    pub fn ratio_spread(&self, row: Row, base: Row, pin: Pin, sync: bool) -> Option<Spread> {
        let cell = self.latency_cell(row, pin, sync)?;
        if base == Row::Floor {
            return Spread::of(&ratios(&cell.ns, &cell.floor_ns));
        }
        // Rows 4, 4b and 5 each have a floor of their own: compare their ratios to it.
        let base = self.latency_cell(base, pin, sync)?;
        Spread::of(&ratios(
            &ratios(&cell.ns, &cell.floor_ns),
            &ratios(&base.ns, &base.floor_ns),
        ))
    }

    pub fn scaling_median(&self, row: Row, pin: Pin, processes: usize) -> Option<f64> {
        self.scaling
            .iter()
            .find(|c| c.row == row && c.pin == pin && c.processes == processes)
            .map(|c| median(&c.calls_per_second))
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Machine: {} CPUs online, kernel {} (`uname -r`).  ",
            self.cpus, self.kernel
        );
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        if self.calls < QUOTABLE_CALLS || self.runs < 5 {
            let _ = writeln!(
                out,
                "Fewer than {QUOTABLE_CALLS} calls or 5 runs: a quick look, not a result to quote.\n"
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

    pub fn latency_markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Round trip of one notified `getppid`: mean over {} calls (after {WARMUP_CALLS} warm-up calls), median of {} runs, µs per call; × is the median over runs of the ratio to row 3 measured with it: each of rows 4, 4b and 5 runs beside a floor workload of its own, the two taking turns of {} calls (A B, B A, A B, …; each turn after the last one's events are written, and the serving threads' CPU after a turn's last call counted in that turn's time), and is compared with it; row 3 shows the mean of a run's three floors, which rows 1–2 are compared with. Pinned: the workload and every serving thread on CPU 0; unpinned: all CPUs. Sync: SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (rows 1–2 have no listener, so their sync columns are repeat measurements).\n",
            self.calls,
            self.runs,
            self.calls / u64::from(crate::rows::TURNS)
        );
        let _ = writeln!(
            out,
            "Row 5's agent writes its JSON events {}.\n",
            match self.agent_events {
                AgentEvents::Null => "to `/dev/null` (`--agent-events null`)",
                AgentEvents::File =>
                    "to a file in the bench's scratch directory (`--agent-events file`), as `peers.sh` logs",
            }
        );
        let columns: Vec<(Pin, bool)> = PINS
            .into_iter()
            .flat_map(|pin| [(pin, true), (pin, false)])
            .collect();
        column_header(out, &columns);
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
        self.spread_markdown(out, &columns);
        self.threads_markdown(out, &columns);
        self.others_markdown(out, &columns);
    }

    /// A table of the notified rows, one cell per column, each cell's text from `text`
    /// ("–" where it has none).
    fn notified_table(
        &self,
        out: &mut String,
        columns: &[(Pin, bool)],
        text: impl Fn(Row, &LatencyCell) -> Option<String>,
    ) {
        column_header(out, columns);
        for row in LATENCY_ROWS.into_iter().filter(|r| r.notified()) {
            let _ = write!(out, "| {} |", row.label());
            for (pin, sync) in columns {
                let cell = self.latency_cell(row, *pin, *sync);
                let cell = cell.and_then(|cell| text(row, cell));
                let _ = write!(out, " {} |", cell.as_deref().unwrap_or("–"));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }

    /// Whether someone else was busy while a cell was measured, and what was measured again.
    fn others_markdown(&self, out: &mut String, columns: &[(Pin, bool)]) {
        let _ = writeln!(
            out,
            "Other tasks' CPU time (every thread outside the bench's process tree, kernel threads included; /proc schedstat) during a kept run's turns or its floor's, the larger, ms: median / max over runs; then how many pairs were measured again because one of those threads took more than {} ms of CPU in one turn, and the ratios to the floor the set-aside pairs gave.\n",
            crate::rows::BURST_NS / 1_000_000
        );
        self.notified_table(out, columns, |row, cell| {
            if cell.others_ms.is_empty() {
                return None;
            }
            let mut text = format!(
                "{:.1} / {:.1} ms",
                median(&cell.others_ms),
                cell.others_ms.iter().copied().fold(0.0, f64::max),
            );
            let again = &cell.remeasured;
            if row != Row::Floor {
                let _ = write!(text, "; again {}", again.len());
            }
            if !again.is_empty() {
                let low = again.iter().copied().fold(f64::INFINITY, f64::min);
                let high = again.iter().copied().fold(0.0, f64::max);
                let _ = write!(text, " ({low:.2}–{high:.2}×)");
            }
            Some(text)
        });
    }

    /// Where the serving side's CPU goes, per call: medians over runs by thread role.
    fn threads_markdown(&self, out: &mut String, columns: &[(Pin, bool)]) {
        let _ = writeln!(
            out,
            "CPU time per call (warm-up included; /proc schedstat, medians over runs), ns: the workload process (its syscalls, kernel side included) \\| then the serving threads: worker (row 3: the bare loop) + event writer + the process's other threads (row 5: the agent's control plane; rows 3–4b: the bench's threads but the one reading these counters, and during the floor's turns the writer of the engine beside it); then involuntary context switches of the serving threads per 1,000 calls. Kernel time in RECV and SEND counts as the worker's.\n"
        );
        self.notified_table(out, columns, |_, cell| {
            let role = |name: &str, f: fn(&RoleCost) -> f64| {
                let runs: Vec<f64> = cell
                    .threads
                    .iter()
                    .map(|run| run.0.get(name).map_or(0.0, f))
                    .collect();
                median(&runs)
            };
            let involuntary: Vec<f64> = cell
                .threads
                .iter()
                .map(|run| {
                    run.0
                        .iter()
                        .filter(|(role, _)| **role != "workload")
                        .map(|(_, c)| c.involuntary_switches)
                        .sum::<f64>()
                })
                .collect();
            Some(format!(
                "{:.0} \\| {:.0} + {:.0} + {:.0}; {:.1}",
                role("workload", |c| c.cpu_ns),
                role("worker", |c| c.cpu_ns),
                role("writer", |c| c.cpu_ns),
                role("other", |c| c.cpu_ns),
                median(&involuntary) * 1000.0
            ))
        });
    }

    /// The notified rows again, as min / median / p90 / max over runs: µs, then the ratio to
    /// row 3 run by run.
    fn spread_markdown(&self, out: &mut String, columns: &[(Pin, bool)]) {
        let _ = writeln!(
            out,
            "Spread over the {} runs of the notified rows: min / median / p90 / max, µs per call, then of the per-run ratio to row 3 (×).\n",
            self.runs
        );
        self.notified_table(out, columns, |row, cell| {
            let ns = Spread::of(&cell.ns)?.markdown(1e-3, 2);
            match self.ratio_spread(row, Row::Floor, cell.pin, cell.sync) {
                Some(ratio) if row != Row::Floor => {
                    Some(format!("{ns} µs; {}×", ratio.markdown(1.0, 2)))
                }
                _ => Some(format!("{ns} µs")),
            }
        });
    }

    pub fn scaling_markdown(&self, out: &mut String) {
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

    pub fn idle_markdown(&self, out: &mut String) {
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

    pub fn targets_markdown(&self, out: &mut String) {
        let mut lines = Vec::new();
        for pin in PINS {
            for row in [Row::Engine, Row::Agent] {
                if let Some(ratio) = self.ratio_spread(row, Row::Floor, pin, true) {
                    let n = if row == Row::Engine { "4" } else { "5" };
                    lines.push(format!(
                        "row {n} median ≤ {MEDIAN_TARGET:.2}× floor, {}, sync on: {:.2}× — {}",
                        pin.label(),
                        ratio.median,
                        verdict(ratio.median <= MEDIAN_TARGET)
                    ));
                    lines.push(format!(
                        "row {n} no run above {RUN_TARGET:.2}× floor, {}, sync on: max {:.2}× — {}",
                        pin.label(),
                        ratio.max,
                        verdict(ratio.max <= RUN_TARGET)
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

    pub fn to_json(&self) -> JsonReport {
        JsonReport {
            machine: Machine {
                cpus_online: self.cpus,
                kernel: self.kernel.clone(),
            },
            command: self.command.clone(),
            calls: self.calls,
            warmup_calls: WARMUP_CALLS,
            runs: self.runs,
            latency_ns: self
                .latency
                .iter()
                .map(|c| LatencyJson {
                    row: c.row.key(),
                    pinned: c.pin == Pin::Cpu0,
                    sync_wakeup: c.sync,
                    median: median(&c.ns),
                    spread: Spread::of(&c.ns),
                    ratio_to_floor: self.paired_ratio(c.row, Row::Floor, c.pin, c.sync),
                    ratio_to_floor_spread: self.ratio_spread(c.row, Row::Floor, c.pin, c.sync),
                    runs: c.ns.clone(),
                    floor_runs: c.floor_ns.clone(),
                    threads_per_call: c.threads.clone(),
                    others_ms: c.others_ms.clone(),
                    remeasured: c.remeasured.clone(),
                    events_dropped: c.events_dropped,
                })
                .collect(),
            scaling_calls_per_second: self
                .scaling
                .iter()
                .map(|c| ScalingJson {
                    row: c.row.key(),
                    pinned: c.pin == Pin::Cpu0,
                    processes: c.processes,
                    median: median(&c.calls_per_second),
                    spread: Spread::of(&c.calls_per_second),
                    runs: c.calls_per_second.clone(),
                    events_dropped: c.events_dropped,
                })
                .collect(),
            idle: self
                .idle
                .iter()
                .map(|i| IdleJson {
                    pinned: i.pin == Pin::Cpu0,
                    listeners: IDLE_LISTENERS,
                    agent_rss_kib_idle: i.rss_idle_kib,
                    agent_rss_kib_single: i.rss_single_kib,
                    agent_threads_idle: i.threads_idle,
                    agent_fd_soft_limit: i.fd_limit,
                    idle_children_private_kib_total: i.children_private_kib,
                    busy_ns_alone: median(&i.single_ns),
                    busy_ns_with_idle: median(&i.crowded_ns),
                    busy_ns_alone_runs: i.single_ns.clone(),
                    busy_ns_with_idle_runs: i.crowded_ns.clone(),
                })
                .collect(),
        }
    }
}

/// `switchboard-bench --json`.
#[derive(Debug, Serialize)]
pub struct JsonReport {
    machine: Machine,
    command: String,
    calls: u64,
    warmup_calls: u64,
    runs: usize,
    latency_ns: Vec<LatencyJson>,
    scaling_calls_per_second: Vec<ScalingJson>,
    idle: Vec<IdleJson>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus_online: usize,
    kernel: String,
}

#[derive(Debug, Serialize)]
struct LatencyJson {
    row: &'static str,
    pinned: bool,
    sync_wakeup: bool,
    median: f64,
    /// Over runs, ns per call.
    spread: Option<Spread>,
    ratio_to_floor: Option<f64>,
    /// Over runs, of the ratio to the floor measured with it in the same run.
    ratio_to_floor_spread: Option<Spread>,
    runs: Vec<f64>,
    /// Run by run, the floor each run is compared with (see `LatencyCell::floor_ns`).
    floor_runs: Vec<f64>,
    /// Run by run: CPU ns and switches per call of the serving threads, by role.
    threads_per_call: Vec<PerCall>,
    /// Run by run: other tasks' CPU during the row's turns or its floor's (see
    /// `LatencyCell::others_ms`).
    others_ms: Vec<f64>,
    /// Ratios of the pairs set aside (see `LatencyCell::remeasured`).
    remeasured: Vec<f64>,
    events_dropped: u64,
}

#[derive(Debug, Serialize)]
struct ScalingJson {
    row: &'static str,
    pinned: bool,
    processes: usize,
    median: f64,
    spread: Option<Spread>,
    runs: Vec<f64>,
    events_dropped: u64,
}

#[derive(Debug, Serialize)]
struct IdleJson {
    pinned: bool,
    listeners: usize,
    agent_rss_kib_idle: u64,
    agent_rss_kib_single: u64,
    agent_threads_idle: u64,
    agent_fd_soft_limit: Option<u64>,
    idle_children_private_kib_total: u64,
    busy_ns_alone: f64,
    busy_ns_with_idle: f64,
    busy_ns_alone_runs: Vec<f64>,
    busy_ns_with_idle_runs: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn spread_ranks_p90_to_the_nearest_run() {
        let runs: Vec<f64> = (1..=15).rev().map(f64::from).collect();
        let spread = Spread::of(&runs).unwrap();
        // 15 runs: the 14th smallest (ceil(13.5)), so one run of 15 may lie above p90.
        assert_eq!(
            spread,
            Spread {
                min: 1.0,
                median: 8.0,
                p90: 14.0,
                max: 15.0
            }
        );
        assert_eq!(Spread::of(&[2.0]).unwrap().p90, 2.0);
        assert_eq!(Spread::of(&[]), None);
    }
}
