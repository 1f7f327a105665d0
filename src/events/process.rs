//! The calling program's `comm` and `exe` as the writer knows them: read by the worker while
//! the caller was parked (a short-lived caller is gone before the writer runs), else from
//! `/proc` now, best effort.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Process;
use crate::capture::Capture;
#[cfg(doc)]
use crate::capture::PROGRAM_FRESH;

/// How long the writer trusts what it learnt of a (pid, call site): longer than a worker
/// trusts its own reading ([`PROGRAM_FRESH`]), so a caller the worker did not read again
/// is still known here.
const FRESH: Duration = Duration::from_secs(2);
/// Callers remembered at once.
const REMEMBERED: usize = 256;

/// What the writer read of one caller, and the same as JSON members ready to copy.
pub(super) struct Known {
    pid: u32,
    /// The caller's instruction pointer: a program that exec'd (or a recycled pid) calls
    /// from elsewhere, so it does not inherit what was read of its predecessor.
    ip: u64,
    at: Instant,
    /// Which reading this is, counted over the process's life.
    reading: u64,
    pub process: Process,
    /// `,"comm":"…"`, or nothing when it could not be read.
    pub comm_json: Vec<u8>,
    /// `,"exe":"…"`, or nothing.
    pub exe_json: Vec<u8>,
}

/// The last few callers' `comm` and `exe`.
pub(super) struct ProcessCache {
    entries: Vec<Known>,
    /// The last `now` looked up with, and what was read before `now - FRESH`: compared
    /// per event, computed once per `now`.
    clock: (Instant, Option<Instant>),
    /// For an event whose reads were discarded: its caller was gone, and `/proc/PID` may
    /// already be another process.
    unknown: Known,
}

impl Default for ProcessCache {
    fn default() -> Self {
        let now = Instant::now();
        ProcessCache {
            entries: Vec::new(),
            clock: (now, now.checked_sub(FRESH)),
            unknown: Known::new(0, 0, now, Process::default()),
        }
    }
}

impl ProcessCache {
    /// The program of a caller: as its worker read it for this event, or as learnt within
    /// [`FRESH`] for the same call site, or else from `/proc` now. `now` is read once per
    /// round of events, not per event.
    pub fn lookup(&mut self, pid: u32, ip: u64, now: Instant, capture: Option<&Capture>) -> &Known {
        if capture.is_some_and(|c| c.discarded) {
            return &self.unknown;
        }
        let read_by_worker = capture.filter(|c| c.has_program());
        if self.clock.0 != now {
            self.clock = (now, now.checked_sub(FRESH));
        }
        let stale = self.clock.1;
        // From the newest: a busy caller's entry is found at once.
        let found = self
            .entries
            .iter()
            .rposition(|k| k.pid == pid && k.ip == ip && stale.is_none_or(|stale| k.at > stale));
        let index = match (read_by_worker, found) {
            (None, Some(index)) => index,
            (worker, _) => {
                let known = match worker {
                    Some(c) => Known::new(
                        pid,
                        ip,
                        now,
                        Process {
                            comm: c.comm().map(super::escaped),
                            exe: c.exe().map(super::escaped),
                            cwd: None,
                        },
                    ),
                    None => read(pid, ip, now),
                };
                self.entries.retain(|k| k.pid != pid || k.ip != ip);
                if self.entries.len() == REMEMBERED {
                    self.entries.remove(0);
                }
                self.entries.push(known);
                self.entries.len() - 1
            }
        };
        &self.entries[index]
    }
}

fn read(pid: u32, ip: u64, now: Instant) -> Known {
    let process = if pid == 0 {
        Process::default()
    } else {
        let comm = std::fs::read(format!("/proc/{pid}/comm"))
            .ok()
            .map(|mut bytes| {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                super::escaped(&bytes)
            });
        Process {
            comm,
            exe: link(pid, "exe"),
            cwd: None,
        }
    };
    Known::new(pid, ip, now, process)
}

impl Known {
    /// Tells one reading of a caller from every other: each reading gets its own.
    pub(super) fn identity(&self) -> u64 {
        self.reading
    }

    pub(super) fn new(pid: u32, ip: u64, at: Instant, process: Process) -> Known {
        let member = |key: &str, value: &Option<String>| {
            let mut json = Vec::new();
            if let Some(value) = value {
                json.extend_from_slice(key.as_bytes());
                let _ = serde_json::to_writer(&mut json, value);
            }
            json
        };
        static READINGS: AtomicU64 = AtomicU64::new(0);
        Known {
            pid,
            ip,
            at,
            reading: READINGS.fetch_add(1, Ordering::Relaxed),
            comm_json: member(",\"comm\":", &process.comm),
            exe_json: member(",\"exe\":", &process.exe),
            process,
        }
    }
}

/// The target of `/proc/PID/NAME`, escaped as text.
fn link(pid: u32, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    if pid == 0 {
        return None;
    }
    let target = std::fs::read_link(format!("/proc/{pid}/{name}")).ok()?;
    Some(super::escaped(target.as_os_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_read_from_proc_once_and_kept_as_json() {
        let mut cache = ProcessCache::default();
        let pid = std::process::id();
        let now = Instant::now();
        let known = cache.lookup(pid, 1, now, None);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(known.process.exe.as_deref(), exe.to_str());
        assert!(known.process.comm.is_some());
        let json = String::from_utf8(known.exe_json.clone()).unwrap();
        assert_eq!(
            json,
            format!(",\"exe\":{}", serde_json::to_string(&exe).unwrap())
        );
        // The same caller within FRESH is the same entry; another call site is another.
        cache.lookup(pid, 1, now + Duration::from_millis(500), None);
        assert_eq!(cache.entries.len(), 1);
        cache.lookup(pid, 2, now, None);
        assert_eq!(cache.entries.len(), 2);
        // Past FRESH, the caller is read again, in place of what was kept.
        cache.lookup(pid, 1, now + FRESH, None);
        assert_eq!(cache.entries.len(), 2);
        // Pid 0 (the caller is in no namespace the agent sees) is no program.
        assert!(cache.lookup(0, 1, now, None).comm_json.is_empty());
    }
}
