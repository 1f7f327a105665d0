//! Event encoders: JSON (the typed line, and a direct writer printing the same bytes) and text.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use switchboard_shared::rfc3339;

use super::{Event, SyscallEvent, SyscallKind, SyscallLine};
use crate::container::Container;
use crate::policy::{errno_name, Action};
use crate::syscalls;
use crate::text::Printable;

impl SyscallEvent {
    /// The typed line: what `to_json` prints, and what `/status` keeps of a denial.
    pub fn line(&self) -> SyscallLine {
        let c = &self.container;
        SyscallLine {
            time: rfc3339(self.time),
            event: SyscallKind::Syscall,
            container_id: c.container_id.clone(),
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            container: c.container.clone(),
            pid: self.pid,
            syscall: self.syscall_name().to_string(),
            nr: self.nr,
            arch: self.arch_name(),
            args: self.args,
            rule: self.rule.map(str::to_string),
            action: self.action,
            errno: self.errno,
            // Only multiplexed calls say how they came, so direct ones keep their shape.
            via: syscalls::via(self.location).map(str::to_string),
        }
    }

    fn syscall_name(&self) -> &'static str {
        self.location
            .map_or("?", |(arch, nr)| syscalls::name(arch, nr))
    }

    fn arch_name(&self) -> String {
        match self.location {
            Some((arch, _)) => syscalls::arches()[arch].name.to_string(),
            None => format!("{:#x}", self.audit_arch),
        }
    }

    /// Appends the line `Event::to_json` would print, byte for byte, without building a `Value`:
    /// on a pinned agent, the writer's cost per event is paid by the notifications.
    pub(super) fn write_json(&self, out: &mut Vec<u8>, cache: &mut LineCache) {
        if !cache.key.as_ref().is_some_and(|key| key.matches(self)) {
            cache.refill(self);
        }
        out.extend_from_slice(&cache.head);
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_number(out, *arg);
        }
        out.extend_from_slice(&cache.middle);
        push_number(out, self.pid);
        out.extend_from_slice(&cache.tail);
        cache.write_time(self.time, out);
        out.extend_from_slice(b"\"");
        if let Some(via) = syscalls::via(self.location) {
            out.extend_from_slice(b",\"via\":");
            let _ = serde_json::to_writer(&mut *out, via);
        }
        out.push(b'}');
    }
}

/// What decides the constant parts of a syscall line.
struct LineKey {
    container: Arc<Container>,
    rule: Option<&'static str>,
    action: Action,
    location: Option<(usize, usize)>,
    audit_arch: u32,
    nr: i32,
    errno: i32,
}

impl LineKey {
    fn matches(&self, e: &SyscallEvent) -> bool {
        Arc::ptr_eq(&self.container, &e.container)
            && self.rule == e.rule
            && (
                self.action,
                self.location,
                self.audit_arch,
                self.nr,
                self.errno,
            ) == (e.action, e.location, e.audit_arch, e.nr, e.errno)
    }
}

/// The writer's memory between lines: the parts of the last syscall line that only change
/// with the listener, rule or syscall (keys in serde_json's sorted order), and the current second.
#[derive(Default)]
pub(super) struct LineCache {
    key: Option<LineKey>,
    /// `{"action":…,"arch":…,"args":[`
    head: Vec<u8>,
    /// `],"container":…,"nr":…,"pid":`
    middle: Vec<u8>,
    /// `,"pod":…,"time":"`
    tail: Vec<u8>,
    second: Option<u64>,
    /// "YYYY-MM-DDTHH:MM:SS" of `second`.
    date: String,
}

impl LineCache {
    fn refill(&mut self, e: &SyscallEvent) {
        let c = &e.container;
        let string = |out: &mut Vec<u8>, s: &str| {
            let _ = serde_json::to_writer(&mut *out, s);
        };
        self.head.clear();
        self.head.extend_from_slice(b"{\"action\":");
        string(&mut self.head, e.action.as_str());
        self.head.extend_from_slice(b",\"arch\":");
        string(&mut self.head, &e.arch_name());
        self.head.extend_from_slice(b",\"args\":[");
        self.middle.clear();
        self.middle.extend_from_slice(b"],\"container\":");
        string(&mut self.middle, &c.container);
        self.middle.extend_from_slice(b",\"container_id\":");
        string(&mut self.middle, &c.container_id);
        let _ = write!(
            self.middle,
            ",\"errno\":{},\"event\":\"syscall\",\"namespace\":",
            e.errno
        );
        string(&mut self.middle, &c.namespace);
        let _ = write!(self.middle, ",\"nr\":{},\"pid\":", e.nr);
        self.tail.clear();
        self.tail.extend_from_slice(b",\"pod\":");
        string(&mut self.tail, &c.pod);
        self.tail.extend_from_slice(b",\"rule\":");
        let _ = serde_json::to_writer(&mut self.tail, &e.rule);
        self.tail.extend_from_slice(b",\"syscall\":");
        string(&mut self.tail, e.syscall_name());
        self.tail.extend_from_slice(b",\"time\":\"");
        self.key = Some(LineKey {
            container: c.clone(),
            rule: e.rule,
            action: e.action,
            location: e.location,
            audit_arch: e.audit_arch,
            nr: e.nr,
            errno: e.errno,
        });
    }

    /// RFC 3339 with microseconds, as `rfc3339` writes it; the date is formatted once a second.
    fn write_time(&mut self, time: SystemTime, out: &mut Vec<u8>) {
        let Ok(since) = time.duration_since(std::time::UNIX_EPOCH) else {
            out.extend_from_slice(rfc3339(time).as_bytes());
            return;
        };
        if self.second != Some(since.as_secs()) {
            self.second = Some(since.as_secs());
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs());
            self.date = switchboard_shared::rfc3339_seconds(whole);
            self.date.pop(); // the 'Z'
        }
        out.extend_from_slice(self.date.as_bytes());
        out.push(b'.');
        let micros = since.subsec_micros();
        // Zero-pad to six digits, as RFC 3339 with microseconds needs.
        for place in [100_000, 10_000, 1_000, 100, 10] {
            if micros < place {
                out.push(b'0');
            }
        }
        push_number(out, micros);
        out.push(b'Z');
    }
}

/// Appends the decimal digits of `n`.
fn push_number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

impl Event {
    /// The JSON form: one object, printed on one line.
    pub fn to_json(&self) -> Value {
        match self {
            Event::Syscall(e) => {
                serde_json::to_value(e.line()).expect("a syscall line is plain data")
            }
            Event::ListenerAdded {
                time,
                container,
                sync_wakeup,
            } => {
                let mut value = json!({"time": rfc3339(*time), "event": "listener_added"});
                merge_container(&mut value, container);
                value["sync_wakeup"] = json!(sync_wakeup);
                value
            }
            Event::ListenerRemoved {
                time,
                container,
                reason,
            } => {
                let mut value = json!({"time": rfc3339(*time), "event": "listener_removed"});
                merge_container(&mut value, container);
                value["reason"] = json!(reason);
                value
            }
        }
    }

    /// The text form, for people: strace-like for syscalls.
    pub fn to_text(&self) -> String {
        match self {
            Event::Syscall(e) => {
                let c = &e.container;
                let result = if e.action.lets_through() {
                    "continue".to_string()
                } else {
                    format!("-1 {}", errno_name(e.errno))
                };
                let via = syscalls::via(e.location)
                    .map(|via| format!(" via={via}"))
                    .unwrap_or_default();
                format!(
                    "{} {:<5} {}({:#x}, {:#x}, {:#x}) = {} pid={} container={}{} rule={}{via}",
                    rfc3339(e.time),
                    e.action.as_str(),
                    e.syscall_name(),
                    e.args[0],
                    e.args[1],
                    e.args[2],
                    result,
                    e.pid,
                    Printable(&c.container_id),
                    k8s_suffix(c),
                    e.rule.unwrap_or("(default)"),
                )
            }
            Event::ListenerAdded {
                time, container, ..
            } => format!(
                "{} listener added: container={}{} init_pid={}",
                rfc3339(*time),
                Printable(&container.container_id),
                k8s_suffix(container),
                container.init_pid
            ),
            Event::ListenerRemoved {
                time,
                container,
                reason,
            } => format!(
                "{} listener removed: container={}{} ({reason})",
                rfc3339(*time),
                Printable(&container.container_id),
                k8s_suffix(container)
            ),
        }
    }
}

fn k8s_suffix(c: &Container) -> String {
    if c.namespace.is_empty() && c.pod.is_empty() && c.container.is_empty() {
        String::new()
    } else {
        format!(
            " [{}/{}/{}]",
            Printable(&c.namespace),
            Printable(&c.pod),
            Printable(&c.container)
        )
    }
}

fn merge_container(value: &mut Value, container: &Container) {
    if let (Value::Object(into), Ok(Value::Object(from))) = (value, serde_json::to_value(container))
    {
        into.extend(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Container;
    use crate::events::{EventWriter, LogFormat};
    use crate::policy::Action;
    use prometheus::IntCounter;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn event(action: Action, errno: i32) -> Event {
        Event::Syscall(SyscallEvent {
            time: SystemTime::UNIX_EPOCH,
            container: Arc::new(Container {
                container_id: "c1".into(),
                ..Default::default()
            }),
            pid: 7,
            audit_arch: libseccomp_sys::SCMP_ARCH_X86_64,
            nr: 83,
            location: Some((0, 83)),
            args: [1, 2, 3, 4, 5, 6],
            rule: Some("no-mkdir"),
            action,
            errno,
        })
    }

    #[test]
    fn text_lines_escape_control_characters() {
        let container = Arc::new(Container {
            container_id: "id\nFORGED".into(),
            pod: "p\x1b[2J".into(),
            ..Default::default()
        });
        let added = Event::ListenerAdded {
            time: SystemTime::UNIX_EPOCH,
            container,
            sync_wakeup: false,
        };
        let text = added.to_text();
        assert!(!text.contains(['\n', '\x1b']), "{text}");
        assert!(text.contains("id\\nFORGED"), "{text}");
    }

    #[test]
    fn json_carries_every_field() {
        let v = event(Action::Deny, 1).to_json();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["syscall"], "mkdir");
        assert_eq!(v["arch"], "x86_64");
        assert_eq!(v["action"], "deny");
        assert_eq!(v["errno"], 1);
        assert_eq!(v["rule"], "no-mkdir");
        assert_eq!(v["args"][5], 6);
        assert_eq!(v["container_id"], "c1");
    }

    #[test]
    fn direct_json_is_the_value_json() {
        let base = || match event(Action::Deny, 1) {
            Event::Syscall(e) => e,
            _ => unreachable!(),
        };
        let odd = Arc::new(Container {
            namespace: "n\"s\\".into(),
            pod: "p\u{e9}\n".into(),
            ..(*base().container).clone()
        });
        let at = |ns: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
        let events = [
            SyscallEvent {
                time: at(1_700_000_000_123_456_789),
                ..base()
            },
            SyscallEvent {
                time: at(1_700_000_000_000_042_000),
                pid: 0,
                args: [0, 9, 10, u64::MAX, 1 << 32, 99],
                container: odd.clone(),
                rule: None,
                action: Action::Log,
                errno: 0,
                ..base()
            },
            SyscallEvent {
                time: at(1_700_000_001_999_999_999),
                nr: -1,
                location: None,
                container: odd,
                ..base()
            },
        ];
        let mut cache = LineCache::default();
        let via_socketcall = SyscallEvent {
            audit_arch: libseccomp_sys::SCMP_ARCH_X86,
            nr: 102,
            location: syscalls::locate(libseccomp_sys::SCMP_ARCH_X86, 102, 1),
            ..base()
        };
        for e in events.into_iter().chain([via_socketcall, base()]) {
            let mut line = Vec::new();
            e.write_json(&mut line, &mut cache);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                Event::Syscall(e).to_json().to_string()
            );
        }
    }

    #[test]
    fn text_reads_like_strace() {
        let line = event(Action::Deny, 13).to_text();
        assert!(
            line.contains("deny  mkdir(0x1, 0x2, 0x3) = -1 EACCES pid=7"),
            "{line}"
        );
    }

    #[test]
    fn multiplexed_calls_say_how_they_came() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let Event::Syscall(base) = event(Action::Deny, 13) else {
            unreachable!()
        };
        let e = Event::Syscall(SyscallEvent {
            audit_arch: libseccomp_sys::SCMP_ARCH_X86,
            nr: 102,
            location: syscalls::locate(libseccomp_sys::SCMP_ARCH_X86, 102, 1),
            ..base
        });
        let v = e.to_json();
        assert_eq!(
            (&v["syscall"], &v["arch"], &v["via"]),
            (&json!("socket"), &json!("x86"), &json!("socketcall"))
        );
        assert_eq!(v["nr"], 102);
        assert!(e.to_text().ends_with(" via=socketcall"), "{}", e.to_text());
        assert!(event(Action::Deny, 13).to_json().get("via").is_none());
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let (sink, writer) = EventWriter::spawn(
            LogFormat::Json,
            Box::new(std::io::sink()),
            1,
            dropped.clone(),
        );
        for _ in 0..1000 {
            sink.emit(event(Action::Log, 0));
        }
        writer.flush_and_stop();
        assert!(dropped.get() > 0);
    }
}
