//! End-to-end tests of `switchboard agent`, `switchboard run` and `switchboard check`
//! against real runtimes (runc, crun, podman) and busybox containers.
//!
//! The container tests need root; without it they print SKIP. Under CI=true a
//! missing runtime fails the test (see `common::require_tool`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);
const EVENT_WAIT: Duration = Duration::from_secs(5);

const SYSCALLS: &str = "switchboard_syscalls_total";
const LISTENERS: &str = "switchboard_listeners";
const INTAKE_ERRORS: &str = "switchboard_intake_errors_total";
const KILLED_TOTAL: &str = "switchboard_containers_killed_total";
const RELOADS: &str = "switchboard_policy_reloads_total";

const MKDIRS: &[&str] = &["mkdir", "mkdirat"];

fn deny_mkdir_policy(errno: &str) -> String {
    policy_yaml("log", "no-mkdir", MKDIRS, "deny", Some(errno))
}

fn is_mkdir(e: &Value) -> bool {
    matches!(e["syscall"].as_str(), Some("mkdir" | "mkdirat"))
}

fn is_syscall_event(e: &Value, container_id: Option<&str>) -> bool {
    e["event"] == "syscall" && container_id.is_none_or(|id| e["container_id"] == id)
}

/// `switchboard_syscalls_total` for mkdir plus mkdirat with `action`.
fn mkdir_count(agent: &Agent, action: &str) -> f64 {
    let action = format!("action=\"{action}\"");
    let text = agent.metrics();
    MKDIRS
        .iter()
        .map(|s| metric_value(&text, SYSCALLS, &[&action, &format!("syscall=\"{s}\"")]))
        .sum()
}

fn assert_listeners_back_to_zero(agent: &Agent) {
    let v = agent.wait_metric(LISTENERS, &[], |v| v == 0.0, EVENT_WAIT);
    assert_eq!(v, 0.0, "{LISTENERS} after the containers ended");
}

/// The syscall event of `container_id` for mkdir/mkdirat, waiting for it.
fn mkdir_event(agent: &Agent, container_id: Option<&str>) -> Value {
    agent
        .wait_event(
            |e| is_syscall_event(e, container_id) && is_mkdir(e),
            EVENT_WAIT,
        )
        .unwrap_or_else(|| {
            panic!(
                "no mkdir event for {container_id:?}; stdout:\n{}\nstderr:\n{}",
                agent.stdout_text(),
                agent.stderr_text()
            )
        })
}

/// The agent's /metrics passes `promtool check metrics` (format and naming lint).
fn assert_promtool_accepts(agent: &Agent) {
    if !require_tool("promtool") {
        return;
    }
    let text = agent.metrics();
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- metrics:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A runc container whose mkdir the agent (policy: deny mkdir with EPERM) must deny.
fn assert_mkdir_denied_by(agent: &Agent, tag: &str) {
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let id = unique_id(tag);
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{tag}: {out:?}");
    assert!(out.stdout.contains("mkdir=1"), "{tag}: {out:?}");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{tag}: {out:?}"
    );
    let e = mkdir_event(agent, Some(&id));
    assert_eq!(e["action"], "deny", "{tag}: {e}");
}

// ---------------------------------------------------------------------------
// deny / log under each runtime
// ---------------------------------------------------------------------------

fn deny_and_log(runtime: Runtime, test: &str) {
    if !require_root(test) || !runtime.require() {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir_policy("EPERM"), &[]);
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "mkdir /tmp/x; echo mkdir=$?; uname; echo uname=$?",
    ]);
    bundle.set_seccomp(notify_profile(
        agent.socket(),
        &["mkdir", "mkdirat", "uname"],
        Some(test),
    ));
    let id = unique_id(test);
    let out = run(runtime, &bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{out:?}\nagent:\n{}", agent.stderr_text());
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
    assert!(out.stdout.contains("Linux\nuname=0"), "{out:?}");
    assert!(!bundle.rootfs().join("tmp/x").exists(), "mkdir ran");

    // podman names the container with its own id, not ours.
    let our_id = (runtime != Runtime::Podman).then_some(id.as_str());
    let deny = mkdir_event(&agent, our_id);
    assert_eq!(deny["action"], "deny", "{deny}");
    assert_eq!(deny["errno"], 1, "{deny}");
    assert_eq!(deny["rule"], "no-mkdir", "{deny}");
    assert_eq!(deny["arch"], "x86_64", "{deny}");
    let nr = if deny["syscall"] == "mkdir" { 83 } else { 258 };
    assert_eq!(deny["nr"], nr, "{deny}");
    assert!(deny["pid"].as_u64().unwrap_or(0) > 0, "{deny}");
    assert_eq!(deny["args"].as_array().map(Vec::len), Some(6), "{deny}");
    assert!(
        deny["time"].as_str().is_some_and(|t| t.contains('T')),
        "{deny}"
    );
    let container_id = deny["container_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!container_id.is_empty(), "{deny}");

    let uname = agent
        .wait_event(
            |e| is_syscall_event(e, Some(&container_id)) && e["syscall"] == "uname",
            EVENT_WAIT,
        )
        .expect("uname event");
    assert_eq!(uname["action"], "log", "{uname}");
    assert_eq!(uname["errno"], 0, "{uname}");
    assert!(uname["rule"].is_null(), "{uname}");

    let added = agent
        .wait_event(
            |e| e["event"] == "listener_added" && e["container_id"] == container_id.as_str(),
            EVENT_WAIT,
        )
        .expect("listener_added event");
    assert!(added["init_pid"].as_u64().unwrap_or(0) > 0, "{added}");
    agent
        .wait_event(
            |e| e["event"] == "listener_removed" && e["container_id"] == container_id.as_str(),
            EVENT_WAIT,
        )
        .expect("listener_removed event");

    assert!(mkdir_count(&agent, "deny") >= 1.0, "{}", agent.metrics());
    let log = ["action=\"log\"", "syscall=\"uname\""];
    assert!(
        agent.metric_value(SYSCALLS, &log) >= 1.0,
        "{}",
        agent.metrics()
    );
    let decisions = agent.metric_value("switchboard_decision_duration_seconds_count", &[]);
    assert!(decisions >= 2.0, "{}", agent.metrics());
    // Timed on the TSC (quanta): a decision takes microseconds, from RECV's return to
    // SEND's, so the mean must be above zero and far below 10 ms.
    let mean = agent.metric_value("switchboard_decision_duration_seconds_sum", &[]) / decisions;
    assert!(
        mean > 0.0 && mean < 0.01,
        "mean {mean}: {}",
        agent.metrics()
    );
    assert_listeners_back_to_zero(&agent);
    assert_promtool_accepts(&agent);
}

#[test]
fn runc_deny_and_log() {
    deny_and_log(Runtime::Runc, "runc_deny_and_log");
}

#[test]
fn crun_deny_and_log() {
    deny_and_log(Runtime::Crun, "crun_deny_and_log");
}

#[test]
fn podman_deny_and_log() {
    deny_and_log(Runtime::Podman, "podman_deny_and_log");
}

// ---------------------------------------------------------------------------
// kill
// ---------------------------------------------------------------------------

#[test]
fn kill_rule_ends_container() {
    if !require_root("kill_rule_ends_container") || !Runtime::Runc.require() {
        return;
    }
    let agent = Agent::with_policy(&policy_yaml("log", "kill-mkdir", MKDIRS, "kill", None), &[]);
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo after-mkdir; sleep 30"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let id = unique_id("kill");
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "container lived {:?}",
        out.elapsed
    );
    // runc reports a container killed by a signal as 128+signal (137 for SIGKILL).
    assert!(out.code() > 128, "{out:?}");
    assert!(
        !bundle.rootfs().join("tmp/x").exists(),
        "the killed syscall ran"
    );

    let e = mkdir_event(&agent, Some(&id));
    assert_eq!(e["action"], "kill", "{e}");
    assert_eq!(e["rule"], "kill-mkdir", "{e}");
    let killed = agent.wait_metric(KILLED_TOTAL, &[], |v| v >= 1.0, EVENT_WAIT);
    assert_eq!(killed, 1.0, "{}", agent.metrics());
    assert!(mkdir_count(&agent, "kill") >= 1.0, "{}", agent.metrics());
    assert_listeners_back_to_zero(&agent);
}

/// Flagged syscalls of the kill tests: mkdir runs in a child of busybox sh, cd in the shell.
const KILLED: &[&str] = &["mkdir", "mkdirat", "chdir"];

/// Scripts whose flagged call is killed, each naming the files it would write after it:
/// the caller is the shell itself (`cd`), or a child of a subshell (busybox forks `mkdir`
/// and the subshell waits for it), whose parent is not the container's init.
const KILL_SCRIPTS: [(&str, &str, &[&str]); 2] = [
    (
        "shell",
        "cd /tmp; echo hi > /tmp/after; sleep 30",
        &["tmp/after"],
    ),
    (
        "child",
        "(mkdir /tmp/x; echo hi > /tmp/after); echo hi > /tmp/after-init; sleep 30",
        &["tmp/after", "tmp/after-init", "tmp/x"],
    ),
];

/// Runs each of [`KILL_SCRIPTS`] in a runc container (in a pid namespace or not) under a
/// policy that kills its flagged call: nothing the script would do afterwards happens,
/// and the container ends at once.
fn kill_stops_everything(test: &str, pid_namespace: bool) {
    if !require_root(test) || !Runtime::Runc.require() {
        return;
    }
    let agent = Agent::with_policy(&policy_yaml("log", "kill-it", KILLED, "kill", None), &[]);
    for (caller, script, files) in KILL_SCRIPTS {
        let mut bundle = Bundle::new(&["sh", "-c", script]);
        if !pid_namespace {
            bundle.without_namespace("pid");
        }
        bundle.set_seccomp(notify_profile(agent.socket(), KILLED, None));
        let id = unique_id(&format!("kill-{caller}"));
        let out = run_runc(&bundle, &id, TIMEOUT);
        assert!(!out.timed_out, "{caller}: {out:?}");
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{caller}: lived {:?}",
            out.elapsed
        );
        assert_eq!(out.code(), 137, "{caller}: {out:?}\n{}", agent.output());
        for file in files {
            assert!(
                !bundle.rootfs().join(file).exists(),
                "{caller}: {file} was written after the killed call; {out:?}"
            );
        }
        let e = agent
            .wait_event(|e| is_syscall_event(e, Some(&id)), EVENT_WAIT)
            .unwrap_or_else(|| panic!("{caller}: no event: {}", agent.output()));
        assert_eq!(
            (e["action"].as_str(), e["rule"].as_str()),
            (Some("kill"), Some("kill-it")),
            "{e}"
        );
    }
    let killed = agent.wait_metric(KILLED_TOTAL, &[], |v| v >= 2.0, EVENT_WAIT);
    assert_eq!(killed, 2.0, "{}", agent.metrics());
    assert_listeners_back_to_zero(&agent);
}

#[test]
fn kill_stops_caller_and_container_in_a_pid_namespace() {
    kill_stops_everything("kill_stops_caller_and_container_in_a_pid_namespace", true);
}

/// Without a pid namespace (hostPID, shared-pid pods), the init's death takes nobody with it.
#[test]
fn kill_stops_caller_and_container_without_a_pid_namespace() {
    kill_stops_everything(
        "kill_stops_caller_and_container_without_a_pid_namespace",
        false,
    );
}

// ---------------------------------------------------------------------------
// hostile clients on the agent socket
// ---------------------------------------------------------------------------

/// A well-formed container state message, as runc sends it.
fn state_payload() -> Vec<u8> {
    let pid = std::process::id();
    json!({
        "ociVersion": "1.0.2",
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": "hostile",
        "state": {
            "ociVersion": "1.0.2",
            "id": format!("hostile-{pid}"),
            "status": "creating",
            "pid": pid,
            "bundle": "/nonexistent"
        }
    })
    .to_string()
    .into_bytes()
}

fn send_with_fds(sock: &UnixStream, payload: &[u8], fds: &[RawFd]) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [IoSlice::new(payload)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).expect("sendmsg");
}

/// Connects, sends `payload` with `fds`, and closes.
fn hostile(agent: &Agent, payload: &[u8], fds: &[RawFd]) {
    let s = UnixStream::connect(agent.socket()).expect("connect to agent");
    send_with_fds(&s, payload, fds);
    let _ = s.shutdown(std::net::Shutdown::Write);
}

fn wait_reason(agent: &Agent, reason: &str) {
    let label = format!("reason=\"{reason}\"");
    let v = agent.wait_metric(
        INTAKE_ERRORS,
        &[&label],
        |v| v >= 1.0,
        Duration::from_secs(10),
    );
    assert_eq!(
        v,
        1.0,
        "{INTAKE_ERRORS}{{{label}}}\n{}\nagent stderr:\n{}",
        agent.metrics(),
        agent.stderr_text()
    );
}

#[test]
fn hostile_clients_are_counted_and_do_not_block() {
    if !require_root("hostile_clients_are_counted_and_do_not_block") || !Runtime::Runc.require() {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir_policy("EPERM"), &[]);
    let base_errors = agent.metric_value(INTAKE_ERRORS, &[]);
    let base_fds = count_fds(agent.pid());
    let state = state_payload();

    // Valid state, no fd.
    hostile(&agent, &state, &[]);
    wait_reason(&agent, "no_fd");
    assert_mkdir_denied_by(&agent, "after-no-fd");

    // Two fds where the state names one.
    let a = fs::File::open("/dev/null").unwrap();
    let b = fs::File::open("/dev/null").unwrap();
    hostile(&agent, &state, &[a.as_raw_fd(), b.as_raw_fd()]);
    wait_reason(&agent, "fd_count");
    assert_mkdir_denied_by(&agent, "after-fd-count");

    // A pipe instead of a seccomp listener.
    let (r, _w) = nix::unistd::pipe().unwrap();
    hostile(&agent, &state, &[r.as_raw_fd()]);
    wait_reason(&agent, "not_a_listener");
    assert_mkdir_denied_by(&agent, "after-pipe");

    // JSON cut off, then EOF.
    hostile(&agent, &state[..state.len() / 2], &[]);
    wait_reason(&agent, "truncated");
    assert_mkdir_denied_by(&agent, "after-truncated");

    // Binary junk.
    let junk: Vec<u8> = (0..256u32)
        .map(|i| u8::try_from((i * 167 + 13) % 256).unwrap())
        .collect();
    hostile(&agent, &junk, &[]);
    wait_reason(&agent, "bad_json");
    assert_mkdir_denied_by(&agent, "after-junk");

    // More than 1 MiB. The agent may close the connection before reading it all.
    {
        let mut s = UnixStream::connect(agent.socket()).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut big = br#"{"ociVersion":"1.0.2","metadata":""#.to_vec();
        big.resize(1024 * 1024 + 64 * 1024, b'a');
        let _ = s.write_all(&big);
        let _ = s.write_all(b"\"}");
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    wait_reason(&agent, "too_large");
    assert_mkdir_denied_by(&agent, "after-too-large");

    // Connect and send nothing: while that connection idles, a container is served.
    let mut idle = UnixStream::connect(agent.socket()).unwrap();
    let t0 = Instant::now();
    assert_mkdir_denied_by(&agent, "during-idle-client");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "a container waited for an idle client: {:?}",
        t0.elapsed()
    );
    wait_reason(&agent, "timeout");
    // ...and the agent hung up on it.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("idle client still connected after the timeout: {other:?}"),
    }
    drop(idle);

    let total = agent.metric_value(INTAKE_ERRORS, &[]) - base_errors;
    assert_eq!(total, 7.0, "{}", agent.metrics());
    assert_listeners_back_to_zero(&agent);
    let pid = agent.pid();
    assert!(
        eventually(EVENT_WAIT, || count_fds(pid) <= base_fds),
        "agent holds {} fds, {base_fds} before the hostile clients",
        count_fds(pid)
    );
}

// ---------------------------------------------------------------------------
// churn: no leaks, no spinning
// ---------------------------------------------------------------------------

#[test]
fn churn_leaks_nothing_and_idles() {
    if !require_root("churn_leaks_nothing_and_idles") || !Runtime::Runc.require() {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir_policy("EPERM"), &[]);
    let pid = agent.pid();
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/c; echo mkdir=$?"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));

    let mut ids = Vec::new();
    let mut run_one = |tag: &str| {
        let id = unique_id(tag);
        let out = run_runc(&bundle, &id, TIMEOUT);
        assert!(out.stdout.contains("mkdir=1"), "{id}: {out:?}");
        ids.push(id);
    };
    // One container first, so that whatever the agent sets up lazily is in the baseline.
    run_one("churn-warmup");
    assert_listeners_back_to_zero(&agent);
    thread::sleep(Duration::from_millis(200));
    let (base_fds, base_threads) = (count_fds(pid), count_threads(pid));

    for i in 0..20 {
        run_one(&format!("churn-{i}"));
    }

    assert_listeners_back_to_zero(&agent);
    assert!(
        eventually(Duration::from_secs(10), || count_fds(pid) <= base_fds),
        "fd leak: {} fds, {base_fds} before",
        count_fds(pid)
    );
    assert!(
        eventually(Duration::from_secs(15), || count_threads(pid)
            <= base_threads),
        "thread leak: {} threads, {base_threads} before",
        count_threads(pid)
    );
    assert_eq!(mkdir_count(&agent, "deny"), 21.0, "{}", agent.metrics());
    for id in &ids {
        let n = |kind: &str| {
            agent
                .events()
                .iter()
                .filter(|e| e["event"] == kind && e["container_id"] == id.as_str())
                .count()
        };
        assert_eq!(n("listener_added"), 1, "listener_added for {id}");
        assert_eq!(n("listener_removed"), 1, "listener_removed for {id}");
    }

    // Idle means idle: no thread spinning on a dead listener (one would use 100 ticks a
    // second). Over 2 s, so the writer's and the watcher's wake-ups on a loaded CI machine
    // do not round up to a failure.
    let t0 = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - t0;
    assert!(used <= 5, "idle agent used {used} clock ticks in 2 s");
}

// ---------------------------------------------------------------------------
// SIGHUP reload
// ---------------------------------------------------------------------------

/// Runs a short runc container that tries mkdir; returns its output and id.
fn try_mkdir(agent: &Agent, tag: &str) -> (RunOutput, String) {
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let id = unique_id(tag);
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{tag}: {out:?}");
    (out, id)
}

#[test]
fn sighup_reloads_policy_for_running_and_new_containers() {
    if !require_root("sighup_reloads_policy_for_running_and_new_containers")
        || !Runtime::Runc.require()
    {
        return;
    }
    let agent = Agent::with_policy(&policy_yaml("log", "mkdir-log", MKDIRS, "log", None), &[]);
    let failure = ["result=\"failure\""];
    let success = ["result=\"success\""];

    // A container that is running across the reloads and tries mkdir only when told.
    let mut long = Bundle::new(&[
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; \
         mkdir /tmp/y || echo denied-after-reload",
    ]);
    long.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let long_id = unique_id("sighup-long");
    let long_run = spawn(Runtime::Runc, &long, &long_id, TIMEOUT);
    agent
        .wait_event(
            |e| e["event"] == "listener_added" && e["container_id"] == long_id.as_str(),
            EVENT_WAIT,
        )
        .expect("listener_added for the long-lived container");

    // Policy A: mkdir is logged and allowed.
    let (out, id) = try_mkdir(&agent, "sighup-a");
    assert!(out.stdout.contains("mkdir=0"), "{out:?}");
    assert_eq!(mkdir_event(&agent, Some(&id))["action"], "log");

    // Policy B does not parse: the reload fails and A stays in force.
    agent.write_policy(
        "default: log\nrules:\n  - name: broken\n    syscalls: [mkdir, mkdirat\n    action: deny\n",
    );
    agent.sighup();
    let v = agent.wait_metric(RELOADS, &failure, |v| v >= 1.0, EVENT_WAIT);
    assert_eq!(v, 1.0, "{}", agent.metrics());
    assert_eq!(agent.metric_value(RELOADS, &success), 0.0);
    let (out, id) = try_mkdir(&agent, "sighup-b");
    assert!(out.stdout.contains("mkdir=0"), "{out:?}");
    assert_eq!(mkdir_event(&agent, Some(&id))["action"], "log");

    // Policy C: mkdir is denied with EACCES.
    agent.write_policy(&deny_mkdir_policy("EACCES"));
    agent.sighup();
    let v = agent.wait_metric(RELOADS, &success, |v| v >= 1.0, EVENT_WAIT);
    assert_eq!(v, 1.0, "{}", agent.metrics());
    assert_eq!(agent.metric_value(RELOADS, &failure), 1.0);
    let (out, id) = try_mkdir(&agent, "sighup-c");
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let e = mkdir_event(&agent, Some(&id));
    assert_eq!(
        (&e["action"], &e["errno"]),
        (&json!("deny"), &json!(13)),
        "{e}"
    );

    // The container from before the reload kept its listener and gets C's decision.
    assert!(!long_run.is_finished(), "long-lived container ended early");
    let removed_early = agent
        .events()
        .into_iter()
        .any(|e| e["event"] == "listener_removed" && e["container_id"] == long_id.as_str());
    assert!(!removed_early, "listener of a running container removed");
    fs::write(long.rootfs().join("tmp/go"), "").unwrap();
    let out = long_run.join();
    assert!(!out.timed_out, "{out:?}");
    assert!(out.stdout.contains("denied-after-reload"), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let e = mkdir_event(&agent, Some(&long_id));
    assert_eq!(
        (&e["action"], &e["errno"]),
        (&json!("deny"), &json!(13)),
        "{e}"
    );
    agent
        .wait_event(
            |e| e["event"] == "listener_removed" && e["container_id"] == long_id.as_str(),
            EVENT_WAIT,
        )
        .expect("listener_removed after the long-lived container ended");
    assert_listeners_back_to_zero(&agent);
}

// ---------------------------------------------------------------------------
// switchboard check
// ---------------------------------------------------------------------------

#[test]
fn check_accepts_valid_policy() {
    let dir = tmpdir();
    let file = dir.path().join("policy.yaml");
    fs::write(&file, deny_mkdir_policy("EPERM")).unwrap();
    let out = run_cmd(Command::new(BIN).arg("check").arg(&file), TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
}

#[test]
fn check_reports_file_line_of_unknown_action() {
    let dir = tmpdir();
    let file = dir.path().join("policy.yaml");
    let policy = "default: log\nrules:\n  - name: no-mkdir\n    syscalls: [mkdir, mkdirat]\n    action: denyy\n    errno: EPERM\n";
    fs::write(&file, policy).unwrap();
    let out = run_cmd(Command::new(BIN).arg("check").arg(&file), TIMEOUT);
    assert!(!out.timed_out && out.code() != 0, "{out:?}");
    assert!(out.stderr.contains("policy.yaml:5:"), "{out:?}");
    assert!(out.stderr.contains("denyy"), "{out:?}");
}

/// `check`, `run` and `agent` share one validator: a policy naming a handover syscall is refused
/// by all three with the same position and reason (the OCI hook's side is in oci-hook/tests/merge.rs).
#[test]
fn check_run_and_agent_refuse_a_handover_syscall_alike() {
    let dir = tmpdir();
    let file = dir.path().join("policy.yaml");
    fs::write(
        &file,
        "rules:\n  - name: watch\n    syscalls: [mkdir, write]\n    action: log\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let expected = format!("{file}:3:23: the policy names write, which cannot be flagged");
    for args in [
        vec!["check", file],
        vec!["run", "--policy", file, "--", "true"],
        vec![
            "agent",
            "--policy",
            file,
            "--socket",
            "/nonexistent/sb.sock",
        ],
    ] {
        let out = run_cmd(Command::new(BIN).args(&args), TIMEOUT);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(&expected), "{args:?}: {out:?}");
    }
}

// ---------------------------------------------------------------------------
// switchboard run
// ---------------------------------------------------------------------------

/// A 0777 dir holding a world-readable policy that denies mkdir/mkdirat with EACCES;
/// unprivileged commands may create entries in it, so a denied mkdir is the policy's doing.
fn run_fixture() -> (tempfile::TempDir, String) {
    let dir = tmpdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let policy = dir.path().join("p.yaml");
    fs::write(&policy, deny_mkdir_policy("EACCES")).unwrap();
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o644)).unwrap();
    (dir, policy.to_str().unwrap().to_string())
}

/// `switchboard ARGS` as nobody (via setpriv) when root, as ourselves otherwise.
/// The Option keeps the binary's 0755 copy alive.
fn unprivileged(args: &[&str]) -> Option<(Command, Option<tempfile::TempDir>)> {
    if !is_root() {
        let mut c = Command::new(BIN);
        c.args(args);
        return Some((c, None));
    }
    if !require_tool("setpriv") {
        return None;
    }
    let (dir, bin) = world_executable_bin();
    let mut c = Command::new(tool("setpriv"));
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .args(args)
        .current_dir("/");
    Some((c, Some(dir)))
}

/// [`unprivileged`] `switchboard ARGS`, run to its end within [`TIMEOUT`].
fn run_unprivileged(args: &[&str]) -> Option<RunOutput> {
    let (mut cmd, _bin) = unprivileged(args)?;
    let out = run_cmd(&mut cmd, TIMEOUT);
    assert!(!out.timed_out, "{args:?}: {out:?}");
    Some(out)
}

fn mkdir_cmd(dir: &Path, then: &str) -> String {
    format!("mkdir {}/made; {then}", dir.display())
}

#[test]
fn run_denies_mkdir_as_nobody_and_keeps_exit_status() {
    let (dir, policy) = run_fixture();
    let script = mkdir_cmd(dir.path(), "exit 7");
    let args = ["run", "--policy", &policy, "--", "sh", "-c", &script];
    let Some(out) = run_unprivileged(&args) else {
        return;
    };
    assert_eq!(out.code(), 7, "{out:?}");
    assert!(!dir.path().join("made").exists(), "mkdir ran");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("mkdir") && l.contains("deny")),
        "no deny event for mkdir on stderr: {out:?}"
    );
}

#[test]
fn run_exits_128_plus_signal() {
    let (_dir, policy) = run_fixture();
    let args = [
        "run",
        "--policy",
        &policy,
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ];
    let Some(out) = run_unprivileged(&args) else {
        return;
    };
    assert_eq!(out.code(), 143, "{out:?}");
}

#[test]
fn run_json_log_format_emits_syscall_events() {
    let (dir, policy) = run_fixture();
    let script = mkdir_cmd(dir.path(), "true");
    let args = [
        "run",
        "--policy",
        &policy,
        "--log-format",
        "json",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let Some(out) = run_unprivileged(&args) else {
        return;
    };
    let event = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "syscall" && is_mkdir(e))
        .unwrap_or_else(|| panic!("no JSON mkdir event on stderr: {out:?}"));
    assert_eq!(event["action"], "deny", "{event}");
    assert_eq!(event["errno"], 13, "{event}");
    assert_eq!(event["rule"], "no-mkdir", "{event}");
}

/// `switchboard run` has no container: a killed call ends the caller and the command's
/// whole process group, before the shell (or the caller's parent subshell) runs on.
#[test]
fn run_kill_stops_caller_and_command() {
    let (dir, _) = run_fixture();
    let policy = dir.path().join("kill.yaml");
    fs::write(&policy, policy_yaml("log", "kill-it", KILLED, "kill", None)).unwrap();
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o644)).unwrap();
    let policy = policy.to_str().unwrap();
    let d = dir.path().display();
    for (caller, script, files) in KILL_SCRIPTS {
        // The container scripts' paths, under the fixture dir.
        let script = script.replace("/tmp", &d.to_string());
        let args = ["run", "--policy", policy, "--", "sh", "-c", &script];
        let Some(out) = run_unprivileged(&args) else {
            return;
        };
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{caller}: lived {:?}",
            out.elapsed
        );
        assert_eq!(out.code(), 137, "{caller}: {out:?}");
        for file in files {
            let file = dir.path().join(file.trim_start_matches("tmp/"));
            assert!(
                !file.exists(),
                "{caller}: {} was written; {out:?}",
                file.display()
            );
        }
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("kill") && l.contains("(rule kill-it)")),
            "{caller}: no kill event: {out:?}"
        );
    }
}

/// Opens the agent's socket (bound 0600) to every user through the file system, as an
/// operator would for `--allow-uid`; the agent still checks the peer's uid.
fn open_socket_to_all(agent: &Agent) {
    fs::set_permissions(agent.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(agent.socket(), fs::Permissions::from_mode(0o666)).unwrap();
}

/// The uid that [`unprivileged`] runs as.
fn unprivileged_uid() -> u32 {
    if is_root() {
        65534
    } else {
        nix::unistd::geteuid().as_raw()
    }
}

/// `switchboard run --agent` as the unprivileged uid, trying a mkdir in a fresh
/// directory; `None` when no unprivileged user can run the binary here.
fn unprivileged_run_with_agent(agent: &Agent) -> Option<(RunOutput, tempfile::TempDir)> {
    let (dir, _policy) = run_fixture();
    let script = mkdir_cmd(dir.path(), "echo $?");
    let sock = agent.socket().to_str().unwrap().to_string();
    let args = ["run", "--agent", &sock, "--", "sh", "-c", &script];
    let (mut cmd, _bin) = unprivileged(&args)?;
    let out = run_cmd(&mut cmd, TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    Some((out, dir))
}

#[test]
fn run_with_agent_hands_listener_to_allowed_uid() {
    let uid = unprivileged_uid().to_string();
    let agent = Agent::with_policy(&deny_mkdir_policy("EPERM"), &["--allow-uid", &uid]);
    open_socket_to_all(&agent);
    let Some((out, dir)) = unprivileged_run_with_agent(&agent) else {
        return;
    };
    assert_run_denied_by(&agent, &out, dir.path());
}

/// The mkdir of [`unprivileged_run_with_agent`] was denied by `agent`'s policy.
fn assert_run_denied_by(agent: &Agent, out: &RunOutput, dir: &Path) {
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout.lines().last(), Some("1"), "{out:?}");
    assert!(!dir.join("made").exists(), "mkdir ran");
    let e = mkdir_event(agent, None);
    assert_eq!(e["action"], "deny", "{e}");
    assert_eq!(e["errno"], 1, "{e}");
    agent
        .wait_event(|e| e["event"] == "listener_added", EVENT_WAIT)
        .expect("listener_added for the run");
}

/// Without `--allow-uid`, a non-root peer's listener is refused even when the socket's
/// mode lets it connect; its flagged syscalls then fail (ENOSYS) instead of running.
#[test]
fn agent_refuses_listener_from_uid_not_allowed() {
    if !require_root("agent_refuses_listener_from_uid_not_allowed") {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir_policy("EPERM"), &[]);
    open_socket_to_all(&agent);
    let Some((out, dir)) = unprivileged_run_with_agent(&agent) else {
        return;
    };
    assert!(!dir.path().join("made").exists(), "mkdir ran: {out:?}");
    wait_reason(&agent, "peer_refused");
    assert_no_listener_added(&agent);
}

/// With `--socket-group`, the socket is born 0660 in that group: an allowed uid in the group
/// is served without anyone loosening the socket's mode by hand.
#[test]
fn allowed_uid_in_the_socket_group_is_served() {
    if !require_root("allowed_uid_in_the_socket_group_is_served") {
        return;
    }
    let uid = unprivileged_uid().to_string();
    let agent = Agent::with_policy(
        &deny_mkdir_policy("EPERM"),
        &["--allow-uid", &uid, "--socket-group", &uid],
    );
    let meta = fs::metadata(agent.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "{meta:?}");
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        65534,
        "{meta:?}"
    );
    // Only the directory is opened up (the agent's temp dir is 0700), not the socket.
    fs::set_permissions(agent.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let Some((out, dir)) = unprivileged_run_with_agent(&agent) else {
        return;
    };
    assert_run_denied_by(&agent, &out, dir.path());
}

/// A non-root peer's state may name any pid as the container's init: here a root `sleep`
/// outside any container. A matching kill rule must not reach it.
#[test]
fn non_root_peer_cannot_have_another_process_killed() {
    if !require_root("non_root_peer_cannot_have_another_process_killed") || !require_tool("setpriv")
    {
        return;
    }
    let Some((_forge_dir, forge)) = forge_runtime() else {
        return;
    };
    let agent = Agent::with_policy(
        &policy_yaml("log", "kill-mkdir", MKDIRS, "kill", None),
        &["--allow-uid", "65534", "--socket-group", "nogroup"],
    );
    fs::set_permissions(agent.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = victim.id();
    let (dir, _policy) = run_fixture();
    let state = dir.path().join("state.json");
    let id = unique_id("forged-init");
    let json = json!({
        "ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": pid,
        "state": {"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": pid, "bundle": "/"}
    });
    fs::write(&state, json.to_string()).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o644)).unwrap();
    let script = mkdir_cmd(dir.path(), "echo mkdir=$?");
    let out = run_cmd(
        Command::new(tool("setpriv"))
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&forge)
            .arg(agent.socket())
            .arg(&state)
            .args(["sh", "-c", &script])
            .current_dir("/"),
        TIMEOUT,
    );
    assert!(!out.timed_out, "{out:?}");
    let e = mkdir_event(&agent, Some(&id));
    assert_eq!(e["action"], "kill", "{e}");
    assert!(!dir.path().join("made").exists(), "mkdir ran: {out:?}");
    thread::sleep(Duration::from_millis(500));
    let survived = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        survived,
        "the agent killed pid {pid}, named by a non-root peer\n{}",
        agent.output()
    );
}

// ---------------------------------------------------------------------------
// the agent socket
// ---------------------------------------------------------------------------

#[test]
fn second_agent_is_refused_and_the_first_keeps_serving() {
    if !require_root("second_agent_is_refused_and_the_first_keeps_serving")
        || !Runtime::Runc.require()
    {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir_policy("EPERM"), &[]);
    let mode = fs::metadata(agent.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    let second = run_cmd(
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("agent")
            .arg("--socket")
            .arg(agent.socket())
            .args(["--metrics-addr", "127.0.0.1:0"]),
        TIMEOUT,
    );
    assert_ne!(second.code(), 0, "{second:?}");
    assert!(second.stderr.contains("already listening"), "{second:?}");
    assert!(
        agent.socket().exists(),
        "the refused agent removed the live socket"
    );

    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let out = run_runc(&bundle, &unique_id("first-serves"), TIMEOUT);
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
}

#[test]
fn stale_socket_file_is_replaced() {
    if !require_root("stale_socket_file_is_replaced") {
        return;
    }
    let dir = tmpdir();
    let socket = dir.path().join("run/agent.sock");
    fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket nobody listens on any more, as a crashed agent leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut agent = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("agent")
        .arg("--socket")
        .arg(&socket)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let served = eventually(Duration::from_secs(10), || {
        UnixStream::connect(&socket).is_ok()
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(served, "the agent did not take over the stale socket");
}

// ---------------------------------------------------------------------------
// arch-aware names
// ---------------------------------------------------------------------------

#[test]
fn a_32_bit_call_is_named_for_its_own_arch() {
    if !require_root("a_32_bit_call_is_named_for_its_own_arch")
        || !Runtime::Runc.require()
        || !require_tool("gcc")
    {
        return;
    }
    let agent = Agent::with_policy(&deny_mkdir_policy("EPERM"), &[]);
    let mut bundle = Bundle::new(&["/bin/i386-mkdir", "/tmp/x86dir"]);
    compile_static(
        &fixture("i386_mkdir.c"),
        &bundle.rootfs().join("bin/i386-mkdir"),
    );
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));

    let out = run_runc(&bundle, &unique_id("x86"), TIMEOUT);
    // The raw syscall returns -errno: -1 is EPERM from the policy.
    assert!(out.stdout.contains("i386-mkdir=-1"), "{out:?}");
    assert!(!bundle.rootfs().join("tmp/x86dir").exists());
    let event = agent
        .wait_event(
            |e| e["event"] == "syscall" && e["arch"] == "x86",
            EVENT_WAIT,
        )
        .unwrap_or_else(|| panic!("no x86 event: {:?}", agent.events()));
    assert_eq!(event["syscall"], "mkdir", "{event}");
    assert_eq!(event["nr"], 39, "{event}");
    assert_eq!(event["action"], "deny", "{event}");
    assert_eq!(event["rule"], "no-mkdir", "{event}");
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The `NAME=VALUE` line a fixture printed for `name`, as a number.
fn printed(out: &RunOutput, name: &str) -> i64 {
    let prefix = format!("{name}=");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}= line: {out:?}"))
}

/// i386 socket and shmget, each by its direct number and through socketcall/ipc, under
/// examples/arg-conditions.yaml (deny AF_PACKET sockets with EACCES) plus a rule denying
/// shmget with EROFS, an errno neither call gives on its own.
#[test]
fn i386_socketcall_and_ipc_cannot_bypass_deny_rules() {
    if !require_root("i386_socketcall_and_ipc_cannot_bypass_deny_rules")
        || !Runtime::Runc.require()
        || !require_tool("gcc")
    {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/arg-conditions.yaml");
    let mut policy = fs::read_to_string(example).unwrap();
    policy
        .push_str("  - name: no-shm\n    syscalls: [shmget]\n    action: deny\n    errno: EROFS\n");
    let agent = Agent::with_policy(&policy, &[]);
    let calls = [
        "packet-direct",
        "packet-socketcall",
        "unix-direct",
        "unix-socketcall",
        "shmget-direct",
        "shmget-ipc",
    ];
    let mut args = vec!["/bin/i386-multiplexed"];
    args.extend(calls);
    let mut bundle = Bundle::new(&args);
    compile_static(
        &fixture("i386_multiplexed.c"),
        &bundle.rootfs().join("bin/i386-multiplexed"),
    );
    bundle.set_seccomp(notify_profile(agent.socket(), &["socket", "shmget"], None));

    let out = run_runc(&bundle, &unique_id("x86mux"), TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    let failed = |name: &str, errno: i32| {
        assert_eq!(
            printed(&out, name),
            -i64::from(errno),
            "{name}: {out:?}\n{}",
            agent.output()
        );
    };
    failed("packet-direct", libc::EACCES);
    failed("packet-socketcall", libc::EACCES);
    // The direct call's arguments are in registers: the condition is evaluated.
    assert!(printed(&out, "unix-direct") >= 0, "{out:?}");
    // Through socketcall they are in the caller's memory: the strictest rule answers.
    failed("unix-socketcall", libc::EACCES);
    failed("shmget-direct", libc::EROFS);
    failed("shmget-ipc", libc::EROFS);

    let event = |syscall: &str, via: Option<&str>| {
        agent
            .wait_event(
                |e| {
                    e["event"] == "syscall"
                        && e["syscall"] == syscall
                        && e["arch"] == "x86"
                        && e.get("via").and_then(Value::as_str) == via
                },
                EVENT_WAIT,
            )
            .unwrap_or_else(|| panic!("no x86 {syscall} event via {via:?}: {}", agent.output()))
    };
    let direct = event("socket", None);
    assert_eq!(
        (direct["nr"].as_i64(), direct["errno"].as_i64()),
        (Some(359), Some(13)),
        "{direct}"
    );
    assert_eq!(direct["rule"], "no-packet-sockets", "{direct}");
    let muxed = event("socket", Some("socketcall"));
    assert_eq!(
        (muxed["nr"].as_i64(), muxed["action"].as_str()),
        (Some(102), Some("deny")),
        "{muxed}"
    );
    assert_eq!(muxed["rule"], "no-packet-sockets", "{muxed}");
    // The call as strace prints it: through socketcall, the arguments read from memory.
    assert_eq!(direct["call"], "socket(AF_PACKET, SOCK_RAW, 0)", "{direct}");
    assert!(
        [
            "socket(AF_PACKET, SOCK_RAW, 0)",
            "socket(AF_UNIX, SOCK_STREAM, 0)"
        ]
        .contains(&muxed["call"].as_str().unwrap_or_default()),
        "{muxed}"
    );
    let shm = event("shmget", Some("ipc"));
    assert_eq!(
        (shm["nr"].as_i64(), shm["errno"].as_i64()),
        (Some(117), Some(30)),
        "{shm}"
    );
    event("shmget", None);
    let denied = agent.metric_value(SYSCALLS, &["syscall=\"socket\"", "action=\"deny\""]);
    assert_eq!(denied, 3.0, "{}", agent.metrics());
}
