//! Differential tests of never-weaken: every call's outcome under the original profile alone equals its outcome under the merged profile with the agent.
//!
//! A static probe (`fixtures/probe.c`, built with gcc at test time) makes a list of
//! calls, each in a forked child, and prints each outcome. The container tests run it
//! under real runc (and podman for capability-conditioned rules) twice: with the
//! original profile, and with the profile `inject` merged plus the agent answering with
//! a `log` policy for every flagged syscall. The property test checks the agent's
//! decision for random profiles and policies against the real filter: libseccomp's own,
//! built and loaded (`seccomp_load`) by the probe in a child. Container tests need root
//! (they print SKIP otherwise).

mod common;

use common::*;
use libseccomp::{ScmpArch, ScmpSyscall};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use switchboard::bpf::SeccompData;
use switchboard::decision::{Ceiling, DecisionTable};
use switchboard::policy::{Action, Policy};
use switchboard::record::OriginalProfile;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The syscalls the calls make; the agent's policy only logs them.
const FLAGGED: &[&str] = &[
    "personality",
    "getpriority",
    "prctl",
    "process_mrelease",
    "socket",
];
const LOG_POLICY: &str = "default: log
rules:
  - name: watch
    syscalls: [personality, getpriority, prctl, process_mrelease, socket]
    action: log
";

const ALL_ARCHES: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

// x86_64 and i386 numbers of the calls.
const PERSONALITY: u32 = 135;
const GETPRIORITY: u32 = 140;
const PRCTL: u32 = 157;
const PROCESS_MRELEASE: u32 = 448;
const I386_PERSONALITY: u32 = 136;
const I386_GETPRIORITY: u32 = 96;
const I386_PRCTL: u32 = 172;
const SOCKET: u32 = 41;
const I386_SOCKET: u32 = 359;
const I386_SOCKETCALL: u32 = 102;

/// One call: (abi, nr, args), in the probe's ABI:NR:A0:... form.
fn call(abi: u32, nr: u32, args: &[u64]) -> String {
    let mut text = format!("{abi}:{nr}");
    for a in args {
        text.push_str(&format!(":{a:#x}"));
    }
    text
}

/// The calls every container case makes: harmless syscalls with chosen arguments,
/// 64-bit and through `int 0x80`.
fn calls() -> Vec<String> {
    let mut calls = Vec::new();
    for a0 in [0xffff_ffff, 0, 1, 2, 8, 9, 0x107, 0x108] {
        calls.push(call(64, PERSONALITY, &[a0]));
    }
    for (which, who) in [(0, 0), (1, 0), (2, 0), (7, 0), (0, 1)] {
        calls.push(call(64, GETPRIORITY, &[which, who]));
    }
    for (option, a1) in [(1000, 0), (1000, 9), (1001, 0), (3, 0), (0x1007, 0)] {
        calls.push(call(64, PRCTL, &[option, a1]));
    }
    calls.push(call(64, PROCESS_MRELEASE, &[u64::from(u32::MAX), 0]));
    for a0 in [0xffff_ffff, 8, 9] {
        calls.push(call(32, I386_PERSONALITY, &[a0]));
    }
    for which in [0, 1, 2] {
        calls.push(call(32, I386_GETPRIORITY, &[which, 0]));
    }
    calls.push(call(32, I386_PRCTL, &[1000, 0]));
    // socket(AF_INET, SOCK_STREAM, 0), on x86 also through socketcall (SYS_SOCKET = 1,
    // SYS_CONNECT = 3) with a NULL argument array: EFAULT when the filter lets it run.
    calls.push(call(64, SOCKET, &[2, 1, 0]));
    calls.push(call(32, I386_SOCKET, &[2, 1, 0]));
    calls.push(call(32, I386_SOCKETCALL, &[1, 0]));
    calls.push(call(32, I386_SOCKETCALL, &[3, 0]));
    calls
}

/// The probe, built once per test process.
fn probe() -> Option<PathBuf> {
    static PROBE: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if !cfg!(target_arch = "x86_64") {
                eprintln!("SKIP: the probe's int 0x80 calls need x86_64");
                return None;
            }
            tool_path("gcc").or_else(|| {
                if under_ci() {
                    panic!("gcc is missing");
                }
                eprintln!("SKIP: gcc is missing");
                None
            })?;
            let dir = tmpdir().keep();
            let out = dir.join("probe");
            let built = run_cmd(
                Command::new("gcc")
                    .args(["-O2", "-static", "-no-pie", "-mno-red-zone", "-o"])
                    .arg(&out)
                    .arg(fixture("probe.c"))
                    .arg("-lseccomp"),
                Duration::from_secs(60),
            );
            assert_eq!(built.code(), 0, "{built:?}");
            Some(out)
        })
        .clone()
}

/// Outcomes by call, with any death by a signal as "killed": the kernel kills with
/// SIGSYS, the agent can only SIGKILL.
fn outcomes(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(call, outcome)| {
            let outcome = if outcome.starts_with("signal=") {
                "killed".to_string()
            } else {
                outcome.to_string()
            };
            (call.to_string(), outcome)
        })
        .collect()
}

/// A container case: an OCI profile, and outcomes it must give (so that the case
/// cannot pass with a filter that decides nothing).
struct Case {
    name: &'static str,
    profile: Value,
    expect: Vec<(String, &'static str)>,
}

fn errno_rule(names: &[&str], errno: u32, args: Value) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno, "args": args})
}

fn arg(index: u32, op: &str, value: u64) -> Value {
    json!({"index": index, "op": op, "value": value})
}

/// Every x86_64 syscall libseccomp knows below 440 except the flagged ones: an
/// allowlist under which the container runs, and whose largest number leaves
/// process_mrelease (448) to runc's -ENOSYS stub.
fn allowlist_names() -> Vec<String> {
    (0..440)
        .filter_map(|nr| {
            ScmpSyscall::from_raw_syscall(nr)
                .get_name_by_arch(ScmpArch::X8664)
                .ok()
        })
        .filter(|n| !FLAGGED.contains(&n.as_str()))
        .collect()
}

fn cases() -> Vec<Case> {
    let p = |a0: u64| call(64, PERSONALITY, &[a0]);
    let g = |which: u64, who: u64| call(64, GETPRIORITY, &[which, who]);
    let c = |option: u64, a1: u64| call(64, PRCTL, &[option, a1]);
    let p32 = |a0: u64| call(32, I386_PERSONALITY, &[a0]);
    let g32 = |which: u64| call(32, I386_GETPRIORITY, &[which, 0]);
    vec![
        Case {
            // Issue 11's example, with overlapping rules on each syscall and TRACE.
            name: "overlapping",
            profile: json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ALL_ARCHES,
                "syscalls": [
                    {"names": ["personality"], "action": "SCMP_ACT_LOG", "args": [arg(0, "SCMP_CMP_GT", 1)]},
                    errno_rule(&["personality"], 13, json!([arg(0, "SCMP_CMP_EQ", 8)])),
                    {"names": ["getpriority"], "action": "SCMP_ACT_LOG", "args": [arg(0, "SCMP_CMP_LE", 1)]},
                    errno_rule(&["getpriority"], 22, json!([arg(0, "SCMP_CMP_EQ", 1)])),
                    errno_rule(&["prctl"], 25, json!([arg(0, "SCMP_CMP_GE", 1000)])),
                    {"names": ["prctl"], "action": "SCMP_ACT_TRACE", "args": [arg(0, "SCMP_CMP_EQ", 3)]}
                ]
            }),
            expect: vec![
                (p(8), "errno=13"),
                (p(9), "ret=0"),
                (p32(8), "errno=13"),
                (g(1, 0), "errno=22"),
                (g32(1), "errno=22"),
                (c(1000, 0), "errno=25"),
                (c(3, 0), "errno=38"),
            ],
        },
        Case {
            // MASKED_EQ (value is the mask, valueTwo the datum), conditions on two
            // arguments, one index twice (runc adds each as a rule of its own).
            name: "masked-multi-argument",
            profile: json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ALL_ARCHES,
                "syscalls": [
                    errno_rule(&["personality"], 1, json!([
                        {"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 255, "valueTwo": 7}])),
                    errno_rule(&["getpriority"], 3, json!([arg(0, "SCMP_CMP_EQ", 0), arg(1, "SCMP_CMP_EQ", 1)])),
                    errno_rule(&["getpriority"], 7, json!([arg(0, "SCMP_CMP_EQ", 2), arg(0, "SCMP_CMP_EQ", 7)])),
                    errno_rule(&["prctl"], 33, json!([arg(0, "SCMP_CMP_GT", 999), arg(1, "SCMP_CMP_NE", 9)]))
                ]
            }),
            expect: vec![
                (p(0x107), "errno=1"),
                (p(0x108), "ret=0"),
                (g(0, 1), "errno=3"),
                (g(2, 0), "errno=7"),
                (g(7, 0), "errno=7"),
                (g32(2), "errno=7"),
                (c(1000, 0), "errno=33"),
                (c(1000, 9), "errno=22"),
            ],
        },
        Case {
            // A socket call on x86 is filtered by its own number and through socketcall.
            name: "socketcall",
            profile: json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ALL_ARCHES,
                "syscalls": [errno_rule(&["socket"], 13, json!([]))]
            }),
            expect: vec![
                (call(64, SOCKET, &[2, 1, 0]), "errno=13"),
                (call(32, I386_SOCKET, &[2, 1, 0]), "errno=13"),
                (call(32, I386_SOCKETCALL, &[1, 0]), "errno=13"),
                (call(32, I386_SOCKETCALL, &[3, 0]), "errno=14"),
            ],
        },
        Case {
            // Only x86_64 listed: i386 calls hit libseccomp's bad-arch action.
            name: "native-arch-only",
            profile: json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [errno_rule(&["personality"], 13, json!([arg(0, "SCMP_CMP_EQ", 8)]))]
            }),
            expect: vec![(p(8), "errno=13"), (p32(9), "killed")],
        },
        Case {
            // An allowlist with a denying default: conditional exceptions, and the
            // -ENOSYS stub runc puts in front for numbers above the largest it names.
            name: "allowlist",
            profile: json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 13,
                "architectures": ALL_ARCHES,
                "syscalls": [
                    {"names": allowlist_names(), "action": "SCMP_ACT_ALLOW"},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [arg(0, "SCMP_CMP_EQ", 0xffff_ffff)]},
                    {"names": ["getpriority"], "action": "SCMP_ACT_ALLOW", "args": [arg(0, "SCMP_CMP_LT", 2)]},
                    errno_rule(&["prctl"], 13, json!([]))
                ]
            }),
            expect: vec![
                (p(0xffff_ffff), "ret=0"),
                (p(8), "errno=13"),
                (g(2, 0), "errno=13"),
                (c(1000, 0), "errno=13"),
                (
                    call(64, PROCESS_MRELEASE, &[u64::from(u32::MAX), 0]),
                    "errno=38",
                ),
            ],
        },
    ]
}

/// The case whose rules kill: KILL_PROCESS, KILL (thread) and TRAP.
fn kill_case() -> Case {
    let p = |a0: u64| call(64, PERSONALITY, &[a0]);
    Case {
        name: "kill",
        profile: json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ALL_ARCHES,
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS", "args": [arg(0, "SCMP_CMP_EQ", 9)]},
                errno_rule(&["personality"], 13, json!([arg(0, "SCMP_CMP_EQ", 8)])),
                {"names": ["getpriority"], "action": "SCMP_ACT_TRAP", "args": [arg(0, "SCMP_CMP_EQ", 2)]},
                {"names": ["prctl"], "action": "SCMP_ACT_KILL", "args": [arg(0, "SCMP_CMP_EQ", 1001)]}
            ]
        }),
        expect: vec![
            (p(9), "killed"),
            (p(8), "errno=13"),
            (call(64, GETPRIORITY, &[2, 0]), "killed"),
            (call(64, PRCTL, &[1001, 0]), "killed"),
        ],
    }
}

struct Tools {
    runc: PathBuf,
    agent: PathBuf,
    probe: PathBuf,
}

fn tools(test: &str) -> Option<Tools> {
    if !require_root(test) {
        return None;
    }
    Some(Tools {
        runc: require_tool(test, "runc")?,
        agent: agent_bin(test)?,
        probe: probe()?,
    })
}

/// A bundle whose process runs the probe over `calls`.
fn probe_bundle(probe: &Path, calls: &[String]) -> Bundle {
    let mut args = vec!["/bin/probe"];
    args.extend(calls.iter().map(String::as_str));
    let bundle = Bundle::new(&args);
    fs::copy(probe, bundle.rootfs().join("bin/probe")).unwrap();
    bundle
}

/// Runs the probe under runc with `profile` as it is; returns the outcomes.
fn run_original(tools: &Tools, profile: &Value, calls: &[String]) -> BTreeMap<String, String> {
    let mut bundle = probe_bundle(&tools.probe, calls);
    bundle.set_seccomp(profile.clone());
    let out = runc_run(&tools.runc, bundle.path(), &unique_id("orig"), TIMEOUT);
    assert!(!out.timed_out && out.code() == 0, "original: {out:?}");
    outcomes(&out.stdout)
}

/// Runs the probe under runc with `profile` merged by `inject` and the agent answering.
fn run_merged(
    tools: &Tools,
    agent: &Agent,
    profile: &Value,
    calls: &[String],
) -> BTreeMap<String, String> {
    let mut bundle = probe_bundle(&tools.probe, calls);
    bundle.set_seccomp(profile.clone());
    inject_for(agent, bundle.path(), &[]);
    let id = unique_id("merged");
    let out = runc_run(&tools.runc, bundle.path(), &id, TIMEOUT);
    assert!(!out.timed_out, "merged: {out:?}\n{}", agent.output());
    let seen = agent.wait_event(
        |e| e["event"] == "syscall" && e["container_id"] == id.as_str(),
        Duration::from_secs(5),
    );
    assert!(
        seen.is_some(),
        "the agent answered none of the merged container's calls\n{}",
        agent.output()
    );
    outcomes(&out.stdout)
}

/// Original and merged runs of `case` give every call the same outcome.
fn check_case(tools: &Tools, agent: &Agent, case: &Case) {
    let calls = calls();
    let original = run_original(tools, &case.profile, &calls);
    assert_eq!(original.len(), calls.len(), "{}: {original:?}", case.name);
    for (call, outcome) in &case.expect {
        assert_eq!(
            original.get(call).map(String::as_str),
            Some(*outcome),
            "{}: the original profile's own outcome for {call} (the case is meant to test it)",
            case.name
        );
    }
    let merged = run_merged(tools, agent, &case.profile, &calls);
    let differ: Vec<String> = calls
        .iter()
        .filter(|c| original.get(*c) != merged.get(*c))
        .map(|c| {
            format!(
                "{c}: original {:?}, merged {:?}",
                original.get(c),
                merged.get(c)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{}: outcomes differ:\n{}\n{}",
        case.name,
        differ.join("\n"),
        agent.output()
    );
}

#[test]
fn differential_runc_non_kill_profiles() {
    let Some(tools) = tools("differential_runc_non_kill_profiles") else {
        return;
    };
    let agent = Agent::start(&tools.agent, LOG_POLICY);
    for case in cases() {
        check_case(&tools, &agent, &case);
    }
}

/// KILL_PROCESS, KILL and TRAP: the agent kills only the caller for a ceiling kill, as
/// the kernel would, so the probe's other children run on.
#[test]
fn differential_runc_kill_profile() {
    let Some(tools) = tools("differential_runc_kill_profile") else {
        return;
    };
    let agent = Agent::start(&tools.agent, LOG_POLICY);
    check_case(&tools, &agent, &kill_case());
}

/// Runs the probe under podman (runc) with the seccomp profile at `profile`; returns the outcomes.
fn run_podman(
    podman_bin: &Path,
    tools: &Tools,
    profile: &Path,
    caps: &[&str],
    calls: &[String],
) -> (String, BTreeMap<String, String>) {
    let bundle = probe_bundle(&tools.probe, calls);
    let id = unique_id("podman");
    let _guard = PodmanGuard {
        podman: podman_bin.to_path_buf(),
        runtime: tools.runc.clone(),
        id: id.clone(),
    };
    let opt = format!("seccomp={}", profile.display());
    let mut extra = vec!["--security-opt", opt.as_str()];
    extra.extend(caps);
    let mut args = vec!["/bin/probe"];
    args.extend(calls.iter().map(String::as_str));
    let out = run_cmd(
        &mut podman_run(
            podman_bin,
            &tools.runc,
            &id,
            &extra,
            &bundle.rootfs(),
            &args,
        ),
        TIMEOUT,
    );
    assert!(!out.timed_out && out.code() == 0, "{out:?}");
    (id, outcomes(&out.stdout))
}

/// Capability-conditioned rules exist only in the engines' profile format: podman
/// resolves them against the container's capabilities, the agent against the bounding
/// set in the bundle's config.
#[test]
fn differential_podman_capability_conditioned_rules() {
    let test = "differential_podman_capability_conditioned_rules";
    let Some(tools) = tools(test) else {
        return;
    };
    let Some(podman_bin) = require_tool(test, "podman") else {
        return;
    };
    let agent = Agent::start(&tools.agent, LOG_POLICY);
    let original = agent.dir().join("original.json");
    fs::write(
        &original,
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                 "includes": {"caps": ["CAP_SYS_NICE"]}},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [arg(0, "SCMP_CMP_EQ", 8)], "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
                {"names": ["prctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 25,
                 "args": [arg(0, "SCMP_CMP_GE", 1000)], "includes": {"caps": ["CAP_SYS_CHROOT"]}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let merged = agent.dir().join("merged.json");
    let out = hook(&[
        "profile",
        original.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
        "--policy",
        agent.policy_str(),
        "--socket",
        agent.socket_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let calls = calls();
    let getpriority = call(64, GETPRIORITY, &[0, 0]);
    let personality = call(64, PERSONALITY, &[8]);
    let prctl = call(64, PRCTL, &[1000, 0]);
    // podman's default capabilities hold CAP_SYS_CHROOT, not CAP_SYS_NICE.
    for (caps, expect) in [
        (
            &[][..],
            [
                (&getpriority, "ret=20"),
                (&personality, "ret=0"),
                (&prctl, "errno=25"),
            ],
        ),
        (
            &["--cap-add", "SYS_NICE", "--cap-drop", "SYS_CHROOT"][..],
            [
                (&getpriority, "errno=22"),
                (&personality, "errno=13"),
                (&prctl, "errno=22"),
            ],
        ),
    ] {
        let (_, alone) = run_podman(&podman_bin, &tools, &original, caps, &calls);
        for (call, outcome) in expect {
            assert_eq!(
                alone.get(call).map(String::as_str),
                Some(outcome),
                "{caps:?}: the original profile's own outcome for {call}"
            );
        }
        let before = agent.events().len();
        let (id, with_agent) = run_podman(&podman_bin, &tools, &merged, caps, &calls);
        let answered = eventually(Duration::from_secs(5), || {
            agent.events()[before..]
                .iter()
                .any(|e| e["event"] == "syscall")
        });
        assert!(
            answered,
            "{id}: the agent answered nothing\n{}",
            agent.output()
        );
        let differ: Vec<String> = calls
            .iter()
            .filter(|c| alone.get(*c) != with_agent.get(*c))
            .map(|c| {
                format!(
                    "{c}: original {:?}, merged {:?}",
                    alone.get(c),
                    with_agent.get(c)
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "{caps:?}: outcomes differ:\n{}\n{}",
            differ.join("\n"),
            agent.output()
        );
    }
}

// ---------------------------------------------------------------------------
// Property: random profiles and policies against libseccomp's own filter
// ---------------------------------------------------------------------------

const TESTED: [&str; 3] = ["personality", "getpriority", "prctl"];
/// (x86_64, i386) numbers of TESTED.
const NUMBERS: [(u32, u32); 3] = [
    (PERSONALITY, I386_PERSONALITY),
    (GETPRIORITY, I386_GETPRIORITY),
    (PRCTL, I386_PRCTL),
];
const ACTIONS: [&str; 7] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
];
/// In libseccomp's `enum scmp_compare` order, from 1.
const OPS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];
const VALUES: [u64; 14] = [
    0,
    1,
    2,
    3,
    7,
    8,
    9,
    0xff,
    0x107,
    1000,
    1001,
    0xffff_ffff,
    0x1_0000_0008,
    u64::MAX,
];
const CAPS: [&str; 2] = ["CAP_SYS_NICE", "CAP_SYS_ADMIN"];
/// AUDIT_ARCH_* of the profile arch names.
const ARCH_TOKENS: [(&str, u32); 3] = [
    ("SCMP_ARCH_X86_64", 0xc000_003e),
    ("SCMP_ARCH_X86", 0x4000_0003),
    ("SCMP_ARCH_X32", 0x4000_003e),
];

#[derive(Debug, Clone)]
struct GenRule {
    names: Vec<&'static str>,
    action: &'static str,
    errno: Option<u32>,
    /// (index, op, value, valueTwo)
    args: Vec<(u32, &'static str, u64, u64)>,
    caps: Vec<&'static str>,
    not_caps: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct GenCase {
    default: (&'static str, Option<u32>),
    arches: Vec<&'static str>,
    rules: Vec<GenRule>,
    caps: Vec<&'static str>,
    policy: String,
    /// (abi, index into TESTED, args)
    calls: Vec<(u32, usize, [u64; 6])>,
}

fn errno_strategy() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(prop::sample::select(vec![1u32, 13, 22, 33, 95, 4095]))
}

fn rule_strategy() -> impl Strategy<Value = GenRule> {
    let arg = (
        0u32..3,
        prop::sample::select(OPS.to_vec()),
        prop::sample::select(VALUES.to_vec()),
        prop::sample::select(VALUES.to_vec()),
    );
    (
        prop::sample::subsequence(TESTED.to_vec(), 1..=2),
        prop::sample::select(ACTIONS.to_vec()),
        errno_strategy(),
        prop::collection::vec(arg, 0..=3),
        prop::sample::subsequence(CAPS.to_vec(), 0..=1),
        prop::sample::subsequence(CAPS.to_vec(), 0..=1),
    )
        .prop_map(|(names, action, errno, args, caps, not_caps)| GenRule {
            names,
            action,
            errno,
            args,
            caps,
            not_caps,
        })
}

fn policy_strategy() -> impl Strategy<Value = String> {
    let rule = (
        prop::sample::subsequence(TESTED.to_vec(), 1..=3),
        prop::sample::select(vec!["allow", "log", "deny", "kill"]),
        prop::sample::select(vec!["EPERM", "EACCES", "EINVAL"]),
        prop::option::of((
            0u32..3,
            prop::sample::select(vec!["eq", "ne", "lt", "le", "gt", "ge"]),
            prop::sample::select(VALUES.to_vec()),
        )),
    );
    (
        prop::sample::select(vec!["allow", "log", "deny"]),
        prop::collection::vec(rule, 0..=3),
        prop::sample::select(vec!["allow", "log", "deny"]),
    )
        .prop_map(|(default, rules, rest)| {
            let mut text = format!("default: {default}\nrules:\n");
            for (i, (names, action, errno, arg)) in rules.iter().enumerate() {
                text.push_str(&format!(
                    "  - name: r{i}\n    syscalls: [{}]\n    action: {action}\n",
                    names.join(", ")
                ));
                if matches!(*action, "deny" | "kill") {
                    text.push_str(&format!("    errno: {errno}\n"));
                }
                if let Some((index, op, value)) = arg {
                    text.push_str(&format!(
                        "    args: [{{index: {index}, op: {op}, value: {value}}}]\n"
                    ));
                }
            }
            // Every tested syscall is named, so the hook flags all of them.
            text.push_str(&format!(
                "  - name: rest\n    syscalls: [{}]\n    action: {rest}\n",
                TESTED.join(", ")
            ));
            text
        })
}

fn case_strategy() -> impl Strategy<Value = GenCase> {
    let call = (
        prop::sample::select(vec![64u32, 32]),
        0usize..3,
        prop::array::uniform6(prop::sample::select(VALUES.to_vec())),
    );
    (
        (prop::sample::select(ACTIONS.to_vec()), errno_strategy()),
        prop::sample::select(vec![
            vec![],
            vec!["SCMP_ARCH_X86_64"],
            vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            ALL_ARCHES.to_vec(),
        ]),
        prop::collection::vec(rule_strategy(), 0..=6),
        prop::sample::subsequence(CAPS.to_vec(), 0..=2),
        policy_strategy(),
        prop::collection::vec(call, 6..=12),
    )
        .prop_map(|(default, arches, rules, caps, policy, calls)| GenCase {
            default,
            arches,
            rules,
            caps,
            policy,
            calls,
        })
}

/// The Docker-format profile of a case, with a rule that lets the probe's child report.
fn docker_profile(case: &GenCase) -> Value {
    let mut rules: Vec<Value> = case
        .rules
        .iter()
        .map(|r| {
            let args: Vec<Value> = r
                .args
                .iter()
                .map(|(index, op, value, two)| {
                    json!({"index": index, "op": op, "value": value, "valueTwo": two})
                })
                .collect();
            let mut rule = json!({"names": r.names, "action": r.action, "args": args,
                "includes": {"caps": r.caps}, "excludes": {"caps": r.not_caps}});
            if let Some(errno) = r.errno {
                rule["errnoRet"] = json!(errno);
            }
            rule
        })
        .collect();
    rules.push(json!({"names": ["write", "exit_group", "exit"], "action": "SCMP_ACT_ALLOW"}));
    let mut profile = json!({"defaultAction": case.default.0, "syscalls": rules});
    if let Some(errno) = case.default.1 {
        profile["defaultErrnoRet"] = json!(errno);
    }
    if !case.arches.is_empty() {
        profile["architectures"] = json!(case.arches);
    }
    profile
}

/// A runtime action as libseccomp's value: runc's `getAction`, written out independently.
fn native_action(action: &str, errno: Option<u32>) -> u32 {
    let data = errno.unwrap_or(1) & 0xffff;
    match action {
        "SCMP_ACT_ALLOW" => 0x7fff_0000,
        "SCMP_ACT_LOG" => 0x7ffc_0000,
        "SCMP_ACT_ERRNO" => 0x0005_0000 | data,
        "SCMP_ACT_TRACE" => 0x7ff0_0000 | data,
        "SCMP_ACT_TRAP" => 0x0003_0000,
        "SCMP_ACT_KILL" => 0x0000_0000,
        "SCMP_ACT_KILL_PROCESS" => 0x8000_0000,
        other => panic!("{other}"),
    }
}

/// A condition as the probe takes it: (index, libseccomp op, datum_a, datum_b).
type SpecArg = (u32, usize, u64, u64);

/// The probe's profile file for a case: what runc hands libseccomp for a container with
/// the case's capabilities (rules equal to the default skipped, a repeated argument
/// index split into one rule per condition, the probe's own rule last).
fn probe_spec(case: &GenCase) -> String {
    let has = |c: &&str| case.caps.contains(c);
    let default = native_action(case.default.0, case.default.1);
    let mut spec = format!("default {default:#x}\n");
    for arch in &case.arches {
        let token = ARCH_TOKENS.iter().find(|(n, _)| n == arch).unwrap().1;
        spec.push_str(&format!("arch {token:#x}\n"));
    }
    let mut rules: Vec<(u32, Vec<&str>, Vec<SpecArg>)> = case
        .rules
        .iter()
        .filter(|r| r.caps.iter().all(has) && !r.not_caps.iter().any(has))
        .map(|r| {
            let args = r
                .args
                .iter()
                .map(|(index, op, value, two)| {
                    (
                        *index,
                        OPS.iter().position(|o| o == op).unwrap() + 1,
                        *value,
                        *two,
                    )
                })
                .collect();
            (native_action(r.action, r.errno), r.names.clone(), args)
        })
        .collect();
    rules.push((0x7fff_0000, vec!["write", "exit_group", "exit"], Vec::new()));
    for (action, names, args) in rules {
        if action == default {
            continue;
        }
        let mut indexes: Vec<u32> = args.iter().map(|a| a.0).collect();
        indexes.sort();
        indexes.dedup();
        let groups: Vec<Vec<SpecArg>> = if indexes.len() < args.len() {
            args.iter().map(|a| vec![*a]).collect()
        } else {
            vec![args]
        };
        for name in names {
            for group in &groups {
                spec.push_str(&format!("rule {action:#x} {name} {}", group.len()));
                for (index, op, a, b) in group {
                    spec.push_str(&format!(" {index} {op} {a:#x} {b:#x}"));
                }
                spec.push('\n');
            }
        }
    }
    spec
}

fn rank(action: Action) -> u8 {
    match action {
        Action::Allow | Action::Log => 0,
        Action::Deny => 1,
        Action::Kill => 2,
    }
}

/// Runs one case: the real hook records the profile, the agent's table decides, the
/// probe runs each call under libseccomp's filter.
fn check_random_case(probe: &Path, case: &GenCase) -> Result<(), TestCaseError> {
    let dir = tmpdir();
    let input = dir.path().join("profile.json");
    let merged = dir.path().join("merged.json");
    let policy_path = dir.path().join("policy.yaml");
    fs::write(&input, docker_profile(case).to_string()).unwrap();
    fs::write(&policy_path, &case.policy).unwrap();
    let out = hook(&[
        "profile",
        input.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
        "--policy",
        policy_path.to_str().unwrap(),
        "--socket",
        "/run/switchboard/prop.sock",
    ]);
    prop_assert!(out.status.success(), "{out:?}");
    let metadata = read_json(&merged)["listenerMetadata"].clone();
    let metadata: Value = serde_json::from_str(metadata.as_str().unwrap()).unwrap();
    let record: OriginalProfile =
        serde_json::from_value(metadata["switchboard_original_profile"].clone()).unwrap();
    let ceiling = Ceiling::from_record(&record, |c| case.caps.contains(&c));
    let container = switchboard::container::Container {
        original: Some(std::sync::Arc::new(Ceiling::from_record(&record, |c| {
            case.caps.contains(&c)
        }))),
        ..Default::default()
    };
    let policy = Policy::parse(&case.policy, "prop").unwrap();
    let table = DecisionTable::compile(&policy, &container);

    let spec = dir.path().join("spec");
    fs::write(&spec, probe_spec(case)).unwrap();
    let calls: Vec<String> = case
        .calls
        .iter()
        .map(|(abi, which, args)| {
            let (nr64, nr32) = NUMBERS[*which];
            let nr = if *abi == 64 { nr64 } else { nr32 };
            call(*abi, nr, args)
        })
        .collect();
    let ran = run_cmd(
        Command::new(probe).arg("--profile").arg(&spec).args(&calls),
        Duration::from_secs(30),
    );
    prop_assert!(ran.code() == 0, "{ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    prop_assert_eq!(lines.len(), calls.len(), "{:?}", ran);
    for ((abi, which, args), line) in case.calls.iter().zip(lines) {
        let (_, outcomes) = line.split_once(' ').unwrap();
        let (base, filtered) = outcomes.split_once(' ').unwrap();
        let base = base.trim_start_matches("base=");
        let real = match filtered.trim_start_matches("filtered=") {
            s if s.starts_with("signal=") => "killed".to_string(),
            s => s.to_string(),
        };
        let (nr64, nr32) = NUMBERS[*which];
        let data = if *abi == 64 {
            SeccompData {
                nr: i32::try_from(nr64).unwrap(),
                arch: 0xc000_003e,
                instruction_pointer: 0,
                args: *args,
            }
        } else {
            SeccompData {
                nr: i32::try_from(nr32).unwrap(),
                arch: 0x4000_0003,
                instruction_pointer: 0,
                args: args.map(|a| a & 0xffff_ffff),
            }
        };
        let original = ceiling.verdict(&data);
        let decision = table.decide(
            switchboard::syscalls::locate(data.arch, data.nr, data.args[0]),
            &data,
        );
        let observed = |action: Action, errno: i32| match action {
            Action::Allow | Action::Log => base.to_string(),
            Action::Deny => format!("errno={errno}"),
            Action::Kill => "killed".to_string(),
        };
        if real == "refused" {
            // runc would not start this container; the agent denies every call.
            prop_assert_eq!(
                (original.action, original.errno),
                (Action::Deny, 1),
                "{}",
                line
            );
            continue;
        }
        prop_assert_eq!(
            observed(original.action, original.errno),
            real.clone(),
            "the ceiling differs from the real filter: {} (ceiling {:?})",
            line,
            original
        );
        prop_assert!(
            rank(decision.action) >= rank(original.action),
            "decision {:?} is more permissive than the original {:?}: {}",
            decision,
            original,
            line
        );
        if real == "killed" {
            prop_assert_eq!(decision.action, Action::Kill, "{}", line);
        } else if real != base {
            prop_assert!(decision.action >= Action::Deny, "{:?}: {}", decision, line);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Each case runs the hook and the probe: a failure must not shrink for minutes.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_profiles_ceiling_equals_libseccomps_filter(case in case_strategy()) {
        if let Some(probe) = probe() {
            check_random_case(&probe, &case)?;
        }
    }
}
