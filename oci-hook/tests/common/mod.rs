//! Harness for the hook's tests: the built binaries, fixtures, busybox bundles, a running agent, and commands with time limits.
//!
//! What both crates' tests need ([`Bundle`], [`RunOutput`], [`run_cmd`], the
//! preconditions, the agent) lives in the `switchboard-test-support` crate; this
//! module adds the hook: its binary, fixtures, runc and podman invocations.
#![allow(dead_code)]

pub use switchboard_test_support::*;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The binary under test.
pub const HOOK: &str = env!("CARGO_BIN_EXE_switchboard-oci-hook");

/// The policy of the podman and containerd tests: deny mkdir with an errno no kernel
/// path gives it (EMLINK, "Too many links"); only log chroot, which default profiles
/// allow only with CAP_SYS_CHROOT.
pub const MKDIR_EMLINK_POLICY: &str = "default: log
rules:
  - name: no-mkdir
    syscalls: [mkdir, mkdirat]
    action: deny
    errno: EMLINK
  - name: watch-chroot
    syscalls: [chroot]
    action: log
";

/// Writes the hook's configuration (real runtime, the agent's policy and socket) and a
/// wrapper script that runs the hook with it, for engines that take a runtime path
/// and pass no environment (podman, containerd's `--runc-binary`).
pub fn hook_as_runtime(agent: &Agent, real_runtime: &Path, name: &str) -> PathBuf {
    let config = agent.dir().join("oci-hook.toml");
    fs::write(
        &config,
        format!(
            "runtime = {:?}\npolicy = {:?}\nsocket = {:?}\n",
            real_runtime.display().to_string(),
            agent.policy_str(),
            agent.socket_str()
        ),
    )
    .unwrap();
    let wrapper = agent.dir().join(name);
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nSWITCHBOARD_OCI_HOOK_CONFIG='{}' exec '{HOOK}' \"$@\"\n",
            config.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// The fixture directory.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A profile with `listenerMetadata` parsed, so that comparisons do not depend on key order.
pub fn with_parsed_metadata(mut profile: Value) -> Value {
    if let Some(text) = profile["listenerMetadata"].as_str() {
        if let Ok(parsed) = serde_json::from_str::<Value>(text) {
            profile["listenerMetadata"] = parsed;
        }
    }
    profile
}

/// A config with its seccomp profile's `listenerMetadata` (which carries the record) parsed.
pub fn with_parsed_record(mut config: Value) -> Value {
    let seccomp = config["linux"]["seccomp"].take();
    config["linux"]["seccomp"] = with_parsed_metadata(seccomp);
    config
}

/// The record in a config's `linux.seccomp.listenerMetadata`.
pub fn config_record(config: &Value) -> Value {
    let metadata = config["linux"]["seccomp"]["listenerMetadata"]
        .as_str()
        .expect("listenerMetadata is a string");
    let metadata: Value = serde_json::from_str(metadata).expect("listenerMetadata is JSON");
    metadata["switchboard_original_profile"].clone()
}

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

/// The `switchboard` agent binary, built beside the hook (`cargo build --workspace`).
pub fn agent_bin(test: &str) -> Option<PathBuf> {
    let bin = Path::new(HOOK).with_file_name("switchboard");
    if bin.is_file() {
        return Some(bin);
    }
    if under_ci() {
        panic!(
            "{test}: {} is missing; build the workspace (cargo build --workspace) first",
            bin.display()
        );
    }
    eprintln!(
        "SKIP {test}: {} is missing; run `cargo build --workspace` first",
        bin.display()
    );
    None
}

/// `sb-hook-<tag>-<pid>-<n>`, unique to this test process.
pub fn unique_id(tag: &str) -> String {
    switchboard_test_support::unique_id(&format!("hook-{tag}"))
}

/// A fresh 0755 directory under /tmp (short paths: unix socket paths must fit 108 bytes).
pub fn tmpdir() -> tempfile::TempDir {
    let dir = tmpdir_with_prefix("sb-hook-");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs the hook with `args`.
pub fn hook(args: &[&str]) -> RunOutput {
    run_cmd(Command::new(HOOK).args(args), Duration::from_secs(20))
}

/// `inject --bundle BUNDLE` with the agent's policy and socket; asserts it succeeded.
pub fn inject_for(agent: &Agent, bundle: &Path, extra: &[&str]) -> RunOutput {
    let mut args = vec![
        "inject",
        "--bundle",
        bundle.to_str().unwrap(),
        "--policy",
        agent.policy_str(),
        "--socket",
        agent.socket_str(),
    ];
    args.extend(extra);
    let out = hook(&args);
    assert!(out.status.success(), "{out:?}");
    out
}

/// Root, runc and the agent binary for a runc test, and an agent serving `policy`;
/// None (after a SKIP line) when the machine lacks one.
pub fn runc_and_agent(test: &str, policy: &str) -> Option<(PathBuf, Agent)> {
    if !require_root(test) {
        return None;
    }
    let runc = require_tool(test, "runc")?;
    let agent = Agent::start(&agent_bin(test)?, policy);
    Some((runc, agent))
}

// ---------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------

/// Runs `runc run --bundle DIR ID`, deleting the container afterwards (also on timeout).
pub fn runc_run(runc: &Path, bundle: &Path, id: &str, timeout: Duration) -> RunOutput {
    let _guard = RuncGuard {
        runc: runc.to_path_buf(),
        id: id.to_string(),
    };
    run_cmd(
        Command::new(runc).args(["run", "--bundle", bundle.to_str().unwrap(), id]),
        timeout,
    )
}

struct RuncGuard {
    runc: PathBuf,
    id: String,
}

impl Drop for RuncGuard {
    fn drop(&mut self) {
        quiet(Command::new(&self.runc).args(["kill", &self.id, "KILL"]));
        quiet(Command::new(&self.runc).args(["delete", "--force", &self.id]));
    }
}

/// `podman run --rm --name ID` with the flags this host needs; EXTRA goes before `--rootfs`.
pub fn podman_run(
    podman_bin: &Path,
    runtime: &Path,
    id: &str,
    extra: &[&str],
    rootfs: &Path,
    args: &[&str],
) -> Command {
    let mut c = podman_run_command(podman_bin, runtime, id);
    c.args(extra).arg("--rootfs").arg(rootfs).args(args);
    c
}

/// Removes a podman container when dropped.
pub struct PodmanGuard {
    pub podman: PathBuf,
    pub runtime: PathBuf,
    pub id: String,
}

impl Drop for PodmanGuard {
    fn drop(&mut self) {
        quiet(
            podman(&self.podman, &self.runtime)
                .args(["rm", "--force", "--ignore", "--time", "0", &self.id]),
        );
    }
}

// ---------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------

/// Starts an [`Agent`] with a policy: `BIN agent --policy <tmp>/policy.yaml
/// --socket <tmp>/agent.sock ...`, returning once the socket exists and the
/// metrics server has been logged.
pub trait StartAgent {
    fn start(bin: &Path, policy: &str) -> Agent;
}

impl StartAgent for Agent {
    fn start(bin: &Path, policy: &str) -> Agent {
        Agent::with_policy_in(bin, tmpdir(), policy, &[])
    }
}
