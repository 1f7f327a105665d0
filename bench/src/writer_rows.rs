//! The event writer alone: its CPU time per logged `getppid` line, written nowhere, to `/dev/null` and to a file.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard::container::Container;
use switchboard::events::output::EventOutput;
use switchboard::events::{EventWriter, Location, LogFormat, SyscallEvent, UnixNanos};
use switchboard::metrics::Metrics;
use switchboard::policy::Action;

use crate::counters::Snapshot;
use crate::fork::{set_affinity, Pin};
use crate::report::{median, Spread};
use crate::rows::Bench;
use crate::EVENT_QUEUE;

/// Events per run: fewer than the queue holds, so none is dropped while the writer sleeps.
const EVENTS: u64 = 60_000;

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Sink,
    DevNull,
    /// As the agent writes its stdout when it is a file: space reserved ahead.
    File,
    /// The same file written with plain write(2)s, nothing reserved.
    PlainFile,
}

impl Output {
    fn label(self) -> &'static str {
        match self {
            Output::Sink => "nowhere (in-process sink: formatting only)",
            Output::DevNull => "`/dev/null`",
            Output::File => "a file in the bench's scratch directory, as the agent writes it (space reserved ahead)",
            Output::PlainFile => "the same file, nothing reserved ahead",
        }
    }
}

pub struct WriterCell {
    output: Output,
    /// Writer CPU ns per event, run by run.
    ns: Vec<f64>,
}

/// Every output's cell; the lines are the same in each, so one size.
pub struct WriterTable {
    cells: Vec<WriterCell>,
    /// Bytes per line, from the file the last run wrote.
    line_bytes: f64,
}

/// Each output, `runs` times: `EVENTS` events as a busy caller's worker queues them
/// (a 64-hex-digit container id, register-sized arguments, a live pid), the writer's CPU
/// time from /proc schedstat. Everything on CPU 0, as in the pinned rows.
pub fn writer_table(bench: &Bench, runs: usize) -> anyhow::Result<WriterTable> {
    set_affinity(Pin::Cpu0, &bench.online).context("setting the CPU affinity")?;
    let mut cells: Vec<WriterCell> = [
        Output::Sink,
        Output::DevNull,
        Output::File,
        Output::PlainFile,
    ]
    .into_iter()
    .map(|output| WriterCell {
        output,
        ns: Vec::new(),
    })
    .collect();
    let path = bench.dir.path().join("events.jsonl");
    let mut line_bytes = 0.0;
    for _ in 0..runs {
        for cell in &mut cells {
            let out: Box<dyn std::io::Write + Send> = match cell.output {
                Output::Sink => Box::new(std::io::sink()),
                Output::DevNull => Box::new(std::fs::File::create("/dev/null")?),
                Output::File | Output::PlainFile => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    if cell.output == Output::File {
                        Box::new(EventOutput::new(file.into()))
                    } else {
                        Box::new(file)
                    }
                }
            };
            cell.ns.push(writer_ns_per_event(out)?);
            if matches!(cell.output, Output::File | Output::PlainFile) {
                let bytes = std::fs::metadata(&path)?.len();
                line_bytes = bytes as f64 / EVENTS as f64;
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(WriterTable { cells, line_bytes })
}

fn writer_ns_per_event(out: Box<dyn std::io::Write + Send>) -> anyhow::Result<f64> {
    let metrics = Metrics::new(Duration::from_secs(3600), usize::MAX);
    let dropped = metrics.events_dropped.clone();
    let (sink, writer) = EventWriter::spawn(LogFormat::Json, out, EVENT_QUEUE, dropped.clone());
    let container = Arc::new(Container {
        container_id: "5f0c2a9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f".into(),
        ..Container::default()
    });
    let x86_64 = 0xC000_003E;
    let location = switchboard::syscalls::locate(x86_64, 110, 0);
    let pid = std::process::id();
    let me = [pid];
    // The writer parks between rounds: let it reach its first park before counting.
    std::thread::sleep(Duration::from_millis(20));
    let before = Snapshot::take(&me, &[]);
    let start = UnixNanos::from(std::time::SystemTime::now());
    let (mut events, end) = sink.queue();
    sink.open(1, end, container, true);
    for i in 0..EVENTS {
        events.emit(SyscallEvent {
            time: UnixNanos(start.0 + i * 4_500),
            pid,
            audit_arch: x86_64,
            nr: 110,
            location: Location::new(location),
            args: [
                0x7ffd_4b1c_9a40,
                0,
                0x7f3a_9c2e_1010,
                8,
                0x55d4_07a1_b2c0,
                0x246,
            ],
            rule: Some("log-getppid"),
            action: Action::Log,
            errno: 0,
            capture: None,
            ip: 0x7f3a_9c31_5e2d,
        });
    }
    // At most a few hundred ns per event, after at most one poll interval of sleep.
    std::thread::sleep(Duration::from_millis(150));
    let usage = Snapshot::take(&me, &[]).since(&before);
    writer.flush_and_stop();
    anyhow::ensure!(
        dropped.get() == 0,
        "the writer dropped {} events",
        dropped.get()
    );
    let writer = usage.0.get("writer").map_or(0, |u| u.cpu_ns);
    Ok(writer as f64 / EVENTS as f64)
}

pub fn writer_markdown(table: &WriterTable) -> String {
    let cells = &table.cells;
    let mut out = String::new();
    let runs = cells.first().map_or(0, |c| c.ns.len());
    let _ = writeln!(
        out,
        "The event writer alone, pinned to CPU 0: CPU time per logged `getppid` line ({EVENTS} lines per run, queued as a busy caller's worker queues them; /proc schedstat of the writer thread), min / median / max over {runs} runs.\n"
    );
    let _ = writeln!(out, "| output | writer CPU per line | bytes per line |");
    let _ = writeln!(out, "|---|---:|---:|");
    for cell in cells {
        let Some(spread) = Spread::of(&cell.ns) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} / {:.0} / {:.0} ns | {:.0} |",
            cell.output.label(),
            spread.min,
            median(&cell.ns),
            spread.max,
            table.line_bytes
        );
    }
    let _ = writeln!(out);
    out
}
