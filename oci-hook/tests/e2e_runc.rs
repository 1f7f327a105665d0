//! End-to-end under runc: a bundle merged by `inject` runs a busybox container whose flagged syscalls the real agent answers.
//!
//! Needs root (prints SKIP otherwise) and the `switchboard` binary beside the hook's
//! (`cargo build --workspace`). Under CI=true a missing runc fails the test.

mod common;

use common::*;
use serde_json::json;
use std::fs;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The agent's policy: log mkdir (which the original profile denies), deny rmdir (which it allows).
const POLICY: &str = "default: log
rules:
  - name: log-mkdir
    syscalls: [mkdir, mkdirat]
    action: log
  - name: no-rmdir
    syscalls: [rmdir]
    action: deny
    errno: EPERM
";

#[test]
fn runc_original_denial_survives_a_log_policy_and_policy_deny_works() {
    let test = "runc_original_denial_survives_a_log_policy_and_policy_deny_works";
    let Some((runc, agent)) = runc_and_agent(test, POLICY) else {
        return;
    };
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "mkdir /tmp/x; echo mkdir=$?; rmdir /tmp/d; echo rmdir=$?; echo done",
    ]);
    fs::create_dir(bundle.rootfs().join("tmp/d")).unwrap();
    bundle.set_seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    }));

    inject_for(&agent, bundle.path());
    let config = read_json(&bundle.config_path());
    assert_eq!(
        config["linux"]["seccomp"]["syscalls"],
        json!([{"names": ["mkdir", "mkdirat", "rmdir"], "action": "SCMP_ACT_NOTIFY"}])
    );

    let id = unique_id("runc");
    let out = runc_run(&runc, bundle.path(), &id, TIMEOUT);
    assert!(!out.timed_out, "{out:?}\n{}", agent.output());
    assert!(out.stdout.contains("done"), "{out:?}\n{}", agent.output());
    assert!(!bundle.rootfs().join("tmp/x").exists(), "mkdir ran");
    assert!(bundle.rootfs().join("tmp/d").exists(), "rmdir ran");
    assert!(out.stdout.contains("rmdir=1"), "{out:?}");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "the policy's EPERM for rmdir: {out:?}"
    );

    let rmdir = agent.syscall_event(&["rmdir"]);
    assert_eq!(rmdir["action"], "deny", "{rmdir}");
    assert_eq!(rmdir["errno"], 1, "{rmdir}");
    assert_eq!(rmdir["rule"], "no-rmdir", "{rmdir}");

    // The policy only logs mkdir, but the original profile denied it with EACCES:
    // the agent must answer as the original did (the record in listenerMetadata).
    let mkdir = agent.syscall_event(&["mkdir", "mkdirat"]);
    assert!(out.stdout.contains("mkdir=1"), "{out:?}\n{mkdir}");
    assert!(
        out.stderr.contains("Permission denied"),
        "the original profile's EACCES for mkdir: {out:?}\nevent: {mkdir}"
    );
    assert_eq!(mkdir["errno"], 13, "{mkdir}");
    assert_eq!(mkdir["action"], "deny", "{mkdir}");
}

#[test]
fn runc_inject_on_a_broken_config_fails_and_leaves_it_untouched() {
    let test = "runc_inject_on_a_broken_config_fails_and_leaves_it_untouched";
    if !require_root(test) {
        return;
    }
    let Some(runc) = require_tool(test, "runc") else {
        return;
    };
    let bundle = Bundle::new(&["true"]);
    let mut bytes = fs::read(bundle.config_path()).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(bundle.config_path(), &bytes).unwrap();
    let out = hook(&["inject", "--bundle", bundle.path().to_str().unwrap()]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("is not valid JSON"), "{out:?}");
    assert_eq!(fs::read(bundle.config_path()).unwrap(), bytes, "untouched");
    // runc refuses the same file on its own: nothing half-written was left for it.
    let run = runc_run(&runc, bundle.path(), &unique_id("broken"), TIMEOUT);
    assert_ne!(run.code(), 0, "{run:?}");
}

/// Records that claim the original allowed mkdir: today's format and the old one.
const FORGED_RECORDS: [&str; 2] = [
    r#"{"version":2,"defaultAction":"SCMP_ACT_ALLOW","notify":["mkdir","mkdirat"]}"#,
    r#"{"default":{"action":"allow"},"syscalls":{"mkdir":[],"mkdirat":[]}}"#,
];

/// Only logs mkdir: what stops it must be the original profile's EACCES.
const LOG_MKDIR: &str = "default: log
rules:
  - name: log-mkdir
    syscalls: [mkdir, mkdirat]
    action: log
";

/// A bundle whose original profile denies mkdir with EACCES and whose config carries
/// a forged record annotation.
fn forged_bundle(forged: &str) -> Bundle {
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    bundle.set_seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    }));
    bundle.set_annotation("io.switchboard.original-profile", forged);
    bundle
}

fn assert_mkdir_eacces(out: &RunOutput, bundle: &Bundle, agent: &Agent, id: &str) {
    assert!(!out.timed_out, "{out:?}\n{}", agent.output());
    assert!(
        out.stdout.contains("mkdir=1"),
        "{out:?}\n{}",
        agent.output()
    );
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(!bundle.rootfs().join("tmp/x").exists(), "mkdir ran");
    let event = agent
        .wait_event(
            |e| e["event"] == "syscall" && e["container_id"] == id,
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no syscall event for {id}\n{}", agent.output()));
    assert_eq!(
        (event["action"].as_str(), event["errno"].as_i64()),
        (Some("deny"), Some(13)),
        "{event}"
    );
}

#[test]
fn runc_a_forged_record_annotation_does_not_loosen_the_answer() {
    let test = "runc_a_forged_record_annotation_does_not_loosen_the_answer";
    let Some((runc, agent)) = runc_and_agent(test, LOG_MKDIR) else {
        return;
    };
    let runtime = hook_as_runtime(&agent, &runc, "sb-runtime");
    for forged in FORGED_RECORDS {
        // The hook as the runtime: it strips the annotation before runc sees the config.
        let bundle = forged_bundle(forged);
        let id = unique_id("forged-rt");
        let out = runc_run(&runtime, bundle.path(), &id, TIMEOUT);
        assert_mkdir_eacces(&out, &bundle, &agent, &id);
        let config = read_json(&bundle.config_path());
        assert!(
            config["annotations"]
                .get("io.switchboard.original-profile")
                .is_none(),
            "{config}"
        );

        // The annotation added after the merge, where the hook never sees it: the agent
        // takes the record only from the loaded profile's listenerMetadata.
        let mut bundle = forged_bundle(forged);
        inject_for(&agent, bundle.path());
        let merged = read_json(&bundle.config_path())["linux"]["seccomp"].clone();
        bundle.set_seccomp(merged);
        bundle.set_annotation("io.switchboard.original-profile", forged);
        let id = unique_id("forged-late");
        let out = runc_run(&runc, bundle.path(), &id, TIMEOUT);
        assert_mkdir_eacces(&out, &bundle, &agent, &id);
    }
}
