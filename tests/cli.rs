//! The `switchboard` command line as a new user meets it: `check`'s reports and what `--help` promises.

mod common;

use common::*;
use std::process::{Command, Output};

fn switchboard(args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN).args(args).output().unwrap();
    (
        status.code(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn policy_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn check_reports_a_missing_file_once() {
    let (code, stdout, stderr) = switchboard(&["check", "/nonexistent/policy.yaml"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(
        stderr,
        "switchboard: /nonexistent/policy.yaml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn check_reports_every_error_with_suggestions_and_warns_about_dead_rules() {
    let file = policy_file(
        "default: log\nrules:\n  - name: a\n    syscalls: [mkdri, write]\n    action: deny\n    errno: EPREM\n  - name: b\n    syscalls: [rmdir]\n    action: kil\n",
    );
    let path = file.path().to_str().unwrap();
    let (code, stdout, stderr) = switchboard(&["check", path]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "switchboard: {path}:4:16: unknown syscall \"mkdri\"; did you mean `mkdir`?"
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("switchboard: {path}:4:23: the policy names write")),
        "{stderr}"
    );
    assert!(lines[2].ends_with("did you mean `EPERM`?"), "{stderr}");
    assert!(lines[3].ends_with("did you mean `kill`?"), "{stderr}");

    let file = policy_file(
        "rules:\n  - name: deny\n    syscalls: [kexec_load, reboot]\n    action: deny\n  - name: kill\n    syscalls: [kexec_load]\n    action: kill\n",
    );
    let path = file.path().to_str().unwrap();
    let (code, stdout, stderr) = switchboard(&["check", path]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, format!("{path}: ok, 2 rules\n"));
    assert_eq!(
        stderr,
        format!("switchboard: {path}:5:11: warning: rule \"kill\" never applies: rule \"deny\" comes first with the same match, no argument conditions and all of its syscalls\n")
    );
}

#[test]
fn check_names_the_line_where_the_yaml_breaks() {
    let file = policy_file("rules:\n  - name: a\n  syscalls: [mkdir]\n    action: log\n");
    let path = file.path().to_str().unwrap();
    let (code, _, stderr) = switchboard(&["check", path]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("switchboard: {path}:3:3: ")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("missing field") && !stderr.contains("line 3"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn help_says_what_run_flags_and_that_the_agent_reloads() {
    let (code, run_help, _) = switchboard(&["run", "--help"]);
    assert_eq!(code, Some(0));
    assert!(run_help.contains("examples/default.yaml"), "{run_help}");
    let default = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/default.yaml"
    ))
    .unwrap();
    let listed = run_help
        .split_once("default flags the syscalls of examples/default.yaml (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(names, _)| names.to_string())
        .expect("run --help lists the default's syscalls");
    for name in listed
        .split(", ")
        .filter(|n| *n != "..." && !n.contains(' '))
    {
        assert!(
            default.contains(&format!("- {name}\n")),
            "run --help names {name}, the default does not flag it"
        );
    }
    let (code, agent_help, _) = switchboard(&["agent", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        agent_help.contains("SIGHUP") && agent_help.contains("when the file changes"),
        "{agent_help}"
    );
}

#[test]
fn a_second_agents_probe_is_not_an_intake_error_and_every_series_exists_from_start_up() {
    let agent = Agent::start(&[]);
    let metrics = agent.metrics();
    // Dashboards and `absent()` alerts see these before anything happens.
    for line in [
        "switchboard_intake_errors_total{reason=\"truncated\"} 0",
        "switchboard_intake_errors_total{reason=\"peer_refused\"} 0",
        "switchboard_intake_errors_total{reason=\"bundle_config\"} 0",
        "switchboard_last_notification_timestamp_seconds 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    let second = run_cmd(
        Command::new(BIN).args([
            "agent",
            "--socket",
            agent.socket_str(),
            "--metrics-addr",
            "127.0.0.1:0",
        ]),
        std::time::Duration::from_secs(10),
    );
    assert_ne!(second.code(), 0, "{second:?}");
    assert!(
        second.stderr.contains("another agent is already listening"),
        "{second:?}"
    );
    // The probe connection closes without a byte; give the first agent time to see it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        agent.metric_value("switchboard_intake_errors_total", &[]),
        0.0,
        "{}\n{}",
        agent.metrics(),
        agent.stderr_text()
    );
    assert!(
        !agent.stderr_text().contains("refused a connection"),
        "{}",
        agent.stderr_text()
    );
}

/// `run --agent socket -- sh -c 'echo RAN'` fails saying `reason`, and nothing ran.
fn run_is_refused(socket: &str, reason: &str) {
    let (code, stdout, stderr) =
        switchboard(&["run", "--agent", socket, "--", "sh", "-c", "echo RAN"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("RAN"), "{stdout}");
    assert!(stderr.contains(reason), "{stderr}");
}

#[test]
fn run_does_not_start_the_command_unless_the_agent_took_the_listener() {
    run_is_refused(
        "/nonexistent/agent.sock",
        "the command was not run: connecting to the agent at /nonexistent/agent.sock",
    );
    if !require_root(
        "run_does_not_start_the_command_unless_the_agent_took_the_listener (permission)",
    ) {
        return;
    }
    // `run --agent` as nobody must fail with `reason` and never print RAN.
    let refused_as_nobody = |agent: &Agent, reason: &str| {
        let out = run_cmd(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
                .args(["run", "--agent", agent.socket_str(), "--"])
                .args(["sh", "-c", "echo RAN"]),
            std::time::Duration::from_secs(20),
        );
        assert_eq!(out.code(), 1, "{out:?}");
        assert!(!out.stdout.contains("RAN"), "{out:?}");
        assert!(out.stderr.contains(reason), "{out:?}");
    };
    // The case: a user whom the agent's root-only socket refuses.
    let agent = Agent::start(&[]);
    refused_as_nobody(&agent, "Permission denied");
    // It can connect, but the agent refuses the uid (no --allow-uid): nothing runs either.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(agent.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(agent.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    refused_as_nobody(
        &agent,
        "the agent closed the connection without taking the listener",
    );
}

/// An agent that refuses a client may hang up before the client has even sent the state:
/// the send then fails (EPIPE), and `run` must say the same as when the refusal comes after.
#[test]
fn run_says_the_agent_hung_up_whenever_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("refusing.sock");
    let server = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Hangs up on each client at once, as the agent does with a uid it does not serve;
    // the client forks and filters its command first, so its send comes after the hang-up.
    let refusing = std::thread::spawn(move || {
        for _ in 0..3 {
            drop(server.accept().unwrap());
        }
    });
    for _ in 0..3 {
        run_is_refused(
            socket.to_str().unwrap(),
            "the agent closed the connection without taking the listener",
        );
    }
    refusing.join().unwrap();
}

#[test]
fn with_the_agent_down_runc_does_not_start_the_container() {
    if !require_root("with_the_agent_down_runc_does_not_start_the_container")
        || !require_tool("runc")
    {
        return;
    }
    let dir = tmpdir();
    let socket = dir.path().join("agent.sock");
    let mut bundle = Bundle::new(&["sh", "-c", "echo STARTED"]);
    bundle.set_seccomp(notify_profile(&socket, &["mkdir"], None));
    let out = run_runc(
        &bundle,
        &unique_id("agent-down"),
        std::time::Duration::from_secs(20),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(!out.stdout.contains("STARTED"), "{out:?}");
    assert!(
        out.stderr.contains("failed to connect with seccomp agent"),
        "the README quotes this message: {out:?}"
    );
}

/// The quick start with the binaries under test (no install, no build), both ways.
#[test]
fn quickstart_prints_the_status_and_can_leave_the_agent_running() {
    let test = "quickstart_prints_the_status_and_can_leave_the_agent_running";
    if !require_root(test) || !require_tool("runc") || !require_tool("python3") {
        return;
    }
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    if !bin_dir.join("switchboard-oci-hook").is_file() {
        assert!(!under_ci(), "{test}: build the workspace first");
        eprintln!("SKIP {test}: switchboard-oci-hook not built beside {BIN}");
        return;
    }
    let quickstart = |args: &[&str]| {
        run_cmd(
            Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/quickstart.sh"
                ))
                .args(args)
                .env("SWITCHBOARD_BIN_DIR", bin_dir),
            std::time::Duration::from_secs(60),
        )
    };
    let out = quickstart(&[]);
    assert_eq!(out.code(), 0, "{out:?}");
    for expected in [
        "container done",
        "log   mkdir(",
        "== the agent's status",
        "1 gone",
        "TOP SYSCALLS\n  mkdir",
        "'scripts/quickstart.sh --keep-agent' leaves it running",
    ] {
        assert!(
            out.stdout.contains(expected),
            "{expected:?} missing: {out:?}"
        );
    }

    let out = quickstart(&["--keep-agent"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let stop = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop it: kill "))
        .expect("the quick start says how to stop the agent")
        .to_string();
    let (pid, work) = stop.split_once(" && rm -rf ").unwrap();
    let status_line = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("switchboard status --metrics-addr "))
        .unwrap()
        .to_string();
    // The agent outlived the script: its status answers.
    let (code, status, stderr) = switchboard(&["status", "--metrics-addr", &status_line]);
    let pid: i32 = pid.parse().unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(eventually(std::time::Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    }));
    let _ = std::fs::remove_dir_all(work);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(status.contains("1 gone"), "{status}");
}
