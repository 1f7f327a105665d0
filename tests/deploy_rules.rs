//! Checks the monitoring and deployment files under deploy/:
//! - promtool accepts the alerting rules, their unit tests pass, and it
//!   accepts the Prometheus configuration;
//! - the Grafana dashboard is well formed and only queries Switchboard metrics;
//! - the PrometheusRule is alerts.yaml, as gen-prometheusrule.sh writes it.
//!
//! Without promtool the promtool tests print `SKIP: promtool not installed`
//! and pass, except under CI (CI=true), where they fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metric names the agent exports; histogram series carry the usual suffixes.
const METRICS: &[&str] = &[
    "switchboard_syscalls_total",
    "switchboard_listeners",
    "switchboard_intake_errors_total",
    "switchboard_containers_killed_total",
    "switchboard_events_dropped_total",
    "switchboard_decision_duration_seconds_bucket",
    "switchboard_decision_duration_seconds_count",
    "switchboard_decision_duration_seconds_sum",
    "switchboard_policy_reloads_total",
    "switchboard_build_info",
    "switchboard_series_overflow_total",
];

/// Alerts that alerts.yaml must define.
const REQUIRED_ALERTS: &[&str] = &[
    "SwitchboardSyscallDenied",
    "SwitchboardContainerKilled",
    "SwitchboardAgentDown",
    "SwitchboardIntakeErrors",
    "SwitchboardEventsDropped",
    "SwitchboardDecisionLatencyHigh",
    "SwitchboardPolicyReloadFailed",
];

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    let path = deploy(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Whether promtool can be run. Missing is a failure under CI and a skip elsewhere.
fn have_promtool() -> bool {
    match Command::new("promtool").arg("--version").output() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("promtool missing under CI");
            }
            println!("SKIP: promtool not installed");
            false
        }
        Err(e) => panic!("running promtool: {e}"),
    }
}

fn promtool(args: &[&str], file: &str) {
    let path = deploy(file);
    let out = Command::new("promtool")
        .args(args)
        .arg(&path)
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool {} {} failed ({}):\n{}{}",
        args.join(" "),
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn promtool_check_rules() {
    if have_promtool() {
        promtool(&["check", "rules"], "prometheus/alerts.yaml");
    }
}

#[test]
fn promtool_test_rules() {
    if have_promtool() {
        promtool(&["test", "rules"], "prometheus/alerts.test.yaml");
    }
}

#[test]
fn promtool_check_config() {
    if have_promtool() {
        promtool(&["check", "config"], "prometheus/prometheus.yml");
    }
}

/// The values of `key: value` lines (after any `- `), in file order.
fn values_of(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start().trim_start_matches("- ").trim_start())
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .collect()
}

/// Every `switchboard_…` identifier in `text`.
fn switchboard_metrics(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("switchboard_") {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            found.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    found
}

#[test]
fn alerts_cover_the_required_set_and_are_all_tested() {
    let rules = read("prometheus/alerts.yaml");
    let tests = read("prometheus/alerts.test.yaml");
    let alerts = values_of(&rules, "alert");
    for name in REQUIRED_ALERTS {
        assert!(alerts.iter().any(|a| a == name), "alerts.yaml lacks {name}");
    }
    let tested: BTreeSet<String> = values_of(&tests, "alertname").into_iter().collect();
    for name in &alerts {
        assert!(
            tested.contains(name),
            "alerts.test.yaml has no case for {name}"
        );
    }
    for metric in switchboard_metrics(&rules) {
        assert!(
            METRICS.contains(&metric.as_str()),
            "alerts.yaml names {metric}, which the agent does not export"
        );
    }
}

#[test]
fn prometheusrule_is_generated_from_alerts_yaml() {
    let rules = read("prometheus/alerts.yaml");
    let wrapped = read("kubernetes/prometheusrule.yaml");

    // What gen-prometheusrule.sh writes under `spec:`: alerts.yaml from its
    // `groups:` line on, every non-empty line indented by two spaces.
    let start = rules
        .lines()
        .position(|l| l == "groups:")
        .expect("alerts.yaml has no top-level `groups:` line");
    let mut spec = String::from("\nspec:\n");
    for line in rules.lines().skip(start) {
        if !line.is_empty() {
            spec.push_str("  ");
            spec.push_str(line);
        }
        spec.push('\n');
    }
    assert!(
        wrapped.contains("\nkind: PrometheusRule\n"),
        "prometheusrule.yaml is not a PrometheusRule"
    );
    assert_eq!(
        values_of(&wrapped, "alert"),
        values_of(&rules, "alert"),
        "prometheusrule.yaml and alerts.yaml define different alerts: run deploy/kubernetes/gen-prometheusrule.sh"
    );
    assert!(
        wrapped.ends_with(&spec),
        "prometheusrule.yaml is out of date with alerts.yaml: run deploy/kubernetes/gen-prometheusrule.sh"
    );
}

fn collect_panels<'a>(panels: &'a [serde_json::Value], out: &mut Vec<&'a serde_json::Value>) {
    for p in panels {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            collect_panels(nested, out);
        }
    }
}

#[test]
fn grafana_dashboard() {
    let text = read("grafana/switchboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&text).expect("switchboard.json is not JSON");

    assert_eq!(dash["schemaVersion"], 39, "schemaVersion");
    assert!(dash["uid"].is_string() && dash["title"].is_string());

    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("no `datasource` template variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"], "${datasource}",
            "variable {}",
            v["name"]
        );
    }

    let mut panels = Vec::new();
    collect_panels(dash["panels"].as_array().expect("panels"), &mut panels);
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title}");
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: target without expr"));
            let metrics = switchboard_metrics(expr);
            assert!(
                !metrics.is_empty(),
                "panel {title}: {expr} queries no switchboard_ metric"
            );
            for m in metrics {
                assert!(
                    METRICS.contains(&m.as_str()),
                    "panel {title}: unknown metric {m}"
                );
            }
            exprs += 1;
        }
    }
    assert!(exprs > 0, "dashboard has no queries");

    // The panels the dashboard promises, by the metric each must query.
    for metric in [
        "switchboard_syscalls_total",
        "switchboard_decision_duration_seconds_bucket",
        "switchboard_listeners",
        "switchboard_intake_errors_total",
        "switchboard_events_dropped_total",
        "switchboard_policy_reloads_total",
    ] {
        assert!(text.contains(metric), "dashboard never queries {metric}");
    }
    assert!(
        text.contains("topk("),
        "dashboard has no top-syscalls panel"
    );
}
