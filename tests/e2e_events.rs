//! End-to-end tests of what events say about a call: its path and string arguments read
//! from the caller (fenced), the call as strace prints it, and the calling program.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);
const EVENT_WAIT: Duration = Duration::from_secs(5);
const MKDIRS: &[&str] = &["mkdir", "mkdirat"];

fn deny_mkdir(errno: &str) -> String {
    policy_yaml("log", "no-mkdir", MKDIRS, "deny", Some(errno))
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `mkdir("PATH", MODE)` or the `mkdirat(AT_FDCWD, …)` libc may make of it.
fn is_mkdir_call(call: &str, path: &str, mode: &str) -> bool {
    call == format!("mkdir(\"{path}\", {mode})")
        || call == format!("mkdirat(AT_FDCWD, \"{path}\", {mode})")
}

#[test]
fn denied_mkdir_event_names_path_call_and_program() {
    if !require_root("denied_mkdir_event_names_path_call_and_program") || !Runtime::Runc.require() {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir("EPERM"), &[]);
    let name = format!("/tmp/{}", unique_id("made"));
    let mut bundle = Bundle::new(&["mkdir", &name]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let id = unique_id("events-mkdir");
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
    let e = agent
        .wait_event(
            |e| {
                e["event"] == "syscall" && e["container_id"] == id.as_str() && e["path"].is_string()
            },
            EVENT_WAIT,
        )
        .unwrap_or_else(|| panic!("no mkdir event with a path: {}", agent.output()));
    assert_eq!(e["path"], name.as_str(), "{e}");
    assert_eq!(e["action"], "deny", "{e}");
    let call = e["call"].as_str().unwrap_or_default();
    assert!(is_mkdir_call(call, &name, "0777"), "{e}");
    assert_eq!(e["comm"], "mkdir", "{e}");
    assert!(
        e["exe"]
            .as_str()
            .is_some_and(|exe| exe.ends_with("/bin/busybox")),
        "{e}"
    );
    assert!(e.get("unread").is_none(), "{e}");
    // An absolute path needs no working directory beside it.
    assert!(e.get("cwd").is_none(), "{e}");
    // Metric labels never carry paths.
    assert!(!agent.metrics().contains(&name), "{}", agent.metrics());
    // `switchboard status` shows the denial with what it named and which program made it.
    let out = run_cmd(
        Command::new(BIN).args(["status", "--metrics-addr", agent.metrics_addr()]),
        TIMEOUT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.lines().any(|l| is_mkdir_call(
            l.trim().split(" by ").next().unwrap_or_default(),
            &name,
            "0777"
        ) && l.contains(" by mkdir (")
            && l.contains("/bin/busybox)")),
        "{out:?}"
    );
}

#[test]
fn execve_under_a_log_rule_reports_argv() {
    if !require_root("execve_under_a_log_rule_reports_argv") || !Runtime::Runc.require() {
        return;
    }
    let agent = Agent::with_policy(
        &policy_yaml("allow", "log-exec", &["execve"], "log", None),
        &[],
    );
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "cd /tmp && exec ../bin/echo hello 'two words' \"$((6*7))\"",
    ]);
    bundle.set_seccomp(notify_profile(agent.socket(), &["execve"], None));
    let out = run_runc(&bundle, &unique_id("events-exec"), TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    assert!(out.stdout.contains("hello two words 42"), "{out:?}");
    let e = agent
        .wait_event(
            |e| e["event"] == "syscall" && e["path"] == "../bin/echo",
            EVENT_WAIT,
        )
        .unwrap_or_else(|| panic!("no execve event of echo: {}", agent.output()));
    assert_eq!(e["syscall"], "execve", "{e}");
    assert_eq!(e["action"], "log", "{e}");
    assert_eq!(
        e["argv"],
        serde_json::json!(["../bin/echo", "hello", "two words", "42"]),
        "{e}"
    );
    let call = e["call"].as_str().unwrap_or_default();
    assert!(
        call.starts_with(
            "execve(\"../bin/echo\", [\"../bin/echo\", \"hello\", \"two words\", \"42\"], 0x"
        ),
        "{e}"
    );
    // A relative path comes with the caller's working directory.
    assert_eq!(e["cwd"], "/tmp", "{e}");
}

/// The `NAME=VALUE …` line a fixture printed for `name`, its first number.
fn printed(out: &RunOutput, name: &str) -> i64 {
    let prefix = format!("{name}=");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= line: {out:?}"))
}

#[test]
fn hostile_path_pointers_are_answered_and_reported() {
    if !require_root("hostile_path_pointers_are_answered_and_reported")
        || !Runtime::Runc.require()
        || !require_tool("gcc")
    {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir("EPERM"), &[]);
    let mut bundle = Bundle::new(&["/bin/hostile-paths"]);
    compile_static(
        &fixture("hostile_paths.c"),
        &bundle.rootfs().join("bin/hostile-paths"),
    );
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let id = unique_id("events-hostile");
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    // Every call is answered by the policy (EPERM), not by the kernel (EFAULT, ENAMETOOLONG).
    for name in ["null", "unmapped", "toolong", "nonutf8", "after"] {
        assert_eq!(printed(&out, name), -1, "{name}: {out:?}");
        assert!(
            out.stdout.contains(&format!("{name}=-1 {}", libc::EPERM)),
            "{name}: {out:?}"
        );
    }
    assert_eq!(printed(&out, "i386"), -i64::from(libc::EPERM), "{out:?}");

    // Every line the agent printed is JSON (the harness parses them), and each call says
    // what could be read of its path.
    let stdout = agent.stdout_text();
    for line in stdout.lines().filter(|l| l.contains(id.as_str())) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let mkdirs: Vec<Value> = {
        let mut found = Vec::new();
        assert!(
            eventually(EVENT_WAIT, || {
                found = agent
                    .events()
                    .into_iter()
                    .filter(|e| e["event"] == "syscall" && e["container_id"] == id.as_str())
                    .filter(|e| e["syscall"] == "mkdir")
                    .collect();
                found.len() >= 6
            }),
            "{}",
            agent.output()
        );
        found
    };
    let by_call = |prefix: &str| {
        mkdirs
            .iter()
            .find(|e| e["call"].as_str().is_some_and(|c| c.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no event whose call starts {prefix}: {mkdirs:?}"))
    };
    let null = by_call("mkdir(NULL, 0755)");
    assert_eq!(null["unread"]["path"], "NULL pointer", "{null}");
    let unmapped = by_call("mkdir(0x10 /* unreadable");
    assert_eq!(
        unmapped["unread"]["path"], "unmapped memory (EFAULT)",
        "{unmapped}"
    );
    let long = by_call("mkdir(\"/aaaa");
    assert!(
        long["unread"]["path"]
            .as_str()
            .is_some_and(|r| r.starts_with("longer than PATH_MAX")),
        "{long}"
    );
    assert!(
        long["call"].as_str().unwrap().contains("\"..., 0755)"),
        "{long}"
    );
    let bad = by_call("mkdir(\"/tmp/bad-");
    assert_eq!(bad["path"], "/tmp/bad-\\xff\\xfe-name", "{bad}");
    assert_eq!(
        bad["call"], "mkdir(\"/tmp/bad-\\xff\\xfe-name\", 0755)",
        "{bad}"
    );
    let i386 = by_call("mkdir(\"/tmp/via-int80\"");
    assert_eq!(
        (&i386["arch"], &i386["path"]),
        (&"x86".into(), &"/tmp/via-int80".into())
    );
    let after = by_call("mkdir(\"/tmp/after\", 0755)");
    assert_eq!(after["comm"], "hostile-paths", "{after}");
    // Still serving: the agent answers a fresh container.
    let mut again = Bundle::new(&["sh", "-c", "mkdir /tmp/again; echo mkdir=$?"]);
    again.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let out = run_runc(&again, &unique_id("events-again"), TIMEOUT);
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
}

#[test]
fn run_prints_calls_like_strace() {
    let dir = tmpdir();
    let policy = dir.path().join("p.yaml");
    fs::write(
        &policy,
        "default: allow\nrules:\n  - name: no-mkdir\n    syscalls: [mkdir, mkdirat]\n    action: deny\n    errno: EPERM\n  - name: watch-rmdir\n    syscalls: [rmdir]\n    action: log\n",
    )
    .unwrap();
    let d = dir.path().display().to_string();
    let script = format!("mkdir {d}/made; mkdir {d}/kept; rmdir {d}/none; exit 0");
    let out = run_cmd(
        Command::new(BIN)
            .arg("run")
            .arg("--policy")
            .arg(&policy)
            .args(["--", "sh", "-c", &script]),
        TIMEOUT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    for made in ["made", "kept"] {
        let path = format!("{d}/{made}");
        let strace = [
            format!(" mkdir(\"{path}\", 0777) = -1 EPERM (rule no-mkdir) pid="),
            format!(" mkdirat(AT_FDCWD, \"{path}\", 0777) = -1 EPERM (rule no-mkdir) pid="),
        ];
        assert!(
            lines.iter().any(|l| l.contains(" deny ")
                && strace.iter().any(|s| l.contains(s.as_str()))
                && l.contains(" comm=mkdir ")),
            "no strace-like line for {path}: {out:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            " log   rmdir(\"{d}/none\") = ? (rule watch-rmdir) pid="
        ))),
        "{out:?}"
    );
}
