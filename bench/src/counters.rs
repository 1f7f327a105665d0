//! Per-thread counters from /proc: the CPU time (schedstat, ns) and context switches of the threads serving a workload, by role.

use std::collections::BTreeMap;

use serde::Serialize;

/// The role of a thread, from the name the engine or the bench gives it.
fn role(comm: &str) -> &'static str {
    match comm {
        // Row 3's bare loop is the floor's worker.
        c if c.starts_with("listener-") || c == "bench-floor" => "worker",
        "events" => "writer",
        _ => "other",
    }
}

/// What the threads of one role did over a measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ThreadUsage {
    /// On-CPU time, ns (schedstat).
    pub cpu_ns: u64,
    /// Switches the thread asked for (it blocked or slept).
    pub voluntary: u64,
    /// Switches the scheduler imposed (it was preempted).
    pub involuntary: u64,
}

/// Thread usage by role over a measurement; empty when nothing was observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage(pub BTreeMap<&'static str, ThreadUsage>);

impl Usage {
    /// CPU time of every thread but the workload's, ns.
    pub fn serving_cpu_ns(&self) -> u64 {
        self.0
            .iter()
            .filter(|(role, _)| **role != "workload")
            .map(|(_, usage)| usage.cpu_ns)
            .sum()
    }

    /// Adds another stretch of the same threads' usage (the turns of an alternating run).
    pub fn add(&mut self, more: &Usage) {
        for (role, usage) in &more.0 {
            let sum = self.0.entry(role).or_default();
            sum.cpu_ns += usage.cpu_ns;
            sum.voluntary += usage.voluntary;
            sum.involuntary += usage.involuntary;
        }
    }
}

/// `pid` and its descendants: an agent that serves listeners from child processes is
/// observed whole.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    tree
}

/// Every thread of a process tree at one moment, by thread id.
pub struct Snapshot(BTreeMap<u64, (&'static str, ThreadUsage)>);

impl Snapshot {
    /// Reads /proc/PID/task of each of `pids` (roles by thread name) and of `workload` (role
    /// `workload`); threads that end meanwhile are left out, and so is the calling thread:
    /// the bench reading counters serves nobody.
    pub fn take(pids: &[u32], workload: &[u32]) -> Snapshot {
        let mut threads = BTreeMap::new();
        let me = u64::from(nix::unistd::gettid().as_raw().cast_unsigned());
        for pid in pids {
            Self::read_process(*pid, None, me, &mut threads);
        }
        for pid in workload {
            Self::read_process(*pid, Some("workload"), me, &mut threads);
        }
        Snapshot(threads)
    }

    fn read_process(
        pid: u32,
        named: Option<&'static str>,
        skip: u64,
        threads: &mut BTreeMap<u64, (&'static str, ThreadUsage)>,
    ) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if tid == skip {
                continue;
            }
            let dir = task.path();
            let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
            let (Some(comm), Some(schedstat), Some(status)) =
                (read("comm"), read("schedstat"), read("status"))
            else {
                continue;
            };
            let field = |name: &str| {
                status.lines().find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(':')?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            };
            let usage = ThreadUsage {
                cpu_ns: schedstat
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse().ok())
                    .unwrap_or(0),
                voluntary: field("voluntary_ctxt_switches").unwrap_or(0),
                involuntary: field("nonvoluntary_ctxt_switches").unwrap_or(0),
            };
            threads.insert(tid, (named.unwrap_or_else(|| role(comm.trim())), usage));
        }
    }

    /// What each role did between `before` and this snapshot; threads born since count from zero.
    pub fn since(&self, before: &Snapshot) -> Usage {
        let mut by_role: BTreeMap<&'static str, ThreadUsage> = BTreeMap::new();
        for (tid, (role, now)) in &self.0 {
            let then = before.0.get(tid).map(|(_, u)| *u).unwrap_or_default();
            let sum = by_role.entry(role).or_default();
            sum.cpu_ns += now.cpu_ns.saturating_sub(then.cpu_ns);
            sum.voluntary += now.voluntary.saturating_sub(then.voluntary);
            sum.involuntary += now.involuntary.saturating_sub(then.involuntary);
        }
        Usage(by_role)
    }
}

/// On-CPU time of every thread on the machine outside the bench's own process tree, by
/// thread id: kernel threads included. A measurement that shares its CPUs with someone
/// else's burst (this VM's `kdamond` takes 30–45 ms of CPU every ~5 s) measures the burst.
pub struct Others(BTreeMap<u64, u64>);

impl Others {
    pub fn take(ours: &[u32]) -> Others {
        let mut threads = BTreeMap::new();
        let Ok(processes) = std::fs::read_dir("/proc") else {
            return Others(threads);
        };
        for process in processes.flatten() {
            let Some(pid) = process
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if ours.contains(&pid) {
                continue;
            }
            let Ok(tasks) = std::fs::read_dir(process.path().join("task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let tid = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<u64>().ok());
                let cpu_ns = std::fs::read_to_string(task.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
                if let (Some(tid), Some(cpu_ns)) = (tid, cpu_ns) {
                    threads.insert(tid, cpu_ns);
                }
            }
        }
        Others(threads)
    }

    /// Their CPU time between `before` and this snapshot; threads born since count whole.
    pub fn since(&self, before: &Others) -> OthersCpu {
        let mut cpu = OthersCpu::default();
        for (tid, now) in &self.0 {
            let used = now.saturating_sub(before.0.get(tid).copied().unwrap_or(0));
            cpu.total_ns += used;
            cpu.busiest_ns = cpu.busiest_ns.max(used);
        }
        cpu
    }
}

/// What tasks outside the bench used of the machine during one measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct OthersCpu {
    pub total_ns: u64,
    /// The most any single one of those threads used: a burst shows here, background
    /// spread over many threads does not.
    pub busiest_ns: u64,
}

impl OthersCpu {
    /// Adds another stretch (a turn of an alternating run): the busiest is the busiest of
    /// any one stretch, so a burst split across two turns shows with at least half of it.
    pub fn add(&mut self, more: OthersCpu) {
        self.total_ns += more.total_ns;
        self.busiest_ns = self.busiest_ns.max(more.busiest_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's on-CPU time so far, ns.
    fn own_cpu_ns() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        stat.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    fn serving_cpu_leaves_the_workload_out() {
        let cpu = |cpu_ns| ThreadUsage {
            cpu_ns,
            ..ThreadUsage::default()
        };
        let usage = Usage(BTreeMap::from([
            ("worker", cpu(100)),
            ("writer", cpu(20)),
            ("other", cpu(3)),
            ("workload", cpu(5000)),
        ]));
        assert_eq!(usage.serving_cpu_ns(), 123);
    }

    #[test]
    fn a_busy_thread_is_seen_by_role() {
        let pid = [std::process::id()];
        let before = Snapshot::take(&pid, &[]);
        let (spun, wait_for_spin) = std::sync::mpsc::channel();
        let (done, wait_for_done) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("listener-test".into())
            .spawn(move || {
                // CPU time, not wall time: on a loaded machine a thread may wait for its CPU.
                let start = own_cpu_ns();
                while own_cpu_ns() - start < 20_000_000 {
                    std::hint::black_box(0);
                }
                spun.send(()).unwrap();
                let _ = wait_for_done.recv();
            })
            .unwrap();
        wait_for_spin.recv().unwrap();
        let usage = Snapshot::take(&pid, &[]).since(&before);
        drop(done);
        worker.join().unwrap();
        let worker = usage.0["worker"];
        assert!(worker.cpu_ns >= 20_000_000, "{usage:?}");
        assert!(!usage.0.contains_key("writer"), "{usage:?}");
    }

    #[test]
    fn others_count_a_busy_stranger_and_not_ourselves() {
        let ours = [std::process::id()];
        let before = Others::take(&ours);
        // Ours: left out however much it spins. (Totals are not compared: tests running
        // beside this one are strangers too, and come and go.)
        let start = own_cpu_ns();
        while own_cpu_ns() - start < 30_000_000 {
            std::hint::black_box(0);
        }
        let own: Vec<u64> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let after_spin = Others::take(&ours);
        assert!(
            own.iter().all(|tid| !after_spin.0.contains_key(tid)),
            "our own threads {own:?} counted as others"
        );
        // A stranger: a process the list leaves out, spinning for 30 ms of CPU.
        let mut stranger = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let stat = format!("/proc/{}/schedstat", stranger.id());
        let cpu = || -> u64 {
            let text = std::fs::read_to_string(&stat).unwrap();
            text.split_whitespace().next().unwrap().parse().unwrap()
        };
        while cpu() < 30_000_000 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let busy = Others::take(&ours).since(&before);
        stranger.kill().unwrap();
        stranger.wait().unwrap();
        assert!(
            busy.busiest_ns >= 30_000_000,
            "{busy:?} with a 30 ms stranger"
        );
    }
}
