//! Prometheus metrics: per-listener counters written lock-free by one worker, gathered at scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::container::Container;
use crate::policy::Action;
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

/// Adds one to a counter that only the owning worker thread writes.
#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

struct CountSlot {
    /// (arch << 16 | nr) + 1; 0 while the slot is free.
    key: AtomicU32,
    by_action: [AtomicU64; 4],
}

/// Per-listener statistics. One worker thread writes, scrapes read.
pub struct ListenerStats {
    pub container: Arc<Container>,
    slots: Box<[CountSlot]>,
    overflow: [AtomicU64; 4],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_NS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Unix time in seconds of the last notification; 0 before the first.
    last_notification: AtomicU64,
}

impl ListenerStats {
    pub fn new(container: Arc<Container>) -> ListenerStats {
        ListenerStats {
            container,
            slots: (0..COUNT_SLOTS)
                .map(|_| CountSlot {
                    key: AtomicU32::new(0),
                    by_action: Default::default(),
                })
                .collect(),
            overflow: Default::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_ns: AtomicU64::new(0),
            last_notification: AtomicU64::new(0),
        }
    }

    /// Counts one decision. Only the listener's own worker may call this.
    #[inline]
    pub fn record(&self, location: Option<(usize, usize)>, action: Action, latency: Duration) {
        let key = location.map_or(0, |(arch, nr)| ((arch as u32) << 16 | nr as u32) + 1);
        let mut index = (key as usize).wrapping_mul(0x9E37_79B9) % COUNT_SLOTS;
        let mut counted = false;
        for _ in 0..COUNT_SLOTS {
            if key == 0 {
                break;
            }
            let slot = &self.slots[index];
            let slot_key = slot.key.load(Ordering::Relaxed);
            if slot_key == key {
                bump(&slot.by_action[action.index()], 1);
                counted = true;
                break;
            }
            if slot_key == 0 {
                bump(&slot.by_action[action.index()], 1);
                // Publish the key after the count so a scrape never sees a key without it.
                slot.key.store(key, Ordering::Release);
                counted = true;
                break;
            }
            index = (index + 1) % COUNT_SLOTS;
        }
        if !counted {
            bump(&self.overflow[action.index()], 1);
        }
        let ns = latency.as_nanos().min(u128::from(u64::MAX)) as u64;
        if let Some(bucket) = LATENCY_BOUNDS_NS.iter().position(|bound| ns <= *bound) {
            bump(&self.latency_buckets[bucket], 1);
        }
        bump(&self.latency_count, 1);
        bump(&self.latency_sum_ns, ns);
    }

    /// Notes the wall-clock second of the latest notification.
    #[inline]
    pub fn touch(&self, unix_seconds: u64) {
        self.last_notification
            .store(unix_seconds, Ordering::Relaxed);
    }

    /// (syscall name, action, count) for every non-zero count.
    pub fn counts(&self) -> Vec<(&'static str, Action, u64)> {
        let mut out = Vec::new();
        for slot in self.slots.iter() {
            let key = slot.key.load(Ordering::Acquire);
            if key == 0 {
                continue;
            }
            let (arch, nr) = (((key - 1) >> 16) as usize, ((key - 1) & 0xffff) as usize);
            for action in Action::ALL {
                let n = slot.by_action[action.index()].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((syscalls::name(arch, nr), action, n));
                }
            }
        }
        for action in Action::ALL {
            let n = self.overflow[action.index()].load(Ordering::Relaxed);
            if n > 0 {
                out.push(("other", action, n));
            }
        }
        out
    }

    fn latency_into(&self, into: &mut LatencyTotals) {
        for (sum, bucket) in into.buckets.iter_mut().zip(&self.latency_buckets) {
            *sum += bucket.load(Ordering::Relaxed);
        }
        into.count += self.latency_count.load(Ordering::Relaxed);
        into.sum_ns += self.latency_sum_ns.load(Ordering::Relaxed);
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

/// The collector for per-listener series.
struct ListenerCollector {
    listeners: Arc<Mutex<Listeners>>,
    descs: Vec<Desc>,
    series_ttl: Duration,
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(sanitize_label(value));
    pair
}

/// Caps an untrusted label value's length; the text encoder escapes the rest.
pub fn sanitize_label(value: &str) -> String {
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
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.series_ttl;
        listeners.retired.retain(|(gone, _)| gone.elapsed() < ttl);
        let mut counts: BTreeMap<[String; 5], u64> = BTreeMap::new();
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
                    sanitize_label(&c.container),
                    syscall.to_string(),
                    action.as_str().to_string(),
                ];
                *counts.entry(key).or_default() += n;
            }
        }
        for stats in &listeners.live {
            stats.latency_into(&mut latency);
        }
        drop(listeners);

        let mut syscalls_family = MetricFamily::default();
        syscalls_family.set_name("switchboard_syscalls_total".into());
        syscalls_family
            .set_help("Flagged syscalls decided, by container, syscall and action.".into());
        syscalls_family.set_field_type(MetricType::COUNTER);
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

        let mut latency_family = MetricFamily::default();
        latency_family.set_name("switchboard_decision_duration_seconds".into());
        latency_family.set_help("Time from RECV's return to SEND, per notification.".into());
        latency_family.set_field_type(MetricType::HISTOGRAM);
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

        let mut families = vec![latency_family];
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
}

impl Metrics {
    /// Registers every metric; `series_ttl` is how long a gone container's series stay.
    pub fn new(series_ttl: Duration) -> Metrics {
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
            "Events dropped because the event queue was full.",
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
        for result in ["success", "failure"] {
            policy_reloads.with_label_values(&[result]);
        }
        let collector = ListenerCollector {
            listeners: listeners.clone(),
            descs: vec![
                Desc::new(
                    "switchboard_syscalls_total".into(),
                    "Flagged syscalls decided.".into(),
                    vec![],
                    Default::default(),
                )
                .unwrap(),
                Desc::new(
                    "switchboard_decision_duration_seconds".into(),
                    "Decision latency.".into(),
                    vec![],
                    Default::default(),
                )
                .unwrap(),
            ],
            series_ttl,
        };
        for metric in [
            Box::new(listeners_open.clone()) as Box<dyn Collector>,
            Box::new(intake_errors.clone()),
            Box::new(containers_killed.clone()),
            Box::new(events_dropped.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(build_info),
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
        }
    }

    /// Starts exporting a new listener's statistics.
    pub fn add_listener(&self, stats: Arc<ListenerStats>) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .push(stats);
        self.listeners_open.inc();
    }

    /// Moves a gone listener's series to the retired set, kept until the TTL.
    pub fn retire_listener(&self, stats: &Arc<ListenerStats>) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = listeners.live.iter().position(|s| Arc::ptr_eq(s, stats)) {
            let stats = listeners.live.swap_remove(at);
            stats.latency_into(&mut listeners.retired_latency);
            listeners.retired.push((Instant::now(), stats));
            self.listeners_open.dec();
        }
    }

    /// Statistics of every live listener.
    pub fn live_listeners(&self) -> Vec<Arc<ListenerStats>> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .clone()
    }

    /// Counts a refused connection.
    pub fn intake_error(&self, reason: &str) {
        self.intake_errors.with_label_values(&[reason]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Arc<ListenerStats> {
        Arc::new(ListenerStats::new(Arc::new(Container {
            namespace: "ns\"\n\\x".into(),
            pod: "p".repeat(10_000),
            ..Default::default()
        })))
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
        let metrics = Metrics::new(Duration::from_millis(50));
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
}
