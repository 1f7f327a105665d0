//! The capture table: a notified `mkdir` of a fixed path logged with its path read from the
//! caller, against the floor on the same call in the same run.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard::events::{EventWriter, LogFormat};
use switchboard::metrics::Metrics;
use switchboard::notify::Engine;
use switchboard::policy::Policy;

use crate::fork::{set_affinity, FilterKind, Pin, MKDIR_PATH, PINS};
use crate::report::{median, ratios};
use crate::rows::{attach_all, join_all, serve_floor, Bench};
use crate::EVENT_QUEUE;

const POLICY: &str = "default: allow\nrules:\n  - name: log-mkdir\n    syscalls: [mkdir, mkdirat]\n    action: log\n";

/// Target of the capture row against its floor.
const TARGET: f64 = 1.25;

/// One pin's samples: ns per call of the floor and of the engine, run by run.
pub struct CaptureCell {
    pin: Pin,
    floor_ns: Vec<f64>,
    engine_ns: Vec<f64>,
    events: u64,
    with_path: u64,
    dropped: u64,
}

/// Counts written events and those that carry the bench's path, without keeping them.
struct PathCounter {
    events: Arc<AtomicU64>,
    with_path: Arc<AtomicU64>,
    needle: Vec<u8>,
    /// The tail of the last write, so a needle split across writes still counts.
    carry: Vec<u8>,
}

impl Write for PathCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Searching costs the pinned CPU what the agent's writer costs it, so only the
        // seam between two writes is copied, and the search is the standard library's.
        let needle = std::str::from_utf8(&self.needle).unwrap_or_default();
        let count = |bytes: &[u8]| String::from_utf8_lossy(bytes).matches(needle).count() as u64;
        let head = &buf[..buf.len().min(self.needle.len() - 1)];
        let mut seam = std::mem::take(&mut self.carry);
        seam.extend_from_slice(head);
        let found = count(&seam) + count(buf);
        let lines = buf.iter().filter(|b| **b == b'\n').count() as u64;
        self.events.fetch_add(lines, Ordering::Relaxed);
        self.with_path.fetch_add(found, Ordering::Relaxed);
        let keep = self.needle.len() - 1;
        self.carry = buf[buf.len().saturating_sub(keep)..].to_vec();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn engine_row(bench: &Bench, pin: Pin) -> anyhow::Result<(f64, u64, u64, u64)> {
    let policy = Policy::parse(POLICY, "<capture bench policy>")?;
    let metrics = Arc::new(Metrics::new(Duration::from_secs(3600), usize::MAX));
    let events = Arc::new(AtomicU64::new(0));
    let with_path = Arc::new(AtomicU64::new(0));
    let needle = format!("\"path\":\"{}\"", MKDIR_PATH.to_str()?).into_bytes();
    let counter = PathCounter {
        events: events.clone(),
        with_path: with_path.clone(),
        needle,
        carry: Vec::new(),
    };
    let (sink, writer) = EventWriter::spawn(
        LogFormat::Json,
        Box::new(counter),
        EVENT_QUEUE,
        metrics.events_dropped.clone(),
    );
    let engine = Engine::new(policy, metrics.clone(), sink, true);
    let mut batch = bench.spawn(1, FilterKind::NotifyMkdir, pin)?;
    let threads = attach_all(&engine, &mut batch)?;
    let outcome = batch.run()?;
    join_all(threads);
    writer.flush_and_stop();
    Ok((
        outcome.ns_per_call[0],
        events.load(Ordering::Relaxed),
        with_path.load(Ordering::Relaxed),
        metrics.events_dropped.get(),
    ))
}

fn floor_row(bench: &Bench, pin: Pin) -> anyhow::Result<f64> {
    let mut batch = bench.spawn(1, FilterKind::NotifyMkdir, pin)?;
    let threads = serve_floor(&mut batch, true)?;
    let outcome = batch.run()?;
    join_all(threads);
    Ok(outcome.ns_per_call[0])
}

/// The floor and the capturing engine, pinned and unpinned, sync wake-up on, interleaved.
pub fn capture_cells(bench: &Bench, runs: usize) -> anyhow::Result<Vec<CaptureCell>> {
    let mut cells: Vec<CaptureCell> = PINS
        .into_iter()
        .map(|pin| CaptureCell {
            pin,
            floor_ns: Vec::new(),
            engine_ns: Vec::new(),
            events: 0,
            with_path: 0,
            dropped: 0,
        })
        .collect();
    for run in 1..=runs {
        eprintln!("bench: capture run {run}/{runs}");
        for cell in &mut cells {
            set_affinity(cell.pin, &bench.online).context("setting the CPU affinity")?;
            cell.floor_ns.push(floor_row(bench, cell.pin)?);
            let (ns, events, with_path, dropped) = engine_row(bench, cell.pin)?;
            cell.engine_ns.push(ns);
            cell.events += events;
            cell.with_path += with_path;
            cell.dropped += dropped;
        }
    }
    Ok(cells)
}

/// The table, the share of events that carried the path, and the target verdicts.
pub fn capture_markdown(cells: &[CaptureCell]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nNotified `mkdir(\"{}\", 0755)`, sync wake-up on, µs per call (median; × is the median of per-run ratios to the floor):\n",
        MKDIR_PATH.to_string_lossy()
    );
    let _ = writeln!(out, "| | pinned | unpinned |\n|---|---:|---:|");
    let ratio = |c: &CaptureCell| median(&ratios(&c.engine_ns, &c.floor_ns));
    let spread = |samples: &[f64]| {
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        format!("{:.2}–{:.2}", min / 1000.0, max / 1000.0)
    };
    let mut row = String::from("| 3m. floor: bare RECV/CONTINUE thread, mkdir |");
    for c in cells {
        let _ = write!(
            row,
            " {:.2} µs (1.00×; {}) |",
            median(&c.floor_ns) / 1000.0,
            spread(&c.floor_ns)
        );
    }
    let _ = writeln!(out, "{row}");
    let mut row = String::from("| 6. engine: log mkdir, path read and fenced |");
    for c in cells {
        let _ = write!(
            row,
            " {:.2} µs ({:.2}×; {}) |",
            median(&c.engine_ns) / 1000.0,
            ratio(c),
            spread(&c.engine_ns)
        );
    }
    let _ = writeln!(out, "{row}\n");
    for c in cells {
        let share = if c.events == 0 {
            0.0
        } else {
            100.0 * c.with_path as f64 / c.events as f64
        };
        let _ = writeln!(
            out,
            "- {}: {} events written, {:.2}% with the path, {} dropped; row 6 ≤ {TARGET}× floor: {}",
            c.pin.label(),
            c.events,
            share,
            c.dropped,
            if ratio(c) <= TARGET { "met" } else { "NOT met" }
        );
    }
    out
}
