//! The status report behind `switchboard status`: served by the agent at `/status`, printed by the client.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::events::{RecentDenials, SyscallLine};
use crate::metrics::Metrics;
use crate::policy::Action;
use crate::text::{printable, Printable};

/// How long `switchboard status` waits for the agent.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How many syscalls the report ranks.
const TOP_SYSCALLS: usize = 10;

/// One served container.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub init_pid: i32,
    /// Decisions by action.
    pub counts: BTreeMap<Action, u64>,
    /// When the latest notification came, RFC 3339 like every other time in the report.
    pub last_notification: Option<String>,
    /// The container's listener has closed; its counts stay (as on /metrics) for `--series-ttl`.
    #[serde(default)]
    pub gone: bool,
    /// Its profile records (`switchboard-oci-hook --record`).
    #[serde(default)]
    pub recording: bool,
}

/// One row of the syscall ranking.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyscallCount {
    pub syscall: String,
    pub action: Action,
    pub count: u64,
}

/// Everything `switchboard status` shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub listeners: Vec<ListenerStatus>,
    pub top_syscalls: Vec<SyscallCount>,
    /// Latest deny and kill events, oldest first, as the JSON event log prints them.
    pub recent_denials: Vec<SyscallLine>,
}

impl Status {
    /// The report as of now.
    pub fn collect(metrics: &Metrics, recent: &RecentDenials) -> Status {
        let mut totals: BTreeMap<(&'static str, Action), u64> = BTreeMap::new();
        let mut listeners = Vec::new();
        // Gone containers count here as they do on /metrics and in the recent denials.
        let live = metrics.live_listeners().into_iter().map(|s| (s, false));
        let gone = metrics.retired_listeners().into_iter().map(|s| (s, true));
        for (stats, gone) in live.chain(gone) {
            let mut counts = BTreeMap::new();
            for (syscall, action, n) in stats.counts() {
                *counts.entry(action).or_default() += n;
                *totals.entry((syscall, action)).or_default() += n;
            }
            let c = &stats.container;
            listeners.push(ListenerStatus {
                container_id: c.container_id.clone(),
                namespace: c.namespace.clone(),
                pod: c.pod.clone(),
                container: c.container.clone(),
                init_pid: c.init_pid,
                counts,
                last_notification: stats.last_notification().map(|at| {
                    switchboard_shared::rfc3339(UNIX_EPOCH + Duration::from_secs_f64(at))
                }),
                gone,
                recording: c.record.as_ref().is_some_and(|r| r.recording),
            });
        }
        listeners.sort_by(|a, b| (a.gone, &a.container_id).cmp(&(b.gone, &b.container_id)));
        let mut top_syscalls: Vec<SyscallCount> = totals
            .into_iter()
            .map(|((syscall, action), count)| SyscallCount {
                syscall: syscall.to_string(),
                action,
                count,
            })
            .collect();
        top_syscalls.sort_by_key(|row| std::cmp::Reverse(row.count));
        top_syscalls.truncate(TOP_SYSCALLS);
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            listeners,
            top_syscalls,
            recent_denials: recent.snapshot(),
        }
    }

    /// Asks the agent whose metrics server listens on `addr`.
    pub fn fetch(addr: SocketAddr) -> anyhow::Result<Status> {
        let (status, body) = crate::http::get(&addr.to_string(), "/status", FETCH_TIMEOUT)
            .with_context(|| format!("asking the agent's metrics server at {addr}"))?;
        if status != 200 {
            bail!("the agent at {addr} answered {status}");
        }
        serde_json::from_str(&body).context("reading the agent's status")
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let live = self.listeners.iter().filter(|l| !l.gone).count();
        let gone = self.listeners.len() - live;
        let _ = writeln!(
            out,
            "switchboard {}: {}{}",
            Printable(&self.version),
            match live {
                0 => "no listeners".to_string(),
                n => format!("{n} listener(s)"),
            },
            match gone {
                0 => String::new(),
                n => format!(", {n} gone (counted until --series-ttl)"),
            }
        );
        for (title, gone) in [("", false), ("GONE\n", true)] {
            let rows: Vec<&ListenerStatus> =
                self.listeners.iter().filter(|l| l.gone == gone).collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\n{title}{:<28} {:<36} {:>8} {:>8} {:>8} {:>8}",
                "CONTAINER", "NAMESPACE/POD/NAME", "ALLOW", "LOG", "DENY", "KILL"
            );
            for l in rows {
                let count = |a: Action| l.counts.get(&a).copied().unwrap_or(0);
                let k8s = if l.namespace.is_empty() && l.pod.is_empty() {
                    "-".to_string()
                } else {
                    format!(
                        "{}/{}/{}",
                        Printable(&l.namespace),
                        Printable(&l.pod),
                        Printable(&l.container)
                    )
                };
                let _ = writeln!(
                    out,
                    "{:<28} {:<36} {:>8} {:>8} {:>8} {:>8}",
                    truncate(&printable(crate::container::short_id(&l.container_id)), 28),
                    truncate(&k8s, 36),
                    count(Action::Allow),
                    count(Action::Log),
                    count(Action::Deny),
                    count(Action::Kill)
                );
            }
        }
        let recording: Vec<&ListenerStatus> =
            self.listeners.iter().filter(|l| l.recording).collect();
        if !recording.is_empty() {
            let _ = writeln!(out, "\nRECORDING");
            for l in recording {
                let _ = writeln!(out, "  {}", printable(&l.container_id));
            }
        }
        let _ = writeln!(out, "\nTOP SYSCALLS");
        if self.top_syscalls.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for row in &self.top_syscalls {
            let _ = writeln!(
                out,
                "  {:<24} {:<6} {:>10}",
                printable(&row.syscall),
                row.action.as_str(),
                row.count
            );
        }
        let _ = writeln!(out, "\nRECENT DENIALS AND KILLS");
        if self.recent_denials.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for event in self.recent_denials.iter().rev() {
            let _ = writeln!(
                out,
                "  {} {:<5} {:<16} container={} pid={} rule={} errno={}",
                Printable(&event.time),
                event.action.as_str(),
                printable(&event.syscall),
                Printable(&event.container_id),
                event.pid,
                event.rule.as_deref().map_or("-".to_string(), printable),
                event.errno
            );
            // What was called on what, and by which program: the path is in the call.
            if let Some(call) = &event.call {
                let program = match (&event.comm, &event.exe) {
                    (Some(comm), Some(exe)) => {
                        format!(" by {} ({})", printable(comm), printable(exe))
                    }
                    (Some(name), None) | (None, Some(name)) => format!(" by {}", printable(name)),
                    (None, None) => String::new(),
                };
                let cwd = event
                    .cwd
                    .as_deref()
                    .map(|cwd| format!(" in {}", printable(cwd)))
                    .unwrap_or_default();
                let _ = writeln!(out, "      {}{program}{cwd}", printable(call));
            }
        }
        out
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let kept: String = text.chars().take(width - 1).collect();
        format!("{kept}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Container;
    use crate::events::SyscallKind;
    use crate::metrics::ListenerStats;
    use std::sync::Arc;

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            listeners: vec![ListenerStatus {
                container_id: "c\n1".into(),
                namespace: "ns".into(),
                pod: "pod".into(),
                container: "app".into(),
                init_pid: 42,
                counts: BTreeMap::from([(Action::Log, 3), (Action::Deny, 2)]),
                last_notification: None,
                gone: false,
                recording: false,
            }],
            top_syscalls: vec![SyscallCount {
                syscall: "mkdir".into(),
                action: Action::Deny,
                count: 2,
            }],
            recent_denials: vec![SyscallLine {
                time: "2026-01-01T00:00:00.000000Z".into(),
                event: SyscallKind::Syscall,
                container_id: "c\n1".into(),
                namespace: "ns".into(),
                pod: "pod".into(),
                container: "app".into(),
                pid: 7,
                syscall: "mkdir".into(),
                nr: 83,
                arch: "x86_64".into(),
                args: [0; 6],
                rule: None,
                action: Action::Deny,
                errno: 1,
                via: None,
                call: Some("mkdir(\"/tmp/x\", 0777)".into()),
                path: Some("/tmp/x".into()),
                path2: None,
                argv: None,
                unread: None,
                cwd: None,
                comm: Some("mkdir".into()),
                exe: Some("/bin/busybox".into()),
            }],
        }
    }

    #[test]
    fn text_has_counts_by_action_and_escapes() {
        let text = status().to_text();
        let row = text.lines().find(|l| l.starts_with("c\\n1")).unwrap();
        let counts: Vec<&str> = row.split_whitespace().skip(2).collect();
        assert_eq!(counts, ["0", "3", "2", "0"], "{text}");
        assert!(
            text.contains("  mkdir                    deny            2"),
            "{text}"
        );
        assert!(
            text.contains("deny  mkdir            container=c\\n1 pid=7 rule=- errno=1"),
            "{text}"
        );
        assert!(!text.contains("c\n1"), "{text}");
        assert!(
            text.contains("      mkdir(\"/tmp/x\", 0777) by mkdir (/bin/busybox)\n"),
            "{text}"
        );
    }

    #[test]
    fn json_round_trips_with_actions_as_words() {
        let json = serde_json::to_value(status()).unwrap();
        assert_eq!(json["listeners"][0]["counts"]["deny"], 2);
        assert_eq!(json["recent_denials"][0]["action"], "deny");
        assert!(json["recent_denials"][0].get("via").is_none());
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.recent_denials, status().recent_denials);
        assert_eq!(back.listeners[0].counts, status().listeners[0].counts);
    }

    #[test]
    fn no_listeners_says_so_and_gone_containers_are_listed_apart() {
        let mut empty = status();
        empty.listeners.clear();
        empty.top_syscalls.clear();
        empty.recent_denials.clear();
        let text = empty.to_text();
        assert!(
            text.starts_with("switchboard 0.1.0: no listeners\n"),
            "{text}"
        );
        assert!(!text.contains("CONTAINER"), "no empty table header: {text}");
        assert!(text.contains("TOP SYSCALLS\n  (none)"), "{text}");

        let mut with_gone = status();
        with_gone.listeners[0].gone = true;
        let text = with_gone.to_text();
        assert!(
            text.starts_with(
                "switchboard 0.1.0: no listeners, 1 gone (counted until --series-ttl)\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nGONE\nCONTAINER"), "{text}");
    }

    #[test]
    fn collect_counts_gone_containers_everywhere_and_times_are_rfc3339() {
        let metrics = Metrics::new(Duration::from_secs(300), 100);
        let stats = Arc::new(ListenerStats::new(
            Arc::new(Container {
                container_id: "gone-one".into(),
                ..Container::default()
            }),
            crate::sys::SharedPage::create().unwrap(),
        ));
        metrics.add_listener(Arc::clone(&stats));
        let mkdir = crate::syscalls::numbers("mkdir")[0];
        stats.begin(quanta::Instant::now());
        stats.record(Some(mkdir), Action::Deny, Duration::from_micros(5));
        metrics.retire_listener(&stats);
        let report = Status::collect(&metrics, &RecentDenials::default());
        assert_eq!(report.listeners.len(), 1);
        assert!(report.listeners[0].gone);
        assert_eq!(
            report.top_syscalls.len(),
            1,
            "gone containers count in the ranking"
        );
        assert_eq!(report.top_syscalls[0].syscall, "mkdir");
        let at = report.listeners[0].last_notification.as_deref().unwrap();
        // As the events write it: 2026-11-23T19:10:00.123456Z.
        assert!(
            at.len() == 27 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
            "{at}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert!(
            json["listeners"][0]["last_notification"].is_string(),
            "{json}"
        );
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
