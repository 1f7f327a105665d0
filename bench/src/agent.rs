//! A `switchboard agent` child process for rows that measure the real agent, and what /proc says about it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use switchboard::container::Container;
use switchboard::handoff;
use switchboard::sys::Listener;

use crate::SETUP_TIMEOUT;

/// A `switchboard agent` child process with its own socket; stopped on drop.
pub struct AgentProcess {
    pub child: Child,
    pub socket: PathBuf,
    /// The file its stdout, the event log, goes to; `None` for `/dev/null`.
    pub events: Option<PathBuf>,
}

impl AgentProcess {
    pub fn start(
        exe: &Path,
        dir: &Path,
        tag: &str,
        policy: &Path,
        sync: bool,
        extra_args: &[String],
        events: Option<&Path>,
    ) -> anyhow::Result<AgentProcess> {
        let socket = dir.join(format!("{tag}.sock"));
        let log_path = dir.join(format!("{tag}.log"));
        let _ = std::fs::remove_file(&socket);
        let mut command = Command::new(exe);
        command
            .arg("agent")
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(policy)
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"]);
        if !sync {
            command.arg("--no-sync-wakeup");
        }
        let uid = nix::unistd::getuid();
        if !uid.is_root() {
            command.arg("--allow-uid").arg(uid.to_string());
        }
        command.args(extra_args);
        let stdout = match events {
            Some(path) => Stdio::from(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&log_path).context("creating the agent's log")?)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut agent = AgentProcess {
            child,
            socket,
            events: events.map(Path::to_path_buf),
        };
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while !agent.socket.exists() {
            if let Some(status) = agent.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the agent exited ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("the agent did not bind {}", agent.socket.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(agent)
    }

    /// The process that serves listeners (the deciding child of the holding process), whose
    /// memory, threads and limits the tables report.
    pub fn pid(&self) -> u32 {
        self.decider()
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(self.child.id())
    }

    /// The agent's deciding process, the child of the holding process that serves listeners.
    pub fn decider(&self) -> Option<i32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .find_map(|p| p.parse().ok())
    }

    /// Threads serving a listener: the engine names them `listener-N`. Counted in the agent's
    /// whole process tree, so a layout that serves from child processes counts too.
    pub fn listener_threads(&self) -> usize {
        crate::counters::process_tree(self.pid())
            .into_iter()
            .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("listener-"))
            .count()
    }

    /// Waits until exactly `n` listeners are being served.
    pub fn wait_for_listeners(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let now = self.listener_threads();
            if now == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent serves {now} listeners, expected {n}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id().cast_signed());
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Memory only this process maps (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup), in KiB.
pub fn private_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .filter(|line| line.starts_with("Private_"))
        .map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The soft RLIMIT_NOFILE of a process, from /proc/PID/limits.
pub fn open_file_soft_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Sends a listener to an agent as a runtime does over `listenerPath`.
pub fn hand_to_agent(socket: &Path, pid: i32, listener: Listener) -> anyhow::Result<()> {
    let container = Container {
        container_id: format!("bench-{pid}"),
        init_pid: pid,
        bundle: "/".into(),
        ..Container::default()
    };
    handoff::hand_to_agent(
        socket,
        &container,
        listener,
        Some(Instant::now() + SETUP_TIMEOUT),
    )
}
