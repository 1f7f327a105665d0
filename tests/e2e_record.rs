//! End-to-end tests of recording: `switchboard record` on a plain process and the agent's
//! `--record-dir` for runc containers, each checked by running the workload under the
//! profile it produced, with runc and no listener.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The workload.
const WORKLOAD: &str = "echo hi > /tmp/f; cat /tmp/f; ls /; uname -a; id";

const ALLOW_ALL: &str = "default: allow\nrules: []\n";

/// `switchboard-oci-hook`, built beside the agent by `cargo build --workspace`.
fn hook() -> PathBuf {
    let hook = Path::new(BIN).with_file_name("switchboard-oci-hook");
    assert!(
        hook.exists(),
        "build the workspace first: {}",
        hook.display()
    );
    hook
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The names of the profile's first rule (the syscalls seen, allowed by name).
fn allowed_names(profile: &Value) -> Vec<String> {
    profile["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// The shape runc and the runtime-spec's seccomp schema take: an errno default, known
/// arches, rules of names, an action and EQ conditions.
fn assert_profile_shape(profile: &Value) {
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "{profile}");
    assert!(profile["defaultErrnoRet"].as_u64().is_some(), "{profile}");
    let arches = profile["architectures"].as_array().unwrap();
    assert!(!arches.is_empty(), "{profile}");
    assert!(arches
        .iter()
        .all(|a| a.as_str().unwrap().starts_with("SCMP_ARCH_")));
    for rule in profile["syscalls"].as_array().unwrap() {
        assert_eq!(rule["action"], "SCMP_ACT_ALLOW", "{rule}");
        assert!(!rule["names"].as_array().unwrap().is_empty(), "{rule}");
        for arg in rule["args"].as_array().into_iter().flatten() {
            assert_eq!(arg["op"], "SCMP_CMP_EQ", "{arg}");
            assert!(arg["index"].as_u64().unwrap() <= 5 && arg["value"].is_u64());
        }
    }
    let handover = profile["syscalls"].as_array().unwrap().last().unwrap();
    let handover: Vec<&str> = handover["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(handover.contains(&"write") && handover.contains(&"futex"));
}

/// Runs `script` with busybox sh in a runc container under `profile` (None: no seccomp).
fn run_under(profile: Option<&Value>, script: &str, tag: &str) -> RunOutput {
    let mut bundle = Bundle::new(&["sh", "-c", script]);
    if let Some(profile) = profile {
        bundle.set_seccomp(profile.clone());
    }
    let out = run_runc(&bundle, &unique_id(tag), TIMEOUT);
    assert!(!out.timed_out, "{tag}: {out:?}");
    out
}

/// The round trip: the workload under `profile` prints what it prints without seccomp,
/// and a `mkdir` after it fails with EPERM.
fn assert_runs_under(profile: &Value, tag: &str) {
    let free = run_under(None, WORKLOAD, &format!("{tag}-free"));
    assert_eq!(free.code(), 0, "{free:?}");
    let confined = run_under(Some(profile), WORKLOAD, &format!("{tag}-confined"));
    assert_eq!(confined.code(), 0, "{confined:?}\nprofile: {profile}");
    assert_eq!(confined.stdout, free.stdout);
    assert!(confined.stdout.starts_with("hi\n"), "{confined:?}");
    let more = format!("{WORKLOAD}; mkdir /tmp/d; echo mkdir=$?");
    let denied = run_under(Some(profile), &more, &format!("{tag}-mkdir"));
    assert!(denied.stdout.contains("mkdir=1"), "{denied:?}");
    assert!(
        denied.stderr.contains("Operation not permitted"),
        "{denied:?}"
    );
}

/// `switchboard record` on a host busybox (the rootfs's own binary); returns the profile.
fn record_plain(dir: &Path, extra: &[&str], script: &str) -> (Value, RunOutput) {
    let bundle = Bundle::new(&["true"]);
    let busybox = bundle.rootfs().join("bin/busybox");
    let output = dir.join("profile.json");
    let out = run_cmd(
        Command::new(BIN)
            .arg("record")
            .arg("-o")
            .arg(&output)
            .args(extra)
            .arg("--")
            .arg(&busybox)
            .args(["sh", "-c", script])
            .current_dir(dir),
        TIMEOUT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    (read_json(&output), out)
}

#[test]
fn record_a_plain_process_then_runc_runs_it_under_the_profile() {
    let dir = tmpdir();
    // The host's /tmp/f is not the container's; the calls are the same.
    let script = WORKLOAD.replace("/tmp/f", &dir.path().join("f").display().to_string());
    let (profile, out) = record_plain(dir.path(), &[], &script);
    assert!(out.stdout.starts_with("hi\n"), "{out:?}");
    assert_profile_shape(&profile);
    let names = allowed_names(&profile);
    assert!(names.iter().any(|n| n == "uname") && names.iter().any(|n| n == "getuid"));
    assert!(!names.iter().any(|n| n == "mkdir" || n == "mkdirat"));
    assert!(
        !names.iter().any(|n| n == "write" || n == "execve"),
        "the runtime's calls go in their own rule"
    );
    // The summary names the calls with their counts.
    assert!(
        out.stderr.lines().any(|l| l.starts_with("uname ")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("syscalls seen"), "{}", out.stderr);
    if !require_root("record_a_plain_process_then_runc_runs_it_under_the_profile")
        || !require_tool("runc")
    {
        return;
    }
    assert_runs_under(&profile, "rec-plain");
}

#[test]
fn record_args_keeps_the_persona_and_denies_another() {
    let dir = tmpdir();
    let (profile, _) = record_plain(dir.path(), &["--args"], "linux64 true; echo ok");
    let personality: Vec<&Value> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "personality")
        })
        .collect();
    assert_eq!(personality.len(), 1, "{profile}");
    assert_eq!(
        personality[0]["args"],
        serde_json::json!([{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]),
        "PER_LINUX only: {profile}"
    );
    // Without --args the name alone is allowed.
    let (by_name, _) = record_plain(dir.path(), &[], "linux64 true; echo ok");
    assert!(allowed_names(&by_name).iter().any(|n| n == "personality"));
    if !require_root("record_args_keeps_the_persona_and_denies_another") || !require_tool("runc") {
        return;
    }
    let out = run_under(
        Some(&profile),
        "linux64 true; echo per_linux=$?; linux32 true; echo per_linux32=$?",
        "rec-args",
    );
    assert!(out.stdout.contains("per_linux=0"), "{out:?}");
    assert!(out.stdout.contains("per_linux32=1"), "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
}

/// Runs `script` in a runc container with the hook's recording profile (injected into
/// the bundle) under `agent`; Kubernetes names from `k8s` (namespace, pod, container).
fn record_in_container(
    agent: &Agent,
    script: &str,
    k8s: Option<[&str; 3]>,
    tag: &str,
) -> RunOutput {
    let mut bundle = Bundle::new(&["sh", "-c", script]);
    if let Some([namespace, pod, container]) = k8s {
        bundle.set_annotation("io.kubernetes.pod.namespace", namespace);
        bundle.set_annotation("io.kubernetes.pod.name", pod);
        bundle.set_annotation("io.kubernetes.container.name", container);
    }
    let out = run_runc(&inject_recording(agent, bundle), &unique_id(tag), TIMEOUT);
    assert!(!out.timed_out, "{tag}: {out:?}");
    out
}

/// `switchboard-oci-hook inject --record` for `agent`; returns the bundle with the config
/// the hook rewrote (run_runc passes the in-memory one).
fn inject_recording(agent: &Agent, mut bundle: Bundle) -> Bundle {
    let injected = run_cmd(
        Command::new(hook())
            .args(["inject", "--record", "--bundle"])
            .arg(bundle.path())
            .arg("--socket")
            .arg(agent.socket())
            .arg("--policy")
            .arg(agent.policy_path()),
        TIMEOUT,
    );
    assert_eq!(injected.code(), 0, "{injected:?}");
    let config = read_json(&bundle.config_path());
    bundle.set_seccomp(config["linux"]["seccomp"].clone());
    bundle
}

/// A root-and-runc test's agent recording into a fresh directory (allow-all policy);
/// None when the test is skipped.
fn recording_agent(test: &str, extra: &[&str]) -> Option<(Agent, tempfile::TempDir)> {
    if !require_root(test) || !require_tool("runc") {
        return None;
    }
    let records = tmpdir();
    let mut args = vec!["--record-dir", records.path().to_str().unwrap()];
    args.extend(extra);
    let agent = Agent::with_policy_in(Path::new(BIN), tmpdir(), ALLOW_ALL, &args);
    Some((agent, records))
}

fn wait_for(path: &Path) -> Value {
    assert!(
        eventually(Duration::from_secs(10), || path.exists()),
        "{} never written",
        path.display()
    );
    read_json(path)
}

#[test]
fn record_a_runc_container_through_the_agent_then_run_it_under_the_profile() {
    let Some((agent, records)) = recording_agent(
        "record_a_runc_container_through_the_agent_then_run_it_under_the_profile",
        &[],
    ) else {
        return;
    };
    let k8s = ["team-a", "web-0", "app"];
    let out = record_in_container(&agent, WORKLOAD, Some(k8s), "rec-ctr");
    assert_eq!(out.code(), 0, "{out:?}");
    let path = records.path().join("team-a/web-0/app.json");
    let profile = wait_for(&path);
    assert_profile_shape(&profile);
    assert!(allowed_names(&profile).iter().any(|n| n == "uname"));
    assert_runs_under(&profile, "rec-ctr");

    // A second run of the same container adds to the first recording: the union.
    let first: Vec<String> = allowed_names(&profile);
    std::fs::rename(&path, records.path().join("first.json")).unwrap();
    let out = record_in_container(&agent, "mkdir /tmp/d", Some(k8s), "rec-ctr-mkdir");
    assert_eq!(out.code(), 0, "{out:?}");
    let alone = allowed_names(&wait_for(&path));
    assert!(alone.iter().any(|n| n.starts_with("mkdir")), "{alone:?}");
    std::fs::rename(records.path().join("first.json"), &path).unwrap();
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let out = record_in_container(&agent, "mkdir /tmp/d", Some(k8s), "rec-ctr-union");
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::metadata(&path).unwrap().modified().unwrap() != before
    }));
    let union = read_json(&path);
    assert_profile_shape(&union);
    let mut expected: Vec<String> = first.iter().chain(&alone).cloned().collect();
    expected.sort();
    expected.dedup();
    assert_eq!(allowed_names(&union), expected);
    // The union loads in runc and runs both workloads.
    let both = run_under(
        Some(&union),
        &format!("{WORKLOAD}; mkdir /tmp/d; echo mkdir=$?"),
        "rec-ctr-both",
    );
    assert!(both.stdout.contains("mkdir=0"), "{both:?}");

    // A container without Kubernetes names is filed under its id.
    let before: Vec<_> = std::fs::read_dir(records.path()).unwrap().collect();
    let out = record_in_container(&agent, "true", None, "rec-ctr-id");
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_dir(records.path()).unwrap().count() == before.len() + 1
    }));
    assert!(std::fs::read_dir(records.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("sb-rec-ctr-id")));
}

#[test]
fn status_shows_recording_containers_and_diff_reports_changes() {
    let Some((agent, records)) = recording_agent(
        "status_shows_recording_containers_and_diff_reports_changes",
        &[],
    ) else {
        return;
    };
    let bundle = inject_recording(&agent, Bundle::new(&["sh", "-c", "sleep 3"]));
    let id = unique_id("rec-status");
    let running = spawn(Runtime::Runc, &bundle, &id, TIMEOUT);
    let status = |json: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["status", "--metrics-addr", agent.metrics_addr()]);
        if json {
            cmd.arg("--json");
        }
        run_cmd(&mut cmd, TIMEOUT).stdout
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            let report: Value = serde_json::from_str(&status(true)).unwrap();
            report["listeners"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["container_id"] == id.as_str() && l["recording"] == true)
        }),
        "{}",
        status(true)
    );
    let text = status(false);
    assert!(text.contains("RECORDING") && text.contains(&id), "{text}");
    let out = running.join();
    assert_eq!(out.code(), 0, "{out:?}");
    let recorded = records.path().join(format!("{id}.json"));
    wait_for(&recorded);

    // Diff: the recorded profile against an older one that also allowed mkdir.
    let mut old = read_json(&recorded);
    old["syscalls"][0]["names"]
        .as_array_mut()
        .unwrap()
        .push("mkdir".into());
    let old_path = records.path().join("old.json");
    std::fs::write(&old_path, old.to_string()).unwrap();
    let out = run_cmd(
        Command::new(BIN)
            .args(["record", "--diff"])
            .arg(&old_path)
            .arg(&recorded),
        TIMEOUT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "- mkdir\n", "{out:?}");
}

#[test]
fn agent_record_args_writes_the_persona_condition() {
    let Some((agent, records)) = recording_agent(
        "agent_record_args_writes_the_persona_condition",
        &["--record-args"],
    ) else {
        return;
    };
    let out = record_in_container(&agent, "linux64 true", Some(["ns", "pod", "c"]), "rec-args");
    assert_eq!(out.code(), 0, "{out:?}");
    let profile = wait_for(&records.path().join("ns/pod/c.json"));
    let conditions: Vec<&Value> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"] == serde_json::json!(["personality"]))
        .map(|r| &r["args"])
        .collect();
    assert_eq!(
        conditions,
        [&serde_json::json!([{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}])],
        "{profile}"
    );
}
