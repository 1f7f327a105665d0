//! End-to-end tests of surviving a crash of the deciding process and a takeover by a new
//! agent: containers looping flagged calls never see ENOSYS, a stall over 1 s or a counter
//! going down, and containers started meanwhile start and are served.
//!
//! Root only (runc); they print SKIP otherwise.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const TIMEOUT: Duration = Duration::from_secs(60);

const POLICY: &str = "default: allow\nrules:\n  - name: no-mkdir\n    syscalls: [mkdir, mkdirat]\n    action: deny\n    errno: EPERM\n  - name: watch-uname\n    syscalls: [uname]\n    action: log\n";

const FLAGGED: &[&str] = &["mkdir", "mkdirat", "uname"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A bundle running the flagged loop, notifying the agent at `socket`.
fn loop_bundle(socket: &Path) -> Bundle {
    let mut bundle = Bundle::new(&["/bin/flagged-loop"]);
    compile_static(
        &fixture("flagged_loop.c"),
        &bundle.rootfs().join("bin/flagged-loop"),
    );
    bundle.set_seccomp(notify_profile(socket, FLAGGED, None));
    bundle
}

/// Two containers looping flagged calls, stopped (SIGTERM) and checked by `finish`.
struct Load {
    runs: Vec<(String, Background)>,
    _bundle: Bundle,
}

impl Load {
    fn start(socket: &Path, tag: &str) -> Load {
        let bundle = loop_bundle(socket);
        let runs = (0..2)
            .map(|i| {
                let id = unique_id(&format!("{tag}-{i}"));
                let run = spawn(Runtime::Runc, &bundle, &id, TIMEOUT);
                (id, run)
            })
            .collect();
        Load {
            runs,
            _bundle: bundle,
        }
    }

    /// Stops both loops and checks every call got its policy's answer within 1 s.
    fn finish(self) {
        for (id, _) in &self.runs {
            let status = Command::new(tool("runc"))
                .args(["kill", id, "TERM"])
                .status()
                .unwrap();
            assert!(status.success(), "runc kill {id}");
        }
        for (id, run) in self.runs {
            let out = run.join();
            let line = out
                .stdout
                .lines()
                .find(|l| l.starts_with("eperm="))
                .unwrap_or_else(|| panic!("{id}: no summary: {out:?}"));
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{id}: no {name} in {line}"))
            };
            eprintln!("{id}: {line}");
            assert_eq!(field("enosys"), 0, "{id}: ENOSYS: {line}");
            assert_eq!(field("other"), 0, "{id}: wrong answers: {line}");
            assert!(field("eperm") > 100, "{id}: few calls: {line}");
            assert!(field("uname_ok") > 100, "{id}: few calls: {line}");
            assert!(
                field("max_us") < 1_000_000,
                "{id}: a call waited over 1 s: {line}"
            );
        }
    }
}

/// Scrapes `addr` every 20 ms on a thread and fails if any counter goes down.
struct CounterWatch {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Result<usize, String>>>,
}

impl CounterWatch {
    fn start(addr: String) -> CounterWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut seen: BTreeMap<String, f64> = BTreeMap::new();
            let mut scrapes = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(page) = try_get(&addr, "/metrics") {
                    scrapes += 1;
                    for line in page.lines() {
                        let Some((series, value)) = line.rsplit_once(' ') else {
                            continue;
                        };
                        let counter = series.starts_with("switchboard_")
                            && (series.contains("_total") || series.contains("_bucket"));
                        let Ok(value) = value.parse::<f64>() else {
                            continue;
                        };
                        if !counter {
                            continue;
                        }
                        let before = seen.insert(series.to_string(), value).unwrap_or(0.0);
                        if value < before {
                            return Err(format!("{series} went down: {before} -> {value}"));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            Ok(scrapes)
        });
        CounterWatch {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let scrapes = self.handle.take().unwrap().join().unwrap().unwrap();
        assert!(scrapes > 10, "only {scrapes} scrapes");
    }
}

/// A GET that tolerates the moment no one accepts (during a restart the connection queues).
fn try_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200")
        .then(|| body.to_string())
}

/// The deciding child of the holding process `holder`, once there is one other than `not`.
fn decider(holder: i32, not: Option<i32>) -> i32 {
    let path = format!("/proc/{holder}/task/{holder}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = fs::read_to_string(&path).unwrap_or_default();
        let found = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|p| Some(*p) != not);
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no deciding child of {holder}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a short container that tries mkdir once; it must start and be denied.
fn start_one_and_check(socket: &Path, tag: &str) {
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/one; echo mkdir=$?"]);
    bundle.set_seccomp(notify_profile(socket, FLAGGED, None));
    let out = run_runc(&bundle, &unique_id(tag), TIMEOUT);
    assert!(out.stdout.contains("mkdir=1"), "{tag}: {out:?}");
}

fn pseudo_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn decider_killed_ten_times_under_load() {
    if !require_root("decider_killed_ten_times_under_load") || !Runtime::Runc.require() {
        return;
    }
    let agent = Agent::with_policy(POLICY, &[]);
    let load = Load::start(agent.socket(), "crash");
    assert_eq!(
        agent.wait_metric("switchboard_listeners", &[], |v| v == 2.0, TIMEOUT),
        2.0
    );
    let watch = CounterWatch::start(agent.metrics_addr().to_string());
    let mut seed = u64::from(std::process::id()) | 1;
    let mut child = decider(agent.pid(), None);
    let mut kills = 0;
    let recovered = || {
        try_get(agent.metrics_addr(), "/metrics").map_or(0.0, |page| {
            metric_value(&page, "switchboard_inflight_recovered_total", &[])
        })
    };
    // Ten kills at least; more (up to 60) until a kill has caught a notification in flight.
    while kills < 10 || (recovered() < 1.0 && kills < 60) {
        eprintln!("kill {kills}: recovered so far {}", recovered());
        thread::sleep(Duration::from_millis(50 + pseudo_random(&mut seed) % 250));
        kill(Pid::from_raw(child), Signal::SIGKILL).unwrap();
        kills += 1;
        if kills == 5 {
            start_one_and_check(agent.socket(), "during-restart");
        }
        child = decider(agent.pid(), Some(child));
        assert_eq!(
            agent.wait_metric("switchboard_listeners", &[], |v| v == 2.0, TIMEOUT),
            2.0,
            "after kill {kills}"
        );
    }
    thread::sleep(Duration::from_millis(300));
    load.finish();
    watch.finish();
    let page = agent.metrics();
    assert!(
        metric_value(&page, "switchboard_inflight_recovered_total", &[]) >= 1.0,
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            "switchboard_agent_restarts_total",
            &["reason=\"crash\""]
        ),
        f64::from(kills),
        "{page}"
    );
    assert_eq!(metric_value(&page, "switchboard_listeners", &[]), 0.0);
}

/// A `switchboard agent --takeover` on `socket`, with its stderr collected.
struct Successor {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Successor {
    fn start(socket: &Path, policy: &Path, extra: &[&str]) -> Successor {
        let mut child = Command::new(BIN)
            .args(["agent", "--takeover", "--log-format", "json"])
            .arg("--socket")
            .arg(socket)
            .arg("--policy")
            .arg(policy)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Successor { child, stderr }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn five_takeovers_under_load() {
    if !require_root("five_takeovers_under_load") || !Runtime::Runc.require() {
        return;
    }
    let mut first = Agent::with_policy(POLICY, &[]);
    let socket = first.socket().to_path_buf();
    let policy = first.policy_path();
    let addr = first.metrics_addr().to_string();
    let load = Load::start(&socket, "takeover");
    assert_eq!(
        first.wait_metric("switchboard_listeners", &[], |v| v == 2.0, TIMEOUT),
        2.0
    );
    let watch = CounterWatch::start(addr.clone());
    let mut previous: Option<Successor> = None;
    for round in 1..=5 {
        let next = Successor::start(&socket, &policy, &[]);
        if round == 3 {
            start_one_and_check(&socket, "during-takeover");
        }
        // The old agent exits 0 once the new one has everything.
        let status = match previous.as_mut() {
            None => first.wait_exit(Duration::from_secs(20)),
            Some(old) => wait_timeout(&mut old.child, Duration::from_secs(20)),
        };
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "round {round}: old agent; new: {}",
            next.log()
        );
        assert!(
            eventually(Duration::from_secs(5), || next.log().contains("took over")),
            "{}",
            next.log()
        );
        let listeners = || {
            try_get(&addr, "/metrics").map_or(-1.0, |page| {
                metric_value(&page, "switchboard_listeners", &[])
            })
        };
        assert!(
            eventually(TIMEOUT, || listeners() == 2.0),
            "round {round}: listeners {}",
            listeners()
        );
        previous = Some(next);
        thread::sleep(Duration::from_millis(200));
    }
    load.finish();
    watch.finish();
    let page = try_get(&addr, "/metrics").unwrap();
    assert_eq!(
        metric_value(
            &page,
            "switchboard_agent_restarts_total",
            &["reason=\"takeover\""]
        ),
        5.0,
        "{page}"
    );
    assert!(
        metric_value(&page, "switchboard_syscalls_total", &["syscall=\"mkdir\""]) > 200.0,
        "{page}"
    );
    let mut last = previous.unwrap();
    kill(Pid::from_raw(last.pid()), Signal::SIGTERM).unwrap();
    let status = wait_timeout(&mut last.child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(!socket.exists(), "SIGTERM leaves the socket behind");
}

#[test]
fn takeover_without_agent_starts_and_refused_takeover_keeps_old_agent() {
    if !require_root("takeover_without_agent_starts_and_refused_takeover_keeps_old_agent")
        || !Runtime::Runc.require()
    {
        return;
    }
    let dir = tmpdir();
    let socket = dir.path().join("agent.sock");
    let policy = dir.path().join("policy.yaml");
    fs::write(&policy, POLICY).unwrap();
    // No agent runs: --takeover simply starts.
    let mut old = Successor::start(&socket, &policy, &["--wait-after-takeover"]);
    assert!(
        eventually(Duration::from_secs(10), || old
            .log()
            .contains("no agent to take over")
            && old.log().contains("metrics server listening")),
        "{}",
        old.log()
    );
    start_one_and_check(&socket, "fresh-takeover");
    // An unresponsive old agent: the takeover is refused with the reason, the old one serves on.
    kill(Pid::from_raw(old.pid()), Signal::SIGSTOP).unwrap();
    let mut refused = Successor::start(&socket, &policy, &[]);
    let status = wait_timeout(&mut refused.child, Duration::from_secs(20));
    kill(Pid::from_raw(old.pid()), Signal::SIGCONT).unwrap();
    assert_ne!(status.and_then(|s| s.code()), Some(0), "{}", refused.log());
    // The reader thread may not have drained the pipe the moment the process exits.
    assert!(
        eventually(Duration::from_secs(5), || refused
            .log()
            .contains("takeover")),
        "{}",
        refused.log()
    );
    thread::sleep(Duration::from_millis(100));
    start_one_and_check(&socket, "after-refusal");
    // --wait-after-takeover: the old agent idles after handing over, until SIGTERM.
    let next = Successor::start(&socket, &policy, &[]);
    assert!(
        eventually(Duration::from_secs(10), || next.log().contains("took over")),
        "{}",
        next.log()
    );
    start_one_and_check(&socket, "after-takeover");
    assert!(old.child.try_wait().unwrap().is_none(), "{}", old.log());
    kill(Pid::from_raw(old.pid()), Signal::SIGTERM).unwrap();
    let status = wait_timeout(&mut old.child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", old.log());
    start_one_and_check(&socket, "after-old-stopped");
}
