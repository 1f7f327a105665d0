//! Prometheus metrics: per-listener counters written lock-free by one worker, gathered at scrape.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::container::Container;
use crate::lock::Locked;
use crate::policy::Action;
use crate::sys::{SharedPage, SHARED_WORDS};
use crate::syscalls;

/// Upper bounds of the decision latency buckets, in nanoseconds.
const LATENCY_BOUNDS_NS: [u64; 12] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Distinct (arch, syscall) pairs one listener counts separately before folding into "other".
const COUNT_SLOTS: usize = 64;

/// Longest label value exported; annotation values are untrusted.
const MAX_LABEL_LEN: usize = 128;

/// Labels of one `switchboard_syscalls_total` series: namespace, pod, container, syscall, action.
type SeriesKey = [String; 5];

/// The label value every label of the overflow series carries.
pub(crate) const OVERFLOW_LABEL: &str = "_overflow";

/// A fixed point that lets the notification path store times as plain nanoseconds.
fn epoch() -> &'static (quanta::Instant, SystemTime) {
    static EPOCH: OnceLock<(quanta::Instant, SystemTime)> = OnceLock::new();
    EPOCH.get_or_init(|| (quanta::Instant::now(), SystemTime::now()))
}

/// Adds one to a counter that only the owning worker thread writes.
#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// Where each counter of a listener lives among its shared page's words: a count slot is
/// its key and one count per action.
mod layout {
    use super::{COUNT_SLOTS, LATENCY_BOUNDS_NS};
    pub const SLOT: usize = 5;
    pub const OVERFLOW: usize = COUNT_SLOTS * SLOT;
    pub const BUCKETS: usize = OVERFLOW + 4;
    pub const LATENCY_COUNT: usize = BUCKETS + LATENCY_BOUNDS_NS.len();
    pub const LATENCY_SUM: usize = LATENCY_COUNT + 1;
    pub const END: usize = LATENCY_SUM + 1;
}
const _: () = assert!(layout::END <= SHARED_WORDS);

/// Per-listener statistics. One worker thread writes, scrapes read. The counters live in
/// the listener's shared page, so they carry over when the deciding process is replaced.
pub struct ListenerStats {
    pub container: Arc<Container>,
    page: SharedPage,
    /// Nanoseconds after `epoch()` of the last notification, plus one; 0 before the first.
    last_received: AtomicU64,
    /// 1 between RECV and SEND: a listener stuck here shows up on /metrics.
    deciding: AtomicU64,
}

impl ListenerStats {
    /// Statistics kept in `page`, continuing from whatever it already counts.
    pub fn new(container: Arc<Container>, page: SharedPage) -> ListenerStats {
        ListenerStats {
            container,
            page,
            last_received: AtomicU64::new(0),
            deciding: AtomicU64::new(0),
        }
    }

    /// The page the counters (and the last notification) live in.
    pub fn page(&self) -> &SharedPage {
        &self.page
    }

    #[inline]
    fn word(&self, index: usize) -> &AtomicU64 {
        &self.page.words()[index]
    }

    /// Notes that a notification arrived at `received`; `record` closes it.
    #[inline]
    pub fn begin(&self, received: quanta::Instant) {
        let since = u64::try_from(received.saturating_duration_since(epoch().0).as_nanos())
            .unwrap_or(u64::MAX - 1);
        self.last_received.store(since + 1, Ordering::Relaxed);
        self.deciding.store(1, Ordering::Relaxed);
    }

    /// Unix time in seconds of the last notification, if any came.
    pub fn last_notification(&self) -> Option<f64> {
        let since = self.last_received.load(Ordering::Relaxed).checked_sub(1)?;
        let at = epoch().1 + Duration::from_nanos(since);
        Some(at.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
    }

    /// Counts one decision. Only the listener's own worker may call this.
    #[inline]
    pub fn record(&self, location: Option<(usize, usize)>, action: Action, latency: Duration) {
        // Arch tables are a handful and slots below 2^16, so the key is exact.
        #[allow(clippy::cast_possible_truncation, reason = "see above")]
        let key = location.map_or(0, |(arch, nr)| ((arch as u32) << 16 | nr as u32) + 1);
        let mut index = (key as usize).wrapping_mul(0x9E37_79B9) % COUNT_SLOTS;
        let mut counted = false;
        for _ in 0..COUNT_SLOTS {
            if key == 0 {
                break;
            }
            let base = index * layout::SLOT;
            let slot_key = self.word(base).load(Ordering::Relaxed);
            if slot_key == u64::from(key) {
                bump(self.word(base + 1 + action.index()), 1);
                counted = true;
                break;
            }
            if slot_key == 0 {
                bump(self.word(base + 1 + action.index()), 1);
                // Publish the key after the count so a scrape never sees a key without it.
                self.word(base).store(u64::from(key), Ordering::Release);
                counted = true;
                break;
            }
            index = (index + 1) % COUNT_SLOTS;
        }
        if !counted {
            bump(self.word(layout::OVERFLOW + action.index()), 1);
        }
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if let Some(bucket) = LATENCY_BOUNDS_NS.iter().position(|bound| ns <= *bound) {
            bump(self.word(layout::BUCKETS + bucket), 1);
        }
        bump(self.word(layout::LATENCY_COUNT), 1);
        bump(self.word(layout::LATENCY_SUM), ns);
        self.deciding.store(0, Ordering::Relaxed);
    }

    /// (syscall name, action, count) for every non-zero count.
    pub fn counts(&self) -> Vec<(&'static str, Action, u64)> {
        let mut out = Vec::new();
        for slot in 0..COUNT_SLOTS {
            let base = slot * layout::SLOT;
            let key = self.word(base).load(Ordering::Acquire);
            // A key only this build writes: (arch << 16 | nr) + 1, below 2^32.
            let Some(key) = key.checked_sub(1).filter(|k| *k < 1 << 32) else {
                continue;
            };
            #[allow(clippy::cast_possible_truncation, reason = "checked just above")]
            let (arch, nr) = ((key >> 16) as usize, (key & 0xffff) as usize);
            for action in Action::ALL {
                let n = self.word(base + 1 + action.index()).load(Ordering::Relaxed);
                if n > 0 {
                    out.push((syscalls::name(arch, nr), action, n));
                }
            }
        }
        for action in Action::ALL {
            let n = self
                .word(layout::OVERFLOW + action.index())
                .load(Ordering::Relaxed);
            if n > 0 {
                out.push(("other", action, n));
            }
        }
        out
    }

    fn latency_into(&self, into: &mut LatencyTotals) {
        for (i, sum) in into.buckets.iter_mut().enumerate() {
            *sum += self.word(layout::BUCKETS + i).load(Ordering::Relaxed);
        }
        into.count += self.word(layout::LATENCY_COUNT).load(Ordering::Relaxed);
        into.sum_ns += self.word(layout::LATENCY_SUM).load(Ordering::Relaxed);
    }
}

#[derive(Default, Clone)]
struct LatencyTotals {
    buckets: [u64; LATENCY_BOUNDS_NS.len()],
    count: u64,
    sum_ns: u64,
}

#[derive(Default)]
struct Listeners {
    live: Vec<Arc<ListenerStats>>,
    /// Gone listeners whose series stay until the TTL runs out.
    retired: Vec<(Instant, Arc<ListenerStats>)>,
    /// Latency of every retired listener, so the histogram never goes down.
    retired_latency: LatencyTotals,
}

/// Which label sets have a series of their own; the rest fold into the overflow series.
#[derive(Default)]
struct SeriesBudget {
    admitted: HashSet<SeriesKey>,
    folded: HashSet<SeriesKey>,
}

/// The collector for per-listener series.
struct ListenerCollector {
    listeners: Arc<Mutex<Listeners>>,
    descs: Vec<Desc>,
    series_ttl: Duration,
    max_series: usize,
    budget: Mutex<SeriesBudget>,
    series_overflow: IntCounter,
}

impl ListenerCollector {
    /// Keeps at most `max_series` label sets, first come first served; folds the rest.
    fn apply_budget(&self, counts: BTreeMap<SeriesKey, u64>) -> BTreeMap<SeriesKey, u64> {
        let mut budget = self.budget.locked();
        budget.admitted.retain(|key| counts.contains_key(key));
        budget.folded.retain(|key| counts.contains_key(key));
        let mut kept = BTreeMap::new();
        for (key, n) in counts {
            let admit = budget.admitted.contains(&key)
                || (budget.admitted.len() < self.max_series && !budget.folded.contains(&key));
            if admit {
                budget.admitted.insert(key.clone());
                kept.insert(key, n);
            } else {
                if budget.folded.insert(key.clone()) {
                    self.series_overflow.inc();
                }
                let overflow = std::array::from_fn(|_| OVERFLOW_LABEL.to_string());
                *kept.entry(overflow).or_default() += n;
            }
        }
        kept
    }
}

/// A family the listener collector builds at scrape time: its descriptor and the family
/// itself take the name and help from here, so the two cannot disagree.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
}

const SYSCALLS_TOTAL: Family = Family {
    name: "switchboard_syscalls_total",
    help: "Flagged syscalls decided, by container, syscall and action.",
    kind: MetricType::COUNTER,
};
const DECISION_DURATION: Family = Family {
    name: "switchboard_decision_duration_seconds",
    help: "Time from RECV's return to SEND, per notification.",
    kind: MetricType::HISTOGRAM,
};
const DECISIONS_IN_PROGRESS: Family = Family {
    name: "switchboard_decisions_in_progress",
    help: "Notifications received and not yet answered; stuck above 0 means a stuck listener.",
    kind: MetricType::GAUGE,
};
const LAST_NOTIFICATION: Family = Family {
    name: "switchboard_last_notification_timestamp_seconds",
    help: "Unix time of the latest notification on any live listener.",
    kind: MetricType::GAUGE,
};

impl Family {
    fn desc(&self) -> Desc {
        Desc::new(
            self.name.into(),
            self.help.into(),
            vec![],
            Default::default(),
        )
        .expect("a valid metric name")
    }

    /// An empty family of this name, help and type.
    fn family(&self) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(self.name.into());
        family.set_help(self.help.into());
        family.set_field_type(self.kind);
        family
    }
}

fn gauge_family(spec: &Family, value: f64) -> MetricFamily {
    let mut family = spec.family();
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    family.set_metric(vec![proto::Metric::from_gauge(gauge)]);
    family
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(sanitize_label(value));
    pair
}

/// Caps an untrusted label value's length; the text encoder escapes the rest.
pub(crate) fn sanitize_label(value: &str) -> String {
    if value.len() <= MAX_LABEL_LEN {
        return value.to_string();
    }
    let mut cut = MAX_LABEL_LEN;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    value[..cut].to_string()
}

impl Collector for ListenerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut listeners = self.listeners.locked();
        let ttl = self.series_ttl;
        listeners.retired.retain(|(gone, _)| gone.elapsed() < ttl);
        let mut counts: BTreeMap<SeriesKey, u64> = BTreeMap::new();
        let mut latency = listeners.retired_latency.clone();
        let all = listeners
            .live
            .iter()
            .chain(listeners.retired.iter().map(|(_, s)| s));
        for stats in all {
            let c = &stats.container;
            for (syscall, action, n) in stats.counts() {
                let key = [
                    sanitize_label(&c.namespace),
                    sanitize_label(&c.pod),
                    sanitize_label(c.display_name()),
                    syscall.to_string(),
                    action.as_str().to_string(),
                ];
                *counts.entry(key).or_default() += n;
            }
        }
        let mut deciding = 0;
        let mut last_notification: Option<f64> = None;
        for stats in &listeners.live {
            stats.latency_into(&mut latency);
            deciding += stats.deciding.load(Ordering::Relaxed);
            if let Some(at) = stats.last_notification() {
                last_notification = Some(last_notification.map_or(at, |seen| seen.max(at)));
            }
        }
        drop(listeners);
        let counts = self.apply_budget(counts);

        let mut syscalls_family = SYSCALLS_TOTAL.family();
        for ([namespace, pod, container, syscall, action], n) in counts {
            let mut metric = proto::Metric::from_label(vec![
                label("action", &action),
                label("container", &container),
                label("namespace", &namespace),
                label("pod", &pod),
                label("syscall", &syscall),
            ]);
            let mut counter = proto::Counter::default();
            counter.set_value(n as f64);
            metric.set_counter(counter);
            syscalls_family.mut_metric().push(metric);
        }

        let mut latency_family = DECISION_DURATION.family();
        let mut histogram = proto::Histogram::default();
        let mut cumulative = 0;
        histogram.set_bucket(
            LATENCY_BOUNDS_NS
                .iter()
                .zip(latency.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut bucket = proto::Bucket::default();
                    bucket.set_upper_bound(*bound as f64 / 1e9);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect(),
        );
        histogram.set_sample_count(latency.count);
        histogram.set_sample_sum(latency.sum_ns as f64 / 1e9);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        latency_family.set_metric(vec![metric]);

        let mut families = vec![
            latency_family,
            gauge_family(&DECISIONS_IN_PROGRESS, deciding as f64),
        ];
        // 0 until the first notification: exported from start-up for dashboards and `absent()`.
        families.push(gauge_family(
            &LAST_NOTIFICATION,
            last_notification.unwrap_or(0.0),
        ));
        if !syscalls_family.get_metric().is_empty() {
            families.push(syscalls_family);
        }
        families
    }
}

/// Every metric the agent exports.
pub struct Metrics {
    pub registry: Registry,
    listeners: Arc<Mutex<Listeners>>,
    pub listeners_open: IntGauge,
    pub intake_errors: IntCounterVec,
    pub containers_killed: IntCounter,
    pub events_dropped: IntCounter,
    pub policy_reloads: IntCounterVec,
    series_ttl: Duration,
    pub agent_restarts: IntCounterVec,
    pub inflight_recovered: IntCounter,
    series_overflow: IntCounter,
    /// Where the counters above are kept across restarts and takeovers, once carried over.
    carried: OnceLock<SharedPage>,
}

/// The counters kept in the agent's shared page across restarts and takeovers, each
/// (family, label value) at the word of its index. Append only: the index is the format.
const CARRIED: [(&str, &str); 21] = [
    ("switchboard_agent_restarts_total", "crash"),
    ("switchboard_agent_restarts_total", "takeover"),
    ("switchboard_inflight_recovered_total", ""),
    ("switchboard_containers_killed_total", ""),
    ("switchboard_events_dropped_total", ""),
    ("switchboard_policy_reloads_total", "success"),
    ("switchboard_policy_reloads_total", "failure"),
    ("switchboard_series_overflow_total", ""),
    ("switchboard_intake_errors_total", "peer_refused"),
    ("switchboard_intake_errors_total", "timeout"),
    ("switchboard_intake_errors_total", "too_large"),
    ("switchboard_intake_errors_total", "truncated"),
    ("switchboard_intake_errors_total", "bad_json"),
    ("switchboard_intake_errors_total", "no_fd"),
    ("switchboard_intake_errors_total", "fd_count"),
    ("switchboard_intake_errors_total", "no_seccomp_fd"),
    ("switchboard_intake_errors_total", "not_a_listener"),
    ("switchboard_intake_errors_total", "too_many_fds"),
    ("switchboard_intake_errors_total", "too_many_connections"),
    ("switchboard_intake_errors_total", "io"),
    ("switchboard_intake_errors_total", "bundle_config"),
];

/// Where the latency totals of retired listeners start in the agent's shared page: buckets,
/// count, sum.
const RETIRED_LATENCY: usize = CARRIED.len();
const _: () = assert!(RETIRED_LATENCY + LATENCY_BOUNDS_NS.len() + 2 <= SHARED_WORDS);

/// The word of the agent's shared page where the holding process counts restarts for `reason`.
pub fn restart_word(reason: &str) -> usize {
    CARRIED
        .iter()
        .position(|(name, label)| *name == "switchboard_agent_restarts_total" && *label == reason)
        .unwrap_or(0)
}

impl Metrics {
    /// Registers every metric; `series_ttl` is how long a gone container's series stay.
    pub fn new(series_ttl: Duration, max_series: usize) -> Metrics {
        let registry = Registry::new();
        let listeners = Arc::new(Mutex::new(Listeners::default()));
        let listeners_open =
            IntGauge::new("switchboard_listeners", "Seccomp listeners being served.").unwrap();
        let intake_errors = IntCounterVec::new(
            Opts::new(
                "switchboard_intake_errors_total",
                "Connections on the agent socket refused, by reason.",
            ),
            &["reason"],
        )
        .unwrap();
        let containers_killed = IntCounter::new(
            "switchboard_containers_killed_total",
            "Containers killed by a kill rule.",
        )
        .unwrap();
        let events_dropped = IntCounter::new(
            "switchboard_events_dropped_total",
            "Events dropped because a listener's event queue was full.",
        )
        .unwrap();
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "switchboard_policy_reloads_total",
                "Policy reloads, by result.",
            ),
            &["result"],
        )
        .unwrap();
        let build_info = IntGaugeVec::new(
            Opts::new("switchboard_build_info", "Build information; always 1."),
            &["version"],
        )
        .unwrap();
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let series_overflow = IntCounter::new(
            "switchboard_series_overflow_total",
            "Label sets of switchboard_syscalls_total folded into the overflow series past the cap.",
        )
        .unwrap();
        for result in ["success", "failure"] {
            policy_reloads.with_label_values(&[result]);
        }
        let agent_restarts = IntCounterVec::new(
            Opts::new(
                "switchboard_agent_restarts_total",
                "Deciding processes started in place of another, by reason (crash, takeover).",
            ),
            &["reason"],
        )
        .unwrap();
        for reason in ["crash", "takeover"] {
            agent_restarts.with_label_values(&[reason]);
        }
        let inflight_recovered = IntCounter::new(
            "switchboard_inflight_recovered_total",
            "Notifications answered after the process that received them died.",
        )
        .unwrap();
        let collector = ListenerCollector {
            listeners: listeners.clone(),
            descs: [
                SYSCALLS_TOTAL,
                DECISION_DURATION,
                DECISIONS_IN_PROGRESS,
                LAST_NOTIFICATION,
            ]
            .iter()
            .map(Family::desc)
            .collect(),
            series_ttl,
            max_series,
            budget: Mutex::default(),
            series_overflow: series_overflow.clone(),
        };
        for metric in [
            Box::new(listeners_open.clone()) as Box<dyn Collector>,
            Box::new(intake_errors.clone()),
            Box::new(containers_killed.clone()),
            Box::new(events_dropped.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(build_info),
            Box::new(series_overflow.clone()),
            Box::new(agent_restarts.clone()),
            Box::new(inflight_recovered.clone()),
            Box::new(collector),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        Metrics {
            registry,
            listeners,
            listeners_open,
            intake_errors,
            containers_killed,
            events_dropped,
            policy_reloads,
            series_ttl,
            agent_restarts,
            inflight_recovered,
            series_overflow,
            carried: OnceLock::new(),
        }
    }

    /// Continues the counters from `page` (where a previous process left them) and keeps
    /// them there from now on, at every scrape.
    pub fn carry_over(&self, page: SharedPage) {
        let words = page.words();
        for (index, (name, label)) in CARRIED.iter().enumerate() {
            let n = words[index].load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let labels: &[&str] = if label.is_empty() { &[] } else { &[label] };
            let vec = |family: &IntCounterVec| family.get_metric_with_label_values(labels).ok();
            let counter = match *name {
                "switchboard_agent_restarts_total" => vec(&self.agent_restarts),
                "switchboard_intake_errors_total" => vec(&self.intake_errors),
                "switchboard_policy_reloads_total" => vec(&self.policy_reloads),
                "switchboard_inflight_recovered_total" => Some(self.inflight_recovered.clone()),
                "switchboard_containers_killed_total" => Some(self.containers_killed.clone()),
                "switchboard_events_dropped_total" => Some(self.events_dropped.clone()),
                "switchboard_series_overflow_total" => Some(self.series_overflow.clone()),
                _ => None,
            };
            if let Some(counter) = counter {
                counter.inc_by(n.saturating_sub(counter.get()));
            }
        }
        {
            let mut listeners = self.listeners.locked();
            let totals = &mut listeners.retired_latency;
            let word = |i: usize| words[RETIRED_LATENCY + i].load(Ordering::Relaxed);
            for (i, bucket) in totals.buckets.iter_mut().enumerate() {
                *bucket = (*bucket).max(word(i));
            }
            totals.count = totals.count.max(word(LATENCY_BOUNDS_NS.len()));
            totals.sum_ns = totals.sum_ns.max(word(LATENCY_BOUNDS_NS.len() + 1));
        }
        let _ = self.carried.set(page);
    }

    /// Keeps the latency totals of retired listeners in the shared page: their own pages
    /// are closed once they are gone.
    fn save_retired(&self, totals: &LatencyTotals) {
        let Some(page) = self.carried.get() else {
            return;
        };
        let words = page.words();
        for (i, bucket) in totals.buckets.iter().enumerate() {
            words[RETIRED_LATENCY + i].store(*bucket, Ordering::Relaxed);
        }
        words[RETIRED_LATENCY + LATENCY_BOUNDS_NS.len()].store(totals.count, Ordering::Relaxed);
        words[RETIRED_LATENCY + LATENCY_BOUNDS_NS.len() + 1]
            .store(totals.sum_ns, Ordering::Relaxed);
    }

    /// Writes every carried counter into the shared page; never lowers one.
    fn save_carried(&self, families: &[MetricFamily]) {
        let Some(page) = self.carried.get() else {
            return;
        };
        let words = page.words();
        for family in families {
            for metric in family.get_metric() {
                let label = metric.get_label().first().map_or("", |l| l.value());
                let Some(index) = CARRIED
                    .iter()
                    .position(|(name, l)| *name == family.name() && *l == label)
                else {
                    continue;
                };
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "counters are whole and non-negative"
                )]
                let value = metric.get_counter().get_value() as u64;
                words[index].fetch_max(value, Ordering::Relaxed);
            }
        }
    }

    /// Starts exporting a new listener's statistics.
    pub fn add_listener(&self, stats: Arc<ListenerStats>) {
        self.listeners.locked().live.push(stats);
        self.listeners_open.inc();
    }

    /// Moves a gone listener's series to the retired set, kept until the TTL.
    pub fn retire_listener(&self, stats: &Arc<ListenerStats>) {
        let mut listeners = self.listeners.locked();
        if let Some(at) = listeners.live.iter().position(|s| Arc::ptr_eq(s, stats)) {
            let stats = listeners.live.swap_remove(at);
            stats.latency_into(&mut listeners.retired_latency);
            self.save_retired(&listeners.retired_latency);
            listeners.retired.push((Instant::now(), stats));
            self.listeners_open.dec();
        }
    }

    /// Statistics of every live listener.
    pub fn live_listeners(&self) -> Vec<Arc<ListenerStats>> {
        self.listeners.locked().live.clone()
    }

    /// Statistics of the gone listeners whose series are still exported (within `--series-ttl`).
    pub fn retired_listeners(&self) -> Vec<Arc<ListenerStats>> {
        let ttl = self.series_ttl;
        let listeners = self.listeners.locked();
        listeners
            .retired
            .iter()
            .filter(|(gone, _)| gone.elapsed() < ttl)
            .map(|(_, stats)| Arc::clone(stats))
            .collect()
    }

    /// Counts a refused connection.
    pub fn intake_error(&self, reason: &str) {
        self.intake_errors.with_label_values(&[reason]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        let families = self.registry.gather();
        self.save_carried(&families);
        if let Err(e) = encoder.encode_utf8(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Arc<ListenerStats> {
        Arc::new(ListenerStats::new(
            Arc::new(Container {
                namespace: "ns\"\n\\x".into(),
                pod: "p".repeat(10_000),
                ..Default::default()
            }),
            SharedPage::create().unwrap(),
        ))
    }

    #[test]
    fn containers_outside_kubernetes_get_their_short_id_as_container_label() {
        let metrics = Metrics::new(Duration::from_secs(60), 100);
        for (id, container) in [
            ("0123456789abcdef".repeat(4), "0123456789ab"),
            ("fedcba9876543210".repeat(4), "fedcba987654"),
            ("web-1".to_string(), "web-1"),
        ] {
            let s = Arc::new(ListenerStats::new(
                Arc::new(Container {
                    container_id: id,
                    ..Default::default()
                }),
                crate::sys::SharedPage::create().unwrap(),
            ));
            s.record(Some((0, 83)), Action::Deny, Duration::from_micros(3));
            metrics.add_listener(s);
            let text = metrics.render();
            assert!(
                text.contains(&format!("container=\"{container}\"")),
                "{container}: {text}"
            );
        }
        let kubernetes = Arc::new(ListenerStats::new(
            Arc::new(Container {
                container_id: "ab".repeat(32),
                namespace: "ns".into(),
                pod: "p".into(),
                container: "app".into(),
                ..Default::default()
            }),
            crate::sys::SharedPage::create().unwrap(),
        ));
        kubernetes.record(Some((0, 83)), Action::Deny, Duration::from_micros(3));
        metrics.add_listener(kubernetes);
        assert!(metrics.render().contains("container=\"app\""));
        assert!(!metrics.render().contains("container=\"ababababab"));
    }

    #[test]
    fn counts_fold_into_other_past_the_slots() {
        let s = stats();
        s.record(Some((0, 83)), Action::Deny, Duration::from_micros(3));
        for nr in 0..(COUNT_SLOTS + 5) {
            s.record(Some((0, nr)), Action::Log, Duration::from_micros(3));
        }
        let counts = s.counts();
        assert!(counts.contains(&("mkdir", Action::Deny, 1)));
        let other: u64 = counts.iter().filter(|c| c.0 == "other").map(|c| c.2).sum();
        assert_eq!(other, 6);
        assert_eq!(
            counts.iter().map(|c| c.2).sum::<u64>(),
            COUNT_SLOTS as u64 + 6
        );
    }

    #[test]
    fn exposition_is_escaped_capped_and_survives_retirement() {
        let metrics = Metrics::new(Duration::from_millis(50), 100);
        let s = stats();
        metrics.add_listener(s.clone());
        s.record(Some((0, 83)), Action::Deny, Duration::from_micros(3));
        let page = metrics.render();
        assert!(page.contains("switchboard_listeners 1"), "{page}");
        let line = page
            .lines()
            .find(|l| l.starts_with("switchboard_syscalls_total{"))
            .unwrap();
        assert!(line.contains(r#"namespace="ns\"\n\\x""#), "{line}");
        assert!(line.contains(&format!("pod=\"{}\"", "p".repeat(MAX_LABEL_LEN))));
        assert!(line.ends_with(" 1"));
        assert!(page.contains("switchboard_decision_duration_seconds_bucket{le=\"0.000005\"} 1"));

        metrics.retire_listener(&s);
        let page = metrics.render();
        assert!(page.contains("switchboard_listeners 0"));
        assert!(page.contains("switchboard_syscalls_total{"));
        std::thread::sleep(Duration::from_millis(60));
        let page = metrics.render();
        assert!(!page.contains("switchboard_syscalls_total{"), "{page}");
        assert!(page.contains("switchboard_decision_duration_seconds_count 1"));
    }

    #[test]
    fn series_past_the_cap_fold_into_overflow() {
        let metrics = Metrics::new(Duration::from_secs(60), 2);
        for pod in ["a", "b", "c", "d"] {
            let s = Arc::new(ListenerStats::new(
                Arc::new(Container {
                    pod: pod.into(),
                    ..Default::default()
                }),
                SharedPage::create().unwrap(),
            ));
            metrics.add_listener(s.clone());
            s.record(Some((0, 83)), Action::Deny, Duration::from_micros(3));
            // Scrape between arrivals so admission is first come, first served.
            metrics.render();
        }
        let page = metrics.render();
        let series: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("switchboard_syscalls_total{"))
            .collect();
        assert_eq!(series.len(), 3, "{page}");
        assert!(page.contains(r#"pod="a""#) && page.contains(r#"pod="b""#));
        assert!(page.contains(r#"action="_overflow",container="_overflow",namespace="_overflow",pod="_overflow",syscall="_overflow"} 2"#), "{page}");
        assert!(page.contains("switchboard_series_overflow_total 2"));
    }
}
