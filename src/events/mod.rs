//! Decision and lifecycle events: a bounded queue off the notification path, drained by a writer thread.

mod call;
mod encode;
mod model;
mod process;

pub use call::escaped;
pub use model::{Event, LogFormat, Process, SyscallEvent, SyscallKind, SyscallLine, UnixNanos};

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use prometheus::IntCounter;

use encode::LineCache;

use crate::lock::Locked;

/// How the writer waits for more when the queue is empty. Polling keeps wake-ups
/// off the notification path: a sender wakes the writer only when its capture buffers
/// run short ([`EventSink::nudge`]).
const IDLE_POLL: Duration = Duration::from_millis(10);

/// How long the writer waits after a round that wrote captured strings: the buffers it
/// hands back return to busy listeners soon, so their pools stay small.
const BUSY_POLL: Duration = Duration::from_millis(1);

/// How long stopping waits for queued events to be written out.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// How many recent denials and kills `switchboard status` can show.
const RECENT_DENIALS: usize = 50;

/// The latest deny and kill events, newest last; kept by the writer, read by `/status`.
#[derive(Clone, Default)]
pub struct RecentDenials(Arc<Mutex<VecDeque<SyscallLine>>>);

impl RecentDenials {
    fn push(&self, event: SyscallLine) {
        let mut recent = self.0.locked();
        if recent.len() == RECENT_DENIALS {
            recent.pop_front();
        }
        recent.push_back(event);
    }

    /// A copy of the events, oldest first.
    pub fn snapshot(&self) -> Vec<SyscallLine> {
        self.0.locked().iter().cloned().collect()
    }
}

/// How long a [`WallClock`] trusts its reading of the system clock: a step of the clock
/// (NTP, an administrator) shows in event times at most this late.
const WALL_CLOCK_REFRESH: Duration = Duration::from_millis(100);

/// The wall time of a monotonic instant the caller already took, without reading the
/// system clock on every call: one read per [`WALL_CLOCK_REFRESH`] instead.
pub struct WallClock {
    anchor: (quanta::Instant, UnixNanos),
}

impl Default for WallClock {
    fn default() -> WallClock {
        WallClock {
            anchor: (quanta::Instant::now(), SystemTime::now().into()),
        }
    }
}

impl WallClock {
    /// The wall time at `at`, which must not be earlier than the last call's.
    #[inline]
    pub fn at(&mut self, at: quanta::Instant) -> UnixNanos {
        let since = at.saturating_duration_since(self.anchor.0);
        if since < WALL_CLOCK_REFRESH {
            // Below WALL_CLOCK_REFRESH, so far below u64::MAX.
            #[allow(clippy::cast_possible_truncation, reason = "see above")]
            return UnixNanos(self.anchor.1 .0 + since.as_nanos() as u64);
        }
        self.refresh(at)
    }

    #[cold]
    fn refresh(&mut self, at: quanta::Instant) -> UnixNanos {
        let (now, wall) = (quanta::Instant::now(), UnixNanos::from(SystemTime::now()));
        self.anchor = (now, wall);
        let behind =
            u64::try_from(now.saturating_duration_since(at).as_nanos()).unwrap_or(u64::MAX);
        UnixNanos(wall.0.saturating_sub(behind))
    }
}

/// The sending end of the event queue; cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSink {
    queue: SyncSender<Event>,
    dropped: IntCounter,
    writer: std::thread::Thread,
}

impl EventSink {
    /// Queues an event, or counts it as dropped when the queue is full.
    #[inline]
    pub fn emit(&self, event: Event) {
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Wakes the writer before its next poll: a listener's capture buffers, which the
    /// writer hands back, are running out. Rare: a pool grows once to its burst size.
    #[cold]
    pub fn nudge(&self) {
        self.writer.unpark();
    }
}

/// The writer thread; stopping it writes out everything queued before.
pub struct EventWriter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    recent: RecentDenials,
}

impl EventWriter {
    /// Starts a writer printing to `out`, with room for `capacity` queued events.
    pub fn spawn(
        format: LogFormat,
        out: Box<dyn Write + Send>,
        capacity: usize,
        dropped: IntCounter,
    ) -> (EventSink, EventWriter) {
        let (queue, receiver) = sync_channel(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let recent = RecentDenials::default();
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn({
                let stop = stop.clone();
                let recent = recent.clone();
                move || write_events(format, out, receiver, &stop, &recent)
            })
            .expect("spawning the event writer");
        (
            EventSink {
                queue,
                dropped,
                writer: thread.thread().clone(),
            },
            EventWriter {
                stop,
                thread: Some(thread),
                recent,
            },
        )
    }

    /// The latest denials and kills this writer has written.
    pub fn recent_denials(&self) -> RecentDenials {
        self.recent.clone()
    }

    /// Writes out every queued event, then ends the thread. Gives up after `FINAL_FLUSH`:
    /// a reader that stopped reading (a full pipe) must not keep the process from exiting,
    /// and the thread, blocked in write, ends with the process.
    pub fn flush_and_stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + FINAL_FLUSH;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(IDLE_POLL);
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!(
                    "events not written out within {FINAL_FLUSH:?}: the output is not being read; exiting without them"
                );
            }
        }
    }
}

/// Bytes the writer gathers before a write(2): several hundred lines, so the syscall's cost
/// is spread over many events (on a pinned agent, every notification pays for it). Into
/// an ext4 file, a write(2) costs several µs besides its bytes: `switchboard-bench --rows
/// writer` measured 215-226 ns of writer CPU per 441-byte line with 64 KiB, 164 ns with 256.
const WRITE_CHUNK: usize = 256 * 1024;

fn write_events(
    format: LogFormat,
    mut out: Box<dyn Write + Send>,
    receiver: Receiver<Event>,
    stop: &AtomicBool,
    recent: &RecentDenials,
) {
    // Lines are encoded straight into the chunk: no line buffer to copy from.
    let mut chunk = Vec::with_capacity(WRITE_CHUNK + 1024);
    let mut cache = LineCache::default();
    let mut processes = process::ProcessCache::default();
    loop {
        // Read the flag before draining, so nothing queued before the stop is missed.
        let stopping = stop.load(Ordering::Acquire);
        let mut captured = false;
        let mut now = Instant::now();
        let mut since_now = 0u32;
        while let Ok(event) = receiver.try_recv() {
            let Event::Syscall(e) = &event else {
                match format {
                    LogFormat::Json => {
                        let _ = serde_json::to_writer(&mut chunk, &event.to_json());
                    }
                    LogFormat::Text => chunk.extend_from_slice(event.to_text().as_bytes()),
                }
                chunk.push(b'\n');
                continue;
            };
            captured |= e.capture.is_some();
            // One clock read per few hundred events decides what is still fresh.
            since_now += 1;
            if since_now == 256 {
                (now, since_now) = (Instant::now(), 0);
            }
            let program = processes.lookup(e.pid, e.ip, now, e.capture.as_deref());
            let cwd = e.cwd();
            let full = |program: &process::Known| Process {
                cwd: cwd.clone(),
                ..program.process.clone()
            };
            match format {
                LogFormat::Json => e.write_json(&mut chunk, &mut cache, program, cwd.as_deref()),
                LogFormat::Text => chunk.extend_from_slice(e.to_text(&full(program)).as_bytes()),
            }
            chunk.push(b'\n');
            if !e.action.lets_through() {
                recent.push(e.line(&full(program)));
            }
            if chunk.len() >= WRITE_CHUNK && !write_chunk(&mut out, &mut chunk) {
                return;
            }
        }
        if !chunk.is_empty() && !write_chunk(&mut out, &mut chunk) {
            return;
        }
        if stopping {
            return;
        }
        // Parked rather than asleep, so a listener short of capture buffers can wake it.
        std::thread::park_timeout(if captured { BUSY_POLL } else { IDLE_POLL });
    }
}

/// Writes and empties `chunk`; false when the output is gone.
fn write_chunk(out: &mut Box<dyn Write + Send>, chunk: &mut Vec<u8>) -> bool {
    let written = out.write_all(chunk).and_then(|()| out.flush());
    chunk.clear();
    written.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance between two wall times, either way round.
    fn apart(a: SystemTime, b: SystemTime) -> Duration {
        a.duration_since(b)
            .or_else(|_| b.duration_since(a))
            .unwrap_or_default()
    }

    #[test]
    fn wall_clock_tracks_the_system_clock_across_refreshes() {
        let mut clock = WallClock::default();
        for _ in 0..3 {
            let (at, wall) = (quanta::Instant::now(), SystemTime::now());
            assert!(apart(clock.at(at).system_time(), wall) < Duration::from_millis(5));
            // Past the refresh: the next reading comes from a new anchor.
            std::thread::sleep(WALL_CLOCK_REFRESH + Duration::from_millis(10));
        }
        // Between refreshes it is the anchor plus monotonic time, so it never goes back.
        let first = clock.at(quanta::Instant::now());
        let second = clock.at(quanta::Instant::now());
        assert!(second >= first);
    }
}
