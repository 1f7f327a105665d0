//! Decision and lifecycle events: a queue per listener off the notification path, drained by a writer thread.

mod call;
mod encode;
mod model;
pub mod output;
mod process;

pub use call::escaped;
pub use model::{
    Event, Location, LogFormat, Process, SyscallEvent, SyscallKind, SyscallLine, UnixNanos,
};

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use prometheus::IntCounter;
use rtrb::{Consumer, Producer, PushError, RingBuffer};

use encode::LineCache;

use crate::container::Container;
use crate::lock::Locked;

/// How the writer waits for more when the queue is empty. Polling keeps wake-ups
/// off the notification path: a sender wakes the writer only when its capture buffers
/// run short ([`ListenerEvents::nudge`]).
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

/// What the control plane tells the writer: a listener's queue opened or closed.
enum Control {
    Opened {
        stream: Stream,
        added: Event,
    },
    Closed {
        key: u64,
        time: SystemTime,
        reason: &'static str,
    },
}

/// The larger queues a listener moved on to when its queue was full, oldest first; the
/// writer takes one only after emptying the queue before it, so lines keep their order.
type Successors = Arc<Mutex<VecDeque<Consumer<SyscallEvent>>>>;

/// Where the control plane opens and closes listeners' queues; cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    control: Sender<Control>,
    dropped: IntCounter,
    writer: std::thread::Thread,
    /// The most events one listener's queue holds before it drops and counts.
    capacity: usize,
}

impl EventSink {
    /// A new listener's queue: the worker's end, and the writer's, which [`EventSink::open`]
    /// hands over once the listener is served. The queue is allocated by its first event,
    /// so a listener that never makes one costs nothing here.
    pub fn queue(&self) -> (ListenerEvents, QueueEnd) {
        let (queue, consumer) = RingBuffer::new(0);
        let grown = Successors::default();
        let end = QueueEnd {
            queue: consumer,
            grown: grown.clone(),
        };
        let events = ListenerEvents {
            queue,
            grown,
            capacity: self.capacity,
            dropped: self.dropped.clone(),
            writer: self.writer.clone(),
        };
        (events, end)
    }

    /// Hands the writer the queue of listener `key`, whose first line is its
    /// `listener_added`. A queue never opened is never written: for a listener that
    /// could not be served.
    pub fn open(&self, key: u64, end: QueueEnd, container: Arc<Container>, sync_wakeup: bool) {
        let stream = Stream {
            key,
            container: container.clone(),
            queue: end.queue,
            grown: end.grown,
        };
        let added = Event::ListenerAdded {
            time: SystemTime::now(),
            container,
            sync_wakeup,
        };
        let _ = self.control.send(Control::Opened { stream, added });
    }

    /// Closes the queue of listener `key` once the writer has written what it holds, with a
    /// `listener_removed` line. Call it after the listener's last event.
    pub fn close(&self, key: u64, reason: &'static str) {
        let _ = self.control.send(Control::Closed {
            key,
            time: SystemTime::now(),
            reason,
        });
    }
}

/// The writer's end of a listener's queue, until [`EventSink::open`] hands it over.
pub struct QueueEnd {
    queue: Consumer<SyscallEvent>,
    grown: Successors,
}

/// One listener's event queue, owned by its worker: a single-producer ring the writer
/// drains, so a push is a copy and a store, shared with no other listener.
pub struct ListenerEvents {
    queue: Producer<SyscallEvent>,
    grown: Successors,
    capacity: usize,
    dropped: IntCounter,
    writer: std::thread::Thread,
}

/// The first queue a listener's first event allocates; each full queue is followed by one
/// twice its size, up to the sink's capacity.
const FIRST_QUEUE: usize = 64;

impl ListenerEvents {
    /// Queues an event, or counts it as dropped when the queue is full at its largest.
    #[inline]
    pub fn emit(&mut self, event: SyscallEvent) {
        if let Err(PushError::Full(event)) = self.queue.push(event) {
            self.grow(event);
        }
        // The next slot was last written a whole ring ago and has left this CPU's caches
        // by now: its lines are fetched while the next notification's round trip runs,
        // instead of stalling the next push. `switchboard-bench`, agent against agent on
        // this project's VM: −0.3% of the round trip pinned, −0.75% unpinned.
        if let Ok(mut next) = self.queue.write_chunk_uninit(1) {
            crate::sys::prefetch(next.as_mut_slices().0.as_ptr());
        }
    }

    /// The queue is full: a burst larger than any before, or the writer is behind. Moves
    /// on to a queue twice the size (allocating, once per doubling), or drops the event.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, event: SyscallEvent) {
        let size = self.queue.buffer().capacity();
        if size >= self.capacity {
            self.dropped.inc();
            return;
        }
        let (mut queue, consumer) = RingBuffer::new((size * 2).max(FIRST_QUEUE).min(self.capacity));
        let _ = queue.push(event);
        self.grown.locked().push_back(consumer);
        self.queue = queue;
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
    /// Starts a writer printing to `out`; each listener's queue holds up to `capacity` events.
    pub fn spawn(
        format: LogFormat,
        out: Box<dyn Write + Send>,
        capacity: usize,
        dropped: IntCounter,
    ) -> (EventSink, EventWriter) {
        let (control, receiver) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let recent = RecentDenials::default();
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn({
                let stop = stop.clone();
                let recent = recent.clone();
                move || Writer::new(format, out, recent).run(&receiver, &stop)
            })
            .expect("spawning the event writer");
        (
            EventSink {
                control,
                dropped,
                writer: thread.thread().clone(),
                capacity,
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
            thread.thread().unpark();
            let deadline = Instant::now() + FINAL_FLUSH;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
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

/// A listener's queue as the writer drains it.
struct Stream {
    key: u64,
    container: Arc<Container>,
    queue: Consumer<SyscallEvent>,
    grown: Successors,
}

/// The writer thread's state: the listeners' queues, and what it keeps between lines.
struct Writer {
    format: LogFormat,
    out: Box<dyn Write + Send>,
    recent: RecentDenials,
    streams: Vec<Stream>,
    /// Lines are encoded straight into the chunk: no line buffer to copy from.
    chunk: Vec<u8>,
    cache: LineCache,
    processes: process::ProcessCache,
    /// Read once per few hundred events, to decide what is still fresh.
    now: Instant,
    since_now: u32,
    /// A round wrote captured strings, whose buffers go back to busy listeners.
    captured: bool,
}

/// The output is gone: the writer stops.
struct Gone;

impl Writer {
    fn new(format: LogFormat, out: Box<dyn Write + Send>, recent: RecentDenials) -> Writer {
        Writer {
            format,
            out,
            recent,
            streams: Vec::new(),
            chunk: Vec::with_capacity(WRITE_CHUNK + 1024),
            cache: LineCache::default(),
            processes: process::ProcessCache::default(),
            now: Instant::now(),
            since_now: 0,
            captured: false,
        }
    }

    fn run(mut self, control: &Receiver<Control>, stop: &AtomicBool) {
        loop {
            // Read the flag before draining, so nothing queued before the stop is missed.
            let stopping = stop.load(Ordering::Acquire);
            self.captured = false;
            if self.round(control).is_err() {
                return;
            }
            if stopping {
                return;
            }
            // Parked rather than asleep, so a listener short of capture buffers can wake it.
            std::thread::park_timeout(if self.captured { BUSY_POLL } else { IDLE_POLL });
        }
    }

    /// Writes what the control plane and every listener queued since the last round.
    fn round(&mut self, control: &Receiver<Control>) -> Result<(), Gone> {
        // Opened and closed queues first: a listener's lines come after its
        // `listener_added` line, and all of them before its `listener_removed`.
        while let Ok(message) = control.try_recv() {
            match message {
                Control::Opened { stream, added } => {
                    self.write_listener(&added);
                    self.streams.push(stream);
                }
                Control::Closed { key, time, reason } => {
                    let Some(index) = self.streams.iter().position(|s| s.key == key) else {
                        continue;
                    };
                    let mut stream = self.streams.swap_remove(index);
                    self.drain(&mut stream)?;
                    self.write_listener(&Event::ListenerRemoved {
                        time,
                        container: stream.container,
                        reason,
                    });
                }
            }
        }
        let mut streams = std::mem::take(&mut self.streams);
        let drained = streams.iter_mut().try_for_each(|stream| self.drain(stream));
        self.streams = streams;
        drained?;
        self.write_out()
    }

    /// Writes everything in a listener's queue and in the larger ones it moved on to.
    fn drain(&mut self, stream: &mut Stream) -> Result<(), Gone> {
        loop {
            // Taken first, under the lock the worker published it with: then every event
            // the worker pushed to the queue before it is visible to the drain below.
            let next = stream.grown.locked().pop_front();
            while let Ok(event) = stream.queue.pop() {
                self.write_syscall(&stream.container, &event)?;
            }
            match next {
                Some(next) => stream.queue = next,
                None => return Ok(()),
            }
        }
    }

    fn write_syscall(&mut self, container: &Arc<Container>, e: &SyscallEvent) -> Result<(), Gone> {
        self.captured |= e.capture.is_some();
        self.since_now += 1;
        if self.since_now == 256 {
            (self.now, self.since_now) = (Instant::now(), 0);
        }
        let program = self
            .processes
            .lookup(e.pid, e.ip, self.now, e.capture.as_deref());
        let cwd = e.cwd();
        let full = |program: &process::Known| Process {
            cwd: cwd.clone(),
            ..program.process.clone()
        };
        match self.format {
            LogFormat::Json => {
                e.write_json(
                    container,
                    &mut self.chunk,
                    &mut self.cache,
                    program,
                    cwd.as_deref(),
                );
            }
            LogFormat::Text => self
                .chunk
                .extend_from_slice(e.to_text(container, &full(program)).as_bytes()),
        }
        self.chunk.push(b'\n');
        if !e.action.lets_through() {
            self.recent.push(e.line(container, &full(program)));
        }
        if self.chunk.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_listener(&mut self, event: &Event) {
        match self.format {
            LogFormat::Json => {
                let _ = serde_json::to_writer(&mut self.chunk, &event.to_json());
            }
            LogFormat::Text => self.chunk.extend_from_slice(event.to_text().as_bytes()),
        }
        self.chunk.push(b'\n');
    }

    /// Writes and empties the chunk.
    fn write_out(&mut self) -> Result<(), Gone> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let written = self
            .out
            .write_all(&self.chunk)
            .and_then(|()| self.out.flush());
        self.chunk.clear();
        written.map_err(|_| Gone)
    }
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
