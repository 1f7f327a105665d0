//! Harness for Switchboard's end-to-end tests (`mod common;` in a test file).
//!
//! - [`run`] / [`spawn`]: start a bundle under runc, crun or podman with the
//!   invocation that works on the project's machines (see [`Runtime`]), always
//!   cleaning the container up.
//! - [`Agent`]: a running `switchboard agent` (this crate's binary).
//! - `/proc` probes: [`count_fds`], [`count_threads`], [`cpu_ticks`].
//!
//! The rest of the harness ([`Bundle`], [`RunOutput`], the preconditions, ...)
//! lives in the `switchboard-test-support` crate, shared with the oci-hook tests.
#![allow(dead_code)]

pub mod k8s;

pub use switchboard_test_support::*;

use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Returns false (after printing a SKIP line) when `tool` is not on PATH. Under
/// `CI=true` it panics instead: there a missing runtime is a failure, not a skip.
pub fn require_tool(tool: &str) -> bool {
    let test = thread::current().name().unwrap_or("test").to_string();
    switchboard_test_support::require_tool(&test, tool).is_some()
}

// ---------------------------------------------------------------------------
// Seccomp profiles and policies
// ---------------------------------------------------------------------------

const ARCHES: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// A profile (OCI `linux.seccomp`, also podman's `--security-opt seccomp=` format)
/// that allows everything and sends `notify` to the listener at `socket`.
pub fn notify_profile(socket: &Path, notify: &[&str], metadata: Option<&str>) -> Value {
    let mut p = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHES,
        "listenerPath": socket,
        "syscalls": [{"names": notify, "action": "SCMP_ACT_NOTIFY"}],
    });
    if let Some(m) = metadata {
        p["listenerMetadata"] = json!(m);
    }
    p
}

/// A profile without a listener that fails `syscalls` with `errno`.
pub fn errno_profile(syscalls: &[&str], errno: u32) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHES,
        "syscalls": [{"names": syscalls, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}],
    })
}

/// Policy YAML with `default` and one rule. `errno` is written only when given.
pub fn policy_yaml(
    default: &str,
    rule: &str,
    syscalls: &[&str],
    action: &str,
    errno: Option<&str>,
) -> String {
    let mut y = format!(
        "default: {default}\nrules:\n  - name: {rule}\n    syscalls: [{}]\n    action: {action}\n",
        syscalls.join(", ")
    );
    if let Some(e) = errno {
        y.push_str(&format!("    errno: {e}\n"));
    }
    y
}

// ---------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------

/// The OCI runtimes the tests drive, with the invocation that works on the
/// project's machines (Debian 12: runc 1.1.5, crun 1.8.1, podman 4.3.1, cgroups
/// in hybrid mode: v1 controllers plus cgroup2 on /sys/fs/cgroup/unified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `runc run --bundle DIR ID`
    Runc,
    /// crun 1.8 refuses hybrid cgroups ("cgroups in hybrid mode not supported, drop
    /// all controllers from cgroupv2"), whatever --cgroup-manager says. So crun runs
    /// in a private mount namespace where the cgroup2 mount is gone:
    /// `unshare -m sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' sh run --bundle DIR ID`
    /// (harmless on a pure v1 or v2 host, where there is no such mount).
    Crun,
    /// `podman --cgroup-manager=cgroupfs --events-backend=file --runtime runc run --rm
    /// --name ID --network=none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
    /// --security-opt seccomp=FILE --rootfs ROOTFS ARGS...`: runc because podman's
    /// default crun fails on hybrid cgroups; explicit ulimits because podman's default
    /// RLIMIT_NOFILE (1048576) is above this sandbox's hard limit and runc then fails
    /// with "error setting rlimit type 7: operation not permitted".
    Podman,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
            Runtime::Podman => "podman",
        }
    }

    /// [`require_tool`] for this runtime (and what its invocation needs).
    pub fn require(self) -> bool {
        match self {
            Runtime::Runc => require_tool("runc"),
            Runtime::Crun => require_tool("unshare") && require_tool("crun"),
            Runtime::Podman => require_tool("podman") && require_tool("runc"),
        }
    }

    fn crun(args: &[&str]) -> Command {
        let mut c = Command::new(tool("unshare"));
        c.args(["-m", "sh", "-c"])
            .arg(format!(
                "umount -l /sys/fs/cgroup/unified 2>/dev/null; exec {} \"$@\"",
                tool("crun").display()
            ))
            .arg("sh")
            .args(args);
        c
    }

    fn podman(args: &[&str]) -> Command {
        let mut c = podman(&tool("podman"), Path::new("runc"));
        c.args(args);
        c
    }

    /// A runtime subcommand (`kill`, `delete`, ...) for container `args`.
    fn command(self, args: &[&str]) -> Command {
        match self {
            Runtime::Runc => {
                let mut c = Command::new(tool("runc"));
                c.args(args);
                c
            }
            Runtime::Crun => Runtime::crun(args),
            Runtime::Podman => Runtime::podman(args),
        }
    }

    fn run_command(self, dir: &Path, config: &Value, id: &str) -> Command {
        let bundle = dir.to_str().unwrap();
        match self {
            Runtime::Runc | Runtime::Crun => self.command(&["run", "--bundle", bundle, id]),
            Runtime::Podman => {
                let mut c = podman_run_command(&tool("podman"), Path::new("runc"), id);
                let seccomp = &config["linux"]["seccomp"];
                if !seccomp.is_null() {
                    let file = dir.join(format!("seccomp-{id}.json"));
                    fs::write(&file, seccomp.to_string()).unwrap();
                    c.arg("--security-opt")
                        .arg(format!("seccomp={}", file.display()));
                }
                if let Some(annotations) = config["annotations"].as_object() {
                    for (k, v) in annotations {
                        c.arg("--annotation")
                            .arg(format!("{k}={}", v.as_str().unwrap_or_default()));
                    }
                }
                c.arg("--rootfs").arg(dir.join("rootfs"));
                for a in config["process"]["args"].as_array().unwrap() {
                    c.arg(a.as_str().unwrap());
                }
                c
            }
        }
    }

    /// Kills container `id` (if it exists) and removes it; quiet and best effort.
    pub fn cleanup(self, id: &str) {
        match self {
            Runtime::Podman => {
                quiet(&mut self.command(&["kill", "--signal", "KILL", id]));
                quiet(&mut self.command(&["rm", "--force", "--ignore", "--time", "0", id]));
            }
            _ => {
                quiet(&mut self.command(&["kill", id, "KILL"]));
                quiet(&mut self.command(&["delete", "--force", id]));
            }
        }
    }
}

/// Removes the container when dropped, also when a test panics.
pub struct ContainerGuard {
    pub runtime: Runtime,
    pub id: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        self.runtime.cleanup(&self.id);
    }
}
fn run_inner(
    runtime: Runtime,
    dir: &Path,
    config: &Value,
    id: &str,
    timeout: Duration,
) -> RunOutput {
    let guard = ContainerGuard {
        runtime,
        id: id.to_string(),
    };
    let start = Instant::now();
    let mut child = spawn_piped(&mut runtime.run_command(dir, config, id));
    let out = read_in_background(child.stdout.take().unwrap());
    let err = read_in_background(child.stderr.take().unwrap());
    let mut timed_out = false;
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            timed_out = true;
            runtime.cleanup(id);
            wait_timeout(&mut child, Duration::from_secs(5)).unwrap_or_else(|| {
                let _ = child.kill();
                child.wait().unwrap()
            })
        }
    };
    let elapsed = start.elapsed();
    drop(guard);
    RunOutput {
        status,
        stdout: collect_output(out),
        stderr: collect_output(err),
        elapsed,
        timed_out,
    }
}

/// Runs `bundle` as container `id` under `runtime` (stdin null, output captured) and
/// removes the container afterwards. On `timeout` the container is killed and
/// `timed_out` is set.
pub fn run(runtime: Runtime, bundle: &Bundle, id: &str, timeout: Duration) -> RunOutput {
    run_inner(runtime, bundle.path(), bundle.config(), id, timeout)
}

pub fn run_runc(bundle: &Bundle, id: &str, timeout: Duration) -> RunOutput {
    run(Runtime::Runc, bundle, id, timeout)
}

pub fn run_crun(bundle: &Bundle, id: &str, timeout: Duration) -> RunOutput {
    run(Runtime::Crun, bundle, id, timeout)
}

pub fn run_podman(bundle: &Bundle, id: &str, timeout: Duration) -> RunOutput {
    run(Runtime::Podman, bundle, id, timeout)
}

/// A container running on a background thread; killed and removed when dropped
/// before [`Background::join`].
pub struct Background {
    handle: Option<thread::JoinHandle<RunOutput>>,
    runtime: Runtime,
    id: String,
}

impl Background {
    /// Waits for the container to end (at most the timeout given to [`spawn`]).
    pub fn join(mut self) -> RunOutput {
        self.handle.take().unwrap().join().expect("runner thread")
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.runtime.cleanup(&self.id);
            let _ = h.join();
        }
    }
}

/// Like [`run`], on a background thread. The bundle must outlive the result.
pub fn spawn(runtime: Runtime, bundle: &Bundle, id: &str, timeout: Duration) -> Background {
    let (dir, config, tid) = (
        bundle.path().to_path_buf(),
        bundle.config().clone(),
        id.to_string(),
    );
    let handle = thread::spawn(move || run_inner(runtime, &dir, &config, &tid, timeout));
    Background {
        handle: Some(handle),
        runtime,
        id: id.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------

/// Starts an [`Agent`] of [`BIN`]: `switchboard agent --socket <tmp>/agent.sock
/// --metrics-addr 127.0.0.1:0 --log-format json EXTRA...`, returning once the
/// socket exists and the metrics address has been logged.
pub trait StartAgent {
    fn start(extra_args: &[&str]) -> Agent;

    /// Writes `policy` to `<tmp>/policy.yaml` and starts with `--policy` on it.
    fn with_policy(policy: &str, extra_args: &[&str]) -> Agent;
}

impl StartAgent for Agent {
    fn start(extra_args: &[&str]) -> Agent {
        Agent::start_in(Path::new(BIN), tmpdir(), extra_args)
    }

    fn with_policy(policy: &str, extra_args: &[&str]) -> Agent {
        Agent::with_policy_in(Path::new(BIN), tmpdir(), policy, extra_args)
    }
}

// ---------------------------------------------------------------------------
// /proc probes
// ---------------------------------------------------------------------------

pub fn count_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

pub fn count_threads(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends at the last ')': state is field 3,
    // utime field 14, stime field 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A copy of the binary in a fresh 0755 dir under /tmp, so that an unprivileged
/// user can execute it whatever the permissions of the target dir.
pub fn world_executable_bin() -> (tempfile::TempDir, PathBuf) {
    let dir = tmpdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("switchboard");
    fs::copy(BIN, &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// `tests/fixtures/forge_runtime.c` built into a fresh 0755 dir (so any user may run it):
/// a runtime that sends whatever state it is given with a real listener flagging mkdir and
/// mkdirat, then execs a command. None (after a SKIP line) without gcc.
pub fn forge_runtime() -> Option<(tempfile::TempDir, PathBuf)> {
    if !require_tool("gcc") {
        return None;
    }
    let dir = tmpdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("forge_runtime");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forge_runtime.c");
    let built = run_cmd(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&bin)
            .arg(&source),
        Duration::from_secs(60),
    );
    assert_eq!(built.code(), 0, "building forge_runtime: {built:?}");
    Some((dir, bin))
}

/// The agent never reported a listener as added.
pub fn assert_no_listener_added(agent: &Agent) {
    assert!(
        !agent
            .events()
            .iter()
            .any(|e| e["event"] == "listener_added"),
        "{}",
        agent.stdout_text()
    );
}
