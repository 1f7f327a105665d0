//! Fixture tests of `inject` and `profile`: JSON in, JSON out, refusals, idempotence, atomic writes.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use switchboard::decision::Ceiling;
use switchboard::policy::Action;
use switchboard::record::OriginalProfile;

const SOCKET: &str = "/run/switchboard/test.sock";

fn policy() -> String {
    fixture("policy.yaml").display().to_string()
}

/// `profile FIXTURE -o OUT --policy policy.yaml --socket SOCKET EXTRA...`; returns the output.
fn merge_profile(input: &Path, out: &Path, extra: &[&str]) -> RunOutput {
    let mut args = vec![
        "profile",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--socket",
        SOCKET,
    ];
    let policy = policy();
    if !extra.contains(&"--policy") {
        args.extend(["--policy", &policy]);
    }
    args.extend(extra);
    hook(&args)
}

fn assert_ok(out: &RunOutput) {
    assert!(out.status.success(), "{out:?}");
}

/// The record a profile-mode output carries in listenerMetadata.
fn record_of(profile: &Value) -> Value {
    let metadata: Value =
        serde_json::from_str(profile["listenerMetadata"].as_str().unwrap()).unwrap();
    metadata["switchboard_original_profile"].clone()
}

/// What the record's filter answers for native `name(args)` in a container with `caps`.
fn answer(record: &Value, caps: &[&str], name: &str, args: [u64; 6]) -> (Action, i32) {
    let record: OriginalProfile = serde_json::from_value(record.clone()).unwrap();
    let ceiling = Ceiling::from_record(&record, |c| caps.contains(&c));
    let (arch, nr) = switchboard::syscalls::numbers(name)[0];
    let arch = &switchboard::syscalls::arches()[arch];
    let verdict = ceiling.verdict(&switchboard::bpf::SeccompData {
        nr: i32::try_from(nr).unwrap() | arch.nr_bit,
        arch: arch.audit,
        instruction_pointer: 0,
        args,
    });
    (verdict.action, verdict.errno)
}

const ALLOW: (Action, i32) = (Action::Allow, 0);
const EPERM: (Action, i32) = (Action::Deny, 1);
const EINVAL: (Action, i32) = (Action::Deny, 22);
const EACCES: (Action, i32) = (Action::Deny, 13);
const ENOSYS: (Action, i32) = (Action::Deny, 38);
const KILL: (Action, i32) = (Action::Kill, 1);
/// The allowlist fixture's conditional socket rules (for containers without it) make runc
/// 1.1.5 fail on x86 ("error adding seccomp rule for syscall socket: file exists").
const AUDIT: &[&str] = &["CAP_AUDIT_WRITE"];

fn notify_rule(profile: &Value) -> Value {
    let rules = profile["syscalls"].as_array().unwrap();
    let notify: Vec<&Value> = rules
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_NOTIFY")
        .collect();
    assert_eq!(notify.len(), 1, "one NOTIFY rule: {rules:#?}");
    notify[0].clone()
}

/// Every name of rules with `action` (other than the NOTIFY rule).
fn names_with_action(profile: &Value, action: &str) -> Vec<String> {
    profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

fn check_fixture(name: &str) -> Value {
    let dir = tmpdir();
    let out = dir.path().join("out.json");
    let run = merge_profile(&fixture(&format!("{name}.json")), &out, &[]);
    assert_ok(&run);
    assert!(
        run.stdout.is_empty(),
        "with -o nothing goes to stdout: {run:?}"
    );
    let actual = read_json(&out);
    let expected = read_json(&fixture(&format!("{name}.merged.json")));
    assert_eq!(
        with_parsed_metadata(actual.clone()),
        with_parsed_metadata(expected),
        "{name}: output differs from {name}.merged.json:\n{}",
        serde_json::to_string_pretty(&actual).unwrap()
    );
    actual
}

const FLAGGED: [&str; 9] = [
    "bpf",
    "chroot",
    "mkdir",
    "mkdirat",
    "personality",
    "rmdir",
    "socket",
    "uname",
    "unshare",
];

#[test]
fn allowlist_profile_matches_fixture() {
    let out = check_fixture("allowlist");
    assert_eq!(
        notify_rule(&out),
        json!({"names": FLAGGED, "action": "SCMP_ACT_NOTIFY"})
    );
    assert_eq!(out["listenerPath"], SOCKET);
    // Other names keep their action; flagged ones are gone from every other rule.
    let allowed = names_with_action(&out, "SCMP_ACT_ALLOW");
    for kept in ["read", "write", "sendmsg", "exit_group", "arch_prctl"] {
        assert!(
            allowed.iter().any(|n| n == kept),
            "{kept} lost: {allowed:?}"
        );
    }
    for name in FLAGGED {
        assert!(!allowed.iter().any(|n| n == name), "{name} still allowed");
    }
    assert_eq!(
        names_with_action(&out, "SCMP_ACT_ERRNO").len(),
        5 + 1,
        "kexec_load & co, perf_event_open"
    );
    // Fields the merge does not touch pass through.
    let input = read_json(&fixture("allowlist.json"));
    for key in [
        "archMap",
        "defaultAction",
        "defaultErrnoRet",
        "defaultErrno",
    ] {
        assert_eq!(out[key], input[key], "{key}");
    }
    let record = record_of(&out);
    assert_eq!(record["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(record["defaultErrnoRet"], 38);
    assert_eq!(answer(&record, AUDIT, "mkdir", [0; 6]), ALLOW);
    assert_eq!(
        answer(&record, AUDIT, "unshare", [0; 6]),
        ENOSYS,
        "not in the allowlist: the default decides"
    );
}

#[test]
fn allowlist_records_argument_and_capability_conditions() {
    let out = check_fixture("allowlist");
    let record = record_of(&out);
    let personality = |arg0| answer(&record, AUDIT, "personality", [arg0, 0, 0, 0, 0, 0]);
    for allowed in [0, 8, 4294967295] {
        assert_eq!(personality(allowed), ALLOW, "personality({allowed})");
    }
    assert_eq!(personality(1), ENOSYS);
    let chroot = &["CAP_AUDIT_WRITE", "CAP_SYS_CHROOT"];
    assert_eq!(answer(&record, chroot, "chroot", [0; 6]), ALLOW);
    assert_eq!(answer(&record, AUDIT, "chroot", [0; 6]), EPERM);
    assert_eq!(answer(&record, AUDIT, "socket", [16, 3, 9, 0, 0, 0]), ALLOW);
    // Without CAP_AUDIT_WRITE, runc could not have loaded the original on x86 at all
    // (AF_NETLINK/NETLINK_AUDIT rules through socketcall): every answer is a denial.
    assert_eq!(answer(&record, &[], "socket", [2, 1, 0, 0, 0, 0]), EPERM);
    assert_eq!(answer(&record, &[], "mkdir", [0; 6]), EPERM);
}

#[test]
fn denylist_profile_matches_fixture() {
    let out = check_fixture("denylist");
    assert_eq!(out["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(
        out["syscalls"][0],
        json!({"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "comment": "no new directories"}),
        "the rule is split: chmod keeps its errno"
    );
    let metadata: Value = serde_json::from_str(out["listenerMetadata"].as_str().unwrap()).unwrap();
    assert_eq!(
        metadata["metadata"], "team=storage",
        "the user's metadata is kept"
    );
    let record = &metadata["switchboard_original_profile"];
    assert_eq!(record["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(answer(record, &[], "mkdirat", [0; 6]), EACCES);
    assert_eq!(
        answer(record, &[], "rmdir", [0; 6]),
        KILL,
        "legacy `name` rule"
    );
    assert!(
        !out["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.get("name").is_some()),
        "the rmdir rule is gone"
    );
}

#[test]
fn conditions_profile_matches_fixture() {
    let out = check_fixture("conditions");
    let record = record_of(&out);
    let unshare = |caps: &[&str], flags| answer(&record, caps, "unshare", [flags, 0, 0, 0, 0, 0]);
    // MASKED_EQ: value is the mask, valueTwo the datum.
    assert_eq!(unshare(&[], 0x1000_0000), EPERM, "CLONE_NEWUSER");
    assert_eq!(unshare(&["CAP_SYS_ADMIN"], 0x1000_0000), ALLOW);
    // A repeated index: each condition is its own rule.
    assert_eq!(unshare(&[], 0), KILL);
    assert_eq!(unshare(&[], 0x20000), KILL);
    assert_eq!(unshare(&[], 0x400), ALLOW);
    // The unconditional SCMP_ACT_LOG rule replaces the conditional ones in libseccomp.
    let personality = |a0, a1| answer(&record, &[], "personality", [a0, a1, 0, 0, 0, 0]);
    assert_eq!(personality(9, 100), ALLOW);
    assert_eq!(personality(2, 0), ALLOW);
    assert_eq!(
        answer(&record, &["CAP_BPF"], "bpf", [0; 6]),
        EPERM,
        "minKernel applies"
    );
    assert_eq!(
        answer(&record, &[], "bpf", [0; 6]),
        ALLOW,
        "an s390x-only rule does not apply on this host"
    );
    assert!(
        !record["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["includes"].is_object()
                || r["names"] == json!(["bpf"]) && r["errnoRet"] == 38),
        "{record}"
    );
    assert_eq!(
        out["syscalls"].as_array().unwrap().len(),
        1,
        "only the NOTIFY rule is left"
    );
}

#[test]
fn profile_to_stdout_and_second_merge_is_identical() {
    let dir = tmpdir();
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");
    assert_ok(&merge_profile(&fixture("allowlist.json"), &first, &[]));
    assert_ok(&merge_profile(&first, &second, &[]));
    assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
    let to_stdout = hook(&[
        "profile",
        fixture("allowlist.json").to_str().unwrap(),
        "--policy",
        &policy(),
        "--socket",
        SOCKET,
    ]);
    assert_ok(&to_stdout);
    assert_eq!(to_stdout.stdout.as_bytes(), fs::read(&first).unwrap());
}

#[test]
fn log_default_denied_flags_the_complement() {
    let dir = tmpdir();
    let out = dir.path().join("out.json");
    assert_ok(&merge_profile(
        &fixture("allowlist.json"),
        &out,
        &["--log-default-denied"],
    ));
    let out = read_json(&out);
    let notify: Vec<String> = notify_rule(&out)["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    for name in [
        "mkdir",
        "rmdir",
        "add_key",
        "init_module",
        "acct",
        "io_uring_setup",
    ] {
        assert!(notify.iter().any(|n| n == name), "{name} not flagged");
    }
    // Allowed, explicitly denied, capability- or argument-conditioned, or a handover syscall: not in the complement.
    for name in ["read", "kexec_load", "perf_event_open", "futex"] {
        assert!(!notify.iter().any(|n| n == name), "{name} flagged");
    }
    // x86-only names come from the compat arches of the archMap entry.
    if cfg!(target_arch = "x86_64") {
        assert!(notify.iter().any(|n| n == "vm86"), "vm86 (x86) not flagged");
    }
    let record = record_of(&out);
    assert_eq!(answer(&record, AUDIT, "add_key", [0; 6]), ENOSYS);
    assert_eq!(record["defaultErrnoRet"], 38);
}

#[test]
fn existing_listener_is_refused_without_force() {
    let dir = tmpdir();
    let input = dir.path().join("in.json");
    let mut profile = read_json(&fixture("denylist.json"));
    profile["listenerPath"] = json!("/run/other-agent.sock");
    fs::write(&input, profile.to_string()).unwrap();
    let out = dir.path().join("out.json");
    let refused = merge_profile(&input, &out, &[]);
    assert_eq!(refused.code(), 1, "{refused:?}");
    assert!(
        refused.stderr.contains("/run/other-agent.sock") && refused.stderr.contains("--force"),
        "{refused:?}"
    );
    assert!(!out.exists(), "nothing written on refusal");
    let forced = merge_profile(&input, &out, &["--force"]);
    assert_ok(&forced);
    assert!(
        forced.stderr.contains("replacing listenerPath"),
        "{forced:?}"
    );
    assert_eq!(read_json(&out)["listenerPath"], SOCKET);
}

#[test]
fn policy_naming_write_is_refused() {
    let dir = tmpdir();
    let out = dir.path().join("out.json");
    let policy = fixture("policy-write.yaml");
    let refused = merge_profile(
        &fixture("allowlist.json"),
        &out,
        &["--policy", policy.to_str().unwrap()],
    );
    // The policy validator refuses it, as `switchboard check` and `run` do: exit 2, with the position.
    assert_eq!(refused.code(), 2, "{refused:?}");
    assert!(
        refused.stderr.contains("policy-write.yaml:4:23:"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("names write"), "{refused:?}");
    assert!(refused.stderr.contains("hang"), "says why: {refused:?}");
    assert!(!out.exists());

    let bundle = tmpdir();
    fs::copy(fixture("config.json"), bundle.path().join("config.json")).unwrap();
    let refused = hook(&[
        "inject",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(refused.code(), 2, "{refused:?}");
    assert!(refused.stderr.contains("names write"), "{refused:?}");
    assert_eq!(
        fs::read(bundle.path().join("config.json")).unwrap(),
        fs::read(fixture("config.json")).unwrap()
    );
}

#[test]
fn errno_ret_outside_1_to_4095_is_refused() {
    // 70000 once made mkdir return a raw -70000 through the agent.
    let dir = tmpdir();
    let input = dir.path().join("in.json");
    for (profile, field) in [
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}"#,
            "syscalls[0].errnoRet",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 0}"#,
            "defaultErrnoRet",
        ),
    ] {
        fs::write(&input, profile).unwrap();
        let out = dir.path().join("out.json");
        let refused = merge_profile(&input, &out, &[]);
        assert_eq!(refused.code(), 1, "{refused:?}");
        assert!(
            refused.stderr.contains(&format!("{field}: ")) && refused.stderr.contains("1 to 4095"),
            "{refused:?}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn notify_default_action_is_refused() {
    let dir = tmpdir();
    let input = dir.path().join("in.json");
    fs::write(&input, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
    let out = merge_profile(&input, &dir.path().join("out.json"), &[]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr
            .contains("defaultAction SCMP_ACT_NOTIFY is refused"),
        "{out:?}"
    );
}

#[test]
fn invalid_policy_names_file_line_and_column() {
    let dir = tmpdir();
    let policy = dir.path().join("bad.yaml");
    fs::write(
        &policy,
        "rules:\n  - name: a\n    syscalls: [mkdri]\n    action: log\n",
    )
    .unwrap();
    let out = merge_profile(
        &fixture("denylist.json"),
        &dir.path().join("out.json"),
        &["--policy", policy.to_str().unwrap()],
    );
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stderr.contains("bad.yaml:3:"), "{out:?}");
}

// ---------------------------------------------------------------------------
// inject
// ---------------------------------------------------------------------------

fn inject(bundle: &Path, extra: &[&str]) -> RunOutput {
    let policy = policy();
    let mut args = vec![
        "inject",
        "--bundle",
        bundle.to_str().unwrap(),
        "--socket",
        SOCKET,
        "--policy",
        &policy,
    ];
    args.extend(extra);
    hook(&args)
}

fn bundle_with(config: &[u8]) -> tempfile::TempDir {
    let dir = tmpdir();
    fs::write(dir.path().join("config.json"), config).unwrap();
    dir
}

#[test]
fn inject_matches_fixture_and_is_idempotent() {
    let dir = bundle_with(&fs::read(fixture("config.json")).unwrap());
    let path = dir.path().join("config.json");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let first = inject(dir.path(), &[]);
    assert_ok(&first);
    assert!(first.stdout.is_empty(), "{first:?}");
    let actual = read_json(&path);
    assert_eq!(
        with_parsed_record(actual.clone()),
        with_parsed_record(read_json(&fixture("config.injected.json"))),
        "{}",
        serde_json::to_string_pretty(&actual).unwrap()
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640,
        "mode kept"
    );
    let entries: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["config.json"], "no temporary file left");

    let once = fs::read(&path).unwrap();
    let second = inject(dir.path(), &[]);
    assert_ok(&second);
    assert!(second.stderr.contains("unchanged"), "{second:?}");
    assert_eq!(
        fs::read(&path).unwrap(),
        once,
        "second inject is byte-identical"
    );
}

#[test]
fn inject_keeps_unknown_fields_and_records_in_listener_metadata() {
    let dir = bundle_with(&fs::read(fixture("config.json")).unwrap());
    assert_ok(&inject(dir.path(), &[]));
    let out = read_json(&dir.path().join("config.json"));
    let input = read_json(&fixture("config.json"));
    for key in [
        "process",
        "root",
        "mounts",
        "hostname",
        "ociVersion",
        "org.example.vendor-extension",
    ] {
        assert_eq!(out[key], input[key], "{key}");
    }
    assert_eq!(out["annotations"]["org.example.team"], "storage");
    assert_eq!(out["linux"]["namespaces"], input["linux"]["namespaces"]);
    let seccomp = &out["linux"]["seccomp"];
    assert_eq!(seccomp["listenerPath"], SOCKET);
    let metadata: Value =
        serde_json::from_str(seccomp["listenerMetadata"].as_str().unwrap()).unwrap();
    assert_eq!(
        metadata["metadata"], "team=storage",
        "the user's listenerMetadata is kept beside the record"
    );
    assert_eq!(seccomp["flags"], input["linux"]["seccomp"]["flags"]);
    assert!(
        out["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("io.switchboard.")),
        "the record is not an annotation"
    );
    let record = config_record(&out);
    assert_eq!(answer(&record, &[], "mkdir", [0; 6]), EACCES);
    assert_eq!(
        answer(&record, &[], "personality", [0, 0, 0, 0, 0, 0]),
        EINVAL
    );
    assert_eq!(
        answer(&record, &[], "personality", [8, 0, 0, 0, 0, 0]),
        ALLOW
    );
}

#[test]
fn inject_without_seccomp_adds_an_allow_profile() {
    let config =
        json!({"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "linux": {"namespaces": []}});
    let dir = bundle_with(config.to_string().as_bytes());
    assert_ok(&inject(dir.path(), &[]));
    let bytes = fs::read(dir.path().join("config.json")).unwrap();
    assert!(!bytes.contains(&b'\n'), "compact in, compact out");
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    let seccomp = &out["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(seccomp["listenerPath"], SOCKET);
    assert_eq!(
        seccomp["syscalls"],
        json!([{"names": FLAGGED, "action": "SCMP_ACT_NOTIFY"}])
    );
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            seccomp["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
    }
    let record = config_record(&out);
    assert_eq!(record["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(answer(&record, &[], "mkdir", [0; 6]), ALLOW);
}

#[test]
fn inject_refuses_another_listener_without_force() {
    let mut config = read_json(&fixture("config.json"));
    config["linux"]["seccomp"]["listenerPath"] = json!("/run/other-agent.sock");
    let bytes = serde_json::to_vec_pretty(&config).unwrap();
    let dir = bundle_with(&bytes);
    let refused = inject(dir.path(), &[]);
    assert_eq!(refused.code(), 1, "{refused:?}");
    assert!(
        refused.stderr.contains("/run/other-agent.sock"),
        "{refused:?}"
    );
    assert_eq!(
        fs::read(dir.path().join("config.json")).unwrap(),
        bytes,
        "untouched"
    );
    assert_ok(&inject(dir.path(), &["--force"]));
    assert_eq!(
        read_json(&dir.path().join("config.json"))["linux"]["seccomp"]["listenerPath"],
        SOCKET
    );
}

#[test]
fn broken_config_is_left_untouched_with_a_clear_error() {
    let broken = b"{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {\"args\": [\"sh\"]\n";
    let dir = bundle_with(broken);
    let out = inject(dir.path(), &[]);
    assert_eq!(out.code(), 1, "{out:?}");
    let path = dir.path().join("config.json");
    assert!(
        out.stderr
            .contains(&format!("{} is not valid JSON", path.display())),
        "{out:?}"
    );
    assert!(out.stderr.contains("line 4"), "says where: {out:?}");
    assert_eq!(fs::read(&path).unwrap(), broken);

    let missing = tmpdir();
    let out = inject(missing.path(), &[]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot read") && out.stderr.contains("config.json"),
        "{out:?}"
    );

    let not_object = bundle_with(b"[1, 2]");
    let out = inject(not_object.path(), &[]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(
        fs::read(not_object.path().join("config.json")).unwrap(),
        b"[1, 2]"
    );
}

#[test]
fn unknown_syscall_on_an_arch_is_skipped_with_a_warning() {
    let dir = tmpdir();
    let input = dir.path().join("in.json");
    fs::write(
        &input,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}"#,
    )
    .unwrap();
    let out = dir.path().join("out.json");
    let run = merge_profile(&input, &out, &[]);
    assert_ok(&run);
    assert!(
        run.stderr
            .contains("warning: syscall \"mkdir\" is unknown to libseccomp on SCMP_ARCH_AARCH64"),
        "{run:?}"
    );
}

#[test]
fn socketcall_names_are_flagged_on_x86_without_a_warning() {
    // libseccomp flags i386 `socket` both as syscall 359 and as socketcall(SYS_SOCKET)
    // (see switchboard's record tests): no "flagged on the other architectures only".
    let dir = tmpdir();
    let out = dir.path().join("out.json");
    let run = merge_profile(&fixture("denylist.json"), &out, &[]);
    assert_ok(&run);
    assert!(
        read_json(&fixture("denylist.json"))["architectures"]
            .as_array()
            .unwrap()
            .contains(&json!("SCMP_ARCH_X86")),
        "the fixture filters x86"
    );
    assert!(!run.stderr.contains("unknown to libseccomp"), "{run:?}");
}

#[test]
fn a_forged_record_annotation_cannot_weaken_the_profile() {
    // A user can pass any annotation to the engine (`podman --annotation`); the hook
    // removes ours, and the record comes from the profile alone.
    let mut config = read_json(&fixture("config.json"));
    config["annotations"]["io.switchboard.original-profile"] =
        json!(r#"{"version":2,"defaultAction":"SCMP_ACT_ALLOW","notify":["mkdir","mkdirat"]}"#);
    config["annotations"]["io.switchboard.anything"] = json!("x");
    let dir = bundle_with(&serde_json::to_vec_pretty(&config).unwrap());
    let out = inject(dir.path(), &[]);
    assert_ok(&out);
    assert!(
        out.stderr
            .contains("removed annotation \"io.switchboard.original-profile\""),
        "{out:?}"
    );
    let injected = read_json(&dir.path().join("config.json"));
    let annotations = injected["annotations"].as_object().unwrap();
    assert!(
        annotations
            .keys()
            .all(|k| !k.starts_with("io.switchboard.")),
        "{annotations:?}"
    );
    assert_eq!(annotations["org.example.team"], "storage");
    assert_eq!(
        answer(&config_record(&injected), &[], "mkdir", [0; 6]),
        EACCES
    );
}

#[test]
fn inject_into_a_profile_merged_profile_keeps_its_record() {
    // The runtime mode meets profiles merged in profile mode (a Kubernetes Localhost
    // profile under the hook as runtime): their record is in listenerMetadata.
    let dir = tmpdir();
    let merged = dir.path().join("merged.json");
    assert_ok(&merge_profile(&fixture("denylist.json"), &merged, &[]));
    let mut config = read_json(&fixture("config.json"));
    config["linux"]["seccomp"] = read_json(&merged);
    let bundle = bundle_with(&serde_json::to_vec_pretty(&config).unwrap());
    assert_ok(&inject(bundle.path(), &[]));
    let out = read_json(&bundle.path().join("config.json"));
    let record = config_record(&out);
    assert_eq!(answer(&record, &[], "mkdir", [0; 6]), EACCES);
    assert_eq!(answer(&record, &[], "rmdir", [0; 6]), KILL);
    assert_eq!(
        out["linux"]["seccomp"],
        read_json(&merged),
        "the profile was already merged"
    );
}

/// What a profile's filter does, by syscall: every rule naming it (action, errno, args, caps),
/// order and packaging into rules aside; rules for other arches left out, as the record does.
fn by_syscall(profile: &Value) -> std::collections::BTreeMap<String, Vec<String>> {
    let native = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for rule in profile["syscalls"].as_array().unwrap() {
        let arches = |key: &str| {
            rule[key]["arches"]
                .as_array()
                .map(|a| a.iter().any(|a| a == native))
        };
        if arches("includes") == Some(false) || arches("excludes") == Some(true) {
            continue;
        }
        // valueTwo absent is valueTwo 0, to runc as to libseccomp.
        let args: Vec<Value> = rule["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let mut a = a.clone();
                a.as_object_mut()
                    .unwrap()
                    .entry("valueTwo")
                    .or_insert(json!(0));
                a
            })
            .collect();
        let what = json!({
            "action": rule["action"],
            "errnoRet": rule["errnoRet"],
            "args": args,
            "caps": rule["includes"]["caps"],
            "notCaps": rule["excludes"]["caps"],
        })
        .to_string();
        let legacy = rule.get("name").into_iter();
        for name in rule["names"].as_array().into_iter().flatten().chain(legacy) {
            let entry = out.entry(name.as_str().unwrap().to_string()).or_default();
            entry.push(what.clone());
            entry.sort();
        }
    }
    out
}

#[test]
fn re_merging_with_another_policy_equals_merging_into_the_original() {
    let dir = tmpdir();
    let narrower = dir.path().join("narrower.yaml");
    fs::write(
        &narrower,
        "rules:\n  - name: no-mkdir\n    syscalls: [mkdir, mount]\n    action: deny\n",
    )
    .unwrap();
    let narrower = narrower.to_str().unwrap();
    for fixture_name in ["allowlist.json", "denylist.json", "conditions.json"] {
        let first = dir.path().join("first.json");
        let again = dir.path().join("again.json");
        let direct = dir.path().join("direct.json");
        assert_ok(&merge_profile(&fixture(fixture_name), &first, &[]));
        assert_ok(&merge_profile(&first, &again, &["--policy", narrower]));
        assert_ok(&merge_profile(
            &fixture(fixture_name),
            &direct,
            &["--policy", narrower],
        ));
        let read = |p: &Path| -> Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
        let (first, again, direct) = (read(&first), read(&again), read(&direct));
        assert_eq!(
            record_of(&again),
            record_of(&direct),
            "{fixture_name}: record"
        );
        assert_eq!(
            by_syscall(&again),
            by_syscall(&direct),
            "{fixture_name}: the re-merged profile's filter"
        );
        // The first policy's syscalls are no longer flagged (rmdir, uname: only it named them).
        for name in ["rmdir", "uname"] {
            assert!(names_with_action(&first, "SCMP_ACT_NOTIFY").contains(&name.to_string()));
            assert!(!names_with_action(&again, "SCMP_ACT_NOTIFY").contains(&name.to_string()));
        }
        // And merging the result again changes nothing.
        let twice = dir.path().join("twice.json");
        assert_ok(&merge_profile(
            &dir.path().join("again.json"),
            &twice,
            &["--policy", narrower],
        ));
        assert_eq!(read(&twice), again, "{fixture_name}: idempotent");
    }
}
