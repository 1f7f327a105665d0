//! `switchboard run`: the agent's engine for one plain process, no root or container needed.

use std::ffi::{CString, OsString};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgrp, setpgid, ForkResult, Pid};

use crate::container::Container;
use crate::events::{EventWriter, LogFormat};
use crate::handoff;
use crate::kill::{ProcessGroup, Scope};
use crate::metrics::{ListenerStats, Metrics};
use crate::notify::{self, Engine};
use crate::policy::Policy;
use crate::sys::{self, Listener};

/// How `run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub policy: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub log_format: LogFormat,
    pub command: Vec<OsString>,
}

/// Runs the command under the policy; returns the exit status to leave with.
pub fn run(config: RunConfig) -> anyhow::Result<i32> {
    notify::ensure_kernel_structs_fit()?;
    let policy = Policy::load_or_default(config.policy.as_deref())?;
    // The policy parser has refused the handover syscalls already (shared/src/policy.rs).
    let names = policy.named_syscalls();
    let filter = build_filter(&names)?;
    let (child, listener, go) = start(filter, &config.command, config.agent.is_some())?;
    let Some(listener) = listener else {
        // The child failed before handing over; it said why on stderr.
        let status = wait_status(child);
        reclaim_terminal(child);
        return status;
    };
    let container = plain_container(child);

    match &config.agent {
        Some(socket) => {
            // The child runs CMD only on our word that the agent took the listener: under
            // a filter nobody answers, its flagged calls would fail with ENOSYS.
            if let Err(e) = handoff::hand_to_agent(socket, &container, listener, None) {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = wait_status(child);
                reclaim_terminal(child);
                return Err(e.context("the command was not run"));
            }
            nix::unistd::write(&go, b"G").context("telling the command to start")?;
            drop(go);
            let status = wait_status(child);
            reclaim_terminal(child);
            status
        }
        None => {
            drop(go);
            serve_here(&config, policy, listener, container, child)
        }
    }
}

/// The container a plain command is served as.
pub(crate) fn plain_container(child: Pid) -> Container {
    Container {
        container_id: format!("run-{child}"),
        init_pid: child.as_raw(),
        bundle: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        ..Container::default()
    }
}

/// Forks `command` in a process group of its own under `filter`; returns the child, the
/// listener it handed over (None: it failed first, and said why on stderr) and our end of
/// the handover socket. With `wait_for_go` the child execs only once `G` is written there;
/// otherwise as soon as the socket is closed or not.
pub(crate) fn start(
    filter: ScmpFilterContext,
    command: &[OsString],
    wait_for_go: bool,
) -> anyhow::Result<(Pid, Option<Listener>, OwnedFd)> {
    let command = command
        .iter()
        .map(|arg| CString::new(arg.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("the command contains a NUL byte")?;
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("creating the handover socket")?;

    let our_group = getpgrp();
    let child = match sys::fork_single_threaded().context("fork")? {
        ForkResult::Child => {
            drop(parent_end);
            lead_own_group(our_group);
            child_main(&filter, child_end, &command, wait_for_go)
        }
        ForkResult::Parent { child } => child,
    };
    // Both sides set the group, so it exists whichever runs first; once the child has
    // exec'd this fails with EACCES, and by then the child set it itself.
    let _ = setpgid(child, child);
    drop(child_end);
    drop(filter);
    // Terminal signals reach the child too; the parent must outlive it to keep answering.
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        sys::ignore_signal(sig).context("ignoring terminal signals")?;
    }

    let (_, listener) = handoff::receive_listener(parent_end.as_fd(), &mut [0u8; 1], None)?;
    Ok((child, listener, parent_end))
}

fn build_filter(names: &[String]) -> anyhow::Result<ScmpFilterContext> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Allow).context("creating the filter")?;
    for name in names {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            tracing::warn!(syscall = %name, "not a syscall on this arch; not flagged");
            continue;
        };
        if let Err(e) = filter.add_rule(ScmpAction::Notify, syscall) {
            tracing::warn!(syscall = %name, error = %e, "cannot flag this syscall here; skipped");
        }
    }
    Ok(filter)
}

/// In the child: lead a process group of its own, which a kill rule ends as a whole (there
/// is no container), and take the terminal's foreground from `parent_group` if it had it,
/// so the command can still read from the terminal.
fn lead_own_group(parent_group: Pid) {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    if sys::foreground_group() == Some(parent_group) {
        hand_terminal_to(getpgrp());
    }
}

fn hand_terminal_to(group: Pid) {
    // A background group changing the foreground gets SIGTTOU unless it ignores it.
    let _ = sys::ignore_signal(Signal::SIGTTOU);
    let _ = sys::set_foreground_group(group);
    let _ = sys::default_signal(Signal::SIGTTOU);
}

/// Gives the terminal's foreground back to our group if the command's group has it.
pub(crate) fn reclaim_terminal(child: Pid) {
    if sys::foreground_group() == Some(child) {
        hand_terminal_to(getpgrp());
    }
}

/// In the child: install the filter, hand the listener to the parent, exec.
/// `wait_for_go`: with `--agent`, wait until the parent has handed the listener over.
fn child_main(
    filter: &ScmpFilterContext,
    to_parent: OwnedFd,
    command: &[CString],
    wait_for_go: bool,
) -> ! {
    let fail = |what: &str, err: &dyn std::fmt::Display| -> ! {
        eprintln!("switchboard run: {what}: {err}");
        std::process::exit(127)
    };
    if let Err(e) = filter.load() {
        fail("installing the seccomp filter", &e);
    }
    let listener = match filter.get_notify_fd() {
        Ok(fd) => fd,
        Err(e) => fail("getting the listener", &e),
    };
    let fds = [listener];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"L")];
    if let Err(e) = sendmsg::<()>(to_parent.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
        fail("handing the listener over", &e);
    }
    // The listener must not stay open in the child: the parent owns it now.
    let _ = nix::unistd::close(listener);
    if wait_for_go {
        let mut go = [0u8; 1];
        if !matches!(nix::unistd::read(&to_parent, &mut go), Ok(1) if go == *b"G") {
            // The parent says why (or was killed); nothing of CMD runs.
            std::process::exit(126);
        }
    }
    drop(to_parent);
    let err = nix::unistd::execvp(&command[0], command).unwrap_err();
    eprintln!(
        "switchboard run: cannot run {}: {err}",
        command[0].to_string_lossy()
    );
    std::process::exit(if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    })
}

fn serve_here(
    config: &RunConfig,
    policy: Policy,
    listener: Listener,
    container: Container,
    child: Pid,
) -> anyhow::Result<i32> {
    let metrics = Arc::new(Metrics::new(Duration::from_secs(3600), usize::MAX));
    let (events, writer) = EventWriter::spawn(
        config.log_format,
        Box::new(std::io::stderr()),
        64 * 1024,
        metrics.events_dropped.clone(),
    );
    let group = ProcessGroup::new(child);
    let engine = Engine::new(policy, metrics.clone(), events, true);
    let attached = engine
        .attach_scoped(listener, container, Scope::ProcessGroup(group))
        .context("starting the listener thread")?;
    let status = wait_exited(child).and_then(|()| group.reap(|| wait_status(child)));
    reclaim_terminal(child);
    // Descendants that outlive the command keep the filter alive; don't wait for them.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !attached.thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    writer.flush_and_stop();
    print_summary(&attached.stats);
    status
}

fn print_summary(stats: &ListenerStats) {
    let mut rows = stats.counts();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    eprintln!("\n{:<20} {:<6} {:>8}", "syscall", "action", "count");
    for (syscall, action, count) in rows {
        eprintln!("{syscall:<20} {:<6} {count:>8}", action.as_str());
    }
}

/// Waits until the child has ended, without reaping it: until it is reaped, its pid (the
/// pgid a kill rule signals) cannot be reused.
pub(crate) fn wait_exited(child: Pid) -> anyhow::Result<()> {
    loop {
        match waitid(Id::Pid(child), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the command"),
        }
    }
}

/// Waits for the child and turns its end into an exit status: its code, or 128+signal.
pub(crate) fn wait_status(child: Pid) -> anyhow::Result<i32> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::zombie_processes, reason = "wait_status reaps it by pid")]
    fn status_of(script: &str) -> i32 {
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        wait_status(Pid::from_raw(child.id().cast_signed())).unwrap()
    }

    #[test]
    fn exit_status_is_the_code_or_128_plus_the_signal() {
        assert_eq!(status_of("exit 3"), 3);
        assert_eq!(status_of("kill -9 $$"), 128 + 9);
    }

    #[test]
    fn unknown_names_are_skipped_not_fatal() {
        let filter = build_filter(&["mkdir".into(), "no_such_call".into()]).unwrap();
        let program = crate::record::export(&filter).unwrap();
        assert!(program.iter().any(|insn| insn
            .returns()
            .is_some_and(|ret| ret & crate::bpf::RET_ACTION == crate::bpf::RET_USER_NOTIF)));
    }
}
