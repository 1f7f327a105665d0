//! Serving listeners: one blocking OS thread per listener runs RECV → decide → SEND.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::thread::JoinHandle;

use nix::poll::PollTimeout;

use crate::capture::CapturePool;
use crate::container::Container;
use crate::decision::{DecisionTable, ORIGINAL_PROFILE_RULE};
use crate::events::{EventSink, ListenerEvents, Location, SyscallEvent, WallClock};
use crate::keep::{self, Identity, Message};
use crate::kill::{self, Scope};
use crate::lock::Locked;
use crate::metrics::{ListenerStats, Metrics};
use crate::policy::{Action, Policy};
use crate::recording::{Recorder, Recordings};
use crate::sys::{self, Listener, ListenerError, Notification, PidFd, SharedPage};
use crate::syscalls;

/// Stack of a listener thread: the loop needs little, and idle listeners should cost little.
const WORKER_STACK: usize = 256 * 1024;

/// What the control plane can reach of a running listener.
struct ListenerControl {
    container: Arc<Container>,
    /// A recompiled table waiting for the worker; `dirty` says one is there.
    pending: Mutex<Option<Arc<DecisionTable>>>,
    dirty: AtomicBool,
}

/// Everything one worker owns.
struct Worker {
    listener: Listener,
    table: Arc<DecisionTable>,
    control: Arc<ListenerControl>,
    stats: Arc<ListenerStats>,
    events: ListenerEvents,
    /// The time-stamp counter, calibrated: two reads per notification cost a third of
    /// two reads of the monotonic clock (18 against 46 ns on the bench VM).
    tsc: quanta::Clock,
    /// Event times from the instant RECV returned, without another clock read per call.
    clock: WallClock,
    /// What a kill rule ends besides the caller, resolved at attach.
    scope: Scope,
    /// The scope was ended once; later kills only end their callers.
    ended: bool,
    metrics: Arc<Metrics>,
    sync_wakeup: bool,
    /// For a container whose profile records: what it called.
    recorder: Option<Box<Recorder>>,
    /// The listener was handed back after its previous decider died: its shared page may
    /// hold a notification that one received and never answered.
    restored: bool,
    /// Buffers for the string arguments of calls that make an event.
    captures: CapturePool,
}

/// Refuses to serve when the kernel's notification structs are larger than this build's:
/// RECV would write past the buffer. Every command that serves listeners calls it first.
pub(crate) fn ensure_kernel_structs_fit() -> anyhow::Result<()> {
    use anyhow::Context;
    let fit = sys::kernel_struct_sizes_fit()
        .context("asking the kernel for seccomp notification sizes")?;
    anyhow::ensure!(
        fit,
        "this kernel's seccomp notification structs are larger than this build knows"
    );
    Ok(())
}

/// A listener being served: its thread and its statistics.
pub struct Attached {
    pub thread: JoinHandle<()>,
    pub stats: Arc<ListenerStats>,
}

/// Tables compiled from one policy, shared by the containers the same rules apply to:
/// a 200-rule table is tens of KiB, and a node runs hundreds of containers.
#[derive(Default)]
struct TableCache {
    policy: Option<Arc<Policy>>,
    tables: HashMap<Vec<usize>, Weak<DecisionTable>>,
}

impl TableCache {
    fn table(&mut self, policy: &Arc<Policy>, container: &Container) -> Arc<DecisionTable> {
        if !self.policy.as_ref().is_some_and(|p| Arc::ptr_eq(p, policy)) {
            self.policy = Some(policy.clone());
            self.tables.clear();
        }
        let Some(key) = DecisionTable::share_key(policy, container) else {
            return Arc::new(DecisionTable::compile(policy, container));
        };
        if let Some(table) = self.tables.get(&key).and_then(Weak::upgrade) {
            return table;
        }
        let table = Arc::new(DecisionTable::compile(policy, container));
        self.tables.retain(|_, table| table.strong_count() > 0);
        self.tables.insert(key, Arc::downgrade(&table));
        table
    }
}

/// What attaching and reloading read and change together, under one lock: a listener is
/// registered under the policy its table was compiled from, or handed the newer one's.
struct EngineState {
    policy: Arc<Policy>,
    tables: TableCache,
    live: HashMap<u64, Arc<ListenerControl>>,
}

/// Serves listeners with the current policy and swaps in new ones.
pub struct Engine {
    /// Whether to ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (off only to measure without it).
    sync_wakeup: bool,
    state: Mutex<EngineState>,
    metrics: Arc<Metrics>,
    events: EventSink,
    next_id: AtomicU64,
    /// Where recording containers' calls go, when recordings are kept.
    recordings: OnceLock<Arc<Recordings>>,
    /// The socket to the holding process, which keeps every listener across a crash.
    holder: OnceLock<OwnedFd>,
}

impl Engine {
    pub fn new(
        policy: Policy,
        metrics: Arc<Metrics>,
        events: EventSink,
        sync_wakeup: bool,
    ) -> Arc<Engine> {
        // quanta calibrates the TSC on first use (~0.6 ms here): now, not in the first
        // container's attach.
        let _ = quanta::Instant::now();
        sys::unmap_large_blocks_when_freed();
        Arc::new(Engine {
            sync_wakeup,
            state: Mutex::new(EngineState {
                policy: Arc::new(policy),
                tables: TableCache::default(),
                live: HashMap::new(),
            }),
            metrics,
            events,
            next_id: AtomicU64::new(1),
            recordings: OnceLock::new(),
            holder: OnceLock::new(),
        })
    }

    /// Records what containers whose profile records call, into `recordings`; set once.
    pub fn record_into(&self, recordings: Arc<Recordings>) {
        let _ = self.recordings.set(recordings);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Listeners being served now.
    pub fn live_count(&self) -> usize {
        self.state.locked().live.len()
    }

    /// Starts serving `listener` for `container` on a thread of its own. `init` is the
    /// container's init, opened at intake so a kill never hits a recycled pid.
    pub fn attach(
        self: &Arc<Self>,
        listener: Listener,
        container: Container,
        init: Option<PidFd>,
    ) -> std::io::Result<Attached> {
        let page = SharedPage::create()?;
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(holder) = self.holder.get() {
            // Held before served: a crash from here on finds the listener with the holder.
            let mut fds = vec![listener.as_fd(), page.fd()];
            fds.extend(init.as_ref().map(PidFd::fd));
            let hold = Message::Hold {
                key,
                identity: Identity::of(&container),
            };
            keep::send(holder.as_fd(), &hold, &fds).map_err(std::io::Error::other)?;
        }
        let scope = Scope::for_container(init);
        let started = self.start(listener, container, scope, page, key, false);
        if let (Err(_), Some(holder)) = (&started, self.holder.get()) {
            // Not served, so not held either: the listener must close, failing its calls.
            let _ = keep::send(holder.as_fd(), &Message::Release { key }, &[]);
        }
        started
    }

    /// Hands every listener over to the holding process at `socket` from now on.
    pub fn link_holder(&self, socket: OwnedFd) {
        let _ = self.holder.set(socket);
    }

    /// Serves a listener the holding process kept while its previous decider died or was
    /// replaced, under the same `key`; first answers the notification that decider had
    /// received and not answered, if there is one.
    pub fn restore(
        self: &Arc<Self>,
        key: u64,
        listener: Listener,
        container: Container,
        init: Option<PidFd>,
        page: SharedPage,
    ) -> std::io::Result<Attached> {
        self.next_id.fetch_max(key + 1, Ordering::Relaxed);
        let scope = Scope::for_container(init);
        self.start(listener, container, scope, page, key, true)
    }

    /// [`Engine::attach`] with what a kill rule ends besides the caller already resolved.
    pub(crate) fn attach_scoped(
        self: &Arc<Self>,
        listener: Listener,
        container: Container,
        scope: Scope,
    ) -> std::io::Result<Attached> {
        let page = SharedPage::create()?;
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.start(listener, container, scope, page, key, false)
    }

    fn start(
        self: &Arc<Self>,
        listener: Listener,
        container: Container,
        scope: Scope,
        page: SharedPage,
        id: u64,
        restored: bool,
    ) -> std::io::Result<Attached> {
        let container = Arc::new(container);
        let (policy, table) = {
            let mut state = self.state.locked();
            let policy = state.policy.clone();
            let table = state.tables.table(&policy, &container);
            (policy, table)
        };
        let sync_wakeup = match self.sync_wakeup.then(|| listener.enable_sync_wakeup()) {
            None => false,
            Some(Ok(())) => true,
            Some(Err(errno)) => {
                static WARN: Once = Once::new();
                WARN.call_once(|| {
                    tracing::warn!(%errno, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP unavailable (needs Linux 6.6); notifications take the slower cross-CPU wake-up")
                });
                false
            }
        };
        let control = Arc::new(ListenerControl {
            container: container.clone(),
            pending: Mutex::new(None),
            dirty: AtomicBool::new(false),
        });
        let stats = Arc::new(ListenerStats::new(container.clone(), page));
        let (events, queue_end) = self.events.queue();
        let worker = Worker {
            listener,
            table,
            control: control.clone(),
            stats: stats.clone(),
            events,
            tsc: quanta::Clock::new(),
            clock: WallClock::default(),
            scope,
            ended: false,
            metrics: self.metrics.clone(),
            sync_wakeup,
            recorder: self.recordings.get().and_then(|r| r.start(&container)),
            restored,
            captures: CapturePool::default(),
        };
        let engine = self.clone();
        let removed = container.clone();
        // The thread waits until it is registered, so it never unregisters first; and it is
        // registered only once it exists, so a failed spawn leaves nothing behind.
        let (go, wait_for_go) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name(format!("listener-{id}"))
            .stack_size(WORKER_STACK)
            .spawn(move || {
                if wait_for_go.recv().is_err() {
                    return;
                }
                let stats = worker.stats.clone();
                let (reason, recorder) = worker.run();
                engine.state.locked().live.remove(&id);
                if let (Some(recorder), Some(recordings)) = (recorder, engine.recordings.get()) {
                    recordings.finish(&removed, &recorder);
                }
                // Retired (its latency folded into the carried totals) before it is released,
                // so a crash in between never loses its counts.
                engine.metrics.retire_listener(&stats);
                if let Some(holder) = engine.holder.get() {
                    if let Err(e) = keep::send(holder.as_fd(), &Message::Release { key: id }, &[]) {
                        tracing::warn!(error = %e, "cannot tell the holding process a listener is gone");
                    }
                }
                engine.events.close(id, reason);
            })?;
        {
            let mut state = self.state.locked();
            // A reload between compiling the table and now did not see this listener:
            // hand it the current policy's table before anyone else can reload again.
            if !Arc::ptr_eq(&state.policy, &policy) {
                let current = state.policy.clone();
                let table = state.tables.table(&current, &control.container);
                *control.pending.locked() = Some(table);
                control.dirty.store(true, Ordering::Release);
            }
            state.live.insert(id, control);
        }
        self.metrics.add_listener(stats.clone());
        self.events.open(id, queue_end, container, sync_wakeup);
        let _ = go.send(());
        Ok(Attached { thread, stats })
    }

    /// Makes `policy` current and hands every live listener its recompiled table.
    pub fn replace_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        let mut state = self.state.locked();
        state.policy = policy.clone();
        let EngineState { tables, live, .. } = &mut *state;
        for control in live.values() {
            let table = tables.table(&policy, &control.container);
            *control.pending.locked() = Some(table);
            control.dirty.store(true, Ordering::Release);
        }
    }
}

impl Worker {
    /// Serves until every task of the filter is gone; returns why it stopped, and what it recorded.
    fn run(mut self) -> (&'static str, Option<Box<Recorder>>) {
        let reason = self.serve();
        (reason, self.recorder.take())
    }

    fn serve(&mut self) -> &'static str {
        let mut notif = sys::empty_notification();
        if self.restored {
            self.recover();
        }
        loop {
            if !self.sync_wakeup && self.listener.wait_readable(PollTimeout::NONE) {
                return "all tasks exited";
            }
            // Into the shared page: if this process dies before answering, the next
            // decider finds the notification there.
            match self.listener.receive_shared(self.stats.page(), &mut notif) {
                Ok(()) => {}
                Err(ListenerError::Interrupted) => continue,
                // The caller died or was interrupted; after the last task exits,
                // RECV fails like this at once, so stop instead of spinning.
                Err(ListenerError::Gone) => {
                    if self.listener.is_hung_up() {
                        return "all tasks exited";
                    }
                    continue;
                }
                Err(ListenerError::Failed(errno)) => {
                    tracing::error!(%errno, container = %self.control.container.container_id, "seccomp listener failed");
                    return "listener error";
                }
            }
            self.answer(&notif);
        }
    }

    /// Answers the notification a dead decider received and never answered, if its task
    /// still waits (ID_VALID): a stale or answered one is no longer valid.
    #[cold]
    fn recover(&mut self) {
        let notif = self.stats.page().last_notification();
        if (notif.id != 0 || notif.pid != 0) && self.listener.is_pending(notif.id) {
            tracing::info!(container = %self.control.container.container_id, id = notif.id, "answering a notification its first receiver left unanswered");
            self.answer(&notif);
            self.metrics.inflight_recovered.inc();
        }
    }

    /// Decides, answers, counts and reports one notification.
    #[inline(always)]
    fn answer(&mut self, notif: &Notification) {
        let received = self.tsc.now();
        self.stats.begin(received);
        if self.control.dirty.load(Ordering::Acquire) {
            self.take_new_table();
        }
        let data = &notif.data;
        let location = syscalls::locate(data.arch, data.nr, data.args[0]);
        let verdict = self.table.decide(location, data);
        let (action, errno, rule) = (verdict.action, verdict.errno, verdict.rule);
        // Strings are read after the decision, which never sees them, and before the
        // answer, while the caller is still parked in the call.
        let capture = if action == Action::Allow {
            None
        } else {
            self.captures
                .capture(&self.listener, notif, location, received)
        };
        let answered = if action == Action::Kill {
            self.kill(notif, errno, rule == Some(ORIGINAL_PROFILE_RULE))
        } else if action.lets_through() {
            self.listener.respond_continue(notif.id)
        } else {
            self.listener.respond_errno(notif.id, errno)
        };
        let latency = self.tsc.now().saturating_duration_since(received);
        if let Err(ListenerError::Failed(errno)) = answered {
            tracing::warn!(%errno, "SEND failed");
        }
        self.stats.record(location, action, latency);
        // After the answer: the caller is already running again.
        if action.lets_through() {
            if let Some(recorder) = self.recorder.as_deref_mut() {
                recorder.see(location, &data.args);
            }
        }
        if action != Action::Allow {
            let time = self.clock.at(received);
            self.events.emit(SyscallEvent {
                time,
                pid: notif.pid,
                audit_arch: data.arch,
                nr: data.nr,
                location: Location::new(location),
                args: data.args,
                rule,
                action,
                errno,
                capture,
                ip: data.instruction_pointer,
            });
            if self.captures.writer_needed() {
                self.events.nudge();
            }
        }
    }

    #[cold]
    fn take_new_table(&mut self) {
        self.control.dirty.store(false, Ordering::Release);
        let pending = self.control.pending.locked().take();
        if let Some(table) = pending {
            self.table = table;
        }
    }

    /// Answers a kill rule: the caller must never run another instruction, and neither may
    /// anything it belongs to. The order is what makes that true:
    /// 1. A pidfd on the caller, fenced by ID_VALID (see `kill::open_caller`): it was taken
    ///    while the caller was still parked in this notification, so it is not a recycled pid.
    /// 2. The container ends while the caller is still parked: the caller cannot run, and the
    ///    others die before the caller's death could wake any of them (a shell waiting for
    ///    the caller would run its next command). `original-profile` kills skip this: the
    ///    original filter killed only the calling process, and so do we.
    /// 3. The caller, which step 2 misses when it is outside the container's cgroup or pid
    ///    namespace (hostPID, shared-pid pods, or no cgroup of the container's own).
    /// 4. The answer, last: SEND lets the caller run. By now it is usually dead, and SEND
    ///    fails with ENOENT, which is the point.
    #[cold]
    #[inline(never)]
    fn kill(
        &mut self,
        notif: &Notification,
        errno: i32,
        caller_only: bool,
    ) -> Result<(), ListenerError> {
        let container = &self.control.container.container_id;
        let caller = kill::open_caller(&self.listener, notif.id, notif.pid);
        if caller.is_none() {
            tracing::warn!(pid = notif.pid, %container, "the caller of a killed syscall is gone or cannot be opened");
        }
        if !caller_only && !self.ended && !matches!(self.scope, Scope::CallerOnly) {
            self.ended = self.scope.end();
            if self.ended {
                self.metrics.containers_killed.inc();
            } else {
                tracing::error!(%container, "kill rule matched but the container could not be ended; only its caller is killed");
            }
        }
        // ESRCH: ending the container already took the caller, and it has been reaped.
        if let Some(Err(errno)) = caller
            .as_ref()
            .map(PidFd::kill)
            .filter(|r| *r != Err(nix::errno::Errno::ESRCH))
        {
            tracing::error!(%errno, pid = notif.pid, %container, "killing the caller failed");
        }
        match self.listener.respond_errno(notif.id, errno) {
            Err(ListenerError::Gone) => Ok(()),
            answered => answered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Arc<Policy> {
        Arc::new(Policy::parse(text, "test").unwrap())
    }

    #[test]
    fn containers_the_same_rules_apply_to_share_a_table() {
        let p = policy("default: log\nrules:\n  - name: prod\n    match: {namespace: [prod]}\n    syscalls: [mkdir]\n    action: deny\n");
        let in_ns = |ns: &str| Container {
            namespace: ns.into(),
            ..Container::default()
        };
        let mut cache = TableCache::default();
        let a = cache.table(&p, &in_ns("prod"));
        let b = cache.table(&p, &in_ns("prod"));
        let other = cache.table(&p, &in_ns("dev"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
        // A new policy never reuses a table compiled from the old one.
        let newer = policy("default: log\nrules:\n  - name: prod\n    match: {namespace: [prod]}\n    syscalls: [mkdir]\n    action: deny\n");
        assert!(!Arc::ptr_eq(&a, &cache.table(&newer, &in_ns("prod"))));
    }

    #[test]
    fn dropped_tables_are_not_kept() {
        let p = policy("default: log\nrules: []\n");
        let mut cache = TableCache::default();
        let table = cache.table(&p, &Container::default());
        // Only listeners keep a table alive: the cache holds it weakly.
        assert_eq!(Arc::strong_count(&table), 1);
    }
}
