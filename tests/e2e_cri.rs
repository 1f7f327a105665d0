//! End-to-end on the kubelet's path: a private containerd (CRI plugin on) driven over its CRI socket with the calls the kubelet makes, for a Localhost seccomp profile and for the `switchboard` RuntimeClass.
//!
//! Images are built here, offline: a busybox rootfs imported with podman (private
//! storage), saved as an OCI archive and imported with `ctr -n k8s.io images import`;
//! containerd's `sandbox_image` is that image too. Pods use the host network, so no
//! CNI is needed. Each test checks that the pod's mkdir fails with EPERM, that the
//! agent's event and `switchboard_syscalls_total` carry the namespace, pod and
//! container names the CRI plugin annotates, and that the shipped deny alert,
//! evaluated by `promtool test rules` on the scraped series, names the pod.
//! Needs root (SKIP otherwise); under CI=true a missing tool fails.

mod common;

use common::k8s::*;
use common::*;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{self as cri, security_profile::ProfileType, NamespaceMode};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

const TIMEOUT: Duration = Duration::from_secs(60);
const IMAGE: &str = "localhost/switchboard-test/busybox:1";
/// Prepended to the ConfigMap's policy: a call the kernel would allow, so its EPERM is the agent's.
const NO_MKDIR: &str = "  - name: no-mkdir\n    match:\n      namespace: [switchboard-demo]\n    syscalls: [mkdir, mkdirat]\n    action: deny\n    errno: EPERM\n";

/// The ConfigMap's policy with [`NO_MKDIR`] as its first rule.
fn policy() -> String {
    configmap_policy().replacen("rules:\n", &format!("rules:\n{NO_MKDIR}"), 1)
}

/// `switchboard-oci-hook`, built beside the agent by `cargo build --workspace`.
fn hook_bin(test: &str) -> Option<PathBuf> {
    let hook = Path::new(BIN).with_file_name("switchboard-oci-hook");
    if hook.is_file() {
        return Some(hook);
    }
    assert!(
        !under_ci(),
        "{test}: {} is missing; build the workspace first",
        hook.display()
    );
    eprintln!(
        "SKIP {test}: {} is missing; run `cargo build --workspace` first",
        hook.display()
    );
    None
}

/// Builds the busybox image offline and writes it as an OCI archive at `archive`.
fn build_image(dir: &Path, archive: &Path) {
    let bundle = Bundle::new(&[]);
    let tar = dir.join("rootfs.tar");
    let out = run_cmd(
        Command::new("tar")
            .arg("-C")
            .arg(bundle.rootfs())
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        TIMEOUT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let podman = |args: &[&str]| {
        let mut c = Command::new(tool("podman"));
        c.arg("--root")
            .arg(dir.join("podman-root"))
            .arg("--runroot")
            .arg(dir.join("podman-run"))
            .args(["--storage-driver", "vfs", "--events-backend", "file"])
            .args(args);
        let out = run_cmd(&mut c, TIMEOUT);
        assert_eq!(out.code(), 0, "podman {args:?}: {out:?}");
    };
    podman(&[
        "import",
        "--change",
        r#"CMD ["/bin/sleep", "3600"]"#,
        tar.to_str().unwrap(),
        IMAGE,
    ]);
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        IMAGE,
    ]);
}

/// A private containerd with the CRI plugin: its own root, state and sockets; runc
/// shims with cgroupfs (the host's cgroups are hybrid); a runtime handler
/// `switchboard` whose binary is the OCI hook. Stopped on drop, with its pods.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    sandboxes: Vec<String>,
}

impl Containerd {
    /// `runtime_handler` is the README's TOML for the `switchboard` handler.
    fn start(runtime_handler: &str, hook_config: &Path) -> Containerd {
        let dir = tmpdir_with_prefix("sb-cri-");
        let d = dir.path().display();
        let runc = tool("runc");
        let cni = dir.path().join("cni");
        fs::create_dir_all(&cni).unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  enable_selinux = false
  # The sandbox's oom_score_adj (-998) may be below what this process may set (as in a
  # container); keep it at containerd's own, as nodes in user namespaces do.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
{runtime_handler}"#,
            cni = cni.display(),
            runc = runc.display(),
        );
        // The shim passes its environment on to the runtime binary: the hook's config.
        let child = spawn_containerd(
            &tool("containerd"),
            dir.path(),
            &config,
            &[("SWITCHBOARD_OCI_HOOK_CONFIG", hook_config)],
        );
        Containerd {
            child,
            dir,
            sandboxes: Vec::new(),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new(tool("ctr"));
        c.arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"]);
        c
    }

    /// The README's `ctr -n k8s.io images import ARCHIVE`, on this containerd, in `dir`;
    /// `image` must then be listed.
    fn import(&self, archive: &str, dir: &Path, image: &str) {
        let ctr = format!(
            "{} --address {}",
            tool("ctr").display(),
            self.socket().display()
        );
        let line = substitute(
            &readme_command("ctr -n k8s.io images import"),
            &[
                ("ctr ", &format!("{ctr} ")),
                ("switchboard-image.tar", archive),
            ],
        );
        let out = run_cmd(
            Command::new("sh").args(["-c", &line]).current_dir(dir),
            TIMEOUT,
        );
        assert_eq!(out.code(), 0, "{line}: {out:?}");
        let out = run_cmd(self.ctr().args(["images", "ls", "-q"]), TIMEOUT);
        assert!(out.stdout.lines().any(|l| l == image), "{image}: {out:?}");
    }

    async fn client(&self) -> RuntimeServiceClient<Channel> {
        let socket = self.socket();
        let channel = Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .expect("connect to the CRI socket");
        RuntimeServiceClient::new(channel)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ids = std::mem::take(&mut self.sandboxes);
        runtime.block_on(async {
            let mut client = self.client().await;
            for id in ids {
                let _ = client
                    .stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
                let _ = client
                    .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await;
            }
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leftover overlay mounts of a failed run would keep the temp dir busy.
        let root = self.dir.path().join("root");
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if Path::new(m).starts_with(&root)
                    || Path::new(m).starts_with(self.dir.path().join("state"))
                {
                    quiet(Command::new("umount").arg("-l").arg(m));
                }
            }
        }
    }
}

/// One pod of deploy/kubernetes/example-pods.yaml as the kubelet would run it: the
/// sandbox, then its container, whose command is followed by a mkdir.
struct Pod {
    namespace: String,
    name: String,
    container: String,
    command: Vec<String>,
    /// The RuntimeClass's handler, as the kubelet looks it up.
    runtime_handler: String,
    /// The Localhost profile's absolute path, as the kubelet passes `localhost_ref`.
    profile: Option<PathBuf>,
}

impl Pod {
    /// The example pod `name`; a Localhost profile resolves to `profile`.
    fn example(name: &str, profile: &Path) -> Pod {
        let pod = manifest("example-pods.yaml")
            .into_iter()
            .find(|d| d["kind"] == "Pod" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no pod {name} in example-pods.yaml"));
        let spec = &pod["spec"];
        let container = &spec["containers"][0];
        let mut command = strings(&container["command"]);
        *command.last_mut().unwrap() += "; mkdir /tmp/x";
        let runtime_handler = match spec["runtimeClassName"].as_str() {
            Some(class) => {
                let runtime_class = object("runtimeclass.yaml", "RuntimeClass");
                assert_eq!(runtime_class["metadata"]["name"], class);
                runtime_class["handler"].as_str().unwrap().to_string()
            }
            None => String::new(),
        };
        let seccomp = &spec["securityContext"]["seccompProfile"];
        let profile = (seccomp["type"] == "Localhost").then(|| profile.to_path_buf());
        Pod {
            namespace: pod["metadata"]["namespace"].as_str().unwrap().into(),
            name: name.into(),
            container: container["name"].as_str().unwrap().into(),
            command,
            runtime_handler,
            profile,
        }
    }
}

/// What the container left: its exit code and its log (CRI format).
struct Outcome {
    exit_code: i32,
    log: String,
}

async fn run_pod(containerd: &mut Containerd, pod: &Pod) -> Outcome {
    let mut client = containerd.client().await;
    let logs = containerd.dir.path().join("logs").join(&pod.name);
    fs::create_dir_all(&logs).unwrap();
    let host_network = cri::NamespaceOption {
        network: NamespaceMode::Node as i32,
        ..Default::default()
    };
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.name.clone(),
            uid: format!("uid-{}", unique_id(&pod.name)),
            namespace: pod.namespace.clone(),
            attempt: 0,
        }),
        // Empty: containerd 1.6 would set it in the host's UTS namespace, which runc refuses.
        hostname: String::new(),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: pod.runtime_handler.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
        .into_inner()
        .pod_sandbox_id;
    containerd.sandboxes.push(sandbox.clone());

    let seccomp = pod.profile.as_ref().map(|p| cri::SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: p.display().to_string(),
    });
    let container_config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: pod.container.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: pod.command.clone(),
        log_path: format!("{}.log", pod.container),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(host_network),
                seccomp,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = client
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", containerd.log()))
        .into_inner()
        .container_id;
    client
        .start_container(cri::StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log()));

    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        let status = client
            .container_status(cri::ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a status");
        if status.state == cri::ContainerState::ContainerExited as i32 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not exit: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client
        .stop_container(cri::StopContainerRequest {
            container_id: container.clone(),
            timeout: 10,
        })
        .await
        .expect("StopContainer");
    client
        .remove_container(cri::RemoveContainerRequest {
            container_id: container,
        })
        .await
        .expect("RemoveContainer");
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .expect("StopPodSandbox");
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    containerd.sandboxes.retain(|s| *s != sandbox);
    Outcome {
        exit_code: status.exit_code,
        log: fs::read_to_string(logs.join(format!("{}.log", pod.container))).unwrap_or_default(),
    }
}

/// [`run_pod`] on a runtime of its own.
fn run_pod_blocking(containerd: &mut Containerd, pod: &Pod) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_pod(containerd, pod))
}

/// `promtool test rules` with the shipped alerts, fed the deny series scraped from the
/// agent (as new series, the common case of a first denial): an alert per denied
/// syscall, each naming the pod.
fn assert_alerts_name_pod(page: &str, pod: &Pod) {
    let (ns, name, container) = (&pod.namespace, &pod.name, &pod.container);
    let mut input = String::new();
    let mut expected = String::new();
    for line in page
        .lines()
        .filter(|l| l.starts_with("switchboard_syscalls_total{") && l.contains("action=\"deny\""))
    {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let syscall = labels
            .split("syscall=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let labels = labels.replacen('{', "{job=\"switchboard\",instance=\"node-a:9465\",", 1);
        input += &format!("      - series: '{labels}'\n        values: '_x10 {value}x20'\n");
        expected += &format!(
            r#"          - exp_labels:
              severity: warning
              namespace: {ns}
              pod: {name}
              container: {container}
              syscall: {syscall}
            exp_annotations:
              summary: "Switchboard denied {syscall} in {ns}/{name} ({container})"
              description: "Container {container} of pod {ns}/{name} made {value:.0} {syscall} call(s) in the last 5 minutes that the Switchboard policy denied. Either the workload is doing something its policy does not expect (investigate it) or the policy is too strict for it."
"#
        );
    }
    assert!(
        expected.contains("syscall: mkdir"),
        "no mkdir deny series:\n{page}"
    );
    let alerts = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yaml");
    let test = format!(
        r#"rule_files: ["{alerts}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="switchboard", instance="node-a:9465"}}'
        values: '1x30'
{input}    alert_rule_test:
      - eval_time: 11m
        alertname: SwitchboardSyscallDenied
        exp_alerts:
{expected}"#,
        alerts = alerts.display()
    );
    let dir = tmpdir();
    let file = dir.path().join("cri.test.yaml");
    fs::write(&file, &test).unwrap();
    let out = run_cmd(
        Command::new(tool("promtool"))
            .args(["test", "rules"])
            .arg(&file),
        TIMEOUT,
    );
    assert_eq!(out.code(), 0, "promtool test rules:\n{test}\n{out:?}");
}

/// The event of the pod's `syscalls`, which must carry its names and `rule`'s EPERM.
fn assert_event(agent: &Agent, pod: &Pod, syscalls: &[&str], rule: &str) {
    let e: Value = agent
        .wait_event(
            |e| {
                e["event"] == "syscall"
                    && e["pod"] == pod.name.as_str()
                    && syscalls.iter().any(|s| e["syscall"] == *s)
            },
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no {syscalls:?} event of {}\n{}", pod.name, agent.output()));
    assert_eq!(
        (
            e["namespace"].as_str(),
            e["pod"].as_str(),
            e["container"].as_str()
        ),
        (
            Some(pod.namespace.as_str()),
            Some(pod.name.as_str()),
            Some(pod.container.as_str())
        ),
        "{e}"
    );
    assert_eq!(
        (
            e["rule"].as_str(),
            e["action"].as_str(),
            e["errno"].as_i64()
        ),
        (Some(rule), Some("deny"), Some(1)),
        "{e}"
    );
}

/// Checks the pod's outcome, the agent's events and counter, and the alert.
fn assert_served(agent: &Agent, out: &Outcome, pod: &Pod) {
    assert_eq!(
        out.exit_code,
        1,
        "mkdir must fail; log:\n{}\n{}",
        out.log,
        agent.output()
    );
    assert!(
        out.log
            .contains("can't create directory '/tmp/x': Operation not permitted"),
        "mkdir's EPERM expected in the container's log:\n{}",
        out.log
    );
    // What the README says `kubectl logs` shows.
    let logs = readme_kubernetes()
        .lines()
        .find(|l| l.starts_with("kubectl -n switchboard-demo logs"))
        .and_then(|l| l.split("# ").nth(1))
        .expect("the README's kubectl logs line and its output")
        .to_string();
    assert!(
        out.log.contains(&logs),
        "{logs:?} expected in the log:\n{}",
        out.log
    );
    assert_event(agent, pod, &["mkdir", "mkdirat"], "no-mkdir");
    // The example's own command: mount, which the ConfigMap's policy denies.
    assert_event(agent, pod, &["mount"], "no-mounts");
    let page = agent.metrics();
    let want = [
        format!("namespace=\"{}\"", pod.namespace),
        format!("pod=\"{}\"", pod.name),
        format!("container=\"{}\"", pod.container),
        "syscall=\"mkdir\"".to_string(),
        "action=\"deny\"".to_string(),
    ];
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert!(
        metric_value(&page, "switchboard_syscalls_total", &want) >= 1.0,
        "{want:?}\n{page}"
    );
    assert_alerts_name_pod(&page, pod);
}

/// A node set up as the README's Kubernetes section says, in a temporary directory:
/// the hook installed, its configuration, containerd with the `switchboard` runtime
/// handler, the test image imported. Returns the agent, containerd, the installed hook
/// and the directory.
fn setup(test: &str) -> Option<(Agent, Containerd, PathBuf, tempfile::TempDir)> {
    if !require_root(test) {
        return None;
    }
    for t in ["containerd", "ctr", "runc", "podman", "promtool", "tar"] {
        if !require_tool(t) {
            return None;
        }
    }
    let built = hook_bin(test)?;
    let agent = Agent::with_policy(&policy(), &[]);
    let work = tmpdir();
    let w = work.path().display().to_string();
    let bin_dir = format!("{}/", built.parent().unwrap().display());
    let install = substitute(
        &readme_command("install -D -m 0755"),
        &[
            ("target/release/", &bin_dir),
            ("/usr/local/bin/", &format!("{w}/usr/local/bin/")),
        ],
    );
    let out = run_cmd(Command::new("sh").args(["-c", &install]), TIMEOUT);
    assert_eq!(out.code(), 0, "{install}: {out:?}");
    let hook = work.path().join("usr/local/bin/switchboard-oci-hook");
    let runc = tool("runc").display().to_string();
    let hook_config = work.path().join("oci-hook.toml");
    let paths = [
        ("/etc/switchboard/policy.yaml", agent.policy_str()),
        ("/var/run/switchboard/agent.sock", agent.socket_str()),
    ];
    fs::write(
        &hook_config,
        substitute(
            &readme_toml("runtime = "),
            &[&[("/usr/sbin/runc", runc.as_str())][..], &paths[..]].concat(),
        ),
    )
    .unwrap();
    let handler = substitute(
        &readme_toml("runtimes.switchboard"),
        &[
            (
                "/usr/local/bin/switchboard-oci-hook",
                hook.to_str().unwrap(),
            ),
            // This host's runc handler uses cgroupfs (its cgroups are hybrid).
            ("SystemdCgroup = true", "SystemdCgroup = false"),
        ],
    );
    let archive = work.path().join("busybox.oci.tar");
    build_image(work.path(), &archive);
    let containerd = Containerd::start(&handler, &hook_config);
    containerd.import(archive.to_str().unwrap(), work.path(), IMAGE);
    Some((agent, containerd, hook, work))
}

#[test]
fn cri_localhost_profile_names_the_pod() {
    let Some((agent, mut containerd, hook, work)) = setup("cri_localhost_profile_names_the_pod")
    else {
        return;
    };
    // The profile the README has each node make.
    let profile = work.path().join("switchboard.json");
    let line = substitute(
        &readme_command("switchboard-oci-hook profile"),
        &[
            ("switchboard-oci-hook ", &format!("{} ", hook.display())),
            ("/etc/switchboard/policy.yaml", agent.policy_str()),
            ("/var/run/switchboard/agent.sock", agent.socket_str()),
            (
                "/var/lib/kubelet/seccomp/profiles/switchboard.json",
                profile.to_str().unwrap(),
            ),
        ],
    );
    let out = run_cmd(Command::new("sh").args(["-c", &line]), TIMEOUT);
    assert_eq!(out.code(), 0, "{line}: {out:?}");

    // The agent's image, built and loaded as the README says, under the DaemonSet's name.
    let built = run_cmd(
        Command::new("bash")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(readme_command("scripts/build-image.sh")),
            )
            .env("SWITCHBOARD_BIN_DIR", Path::new(BIN).parent().unwrap())
            .env(
                "CONTAINERS_STORAGE_CONF",
                private_podman_storage(work.path()),
            )
            .current_dir(work.path()),
        TIMEOUT,
    );
    assert_eq!(built.code(), 0, "{built:?}");
    let image = agent_container()["image"].as_str().unwrap().to_string();
    containerd.import("switchboard-image.tar", work.path(), &image);
    let pod = Pod::example("demo-localhost", &profile);
    assert!(pod.profile.is_some() && pod.runtime_handler.is_empty());
    let outcome = run_pod_blocking(&mut containerd, &pod);
    assert_served(&agent, &outcome, &pod);
}

#[test]
fn cri_runtime_class_names_the_pod() {
    let Some((agent, mut containerd, _hook, work)) = setup("cri_runtime_class_names_the_pod")
    else {
        return;
    };
    let pod = Pod::example("demo-runtimeclass", work.path());
    assert!(pod.profile.is_none() && pod.runtime_handler == "switchboard");
    let outcome = run_pod_blocking(&mut containerd, &pod);
    assert_served(&agent, &outcome, &pod);
}
