//! What recording costs: syscall-heavy workloads alone, under `switchboard record` and under `strace -f`, side by side.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Set in the environment of this binary when it is re-run as the loop workload.
const WORKLOAD_ENV: &str = "SWITCHBOARD_BENCH_LOOP";
/// `stat("/")` + `getppid()` pairs the loop workload makes.
pub const LOOP_CALLS: u64 = 50_000;
/// Files of the directory the tar workload archives.
const TAR_FILES: usize = 2_000;
/// The target: recording's overhead over the workload alone, as a share of strace's.
const TARGET_SHARE: f64 = 0.5;

/// When this process was started as the loop workload: runs it and exits.
pub fn run_workload_if_asked() {
    let Some(calls) = std::env::var_os(WORKLOAD_ENV) else {
        return;
    };
    let calls: u64 = calls.to_str().and_then(|c| c.parse().ok()).unwrap_or(0);
    for _ in 0..calls {
        let _ = nix::sys::stat::stat("/");
        let _ = nix::unistd::getppid();
    }
    std::process::exit(0);
}

/// One workload: a program and its arguments.
struct Workload {
    name: &'static str,
    argv: Vec<OsString>,
    env: Option<(&'static str, String)>,
}

/// One row: median wall time of each way of running the workload.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub workload: &'static str,
    pub alone: Duration,
    pub recorded: Duration,
    pub straced: Duration,
}

impl Row {
    /// Recording's overhead as a share of strace's.
    pub fn share(&self) -> f64 {
        let over = |d: Duration| d.saturating_sub(self.alone).as_secs_f64();
        over(self.recorded) / over(self.straced).max(f64::EPSILON)
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time(argv: &[OsString], env: Option<&(&'static str, String)>) -> anyhow::Result<Duration> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("running {:?}", argv[0]))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{argv:?} failed: {status}");
    }
    Ok(elapsed)
}

/// A directory of [`TAR_FILES`] small files under `dir`.
fn tar_tree(dir: &Path) -> anyhow::Result<PathBuf> {
    let tree = dir.join("tree");
    for i in 0..TAR_FILES {
        let sub = tree.join(format!("d{}", i % 20));
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        std::fs::write(sub.join(format!("f{i}")), format!("file {i}\n"))
            .context("writing the tar tree")?;
    }
    Ok(tree)
}

/// Measures each workload alone, under `switchboard record` and under strace, `runs`
/// times interleaved, and returns the medians.
pub fn measure(switchboard: &Path, dir: &Path, runs: usize) -> anyhow::Result<Vec<Row>> {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("strace is not installed (scripts/install.sh installs it)")?;
    let me = std::env::current_exe().context("locating switchboard-bench")?;
    let tree = tar_tree(dir)?;
    let archive = dir.join("tree.tar");
    let workloads = [
        Workload {
            name: "stat + getppid loop",
            argv: vec![me.into()],
            env: Some((WORKLOAD_ENV, LOOP_CALLS.to_string())),
        },
        Workload {
            name: "tar of 2,000 files",
            argv: ["tar", "-cf"]
                .map(OsString::from)
                .into_iter()
                .chain([archive.into(), "-C".into(), tree.into(), ".".into()])
                .collect(),
            env: None,
        },
    ];
    let profile = dir.join("recorded.json");
    let mut rows = Vec::new();
    for workload in workloads {
        let recorded: Vec<OsString> = [switchboard.as_os_str(), "record".as_ref(), "-o".as_ref()]
            .into_iter()
            .map(OsString::from)
            .chain([profile.clone().into(), "--".into()])
            .chain(workload.argv.iter().cloned())
            .collect();
        let straced: Vec<OsString> = [strace.as_os_str(), "-f".as_ref(), "-qq".as_ref()]
            .into_iter()
            .map(OsString::from)
            .chain(["-o".into(), "/dev/null".into()])
            .chain(workload.argv.iter().cloned())
            .collect();
        let env = workload.env.as_ref();
        // One untimed round warms the page cache for all three.
        for argv in [&workload.argv, &recorded, &straced] {
            time(argv, env)?;
        }
        let (mut alone, mut rec, mut st) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            alone.push(time(&workload.argv, env)?);
            rec.push(time(&recorded, env)?);
            st.push(time(&straced, env)?);
        }
        rows.push(Row {
            workload: workload.name,
            alone: median(alone),
            recorded: median(rec),
            straced: median(st),
        });
    }
    Ok(rows)
}

/// The table, then the target per row.
pub fn markdown(rows: &[Row], runs: usize) -> String {
    use std::fmt::Write as _;
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let over = |d: Duration, alone: Duration| {
        format!("+{:.1} ms", d.saturating_sub(alone).as_secs_f64() * 1e3)
    };
    let mut out = format!(
        "\nRecording's cost: wall time of the whole command, median of {runs} interleaved runs\n\n\
         | workload | alone | `switchboard record` | `strace -f -qq -o /dev/null` | record's overhead / strace's |\n\
         |---|---:|---:|---:|---:|\n"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} ({}) | {:.2} |",
            row.workload,
            ms(row.alone),
            ms(row.recorded),
            over(row.recorded, row.alone),
            ms(row.straced),
            over(row.straced, row.alone),
            row.share()
        );
    }
    for row in rows {
        let share = row.share();
        let _ = writeln!(
            out,
            "target {}: recording costs less than {TARGET_SHARE} of strace's overhead: {share:.2} ({})",
            row.workload,
            if share < TARGET_SHARE { "met" } else { "NOT met" }
        );
    }
    out
}
