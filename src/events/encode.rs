//! Event encoders: JSON (the typed line, and a direct writer printing the same bytes) and text.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use switchboard_shared::rfc3339;

use super::process::Known;
use super::{call, Event, Process, SyscallEvent, SyscallKind, SyscallLine, UnixNanos};
use crate::capture::{self, Arg, Read};
use crate::container::Container;
use crate::policy::{errno_name, Action};
use crate::syscalls;
use crate::text::Printable;

/// What a syscall line says beyond its integers: the call, its strings and why any is missing.
#[derive(Default)]
pub(super) struct Details {
    pub call: String,
    pub path: Option<String>,
    pub path2: Option<String>,
    pub argv: Option<Vec<String>>,
    pub unread: BTreeMap<&'static str, String>,
}

impl SyscallEvent {
    /// The typed line: what the JSON log prints, and what `/status` keeps of a denial;
    /// `process` is what the writer read of the caller.
    pub fn line(&self, c: &Container, process: &Process) -> SyscallLine {
        let details = self.details();
        SyscallLine {
            time: rfc3339(self.time.system_time()),
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
            via: syscalls::via(self.location()).map(str::to_string),
            call: Some(details.call),
            path: details.path,
            path2: details.path2,
            argv: details.argv,
            unread: (!details.unread.is_empty()).then(|| {
                details
                    .unread
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            }),
            cwd: process.cwd.clone(),
            comm: process.comm.clone(),
            exe: process.exe.clone(),
        }
    }

    pub(super) fn syscall_name(&self) -> &'static str {
        self.location()
            .map_or("?", |(arch, nr)| syscalls::name(arch, nr))
    }

    /// The caller's working directory beside a relative path, as read while it was parked.
    pub(super) fn cwd(&self) -> Option<String> {
        Some(call::escaped(self.capture.as_deref()?.cwd()?))
    }

    /// Appends the call as strace prints it.
    pub(super) fn write_call(&self, out: &mut String) {
        let capture = self.capture.as_deref().filter(|c| !c.discarded);
        // A multiplexed call's own arguments are not in its registers: socketcall's are in
        // the caller's memory (read with the strings), ipc's follow the sub-call number.
        let args = match syscalls::via(self.location()) {
            Some("socketcall") => capture.and_then(|c| c.multiplexed_args),
            Some(_) => {
                let a = self.args;
                Some([a[1], a[2], a[3], a[4], a[5], 0])
            }
            None => Some(self.args),
        };
        match args {
            Some(args) => {
                call::format_call(self.syscall_name(), self.location(), &args, capture, out);
            }
            None => {
                let _ = std::fmt::Write::write_fmt(
                    out,
                    format_args!(
                        "{}(/* arguments at {:#x}, unread */)",
                        self.syscall_name(),
                        self.args[1] & 0xffff_ffff
                    ),
                );
            }
        }
    }

    pub(super) fn details(&self) -> Details {
        let mut d = Details::default();
        self.write_call(&mut d.call);
        let capture = self.capture.as_deref().filter(|c| !c.discarded);
        let Some(spec) = capture::args_of(self.location()) else {
            return d;
        };
        let missing = match &self.capture {
            None => "not read",
            Some(c) if c.starved() => "not read: every capture buffer of this listener was in use",
            Some(c) if c.discarded => {
                "discarded: the call was gone before the read could be confirmed"
            }
            Some(_) => "",
        };
        let mut paths = spec
            .iter()
            .enumerate()
            .filter(|(_, a)| **a == Arg::Path)
            .map(|(i, _)| i);
        for (field, slot) in [("path", &mut d.path), ("path2", &mut d.path2)] {
            let Some(index) = paths.next() else { break };
            match capture.and_then(|c| c.string(index)) {
                Some((bytes, Read::Whole)) => *slot = Some(call::escaped(bytes)),
                Some((_, read)) => {
                    d.unread.insert(field, read.reason().unwrap_or_default());
                }
                None => {
                    d.unread.insert(field, missing.to_string());
                }
            }
        }
        if spec.contains(&Arg::Argv) {
            match capture {
                Some(c) => {
                    if c.argv().next().is_some() || c.argv_read == Read::Whole {
                        d.argv = Some(c.argv().map(call::escaped).collect());
                    }
                    if let Some(reason) = c.argv_read.reason() {
                        d.unread.insert("argv", reason);
                    }
                }
                None => {
                    d.unread.insert("argv", missing.to_string());
                }
            }
        }
        d
    }

    fn arch_name(&self) -> String {
        match self.location() {
            Some((arch, _)) => syscalls::arches()[arch].name.to_string(),
            None => format!("{:#x}", self.audit_arch),
        }
    }

    /// Appends the line `Event::to_json` would print, byte for byte, without building a `Value`:
    /// on a pinned agent, the writer's cost per event is paid by the notifications.
    pub(super) fn write_json(
        &self,
        container: &Arc<Container>,
        out: &mut Vec<u8>,
        cache: &mut LineCache,
        program: &Known,
        cwd: Option<&str>,
    ) {
        if !cache
            .key
            .as_ref()
            .is_some_and(|key| key.matches(container, self))
        {
            cache.refill(container, self);
        }
        // Calls without strings (most events) need only the call, formatted into a reused
        // buffer: the writer allocates nothing for them.
        let d = capture::reads_memory(self.location()).then(|| self.details());
        // A caller in a loop makes the same line up to its time: copied whole.
        let repeat = (d.is_none() && cwd.is_none()).then(|| Repeat {
            args: self.args,
            pid: self.pid,
            program: program.identity(),
        });
        if repeat.is_some() && cache.repeat_of == repeat {
            out.extend_from_slice(&cache.repeat);
            self.write_json_end(out, cache);
            return;
        }
        let start = out.len();
        let call = match &d {
            Some(d) => &d.call,
            None => {
                cache.call.clear();
                self.write_call(&mut cache.call);
                &cache.call
            }
        };
        let string = |out: &mut Vec<u8>, key: &str, value: Option<&str>| {
            if let Some(value) = value {
                out.extend_from_slice(key.as_bytes());
                let _ = serde_json::to_writer(&mut *out, value);
            }
        };
        out.extend_from_slice(&cache.head);
        // A caller in a loop passes the same registers again: their digits are kept.
        if cache.args_of != Some(self.args) {
            cache.args.clear();
            for (i, arg) in self.args.iter().enumerate() {
                if i > 0 {
                    cache.args.push(b',');
                }
                push_number(&mut cache.args, *arg);
            }
            cache.args.push(b']');
            cache.args_of = Some(self.args);
        }
        out.extend_from_slice(&cache.args);
        if let Some(argv) = d.as_ref().and_then(|d| d.argv.as_ref()) {
            out.extend_from_slice(b",\"argv\":");
            let _ = serde_json::to_writer(&mut *out, argv);
        }
        out.extend_from_slice(b",\"call\":");
        let _ = serde_json::to_writer(&mut *out, call);
        out.extend_from_slice(&program.comm_json);
        out.extend_from_slice(&cache.container);
        string(out, ",\"cwd\":", cwd);
        out.extend_from_slice(&cache.errno);
        out.extend_from_slice(&program.exe_json);
        out.extend_from_slice(&cache.namespace);
        if let Some(d) = &d {
            string(out, ",\"path\":", d.path.as_deref());
            string(out, ",\"path2\":", d.path2.as_deref());
        }
        out.extend_from_slice(b",\"pid\":");
        push_number(out, self.pid);
        out.extend_from_slice(&cache.tail);
        if repeat.is_some() {
            cache.repeat.clear();
            cache.repeat.extend_from_slice(&out[start..]);
            cache.repeat_of = repeat;
            self.write_json_end(out, cache);
            return;
        }
        cache.write_time(self.time, out);
        out.extend_from_slice(b"\"");
        if let Some(unread) = d.as_ref().map(|d| &d.unread).filter(|u| !u.is_empty()) {
            out.extend_from_slice(b",\"unread\":");
            let _ = serde_json::to_writer(&mut *out, unread);
        }
        out.extend_from_slice(&cache.end);
    }

    /// The end of a line without strings: its time and what follows.
    fn write_json_end(&self, out: &mut Vec<u8>, cache: &mut LineCache) {
        cache.write_time(self.time, out);
        out.push(b'"');
        out.extend_from_slice(&cache.end);
    }
}

/// What makes a line without strings the same as the last one up to its time.
#[derive(Clone, Copy, Eq)]
struct Repeat {
    args: [u64; 6],
    pid: u32,
    program: u64,
}

impl PartialEq for Repeat {
    /// Without a branch or a call to memcmp: compared for every event.
    fn eq(&self, other: &Repeat) -> bool {
        let args = (0..6).fold(0, |diff, i| diff | (self.args[i] ^ other.args[i]));
        args | u64::from(self.pid ^ other.pid) | (self.program ^ other.program) == 0
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
    fn matches(&self, container: &Arc<Container>, e: &SyscallEvent) -> bool {
        // Rule names live as long as the process: the same rule is the same address, and
        // comparing addresses spares a memcmp per event.
        let same_rule = match (self.rule, e.rule) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        Arc::ptr_eq(&self.container, container)
            && same_rule
            && (
                self.action,
                self.location,
                self.audit_arch,
                self.nr,
                self.errno,
            ) == (e.action, e.location(), e.audit_arch, e.nr, e.errno)
    }
}

/// The writer's memory between lines: the parts of the last syscall line that only change
/// with the listener, rule or syscall (keys in serde_json's sorted order), and the current second.
#[derive(Default)]
pub(super) struct LineCache {
    key: Option<LineKey>,
    /// `{"action":…,"arch":…,"args":[`
    head: Vec<u8>,
    /// `,"container":…,"container_id":…`
    container: Vec<u8>,
    /// `,"errno":…,"event":"syscall"`
    errno: Vec<u8>,
    /// `,"namespace":…,"nr":…`
    namespace: Vec<u8>,
    /// `,"pod":…,"time":"`
    tail: Vec<u8>,
    /// `,"via":…}` for a multiplexed call, else `}`
    end: Vec<u8>,
    second: Option<u64>,
    /// The call of the line being written, when it has no strings.
    call: String,
    /// The last line's `args` array as written (`…]`), and the values it shows.
    args: Vec<u8>,
    args_of: Option<[u64; 6]>,
    /// The last line without strings up to its time (`…,"time":"`), and what it was of;
    /// only while `key` still holds.
    repeat: Vec<u8>,
    repeat_of: Option<Repeat>,
    /// "YYYY-MM-DDTHH:MM:SS" of `second`.
    date: String,
}

impl LineCache {
    fn refill(&mut self, c: &Arc<Container>, e: &SyscallEvent) {
        let string = |out: &mut Vec<u8>, s: &str| {
            let _ = serde_json::to_writer(&mut *out, s);
        };
        self.repeat_of = None;
        self.head.clear();
        self.head.extend_from_slice(b"{\"action\":");
        string(&mut self.head, e.action.as_str());
        self.head.extend_from_slice(b",\"arch\":");
        string(&mut self.head, &e.arch_name());
        self.head.extend_from_slice(b",\"args\":[");
        self.container.clear();
        self.container.extend_from_slice(b",\"container\":");
        string(&mut self.container, &c.container);
        self.container.extend_from_slice(b",\"container_id\":");
        string(&mut self.container, &c.container_id);
        self.errno.clear();
        let _ = write!(self.errno, ",\"errno\":{},\"event\":\"syscall\"", e.errno);
        self.namespace.clear();
        self.namespace.extend_from_slice(b",\"namespace\":");
        string(&mut self.namespace, &c.namespace);
        let _ = write!(self.namespace, ",\"nr\":{}", e.nr);
        self.tail.clear();
        self.tail.extend_from_slice(b",\"pod\":");
        string(&mut self.tail, &c.pod);
        self.tail.extend_from_slice(b",\"rule\":");
        let _ = serde_json::to_writer(&mut self.tail, &e.rule);
        self.tail.extend_from_slice(b",\"syscall\":");
        string(&mut self.tail, e.syscall_name());
        self.tail.extend_from_slice(b",\"time\":\"");
        self.end.clear();
        if let Some(via) = syscalls::via(e.location()) {
            self.end.extend_from_slice(b",\"via\":");
            string(&mut self.end, via);
        }
        self.end.push(b'}');
        self.key = Some(LineKey {
            container: c.clone(),
            rule: e.rule,
            action: e.action,
            location: e.location(),
            audit_arch: e.audit_arch,
            nr: e.nr,
            errno: e.errno,
        });
    }

    /// RFC 3339 with microseconds, as `rfc3339` writes it; the date is formatted once a second.
    fn write_time(&mut self, time: UnixNanos, out: &mut Vec<u8>) {
        const NANOS: u64 = 1_000_000_000;
        let second = time.0 / NANOS;
        if self.second != Some(second) {
            self.second = Some(second);
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
            self.date = switchboard_shared::rfc3339_seconds(whole);
            self.date.pop(); // the 'Z'
        }
        out.extend_from_slice(self.date.as_bytes());
        // Six digits, zero-padded, as RFC 3339 with microseconds needs.
        let mut micros = (time.0 % NANOS) / 1_000;
        let mut fraction = *b".000000Z";
        for digit in fraction[1..7].iter_mut().rev() {
            // A decimal digit.
            #[allow(clippy::cast_possible_truncation, reason = "see above")]
            let value = (micros % 10) as u8;
            *digit = b'0' + value;
            micros /= 10;
        }
        out.extend_from_slice(&fraction);
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

    /// The text form, for people.
    pub fn to_text(&self) -> String {
        match self {
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

fn write_fmt(out: &mut String, args: std::fmt::Arguments<'_>) -> std::fmt::Result {
    std::fmt::Write::write_fmt(out, args)
}

impl SyscallEvent {
    /// The text form: the call as strace prints it, its result, and who made it.
    pub fn to_text(&self, c: &Container, process: &Process) -> String {
        let mut line = format!(
            "{} {:<5} ",
            rfc3339(self.time.system_time()),
            self.action.as_str()
        );
        let mut call = String::new();
        self.write_call(&mut call);
        line.push_str(&Printable(&call).to_string());
        line.push_str(" = ");
        line.push_str(&self.result());
        let _ = write_fmt(&mut line, format_args!(" pid={}", self.pid));
        for (key, value) in [("comm", &process.comm), ("cwd", &process.cwd)] {
            if let Some(value) = value {
                let _ = write_fmt(&mut line, format_args!(" {key}={}", Printable(value)));
            }
        }
        let _ = write_fmt(
            &mut line,
            format_args!(" container={}{}", Printable(&c.container_id), k8s_suffix(c)),
        );
        if let Some(via) = syscalls::via(self.location()) {
            let _ = write_fmt(&mut line, format_args!(" via={via}"));
        }
        line
    }

    /// What the call returned, as strace ends its line, and which rule said so.
    pub fn result(&self) -> String {
        let rule = match self.rule {
            Some(rule) => format!("(rule {})", Printable(rule)),
            None => "(default)".to_string(),
        };
        match self.action {
            Action::Kill => format!("? killed {rule}"),
            action if action.lets_through() => format!("? {rule}"),
            _ => format!("-1 {} {rule}", errno_name(self.errno)),
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
    use crate::events::{EventWriter, Location, LogFormat};
    use crate::policy::Action;
    use prometheus::IntCounter;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::SystemTime;

    fn event(action: Action, errno: i32) -> SyscallEvent {
        SyscallEvent {
            time: UnixNanos(0),
            pid: 7,
            audit_arch: libseccomp_sys::SCMP_ARCH_X86_64,
            nr: 83,
            location: Location::new(Some((0, 83))),
            args: [1, 2, 3, 4, 5, 6],
            rule: Some("no-mkdir"),
            action,
            errno,
            capture: None,
            ip: 0,
        }
    }

    fn c1() -> Arc<Container> {
        Arc::new(Container {
            container_id: "c1".into(),
            ..Default::default()
        })
    }

    /// The typed line as JSON, its program unknown.
    fn json_of(e: &SyscallEvent, container: &Container) -> Value {
        serde_json::to_value(e.line(container, &Process::default())).unwrap()
    }

    /// What the writer knows of a caller it could not read.
    fn unknown() -> Known {
        Known::new(0, 0, std::time::Instant::now(), Process::default())
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
        let v = json_of(&event(Action::Deny, 1), &c1());
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
        let base = || event(Action::Deny, 1);
        let plain = c1();
        let odd = Arc::new(Container {
            namespace: "n\"s\\".into(),
            pod: "p\u{e9}\n".into(),
            ..(*plain).clone()
        });
        let at = UnixNanos;
        let events = [
            (
                SyscallEvent {
                    time: at(1_700_000_000_123_456_789),
                    ..base()
                },
                &plain,
            ),
            (
                SyscallEvent {
                    time: at(1_700_000_000_000_042_000),
                    pid: 0,
                    args: [0, 9, 10, u64::MAX, 1 << 32, 99],
                    rule: None,
                    action: Action::Log,
                    errno: 0,
                    ..base()
                },
                &odd,
            ),
            (
                SyscallEvent {
                    time: at(1_700_000_001_999_999_999),
                    nr: -1,
                    location: Location::new(None),
                    ..base()
                },
                &odd,
            ),
        ];
        let mut cache = LineCache::default();
        let via_socketcall = SyscallEvent {
            audit_arch: libseccomp_sys::SCMP_ARCH_X86,
            nr: 102,
            location: Location::new(syscalls::locate(libseccomp_sys::SCMP_ARCH_X86, 102, 1)),
            ..base()
        };
        for (e, container) in events
            .into_iter()
            .chain([(via_socketcall, &plain), (base(), &plain)])
        {
            let mut line = Vec::new();
            e.write_json(container, &mut line, &mut cache, &unknown(), None);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                json_of(&e, container).to_string()
            );
        }
    }

    #[test]
    fn a_repeated_line_is_the_same_as_one_written_whole() {
        let base = event(Action::Log, 0);
        // One listener's events share its container, as the engine's do.
        let container = c1();
        let getppid = || SyscallEvent {
            nr: 110,
            location: Location::new(syscalls::locate(libseccomp_sys::SCMP_ARCH_X86_64, 110, 0)),
            capture: None,
            ..base
        };
        let at = UnixNanos;
        let reading = |comm: &str| {
            let process = Process {
                comm: Some(comm.into()),
                exe: Some("/bin/sh".into()),
                cwd: None,
            };
            (
                Known::new(7, 0, std::time::Instant::now(), process.clone()),
                process,
            )
        };
        let (first, first_process) = reading("loop");
        let (again, again_process) = reading("renamed");
        let unknown = unknown();
        let other_container = Arc::new(Container {
            container_id: "c2".into(),
            ..(*container).clone()
        });
        let other_call = || SyscallEvent {
            args: [9, 2, 3, 4, 5, 6],
            pid: 8,
            ..getppid()
        };
        // Each differs from the line before in one thing the copied part holds, or in none.
        let lines: [(SyscallEvent, &Arc<Container>, &Known, &Process); 8] = [
            (getppid(), &container, &first, &first_process),
            (
                SyscallEvent {
                    time: at(1_700_000_000_000_001_000),
                    ..getppid()
                },
                &container,
                &first,
                &first_process,
            ),
            (
                SyscallEvent {
                    time: at(1_700_000_001_000_002_000),
                    ..getppid()
                },
                &container,
                &first,
                &first_process,
            ),
            (
                SyscallEvent {
                    pid: 8,
                    ..getppid()
                },
                &container,
                &first,
                &first_process,
            ),
            (other_call(), &container, &first, &first_process),
            (other_call(), &container, &again, &again_process),
            (other_call(), &container, &unknown, &Process::default()),
            (
                other_call(),
                &other_container,
                &unknown,
                &Process::default(),
            ),
        ];
        let mut cache = LineCache::default();
        for (e, container, known, process) in lines {
            let mut line = Vec::new();
            e.write_json(container, &mut line, &mut cache, known, None);
            let whole = serde_json::to_value(e.line(container, process))
                .unwrap()
                .to_string();
            assert_eq!(String::from_utf8(line).unwrap(), whole);
        }
    }

    #[test]
    fn captured_strings_make_path_call_and_unread() {
        let mut pool = crate::capture::CapturePool::default();
        let container = c1();
        let base = event(Action::Deny, 1);
        let at_fdcwd = (-100i64).cast_unsigned();
        let path = b"rel/\xff\0";
        let args = [at_fdcwd, 0, 0o777, 0, 0, 0];
        let mkdirat = syscalls::numbers("mkdirat")[0];
        let mut relative = args;
        relative[1] = path.as_ptr() as u64;
        let e = SyscallEvent {
            nr: 258,
            location: Location::new(Some(mkdirat)),
            args: relative,
            capture: pool.capture_own(&relative, Some(mkdirat)),
            ..base
        };
        let process = Process {
            comm: Some("mk\"dir".into()),
            exe: Some("/bin/busybox".into()),
            cwd: Some("/tmp".into()),
        };
        let known = Known::new(7, 0, std::time::Instant::now(), process.clone());
        let mut line = Vec::new();
        e.write_json(
            &container,
            &mut line,
            &mut LineCache::default(),
            &known,
            Some("/tmp"),
        );
        let v = serde_json::to_value(e.line(&container, &process)).unwrap();
        assert_eq!(String::from_utf8(line).unwrap(), v.to_string());
        assert_eq!(v["path"], "rel/\\xff", "{v}");
        assert_eq!(v["call"], "mkdirat(AT_FDCWD, \"rel/\\xff\", 0777)", "{v}");
        assert_eq!((&v["comm"], &v["cwd"]), (&json!("mk\"dir"), &json!("/tmp")));
        assert!(v.get("unread").is_none(), "{v}");

        // Unmapped: the line says so, and the direct writer prints the same bytes.
        let mut unmapped = args;
        unmapped[1] = 8;
        let base = event(Action::Deny, 1);
        let e = SyscallEvent {
            location: Location::new(Some(mkdirat)),
            args: unmapped,
            capture: pool.capture_own(&unmapped, Some(mkdirat)),
            ..base
        };
        let mut line = Vec::new();
        e.write_json(
            &container,
            &mut line,
            &mut LineCache::default(),
            &unknown(),
            None,
        );
        let v = json_of(&e, &container);
        assert_eq!(String::from_utf8(line).unwrap(), v.to_string());
        assert_eq!(v["unread"]["path"], "unmapped memory (EFAULT)", "{v}");
        assert!(v.get("path").is_none(), "{v}");
        assert!(
            v["call"]
                .as_str()
                .unwrap()
                .starts_with("mkdirat(AT_FDCWD, 0x8 /* unreadable"),
            "{v}"
        );
    }

    #[test]
    fn text_reads_like_strace() {
        let line = event(Action::Deny, 13).to_text(&c1(), &Process::default());
        assert!(
            line.contains("deny  mkdir(0x1, 02) = -1 EACCES (rule no-mkdir) pid=7 container=c1"),
            "{line}"
        );
    }

    #[test]
    fn multiplexed_calls_say_how_they_came() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let e = SyscallEvent {
            audit_arch: libseccomp_sys::SCMP_ARCH_X86,
            nr: 102,
            location: Location::new(syscalls::locate(libseccomp_sys::SCMP_ARCH_X86, 102, 1)),
            ..event(Action::Deny, 13)
        };
        let container = c1();
        let v = json_of(&e, &container);
        assert_eq!(
            (&v["syscall"], &v["arch"], &v["via"]),
            (&json!("socket"), &json!("x86"), &json!("socketcall"))
        );
        assert_eq!(v["nr"], 102);
        let text = e.to_text(&container, &Process::default());
        assert!(text.ends_with(" via=socketcall"), "{text}");
        assert!(json_of(&event(Action::Deny, 13), &container)
            .get("via")
            .is_none());
    }

    /// An output the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Queues `count` events numbered by their first argument through one listener's
    /// queue of at most `capacity`, closes it, and returns the lines written and the drops.
    fn through_a_queue(capacity: usize, count: u64) -> (Vec<Value>, u64) {
        let dropped = IntCounter::new("d", "d").unwrap();
        let out = Shared::default();
        let (sink, writer) = EventWriter::spawn(
            LogFormat::Json,
            Box::new(out.clone()),
            capacity,
            dropped.clone(),
        );
        let (mut events, end) = sink.queue();
        sink.open(1, end, c1(), true);
        for n in 0..count {
            let mut e = event(Action::Log, 0);
            e.args[0] = n;
            events.emit(e);
        }
        sink.close(1, "done");
        writer.flush_and_stop();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines = text.lines().map(|l| serde_json::from_str(l).unwrap());
        (lines.collect(), dropped.get())
    }

    /// The numbers of the syscall lines, between the listener's first and last line.
    fn numbers(lines: &[Value]) -> Vec<u64> {
        assert_eq!(lines.first().unwrap()["event"], "listener_added");
        assert_eq!(lines.last().unwrap()["event"], "listener_removed");
        assert_eq!(lines.last().unwrap()["reason"], "done");
        let calls = &lines[1..lines.len() - 1];
        calls
            .iter()
            .map(|l| l["args"][0].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_growing_queue_keeps_every_event_in_order() {
        // Far more than the first queue holds, queued faster than the writer polls: the
        // worker moves through several larger queues, and the writer follows in order.
        let (lines, dropped) = through_a_queue(64 * 1024, 20_000);
        assert_eq!(dropped, 0);
        assert_eq!(numbers(&lines), (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (lines, dropped) = through_a_queue(100, 1000);
        let written = numbers(&lines);
        assert!(dropped > 0);
        assert_eq!(written.len() as u64 + dropped, 1000);
        // What was written is in the order it was queued.
        assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    }
}
