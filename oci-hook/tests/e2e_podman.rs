//! End-to-end under podman: a `profile`-merged real-world default profile, and the hook as podman's `--runtime`.
//!
//! Needs root (prints SKIP otherwise) and the `switchboard` binary beside the hook's
//! (`cargo build --workspace`). Under CI=true a missing podman or runc fails the test.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(25);
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// podman's default profile on Debian (containers-common).
const PODMAN_DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";

const SCRIPT: &str = "mkdir /tmp/x; echo mkdir=$?; chroot / true; echo chroot=$?";

struct Tools {
    podman: PathBuf,
    runc: PathBuf,
    agent: PathBuf,
}

fn tools(test: &str) -> Option<Tools> {
    if !require_root(test) {
        return None;
    }
    Some(Tools {
        podman: require_tool(test, "podman")?,
        runc: require_tool(test, "runc")?,
        agent: agent_bin(test)?,
    })
}

fn chroot_event(agent: &Agent, container_id: &str) -> serde_json::Value {
    agent
        .wait_event(
            |e| {
                e["event"] == "syscall"
                    && e["syscall"] == "chroot"
                    && e["container_id"] == container_id
            },
            EVENT_WAIT,
        )
        .unwrap_or_else(|| panic!("no chroot event for {container_id}\n{}", agent.output()))
}

/// Runs the script in a podman container; returns the output and the container id the agent saw.
fn run_script(tools: &Tools, agent: &Agent, runtime: &Path, extra: &[&str]) -> (RunOutput, String) {
    let bundle = Bundle::new(&["true"]);
    let id = unique_id("podman");
    let _guard = PodmanGuard {
        podman: tools.podman.clone(),
        runtime: runtime.to_path_buf(),
        id: id.clone(),
    };
    let before = agent.events().len();
    let out = run_cmd(
        &mut podman_run(
            &tools.podman,
            runtime,
            &id,
            extra,
            &bundle.rootfs(),
            &["sh", "-c", SCRIPT],
        ),
        TIMEOUT,
    );
    assert!(!out.timed_out, "{out:?}\n{}", agent.output());
    assert!(
        out.stdout.contains("chroot="),
        "{out:?}\n{}",
        agent.output()
    );
    assert!(!bundle.rootfs().join("tmp/x").exists(), "mkdir ran");
    let added = wait_new_event(agent, before, "listener_added");
    (out, added["container_id"].as_str().unwrap().to_string())
}

/// The first event named `event` after the first `before` events, waiting up to 5 s.
fn wait_new_event(agent: &Agent, before: usize, event: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = agent
            .events()
            .get(before..)
            .and_then(|new| new.iter().find(|e| e["event"] == event).cloned())
        {
            return e;
        }
        if Instant::now() >= deadline {
            panic!("no new {event} event\n{}", agent.output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent's mkdir (or mkdirat) event for the container.
fn mkdir_event(agent: &Agent, container_id: &str) -> serde_json::Value {
    agent
        .wait_event(
            |e| {
                e["event"] == "syscall"
                    && matches!(e["syscall"].as_str(), Some("mkdir" | "mkdirat"))
                    && e["container_id"] == container_id
            },
            EVENT_WAIT,
        )
        .unwrap_or_else(|| panic!("no mkdir event\n{}", agent.output()))
}

fn assert_mkdir_denied_by_policy(out: &RunOutput, agent: &Agent, container_id: &str) {
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
    assert!(
        out.stderr.contains("Too many links"),
        "the policy's EMLINK: {out:?}"
    );
    let e = mkdir_event(agent, container_id);
    assert_eq!(
        (
            e["action"].as_str(),
            e["errno"].as_i64(),
            e["rule"].as_str()
        ),
        (Some("deny"), Some(31), Some("no-mkdir")),
        "{e}"
    );
}

fn assert_chroot_denied_by_original(out: &RunOutput, agent: &Agent, container_id: &str) {
    assert!(out.stdout.contains("chroot=1"), "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
    let e = chroot_event(agent, container_id);
    assert_eq!(
        (e["action"].as_str(), e["errno"].as_i64()),
        (Some("deny"), Some(1)),
        "without CAP_SYS_CHROOT the default profile denies chroot, whatever the policy says: {e}"
    );
}

#[test]
fn podman_profile_mode_on_the_default_profile() {
    let test = "podman_profile_mode_on_the_default_profile";
    let Some(tools) = tools(test) else {
        return;
    };
    if !Path::new(PODMAN_DEFAULT_PROFILE).is_file() {
        if under_ci() {
            panic!("{test}: {PODMAN_DEFAULT_PROFILE} is missing (Debian package golang-github-containers-common)");
        }
        eprintln!("SKIP {test}: {PODMAN_DEFAULT_PROFILE} is missing");
        return;
    }
    let agent = Agent::start(&tools.agent, MKDIR_EMLINK_POLICY);
    let merged = agent.dir().join("merged.json");
    let out = hook(&[
        "profile",
        PODMAN_DEFAULT_PROFILE,
        "-o",
        merged.to_str().unwrap(),
        "--policy",
        agent.policy_str(),
        "--socket",
        agent.socket_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let opt = format!("seccomp={}", merged.display());

    // With podman's default capabilities (CAP_SYS_CHROOT among them) the original allows chroot.
    let (out, container) = run_script(&tools, &agent, &tools.runc, &["--security-opt", &opt]);
    assert_mkdir_denied_by_policy(&out, &agent, &container);
    assert!(
        out.stdout.contains("chroot=0"),
        "{out:?}\n{}",
        agent.output()
    );
    let e = chroot_event(&agent, &container);
    assert_eq!(e["action"], "log", "{e}");

    // Without it, the original's capability-conditioned EPERM stays.
    let (out, container) = run_script(
        &tools,
        &agent,
        &tools.runc,
        &["--security-opt", &opt, "--cap-drop", "SYS_CHROOT"],
    );
    assert_mkdir_denied_by_policy(&out, &agent, &container);
    assert_chroot_denied_by_original(&out, &agent, &container);
}

#[test]
fn podman_with_the_hook_as_runtime() {
    let test = "podman_with_the_hook_as_runtime";
    let Some(tools) = tools(test) else {
        return;
    };
    let agent = Agent::start(&tools.agent, MKDIR_EMLINK_POLICY);
    // podman passes no environment to the runtime: a wrapper points the hook at a
    // test config instead of /etc/switchboard/oci-hook.toml.
    let wrapper = hook_as_runtime(&agent, &tools.runc, "sb-runtime");

    // No --security-opt: podman puts in its default profile and the hook merges into it.
    let (out, container) = run_script(&tools, &agent, &wrapper, &["--cap-drop", "SYS_CHROOT"]);
    assert_mkdir_denied_by_policy(&out, &agent, &container);
    assert_chroot_denied_by_original(&out, &agent, &container);
}

#[test]
fn podman_a_forged_record_annotation_does_not_loosen_the_answer() {
    let test = "podman_a_forged_record_annotation_does_not_loosen_the_answer";
    let Some(tools) = tools(test) else {
        return;
    };
    let agent = Agent::start(
        &tools.agent,
        "default: log\nrules:\n  - name: log-mkdir\n    syscalls: [mkdir, mkdirat]\n    action: log\n",
    );
    let hook_runtime = hook_as_runtime(&agent, &tools.runc, "sb-runtime");
    // Keeps the config podman hands the runtime, to show the annotation got that far.
    let wrapper = agent.dir().join("sb-keep-config");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  [ \"$prev\" = --bundle ] && cp \"$a/config.json\" '{}'\n  prev=$a\ndone\nexec '{}' \"$@\"\n",
            agent.dir().join("seen-config.json").display(),
            hook_runtime.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let original = agent.dir().join("original.json");
    std::fs::write(
        &original,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", original.display());
    let forged = r#"io.switchboard.original-profile={"version":2,"defaultAction":"SCMP_ACT_ALLOW","notify":["mkdir","mkdirat"]}"#;
    // podman reads --annotation as a CSV field.
    let forged = format!("\"{}\"", forged.replace('"', "\"\""));
    let (out, container) = run_script(
        &tools,
        &agent,
        &wrapper,
        &["--security-opt", &opt, "--annotation", &forged],
    );
    assert!(
        out.stdout.contains("mkdir=1"),
        "{out:?}\n{}",
        agent.output()
    );
    assert!(
        out.stderr.contains("Permission denied"),
        "the original's EACCES, not the forged record's allow: {out:?}"
    );
    let seen = read_json(&agent.dir().join("seen-config.json"));
    assert!(
        seen["annotations"]["io.switchboard.original-profile"]
            .as_str()
            .is_some_and(|r| r.contains("SCMP_ACT_ALLOW")),
        "podman handed the runtime the forged annotation: {}",
        seen["annotations"]
    );
    let e = mkdir_event(&agent, &container);
    assert_eq!(
        (e["action"].as_str(), e["errno"].as_i64()),
        (Some("deny"), Some(13)),
        "{e}"
    );
}
