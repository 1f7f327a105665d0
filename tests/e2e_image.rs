//! End-to-end: `scripts/build-image.sh` builds the agent image offline (deploy/Containerfile, FROM scratch), and the image, run as the DaemonSet runs it, serves a runc container on the host.
//!
//! The agent container gets what deploy/kubernetes/daemonset.yaml gives it: its
//! command, the ConfigMap's policy, the host's socket directory, the bundle
//! directory read-only, the host's PID namespace, a read-only root, no new
//! privileges, and only the capabilities the manifest adds. Needs root (SKIP
//! otherwise); under CI=true a missing podman or runc fails.

mod common;

use common::k8s::*;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// podman on the test's own storage.
struct Podman {
    storage: PathBuf,
}

impl Podman {
    fn command(&self) -> Command {
        let mut c = podman(&tool("podman"), &tool("runc"));
        c.env("CONTAINERS_STORAGE_CONF", &self.storage);
        c
    }

    fn run(&self, args: &[&str]) -> RunOutput {
        run_cmd(self.command().args(args), TIMEOUT)
    }
}

/// Removes the agent container on drop.
struct AgentContainer<'a>(&'a Podman, String);

impl Drop for AgentContainer<'_> {
    fn drop(&mut self) {
        quiet(self.0.command().args(["rm", "-f", "-t", "0", &self.1]));
    }
}

#[test]
fn image_builds_offline_and_serves_a_host_container() {
    let test = "image_builds_offline_and_serves_a_host_container";
    if !require_root(test) || !require_tool("podman") || !require_tool("runc") {
        return;
    }
    let bin_dir = Path::new(BIN).parent().unwrap();
    let hook = bin_dir.join("switchboard-oci-hook");
    assert!(
        hook.is_file() || !under_ci(),
        "{} is missing; build the workspace first",
        hook.display()
    );
    if !hook.is_file() {
        eprintln!("SKIP {test}: {} is missing", hook.display());
        return;
    }

    // The README's command, with the binaries this test run built.
    let work = tmpdir();
    let podman = Podman {
        storage: private_podman_storage(work.path()),
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(readme_command("scripts/build-image.sh"));
    let built = run_cmd(
        Command::new("bash")
            .arg(&script)
            .env("SWITCHBOARD_BIN_DIR", bin_dir)
            .env("CONTAINERS_STORAGE_CONF", &podman.storage)
            .current_dir(work.path()),
        TIMEOUT,
    );
    assert_eq!(built.code(), 0, "build-image.sh: {built:?}");
    let agent = agent_container();
    let image = agent["image"].as_str().unwrap().to_string();
    assert!(
        built.stdout.contains(&format!("built {image};")),
        "the DaemonSet's image {image} is what the script builds: {built:?}"
    );
    let archive = work.path().join("switchboard-image.tar");
    let index = run_cmd(
        Command::new("tar")
            .arg("-xOf")
            .arg(&archive)
            .arg("index.json"),
        TIMEOUT,
    );
    assert!(
        index.stdout.contains(&image),
        "OCI archive index: {index:?}"
    );

    // The host side of the DaemonSet's volumes.
    let host = tmpdir();
    let socket_dir = host.path().join("run-switchboard");
    let policy_dir = host.path().join("etc-switchboard");
    fs::create_dir_all(&socket_dir).unwrap();
    fs::create_dir_all(&policy_dir).unwrap();
    let policy = policy_dir.join("policy.yaml");
    fs::write(&policy, configmap_policy()).unwrap();
    let mut bundle = Bundle::new(&["sh", "-c", "mount -t tmpfs none /tmp; echo mount=$?"]);
    let socket = socket_dir.join("agent.sock");
    bundle.set_seccomp(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    let injected = run_cmd(
        Command::new(&hook)
            .args(["inject", "--bundle"])
            .arg(bundle.path())
            .arg("--policy")
            .arg(&policy)
            .arg("--socket")
            .arg(&socket),
        TIMEOUT,
    );
    assert_eq!(injected.code(), 0, "{injected:?}");

    let mounts: Vec<String> = agent["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let path = m["mountPath"].as_str().unwrap();
            let host = match path {
                "/var/run/switchboard" => socket_dir.clone(),
                "/etc/switchboard" => policy_dir.clone(),
                // The runtime's bundle directory: here the test bundle's, at its own path.
                _ => bundle.path().to_path_buf(),
            };
            let inside = if host == bundle.path() {
                host.clone()
            } else {
                PathBuf::from(path)
            };
            let ro = if m["readOnly"] == true { ":ro" } else { "" };
            format!("{}:{}{ro}", host.display(), inside.display())
        })
        .collect();
    let security = &agent["securityContext"];
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let name = unique_id("image-agent");
    let mut run = podman.command();
    run.args([
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--pid",
        "host",
    ])
    .args([
        "--read-only",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ])
    .args([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    for cap in strings(&security["capabilities"]["add"]) {
        run.args(["--cap-add", &cap]);
    }
    for m in &mounts {
        run.arg("-v").arg(m);
    }
    run.arg("--entrypoint")
        .arg(serde_json::to_string(&agent["command"]).unwrap())
        .arg(&image);
    let started = run_cmd(&mut run, TIMEOUT);
    let _cleanup = AgentContainer(&podman, name.clone());
    assert_eq!(started.code(), 0, "podman run: {started:?}");
    let logs = || {
        let out = podman.run(&["logs", &name]);
        format!("{}{}", out.stdout, out.stderr)
    };
    assert!(
        eventually(Duration::from_secs(10), || socket.exists()),
        "the agent's socket did not appear on the host:\n{}",
        logs()
    );

    let id = unique_id("image");
    let out = run_runc(&bundle, &id, Duration::from_secs(20));
    assert!(!out.timed_out, "{out:?}");
    assert!(out.stdout.contains("mount=1"), "{out:?}\n{}", logs());
    let mut event = None;
    eventually(Duration::from_secs(5), || {
        event = logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "syscall" && e["container_id"] == id.as_str());
        event.is_some()
    });
    let event = event.unwrap_or_else(|| panic!("no syscall event for {id}:\n{}", logs()));
    assert_eq!(
        (
            event["syscall"].as_str(),
            event["rule"].as_str(),
            event["action"].as_str()
        ),
        (Some("mount"), Some("no-mounts"), Some("deny")),
        "the ConfigMap's policy decided: {event}"
    );
    let log = logs();
    assert!(
        !log.contains("cannot read the bundle"),
        "the bundle is readable through the DaemonSet's mount:\n{log}"
    );
    assert!(!log.contains("cannot open the container's init"), "{log}");

    // `kubectl exec ... -- switchboard status`: /status on the pod's loopback, not on the
    // address Prometheus scrapes.
    let exec = readme_command("kubectl -n switchboard-system exec ds/switchboard");
    let in_pod: Vec<&str> = exec.split(" -- ").nth(1).unwrap().split(' ').collect();
    let status = podman.run(&[&["exec", name.as_str()][..], &in_pod[..]].concat());
    assert_eq!(status.code(), 0, "{status:?}");
    assert!(status.stdout.contains(&id), "{status:?}");
    let scrape = agent_flag("--scrape-addr").expect("--scrape-addr in the DaemonSet");
    let port = scrape.rsplit(':').next().unwrap();
    let on_scrape = podman.run(&[
        "exec",
        &name,
        "switchboard",
        "status",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_ne!(on_scrape.code(), 0, "{on_scrape:?}");
    assert!(on_scrape.stderr.contains("404"), "{on_scrape:?}");
}
