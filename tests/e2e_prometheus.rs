//! End-to-end tests of the agent's Prometheus side: a real Prometheus scraping a
//! real agent and evaluating the shipped alert rules, and the `/metrics` page
//! under hostile annotations, series expiry (`--series-ttl`) and the series cap
//! (`--max-series`). Containers run under runc with a busybox rootfs.
//!
//! The tests need root (they print SKIP otherwise) and runc; the first one also
//! the `prometheus` binary, the second `promtool`. Under CI=true a missing tool
//! fails the test (see `common::require_tool`).

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);
const EVENT_WAIT: Duration = Duration::from_secs(5);

const SYSCALLS: &str = "switchboard_syscalls_total";
const OVERFLOW_TOTAL: &str = "switchboard_series_overflow_total";
const DECISIONS: &str = "switchboard_decision_duration_seconds_count";
const LISTENERS: &str = "switchboard_listeners";
const DENY_ALERT: &str = "SwitchboardSyscallDenied";

const MKDIRS: &[&str] = &["mkdir", "mkdirat"];

const NS_KEY: &str = "io.kubernetes.pod.namespace";
const POD_KEY: &str = "io.kubernetes.pod.name";
const CONTAINER_KEY: &str = "io.kubernetes.container.name";

/// The agent's cap on label values, in bytes (README, "Metrics").
const MAX_LABEL_BYTES: usize = 128;

fn deny_mkdir_agent(extra_args: &[&str]) -> Agent {
    Agent::with_policy(
        &policy_yaml("log", "no-mkdir", MKDIRS, "deny", Some("EPERM")),
        extra_args,
    )
}

fn is_mkdir(syscall: &str) -> bool {
    MKDIRS.contains(&syscall)
}

/// Kubernetes names as annotations: (namespace, pod, container).
fn k8s_annotations<'a>(ns: &'a str, pod: &'a str, container: &'a str) -> [(&'a str, &'a str); 3] {
    [(NS_KEY, ns), (POD_KEY, pod), (CONTAINER_KEY, container)]
}

/// Runs a runc container with `annotations` whose one `mkdir` the agent denies,
/// and waits for the agent's deny event. Returns the container id.
fn run_denied_mkdir(agent: &Agent, tag: &str, annotations: &[(&str, &str)]) -> String {
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    for (k, v) in annotations {
        bundle.set_annotation(k, v);
    }
    let id = unique_id(tag);
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(
        !out.timed_out && out.stdout.contains("mkdir=1"),
        "{tag}: {out:?}\nagent:\n{}",
        agent.stderr_text()
    );
    wait_deny_event(agent, &id);
    id
}

fn wait_deny_event(agent: &Agent, id: &str) -> Value {
    let e = agent
        .wait_event(
            |e| {
                e["event"] == "syscall"
                    && e["container_id"] == id
                    && e["syscall"].as_str().is_some_and(is_mkdir)
            },
            EVENT_WAIT,
        )
        .unwrap_or_else(|| {
            panic!(
                "no mkdir event for {id}; stdout:\n{}\nstderr:\n{}",
                agent.stdout_text(),
                agent.stderr_text()
            )
        });
    assert_eq!(e["action"], "deny", "{e}");
    e
}

// ---------------------------------------------------------------------------
// A strict parser for the text exposition format
// ---------------------------------------------------------------------------

/// One sample line of a `/metrics` page, label values unescaped.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every sample line of `page`; an error names the first line that is not
/// valid text exposition (so an unescaped newline or quote in a label is caught).
fn parse_exposition(page: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in page.split('\n').enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?;
        out.push(sample);
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let name_end = line.find(|c| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            // label name, or the closing brace
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated label set".into());
            };
            if c == '}' {
                chars.next();
                rest = &r[start + 1..];
                break;
            }
            let mut label_name = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("bad char {c:?} in a label name"));
                }
                label_name.push(c);
                chars.next();
            }
            if label_name.is_empty() || chars.next().map(|x| x.1) != Some('=') {
                return Err("expected label=\"value\"".into());
            }
            if chars.next().map(|x| x.1) != Some('"') {
                return Err("label value does not start with a quote".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|x| x.1) {
                    None => return Err("unterminated label value".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|x| x.1) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            labels.push((label_name, value));
            match chars.peek().map(|x| x.1) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = fields.next().unwrap_or_default();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The samples of `page`, panicking (with the page) when it does not parse.
fn samples(page: &str) -> Vec<Sample> {
    parse_exposition(page).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{page}"))
}

fn syscall_series(page: &str) -> Vec<Sample> {
    samples(page)
        .into_iter()
        .filter(|s| s.name == SYSCALLS)
        .collect()
}

/// The unlabelled sample `name` of `page`.
fn plain_value(page: &str, name: &str) -> Option<f64> {
    samples(page)
        .into_iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .map(|s| s.value)
}

/// `promtool check metrics` on `page` (on stdin): (exit success, its output).
fn promtool_check_metrics(page: &str) -> (bool, String) {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let mut stdin = child.stdin.take().unwrap();
    let text = page.to_string();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

// ---------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------

/// A free 127.0.0.1 port (bound to port 0, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `GET path`; `None` when the connection fails. Returns (status, body).
fn try_get(addr: &str, path: &str) -> Option<(u16, String)> {
    switchboard::http::get(addr, path, Duration::from_secs(10)).ok()
}

/// Percent-encodes a query parameter.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Rewrites every duration in minutes or hours written after `[`, `offset ` or
/// `for: ` (range windows, offsets, `for:` clauses) into as many seconds as it had
/// minutes: `[5m]` → `[5s]`, `offset 5m` → `offset 5s`, `for: 10m` → `for: 10s`,
/// `[1h]` → `[60s]`. One minute of the shipped rules is one second of the test's.
/// Returns the text and how many durations it rewrote.
fn minutes_to_seconds(rules: &str) -> (String, usize) {
    let mut text = rules.to_string();
    let mut rewritten = 0;
    for prefix in ["[", "offset ", "for: "] {
        let mut out = String::new();
        let mut pieces = text.split(prefix);
        out.push_str(pieces.next().unwrap_or_default());
        for piece in pieces {
            out.push_str(prefix);
            let digits = piece.len() - piece.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let unit = piece[digits..].chars().next();
            let after = piece[digits..].chars().nth(1);
            let ends = after.is_none_or(|c| !c.is_ascii_alphanumeric());
            match (digits > 0, unit, ends) {
                (true, Some(u @ ('m' | 'h')), true) => {
                    let n: u64 = piece[..digits].parse().unwrap();
                    let secs = if u == 'h' { n * 60 } else { n };
                    out.push_str(&format!("{secs}s"));
                    out.push_str(&piece[digits + 1..]);
                    rewritten += 1;
                }
                _ => out.push_str(piece),
            }
        }
        text = out;
    }
    (text, rewritten)
}

/// A `prometheus` process on 127.0.0.1 with its own TSDB, killed when dropped.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Prometheus {
    /// Starts Prometheus on `config` (YAML; `rule_files` must be absolute) and
    /// waits until `/-/ready` answers 200.
    fn start(config: &str) -> Prometheus {
        let mut last_log = String::new();
        // A port taken between free_port() and Prometheus binding it: try again.
        for _ in 0..3 {
            let dir = tmpdir();
            let cfg = dir.path().join("prometheus.yml");
            fs::write(&cfg, config).unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let log = fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(tool("prometheus"))
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .args(["--log.level=warn", "--storage.tsdb.retention.time=1h"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn prometheus");
            let mut p = Prometheus { child, dir, addr };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if matches!(try_get(&p.addr, "/-/ready"), Some((200, _))) {
                    return p;
                }
                if p.child.try_wait().unwrap().is_some() {
                    last_log = p.log();
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "prometheus not ready after 30 s; log:\n{}",
                    p.log()
                );
                thread::sleep(Duration::from_millis(100));
            }
            if !last_log.contains("address already in use") {
                break;
            }
        }
        panic!("prometheus exited during startup; log:\n{last_log}");
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer, `None` otherwise.
    fn api(&self, path: &str) -> Option<Value> {
        let (status, body) = try_get(&self.addr, &format!("/api/v1/{path}"))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["status"] == "success").then(|| v["data"].clone())
    }

    /// The result vector of an instant query (empty on any error).
    fn query(&self, promql: &str) -> Vec<Value> {
        self.api(&format!("query?query={}", url_encode(promql)))
            .and_then(|d| d["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The active (pending or firing) alerts.
    fn alerts(&self) -> Vec<Value> {
        self.api("alerts")
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alerts_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yaml")
}

/// Whether `labels` (a JSON object) has every (name, value) pair of `want`.
fn has_labels(labels: &Value, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| labels[*k] == *v)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Prometheus scrapes the agent, sees the labelled deny series of a container
/// whose mkdir was denied, and the shipped SwitchboardSyscallDenied rule fires
/// for it.
///
/// The rule file is deploy/prometheus/alerts.yaml with every minute turned into a
/// second (`minutes_to_seconds`). The deny rule treats a series as new only if
/// `up{job="switchboard"} offset 5m == 1`, i.e. if the agent was already scraped
/// 5m earlier (so that a Prometheus restart does not fire every existing series),
/// and `increase(...[5m])` never counts a series' first sample. With the shipped
/// windows, the first denial after Prometheus starts would fire only after 5m.
/// Shrinking `for:`, range windows and offsets by the same factor keeps the rule's
/// logic intact (`offset 5s`, `[5s]`, `for: 0s`) while Prometheus scrapes and
/// evaluates every second. The test waits until the guard holds (the agent has been
/// scraped for 5 s) before running the container, as in production, where the
/// agent is scraped long before a container misbehaves.
#[test]
fn prometheus_sees_denial_and_fires_alert() {
    let test = "prometheus_sees_denial_and_fires_alert";
    if !require_root(test) || !Runtime::Runc.require() || !require_tool("prometheus") {
        return;
    }
    let agent = deny_mkdir_agent(&[]);

    let shipped = fs::read_to_string(alerts_yaml()).expect("read alerts.yaml");
    let (rules, rewritten) = minutes_to_seconds(&shipped);
    assert!(
        rewritten > 0 && rules.contains("offset 5s") && rules.contains("[5s]"),
        "alerts.yaml no longer has the 5m windows this test shortens; derived rules:\n{rules}"
    );
    assert!(
        !rules.contains("offset 5m") && !rules.contains("[5m]") && !rules.contains("for: 5m"),
        "a 5m duration survived the rewrite:\n{rules}"
    );
    let rules_dir = tmpdir();
    let rules_file = rules_dir.path().join("alerts.yaml");
    fs::write(&rules_file, &rules).unwrap();
    if tool_path("promtool").is_some() {
        let out = run_cmd(
            Command::new(tool("promtool"))
                .args(["check", "rules"])
                .arg(&rules_file),
            Duration::from_secs(20),
        );
        assert_eq!(
            out.code(),
            0,
            "promtool check rules on the derived rules: {out:?}\n{rules}"
        );
    }
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: [\"{}\"]\n",
        rules_file.display(),
        agent.metrics_addr()
    );
    let prom = Prometheus::start(&config);

    let dump = |what: &str| -> String {
        format!(
            "{what}\n--- active alerts:\n{}\n--- up:\n{}\n--- deny series in Prometheus:\n{}\n\
             --- derived rule file {}:\n{rules}\n--- prometheus log:\n{}\n--- agent /metrics:\n{}\n--- agent stderr:\n{}",
            serde_json::to_string_pretty(&prom.alerts()).unwrap(),
            serde_json::to_string_pretty(&prom.query("up")).unwrap(),
            serde_json::to_string_pretty(&prom.query(&format!("{SYSCALLS}{{action=\"deny\"}}")))
                .unwrap(),
            rules_file.display(),
            prom.log(),
            agent.metrics(),
            agent.stderr_text(),
        )
    };

    // The rule's new-series guard (shortened like the rule): the agent has been
    // scraped successfully for 5 s.
    let guard = "up{job=\"switchboard\"} offset 5s == 1";
    let scraped = eventually(Duration::from_secs(20), || !prom.query(guard).is_empty());
    assert!(
        scraped,
        "{}",
        dump("Prometheus did not scrape the agent for 5 s")
    );
    let early: Vec<Value> = prom
        .alerts()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == DENY_ALERT)
        .collect();
    assert!(
        early.is_empty(),
        "{DENY_ALERT} active before any denial: {early:?}"
    );

    let labels = [
        ("namespace", "prod-eu"),
        ("pod", "web-1"),
        ("container", "nginx"),
    ];
    let id = run_denied_mkdir(&agent, test, &k8s_annotations("prod-eu", "web-1", "nginx"));
    assert!(
        agent.metric_value(SYSCALLS, &["action=\"deny\"", "pod=\"web-1\""]) >= 1.0,
        "{}",
        agent.metrics()
    );

    // Both must be seen; the alert is active for about 5 s (the shortened window,
    // after which the series is no longer new), so poll often.
    let series_query = format!(
        "{SYSCALLS}{{action=\"deny\",namespace=\"prod-eu\",pod=\"web-1\",container=\"nginx\"}}"
    );
    let instance = agent.metrics_addr().to_string();
    let mut series_seen: Option<Value> = None;
    let mut alert_seen: Option<Value> = None;
    // Prometheus scrapes and evaluates every second: both show up within about
    // 2 s of the denial, and a missed alert resolves after about 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (series_seen.is_none() || alert_seen.is_none()) && Instant::now() < deadline {
        if series_seen.is_none() {
            series_seen = prom.query(&series_query).into_iter().find(|s| {
                let m = &s["metric"];
                m["syscall"].as_str().is_some_and(is_mkdir)
                    && m["job"] == "switchboard"
                    && m["instance"] == instance.as_str()
                    && s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= 1.0)
            });
        }
        if alert_seen.is_none() {
            alert_seen = prom.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == DENY_ALERT
                    && has_labels(&a["labels"], &labels)
                    && a["labels"]["syscall"].as_str().is_some_and(is_mkdir)
                    && matches!(a["state"].as_str(), Some("pending" | "firing"))
            });
        }
        thread::sleep(Duration::from_millis(100));
    }
    let series = series_seen.unwrap_or_else(|| {
        panic!(
            "{}",
            dump(&format!(
                "Prometheus never saw the deny series of {id} ({series_query})"
            ))
        )
    });
    let alert = alert_seen.unwrap_or_else(|| {
        panic!(
            "{}",
            dump(&format!(
                "{DENY_ALERT} never became pending or firing for {id}"
            ))
        )
    });

    // The alert's labels and annotations as the shipped templates render them.
    let syscall = alert["labels"]["syscall"].as_str().unwrap();
    assert_eq!(series["metric"]["syscall"], syscall, "{series}\n{alert}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert_eq!(
        alert["annotations"]["summary"],
        format!("Switchboard denied {syscall} in prod-eu/web-1 (nginx)"),
        "{alert}"
    );
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("Container nginx of pod prod-eu/web-1")
            && description.contains(&format!("made 1 {syscall}")),
        "{alert}"
    );
}

/// Hostile annotation values (quotes, backslashes, newlines, braces, `=`, 10 KB,
/// unicode, control characters) reach the label values of the deny series, and
/// the page stays valid exposition: `promtool check metrics` accepts it and every
/// value is the original (or, past 128 bytes, a prefix of it, cut on a character
/// boundary).
///
/// Invalid UTF-8 is not tested: annotations travel as JSON (config.json, then the
/// state runc sends over listenerPath), which cannot carry it.
#[test]
fn hostile_labels_keep_exposition_valid() {
    let test = "hostile_labels_keep_exposition_valid";
    if !require_root(test) || !Runtime::Runc.require() || !require_tool("promtool") {
        return;
    }
    let agent = deny_mkdir_agent(&[]);

    let namespace = "prod\"eu\\n\\\"\n{a=\"b\"},c=d}\\";
    let container = "nginx-ü-日本語-🚀\t\r\u{1}\u{7}\u{1b}[31m\u{7f}\u{0}\u{85}\u{2028}\u{feff}end";
    // Quotes, backslashes, newlines, braces and `=` first, then multi-byte
    // characters up to 10 KB, so that byte 128 falls inside a character.
    let mut pod = String::from("web-1\"} 1\nswitchboard_syscalls_total{pod=\"x\\\\\"} 9\n=={}\\");
    while pod.len() < 10 * 1024 {
        pod.push_str("é€🚀");
    }
    assert!(
        !pod.is_char_boundary(MAX_LABEL_BYTES),
        "test design: byte {MAX_LABEL_BYTES} should fall inside a character"
    );

    run_denied_mkdir(&agent, test, &k8s_annotations(namespace, &pod, container));

    let page = agent.metrics();
    let (ok, report) = promtool_check_metrics(&page);
    assert!(
        ok,
        "promtool check metrics failed:\n{report}\n--- /metrics:\n{page}"
    );

    let all = samples(&page);
    let foreign: Vec<&Sample> = all
        .iter()
        .filter(|s| !s.name.starts_with("switchboard_"))
        .collect();
    assert!(foreign.is_empty(), "injected samples {foreign:?}\n{page}");
    let deny: Vec<&Sample> = all
        .iter()
        .filter(|s| s.name == SYSCALLS && s.label("action") == Some("deny"))
        .collect();
    assert_eq!(deny.len(), 1, "{page}");
    let s = deny[0];
    assert_eq!(s.value, 1.0, "{s:?}");
    assert!(s.label("syscall").is_some_and(is_mkdir), "{s:?}");
    assert_eq!(s.label("namespace"), Some(namespace), "{s:?}");
    assert_eq!(s.label("container"), Some(container), "{s:?}");
    let got = s.label("pod").expect("pod label");
    assert!(
        got.len() <= MAX_LABEL_BYTES && pod.starts_with(got),
        "pod label is not a prefix of at most {MAX_LABEL_BYTES} bytes: {} bytes {got:?}",
        got.len()
    );
    // Cut at the last character boundary at or before 128 bytes, not shorter.
    assert!(
        got.len() > MAX_LABEL_BYTES - 4,
        "pod label cut too short: {} bytes",
        got.len()
    );
    // The injected "sample" inside the pod name did not become a line of its own.
    assert!(
        !page
            .lines()
            .any(|l| l.starts_with("switchboard_syscalls_total{pod=\"x")),
        "{page}"
    );
}

/// With `--series-ttl 2`, a gone container's series stay about 2 s, then go; the
/// decision histogram keeps counting the gone container's decisions.
#[test]
fn gone_containers_series_expire_after_ttl() {
    let test = "gone_containers_series_expire_after_ttl";
    if !require_root(test) || !Runtime::Runc.require() {
        return;
    }
    let agent = deny_mkdir_agent(&["--series-ttl", "2"]);
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?; sleep 1"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    for (k, v) in k8s_annotations("ttl-ns", "ttl-pod", "ttl-c") {
        bundle.set_annotation(k, v);
    }
    let id = unique_id(test);
    let container = spawn(Runtime::Runc, &bundle, &id, TIMEOUT);
    wait_deny_event(&agent, &id);
    let ours = |page: &str| -> Vec<Sample> {
        syscall_series(page)
            .into_iter()
            .filter(|s| s.label("pod") == Some("ttl-pod"))
            .collect()
    };

    // Live: the series is there.
    let page = agent.metrics();
    let live = ours(&page);
    assert_eq!(live.len(), 1, "{page}");
    assert_eq!(live[0].label("namespace"), Some("ttl-ns"), "{page}");
    assert_eq!(live[0].label("container"), Some("ttl-c"), "{page}");
    assert_eq!(live[0].label("action"), Some("deny"), "{page}");
    assert_eq!(live[0].value, 1.0, "{page}");
    let decisions_live = plain_value(&page, DECISIONS).expect("decision count");
    assert!(decisions_live >= 1.0, "{page}");

    let out = container.join();
    assert!(!out.timed_out && out.stdout.contains("mkdir=1"), "{out:?}");
    agent
        .wait_event(
            |e| e["event"] == "listener_removed" && e["container_id"] == id.as_str(),
            EVENT_WAIT,
        )
        .unwrap_or_else(|| panic!("no listener_removed for {id}:\n{}", agent.stdout_text()));
    let removed = Instant::now();

    // Right after the container went: still there (the TTL runs from here).
    let page = agent.metrics();
    assert_eq!(
        ours(&page).len(),
        1,
        "series gone right after the container ended (TTL 2 s):\n{page}"
    );
    assert_eq!(plain_value(&page, LISTENERS), Some(0.0), "{page}");

    // Then gone, within 10 s.
    let mut last = String::new();
    let gone = eventually(Duration::from_secs(10), || {
        last = agent.metrics();
        ours(&last).is_empty()
    });
    let after = removed.elapsed();
    assert!(
        gone,
        "series still there {after:?} after the container ended:\n{last}"
    );
    assert!(
        syscall_series(&last).is_empty(),
        "other syscall series left:\n{last}"
    );
    let decisions_after = plain_value(&last, DECISIONS).expect("decision count");
    assert!(
        decisions_after >= decisions_live,
        "{DECISIONS} went down from {decisions_live} to {decisions_after}:\n{last}"
    );
    eprintln!("{test}: series gone {after:?} after listener_removed");
}

/// With `--max-series 2`, the first two label sets keep their series and later
/// ones fold into the `_overflow` series, counted by the overflow counter.
#[test]
fn series_cap_folds_into_overflow() {
    let test = "series_cap_folds_into_overflow";
    if !require_root(test) || !Runtime::Runc.require() {
        return;
    }
    let agent = deny_mkdir_agent(&["--max-series", "2"]);
    let pods = ["cap-a", "cap-b", "cap-c", "cap-d"];
    for (i, pod) in pods.iter().enumerate() {
        run_denied_mkdir(&agent, test, &k8s_annotations("cap-ns", pod, "app"));
        // Scrape until this container's denial is on the page, so that label sets
        // are admitted in the order the containers ran.
        let want = (i + 1) as f64;
        let mut page = String::new();
        let counted = eventually(EVENT_WAIT, || {
            page = agent.metrics();
            syscall_series(&page).iter().map(|s| s.value).sum::<f64>() == want
        });
        assert!(
            counted,
            "after {pod}: expected {want} denials in total:\n{page}"
        );
    }

    let page = agent.metrics();
    let series = syscall_series(&page);
    assert_eq!(series.len(), 3, "two real series and one overflow:\n{page}");
    for pod in ["cap-a", "cap-b"] {
        let s = series
            .iter()
            .find(|s| s.label("pod") == Some(pod))
            .unwrap_or_else(|| panic!("no series for {pod}:\n{page}"));
        assert_eq!(s.label("namespace"), Some("cap-ns"), "{page}");
        assert_eq!(s.label("container"), Some("app"), "{page}");
        assert_eq!(s.label("action"), Some("deny"), "{page}");
        assert!(s.label("syscall").is_some_and(is_mkdir), "{page}");
        assert_eq!(s.value, 1.0, "{page}");
    }
    for pod in ["cap-c", "cap-d"] {
        assert!(
            !series.iter().any(|s| s.label("pod") == Some(pod)),
            "{pod} has a series past the cap:\n{page}"
        );
    }
    let overflow = series
        .iter()
        .find(|s| s.labels.iter().all(|(_, v)| v == "_overflow"))
        .unwrap_or_else(|| panic!("no _overflow series:\n{page}"));
    let names: Vec<&str> = overflow.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["action", "container", "namespace", "pod", "syscall"],
        "{page}"
    );
    assert_eq!(overflow.value, 2.0, "{page}");
    assert_eq!(plain_value(&page, OVERFLOW_TOTAL), Some(2.0), "{page}");

    // Further scrapes neither re-admit nor re-count the folded label sets.
    let again = agent.metrics();
    assert_eq!(plain_value(&again, OVERFLOW_TOTAL), Some(2.0), "{again}");
    assert_eq!(syscall_series(&again).len(), 3, "{again}");
}
