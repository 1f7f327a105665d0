//! The calling program's `comm`, `exe` and `cwd`, read from `/proc` by the writer, best effort.

use std::time::{Duration, Instant};

use super::{Process, SyscallEvent};

/// How long the writer trusts what it read of a pid: a busy caller makes many events, and
/// reading `/proc` for each would cost more than the notification.
const FRESH: Duration = Duration::from_secs(1);
/// Pids remembered at once.
const REMEMBERED: usize = 32;

/// The last few pids' `comm` and `exe`.
#[derive(Default)]
pub(super) struct ProcessCache {
    entries: Vec<(u32, Instant, Process)>,
}

impl ProcessCache {
    /// The program of an event's caller: as the worker read it while the caller was
    /// parked, or else from `/proc` now; `cwd` beside a relative path.
    pub fn describe(&mut self, e: &SyscallEvent) -> Process {
        let text = |bytes: &[u8]| {
            let mut text = String::new();
            super::escape_bytes(bytes, &mut text);
            text
        };
        match e.capture.as_ref().filter(|c| c.comm().is_some()) {
            Some(c) => Process {
                comm: c.comm().map(text),
                exe: c.exe().map(text),
                cwd: c.cwd().map(text),
            },
            None => {
                let relative = e.first_path().is_some_and(|p| !p.starts_with(b"/"));
                self.lookup(e.pid, relative)
            }
        }
    }

    /// What `/proc/PID` says now (or said within [`FRESH`]); `cwd` only when asked for, and
    /// always read afresh, since a process moves between directories often.
    pub fn lookup(&mut self, pid: u32, cwd: bool) -> Process {
        let now = Instant::now();
        let mut process = match self
            .entries
            .iter()
            .find(|(p, at, _)| *p == pid && now.duration_since(*at) < FRESH)
        {
            Some((_, _, process)) => process.clone(),
            None => {
                let process = read(pid);
                if self.entries.len() == REMEMBERED {
                    self.entries.remove(0);
                }
                self.entries.retain(|(p, _, _)| *p != pid);
                self.entries.push((pid, now, process.clone()));
                process
            }
        };
        if cwd && pid != 0 {
            process.cwd = link(pid, "cwd");
        }
        process
    }
}

fn read(pid: u32) -> Process {
    if pid == 0 {
        return Process::default();
    }
    let comm = std::fs::read(format!("/proc/{pid}/comm"))
        .ok()
        .map(|mut bytes| {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            let mut text = String::new();
            super::escape_bytes(&bytes, &mut text);
            text
        });
    Process {
        comm,
        exe: link(pid, "exe"),
        cwd: None,
    }
}

fn link(pid: u32, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::fs::read_link(format!("/proc/{pid}/{name}")).ok()?;
    let mut text = String::new();
    super::escape_bytes(target.as_os_str().as_bytes(), &mut text);
    Some(text)
}
