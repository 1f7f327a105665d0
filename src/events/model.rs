//! The event model: what the writer prints, and the one typed form of a syscall line that the log, `/status` and `switchboard status` share.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::capture::Captured;
use crate::container::Container;
use crate::policy::Action;

/// Output format of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// One line per event, for people.
    Text,
}

/// A wall time in nanoseconds since the Unix epoch: eight bytes to queue, and its second
/// and microseconds are a division away when the writer formats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    pub fn system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }
}

impl From<SystemTime> for UnixNanos {
    /// Times before 1970 are 1970; times after 2554 are 2554.
    fn from(time: SystemTime) -> UnixNanos {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        UnixNanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Where a syscall sits in the tables (arch index, slot), in four bytes instead of an
/// `Option<(usize, usize)>`'s 24: every byte of an event is written and read once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location(u32);

impl Location {
    const NONE: u32 = u32::MAX;

    pub fn new(location: Option<(usize, usize)>) -> Location {
        match location {
            // Arch tables are a handful and slots below 2^16 (as the metrics' keys assume).
            Some((arch, slot)) if arch < 0xffff && slot <= 0xffff =>
            {
                #[allow(clippy::cast_possible_truncation, reason = "checked above")]
                Location((arch as u32) << 16 | slot as u32)
            }
            _ => Location(Self::NONE),
        }
    }

    pub fn get(self) -> Option<(usize, usize)> {
        (self.0 != Self::NONE).then_some(((self.0 >> 16) as usize, (self.0 & 0xffff) as usize))
    }
}

/// One decided syscall. Built on the notification path, so it holds no heap data of its
/// own: its strings ride in a pooled buffer, the writer reads the program, and the
/// container is its listener's queue's. Two cache lines, aligned: each line a slot of the
/// queue touches is written by the worker and read by the writer per call.
#[derive(Debug)]
#[repr(align(64))]
pub struct SyscallEvent {
    pub time: UnixNanos,
    pub pid: u32,
    pub audit_arch: u32,
    pub nr: i32,
    pub location: Location,
    pub args: [u64; 6],
    pub rule: Option<&'static str>,
    pub action: Action,
    pub errno: i32,
    /// The string arguments, read and fenced before the answer; None for calls without any.
    pub capture: Option<Captured>,
    /// The caller's instruction pointer: with the pid, it tells the writer whether what it
    /// read of the program before still holds.
    pub ip: u64,
}

impl SyscallEvent {
    pub fn location(&self) -> Option<(usize, usize)> {
        self.location.get()
    }
}

// The queue's slot: a third line per event costs the worker a miss on every call.
const _: () = assert!(std::mem::size_of::<SyscallEvent>() == 128);

/// What `/proc` said of the calling process when the writer got to the event.
#[derive(Debug, Default, Clone)]
pub struct Process {
    pub comm: Option<String>,
    pub exe: Option<String>,
    /// Only read for calls whose path is relative.
    pub cwd: Option<String>,
}

/// What the writer prints of a listener's life; its syscalls come through its own queue.
#[derive(Debug)]
pub enum Event {
    ListenerAdded {
        time: SystemTime,
        container: Arc<Container>,
        sync_wakeup: bool,
    },
    ListenerRemoved {
        time: SystemTime,
        container: Arc<Container>,
        reason: &'static str,
    },
}

/// The `event` field of a syscall line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyscallKind {
    Syscall,
}

/// A syscall event as the JSON log prints it, `/status` serves it and `switchboard status`
/// reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyscallLine {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    pub event: SyscallKind,
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub pid: u32,
    pub syscall: String,
    /// `seccomp_data.nr` as the kernel reported it.
    pub nr: i32,
    pub arch: String,
    pub args: [u64; 6],
    /// The deciding rule; None for the policy's default.
    pub rule: Option<String>,
    pub action: Action,
    pub errno: i32,
    /// The multiplexer (`socketcall`, `ipc`) a call came through; only such calls carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The call as strace prints it, e.g. `mkdir("/tmp/x", 0777)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The first path argument as passed (non-UTF-8 bytes as `\xNN`, `\` doubled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The second path argument (rename's and link's new name, mount's target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path2: Option<String>,
    /// `execve`'s arguments, at most `capture::ARGV_MAX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Why a string argument is missing or partial, by field (`path`, `path2`, `argv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<std::collections::BTreeMap<String, String>>,
    /// The caller's working directory, beside a relative path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::Location;

    #[test]
    fn a_location_survives_packing() {
        for location in [None, Some((0, 0)), Some((0, 83)), Some((3, 0xffff))] {
            assert_eq!(Location::new(location).get(), location);
        }
    }
}
