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

    inject_for(&agent, bundle.path(), &[]);
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

/// The calls `tests/fixtures/i386_multiplexed.c` makes: i386 `socket(AF_PACKET, SOCK_RAW, 0)`
/// and `shmget`, each by its direct number and through its multiplexer (socketcall, ipc).
const I386_CALLS: [&str; 4] = [
    "packet-direct",
    "packet-socketcall",
    "shmget-direct",
    "shmget-ipc",
];

/// [`runc_and_agent`] for the i386 tests, which also need gcc.
fn i386_setup(test: &str, policy: &str) -> Option<(std::path::PathBuf, Agent)> {
    if !require_root(test) {
        return None;
    }
    require_tool(test, "gcc")?;
    runc_and_agent(test, policy)
}

/// A bundle running the i386 fixture over [`I386_CALLS`] under `profile`.
fn i386_bundle(profile: serde_json::Value) -> Bundle {
    let mut args = vec!["/bin/i386-multiplexed"];
    args.extend(I386_CALLS);
    let mut bundle = Bundle::new(&args);
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/i386_multiplexed.c");
    compile_static(&source, &bundle.rootfs().join("bin/i386-multiplexed"));
    bundle.set_seccomp(profile);
    bundle
}

/// Merges the bundle with `inject` for `agent` (plus `extra` flags), runs it under runc and
/// checks every call of [`I386_CALLS`] failed with `errno`, as under the original profile.
fn assert_i386_calls_fail(
    agent: &Agent,
    runc: &std::path::Path,
    bundle: &Bundle,
    extra: &[&str],
    errno: i64,
) {
    inject_for(agent, bundle.path(), extra);
    let out = runc_run(runc, bundle.path(), &unique_id("x86mux"), TIMEOUT);
    assert!(!out.timed_out, "{out:?}\n{}", agent.output());
    for call in I386_CALLS {
        assert!(
            out.stdout.lines().any(|l| l == format!("{call}=-{errno}")),
            "{call} did not fail with errno {errno}: {out:?}\n{}",
            agent.output()
        );
    }
    let muxed = agent
        .wait_event(
            |e| e["event"] == "syscall" && e["syscall"] == "socket" && e["via"] == "socketcall",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no socket event via socketcall: {}", agent.output()));
    assert_eq!(muxed["arch"], "x86", "{muxed}");
    assert_eq!(muxed["errno"], errno, "{muxed}");
}

/// A profile that denies socket and shmget (EACCES), merged with a policy that only logs
/// them: every i386 way to reach them still fails as the original profile said.
#[test]
fn runc_i386_multiplexed_calls_keep_the_original_denial() {
    let test = "runc_i386_multiplexed_calls_keep_the_original_denial";
    let Some((runc, agent)) = i386_setup(
        test,
        "default: log\nrules:\n  - name: watch\n    syscalls: [socket, shmget]\n    action: log\n",
    ) else {
        return;
    };
    let bundle = i386_bundle(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["socket", "shmget"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    }));
    assert_i386_calls_fail(&agent, &runc, &bundle, &[], 13);
}

/// An allowlist profile whose default (EROFS) denies socket, shmget and their multiplexers,
/// merged with `--log-default-denied` and a policy whose default logs.
#[test]
fn runc_i386_multiplexed_calls_keep_the_default_denial_with_log_default_denied() {
    let test = "runc_i386_multiplexed_calls_keep_the_default_denial_with_log_default_denied";
    let Some((runc, agent)) = i386_setup(
        test,
        "default: log\nrules:\n  - name: watch\n    syscalls: [mkdir]\n    action: log\n",
    ) else {
        return;
    };
    let denied = ["socket", "socketcall", "shmget", "ipc"];
    let mut allowed = std::collections::BTreeSet::new();
    for arch in [libseccomp::ScmpArch::X8664, libseccomp::ScmpArch::X86] {
        for nr in 0..1024 {
            if let Ok(name) = libseccomp::ScmpSyscall::from_raw_syscall(nr).get_name_by_arch(arch) {
                if !denied.contains(&name.as_str()) {
                    allowed.insert(name);
                }
            }
        }
    }
    let bundle = i386_bundle(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 30,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_i386_calls_fail(&agent, &runc, &bundle, &["--log-default-denied"], 30);
}

/// How a bundle running `script` (with `/bin/thread-mkdir` from the fixture) ends under a
/// profile that kills whoever calls mkdir (SCMP_ACT_KILL_PROCESS), alone or merged by
/// `inject` for `agent`: exit code, whether it printed "done", which of `files` exist.
fn original_kill_outcome(
    agent: &Agent,
    runc: &std::path::Path,
    script: &str,
    files: &[&str],
    merged: bool,
) -> (i32, bool, Vec<bool>) {
    let mut bundle = Bundle::new(&["sh", "-c", script]);
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/thread_mkdir.c");
    compile_static(&source, &bundle.rootfs().join("bin/thread-mkdir"));
    bundle.set_seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]
    }));
    if merged {
        inject_for(agent, bundle.path(), &[]);
    }
    let out = runc_run(runc, bundle.path(), &unique_id("origkill"), TIMEOUT);
    assert!(!out.timed_out, "{out:?}\n{}", agent.output());
    let written = files.iter().map(|f| bundle.rootfs().join(f).exists());
    (out.code(), out.stdout.contains("done"), written.collect())
}

/// The original profile kills the process that calls mkdir (SCMP_ACT_KILL_PROCESS), and the
/// policy only logs it: the agent kills that process and nothing else, as the kernel would
/// have, whether the caller is a child of a subshell or a second thread of a process. The
/// subshell and the container's shell go on; no thread of the killed process does.
#[test]
fn runc_original_profile_kill_ends_only_the_calling_process() {
    let test = "runc_original_profile_kill_ends_only_the_calling_process";
    if require_tool(test, "gcc").is_none() {
        return;
    }
    let Some((runc, agent)) = runc_and_agent(test, POLICY) else {
        return;
    };
    let cases: [(&str, &[&str], &[bool]); 2] = [
        (
            "(mkdir /tmp/x; echo hi > /tmp/sub-after); echo hi > /tmp/after; echo done",
            &["tmp/x", "tmp/sub-after", "tmp/after"],
            &[false, true, true],
        ),
        (
            "thread-mkdir /tmp/x; echo done",
            &["tmp/x", "tmp/thread-after", "tmp/main-after"],
            &[false, false, false],
        ),
    ];
    for (script, files, expected) in cases {
        let original = original_kill_outcome(&agent, &runc, script, files, false);
        assert_eq!(
            original,
            (0, true, expected.to_vec()),
            "{script}: the original profile alone"
        );
        let merged = original_kill_outcome(&agent, &runc, script, files, true);
        assert_eq!(
            merged,
            original,
            "{script}: merged, with the agent\n{}",
            agent.output()
        );
    }
    let e = agent.syscall_event(&["mkdir", "mkdirat"]);
    assert_eq!(
        (e["action"].as_str(), e["rule"].as_str()),
        (Some("kill"), Some("original-profile")),
        "{e}"
    );
    assert_eq!(
        agent.metric_value("switchboard_containers_killed_total", &[]),
        0.0
    );
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
        inject_for(&agent, bundle.path(), &[]);
        let merged = read_json(&bundle.config_path())["linux"]["seccomp"].clone();
        bundle.set_seccomp(merged);
        bundle.set_annotation("io.switchboard.original-profile", forged);
        let id = unique_id("forged-late");
        let out = runc_run(&runc, bundle.path(), &id, TIMEOUT);
        assert_mkdir_eacces(&out, &bundle, &agent, &id);
    }
}
