//! The Kubernetes manifests under deploy/kubernetes/: valid offline against the Kubernetes and CRD schemas, least privilege as the code needs it, `/status` off the scraped port, and the SPO SeccompProfile's rules in step with the policy and working under runc.
//!
//! The validators live in the virtualenv scripts/install.sh makes; without it the
//! validation test prints SKIP, except under CI=true, where it fails. The runc test
//! needs root (SKIP otherwise).

mod common;

use common::k8s::*;
use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use switchboard::policy::Policy;

const TIMEOUT: Duration = Duration::from_secs(120);
const VENV: &str = "/opt/switchboard/venv";

fn validate(dir: &Path) -> RunOutput {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate-manifests.sh");
    run_cmd(Command::new("bash").arg(script).arg(dir), TIMEOUT)
}

/// A copy of deploy/kubernetes with `file` edited by `edit`.
fn edited_copy(file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tmpdir();
    let src = manifest_path("daemonset.yaml");
    for entry in fs::read_dir(src.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut text = fs::read_to_string(&path).unwrap();
        if name == file {
            let edited = edit(&text);
            assert_ne!(edited, text, "the edit of {file} changed nothing");
            text = edited;
        }
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn manifests_validate_offline() {
    let test = "manifests_validate_offline";
    if !Path::new(VENV).join("bin/kubernetes-validate").is_file() {
        assert!(
            !under_ci(),
            "{test}: {VENV} is missing; scripts/install.sh makes it"
        );
        eprintln!("SKIP {test}: {VENV} is missing; run scripts/install.sh");
        return;
    }
    let dir = manifest_path("daemonset.yaml")
        .parent()
        .unwrap()
        .to_path_buf();
    let out = validate(&dir);
    assert_eq!(out.code(), 0, "{out:?}");
    let files = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert!(
        out.stdout.contains(&format!("{files} files valid")),
        "{out:?}"
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            out.stdout
                .contains(&format!("{kind} switchboard matches the CRD schema")),
            "{out:?}"
        );
    }

    // Strict: an unknown field in a built-in kind, or in a CRD's object, is refused.
    let bad = edited_copy("daemonset.yaml", |t| {
        t.replacen(
            "imagePullPolicy: IfNotPresent",
            "imagePullPolicy: IfNotPresent\n          imagePullPolcy: Always",
            1,
        )
    });
    let out = validate(bad.path());
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("imagePullPolcy"),
        "{out:?}"
    );
    let bad = edited_copy("servicemonitor.yaml", |t| {
        t.replacen("interval: 15s", "interval: 15s\n      scrapeTimout: 5s", 1)
    });
    let out = validate(bad.path());
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("scrapeTimout"), "{out:?}");
}

#[test]
fn daemonset_grants_only_what_the_agent_uses() {
    let agent = agent_container();
    let security = &agent["securityContext"];
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    // KILL: kill rules signal callers and inits of other users (pidfd_send_signal).
    // SYS_PTRACE: events read callers' path arguments (process_vm_readv) and /proc/PID/exe
    // across users. Nothing more (no DAC_READ_SEARCH, no SYS_ADMIN).
    assert_eq!(
        strings(&security["capabilities"]["add"]),
        ["KILL", "SYS_PTRACE"]
    );
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);

    // /status (container names, syscalls) on loopback; the scraped port serves /metrics only.
    let status = agent_flag("--metrics-addr").expect("--metrics-addr");
    assert!(status.starts_with("127.0.0.1:"), "{status}");
    let scrape = agent_flag("--scrape-addr").expect("--scrape-addr");
    let port: u64 = scrape.rsplit(':').next().unwrap().parse().unwrap();
    let ports = agent["ports"].as_array().unwrap();
    assert_eq!(
        ports.len(),
        1,
        "only the scrape port is declared: {ports:?}"
    );
    assert_eq!(
        (
            ports[0]["name"].as_str(),
            ports[0]["containerPort"].as_u64()
        ),
        (Some("metrics"), Some(port))
    );
    assert_eq!(agent["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(agent["livenessProbe"]["tcpSocket"]["port"], "metrics");
    let service = object("daemonset.yaml", "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");

    // The image scripts/build-image.sh tags by default.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        agent["image"],
        format!("localhost/switchboard:{version}"),
        "the DaemonSet names the image the build script makes"
    );
    // The policy file the agent watches is the ConfigMap's, mounted whole (a subPath
    // mount would never be refreshed by the kubelet).
    assert_eq!(
        agent_flag("--policy").as_deref(),
        Some("/etc/switchboard/policy.yaml")
    );
    let policy_mount = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/switchboard")
        .expect("the policy mount");
    assert!(policy_mount.get("subPath").is_none(), "{policy_mount}");
    Policy::parse(&configmap_policy(), "ConfigMap switchboard-policy")
        .expect("the ConfigMap's policy validates");
}

#[test]
fn daemonset_rolls_by_takeover() {
    let daemonset = object("daemonset.yaml", "DaemonSet");
    let strategy = &daemonset["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0);
    let command = strings(&agent_container()["command"]);
    assert!(command.iter().any(|a| a == "--takeover"), "{command:?}");
    assert!(
        command.iter().any(|a| a == "--wait-after-takeover"),
        "{command:?}"
    );
    // Both pods share the socket directory on the host: that is where the new one finds the old.
    let socket = agent_flag("--socket").expect("--socket");
    let mount = agent_container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| socket.starts_with(m["mountPath"].as_str().unwrap()))
        .cloned()
        .expect("the socket directory mount");
    let volume = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .cloned()
        .unwrap();
    assert!(volume["hostPath"]["path"].is_string(), "{volume}");
}

#[test]
fn status_is_not_served_on_the_scrape_address() {
    let agent = Agent::start_in(Path::new(BIN), tmpdir(), &["--scrape-addr", "127.0.0.1:0"]);
    let scrape = agent
        .stderr_text()
        .lines()
        .filter(|l| l.contains("scrape server listening"))
        .find_map(parse_addr)
        .unwrap_or_else(|| panic!("no scrape address logged:\n{}", agent.output()));
    assert!(http_get(&scrape, "/metrics").contains("switchboard_build_info"));
    assert_eq!(http_get(&scrape, "/healthz"), "ok\n");
    let out = run_cmd(
        Command::new(BIN).args(["status", "--metrics-addr", &scrape]),
        TIMEOUT,
    );
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("404"), "{out:?}");
    let out = run_cmd(
        Command::new(BIN).args(["status", "--metrics-addr", agent.metrics_addr()]),
        TIMEOUT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
}

/// The SPO profile's spec, and its NOTIFY rule's syscalls.
fn spo_profile() -> (Value, Vec<String>) {
    let profile = object("seccompprofile-spo.yaml", "SeccompProfile");
    assert_eq!(
        profile["apiVersion"],
        "security-profiles-operator.x-k8s.io/v1beta1"
    );
    let spec = profile["spec"].clone();
    let rules = spec["syscalls"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["action"], "SCMP_ACT_NOTIFY");
    let names = strings(&rules[0]["names"]);
    (spec, names)
}

#[test]
fn spo_profile_flags_what_the_policy_names() {
    let (spec, mut names) = spo_profile();
    let listener = spec["listenerPath"].as_str().unwrap();
    assert!(
        listener.starts_with("/var/run/security-profiles-operator/"),
        "SPO accepts a listenerPath only there: {listener}"
    );
    let policy = Policy::parse(&configmap_policy(), "ConfigMap").unwrap();
    let mut named = policy.named_syscalls();
    names.sort();
    named.sort();
    assert_eq!(
        names, named,
        "the profile flags exactly the policy's syscalls"
    );
}

#[test]
fn spo_profile_serves_a_runc_container() {
    if !require_root("spo_profile_serves_a_runc_container") || !require_tool("runc") {
        return;
    }
    let agent = Agent::with_policy(&configmap_policy(), &[]);
    // The fields SPO writes to the node are the OCI seccomp fields; only the socket
    // differs here (the test agent's).
    let (mut spec, _) = spo_profile();
    spec["listenerPath"] = json!(agent.socket_str());
    let mut bundle = Bundle::new(&["sh", "-c", "mount -t tmpfs none /tmp; echo mount=$?"]);
    bundle.set_seccomp(spec);
    let id = unique_id("spo");
    let out = run_runc(&bundle, &id, Duration::from_secs(20));
    assert!(
        out.stdout.contains("mount=1"),
        "{out:?}\n{}",
        agent.output()
    );
    let e = agent.syscall_event(&["mount"]);
    assert_eq!(
        (
            e["container_id"].as_str(),
            e["rule"].as_str(),
            e["action"].as_str(),
            e["metadata"].as_str()
        ),
        (Some(id.as_str()), Some("no-mounts"), Some("deny"), None),
        "{e}"
    );
    let added = agent
        .wait_event(
            |e| e["event"] == "listener_added" && e["container_id"] == id.as_str(),
            Duration::from_secs(5),
        )
        .expect("listener_added");
    assert_eq!(added["metadata"], "spo", "{added}");
}
