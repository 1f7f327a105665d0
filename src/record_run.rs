//! `switchboard record`: runs a plain command with every syscall but the handover ones notified and allowed, and writes the profile it needs.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};

use crate::events::{EventWriter, LogFormat};
use crate::handover;
use crate::kill::{ProcessGroup, Scope};
use crate::metrics::Metrics;
use crate::notify::{self, Engine};
use crate::policy::{errno_from_name, Policy};
use crate::profile_out;
use crate::record::{OriginalProfile, RecordAction, RECORD_VERSION};
use crate::recording::{Recording, Recordings};
use crate::run;
use crate::syscalls;

/// How `record` was asked to run.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Where the profile goes.
    pub output: PathBuf,
    /// What the profile's default answers (`defaultErrnoRet`).
    pub errno: u32,
    /// Keep small argument values and write conditions for them.
    pub args: bool,
    pub command: Vec<OsString>,
}

/// `--default-errno`: a name (`EPERM`) or a number from 1 to 4095.
pub fn parse_errno(text: &str) -> Result<u32, String> {
    let errno = match text.parse::<u32>() {
        Ok(n) => Some(n),
        Err(_) => errno_from_name(text).and_then(|n| u32::try_from(n).ok()),
    };
    errno
        .filter(|n| (1..=4095).contains(n))
        .ok_or_else(|| format!("{text:?} is not an errno name or a number from 1 to 4095"))
}

/// Every syscall of this host's native table that a listener may be told of.
fn recorded_names() -> Vec<&'static str> {
    (0..syscalls::MAX_NR)
        .map(|nr| syscalls::name(0, nr))
        .filter(|name| *name != "?" && handover::reason(name).is_none())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn recording_filter() -> anyhow::Result<ScmpFilterContext> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Allow).context("creating the filter")?;
    for name in recorded_names() {
        // Names this libseccomp lists but cannot resolve back are not flaggable here.
        if let Ok(syscall) = ScmpSyscall::from_name(name) {
            let _ = filter.add_rule(ScmpAction::Notify, syscall);
        }
    }
    Ok(filter)
}

/// Runs the command, writes the profile, prints the summary; returns the command's exit status.
pub fn record(config: RecordConfig) -> anyhow::Result<i32> {
    notify::ensure_kernel_structs_fit()?;
    let policy = Policy::parse("default: allow\nrules: []\n", "switchboard record")?;
    let (child, listener, _) = run::start(recording_filter()?, &config.command, false)?;
    let Some(listener) = listener else {
        let status = run::wait_status(child);
        run::reclaim_terminal(child);
        return status;
    };
    let mut container = run::plain_container(child);
    container.record = Some(Arc::new(OriginalProfile {
        version: RECORD_VERSION,
        default_action: RecordAction::Allow,
        default_errno_ret: None,
        architectures: Vec::new(),
        rules: Vec::new(),
        notify: BTreeSet::new(),
        recording: true,
    }));
    let metrics = Arc::new(Metrics::new(Duration::from_secs(3600), usize::MAX));
    // Everything is allowed, so the only events are the listener's own.
    let (events, writer) = EventWriter::spawn(
        LogFormat::Text,
        Box::new(std::io::sink()),
        1024,
        metrics.events_dropped.clone(),
    );
    let engine = Engine::new(policy, metrics, events, true);
    let recordings = Recordings::new(None, config.args, config.errno);
    engine.record_into(recordings.clone());
    let group = ProcessGroup::new(child);
    let attached = engine
        .attach_scoped(listener, container, Scope::ProcessGroup(group))
        .context("starting the listener thread")?;
    let status = run::wait_exited(child).and_then(|()| group.reap(|| run::wait_status(child)));
    run::reclaim_terminal(child);
    // The recording is complete when every task that holds the filter is gone: descendants
    // that outlive the command are part of the workload.
    let said = Instant::now() + Duration::from_secs(1);
    let mut waiting_said = false;
    while !attached.thread.is_finished() {
        if !waiting_said && Instant::now() > said {
            eprintln!("switchboard record: waiting for the command's descendants to exit");
            waiting_said = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = attached.thread.join();
    writer.flush_and_stop();
    let mut recording = Recording::default();
    for finished in recordings.take_finished() {
        recording.merge(finished);
    }
    profile_out::write(&config.output, &recording, config.errno)?;
    eprint!("{}", summary(&recording, &config));
    status
}

fn summary(recording: &Recording, config: &RecordConfig) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<(&String, &u64)> = recording.syscalls.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = format!("\n{:<20} {:>8}  allowed\n", "syscall", "count");
    for (name, count) in rows {
        let allowed = recording.args.get(name).map_or_else(
            || "any arguments".to_string(),
            |a| {
                let values: Vec<String> = a.values.iter().map(|v| format!("{v:#x}")).collect();
                format!("arg{} in {{{}}}", a.index, values.join(", "))
            },
        );
        let _ = writeln!(out, "{name:<20} {count:>8}  {allowed}");
    }
    let _ = writeln!(
        out,
        "switchboard record: wrote {}: {} syscalls seen; {} that runtimes make after loading the filter in a rule of their own; the rest fail with errno {}",
        config.output.display(),
        recording.syscalls.len(),
        profile_out::runtime_rule().len(),
        config.errno
    );
    out
}

/// `switchboard record --diff OLD NEW`: what NEW adds to and removes from OLD.
pub fn diff(old: &std::path::Path, new: &std::path::Path) -> anyhow::Result<String> {
    Ok(profile_out::diff(
        &profile_out::read(old)?,
        &profile_out::read(new)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_by_name_or_number() {
        assert_eq!(parse_errno("EPERM"), Ok(1));
        assert_eq!(parse_errno("38"), Ok(38));
        assert!(parse_errno("0").is_err() && parse_errno("EWHAT").is_err());
    }

    #[test]
    fn the_handover_is_never_notified() {
        let names = recorded_names();
        assert!(names.contains(&"execve") && names.contains(&"mkdir"));
        assert!(!names.contains(&"write") && !names.contains(&"sendmsg"));
    }
}
