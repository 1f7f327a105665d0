//! Harness for the hook's tests: the built binaries, fixtures, busybox bundles, a running agent, and commands with time limits.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const HOOK: &str = env!("CARGO_BIN_EXE_switchboard-oci-hook");

/// The fixture directory.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A profile with `listenerMetadata` parsed, so that comparisons do not depend on key order.
pub fn with_parsed_metadata(mut profile: Value) -> Value {
    if let Some(text) = profile["listenerMetadata"].as_str() {
        if let Ok(parsed) = serde_json::from_str::<Value>(text) {
            profile["listenerMetadata"] = parsed;
        }
    }
    profile
}

/// A config with its record annotation parsed.
pub fn with_parsed_record(mut config: Value) -> Value {
    let key = "io.switchboard.original-profile";
    if let Some(text) = config["annotations"][key].as_str() {
        config["annotations"][key] = serde_json::from_str(text).unwrap();
    }
    config
}

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

pub fn under_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// False (after printing a SKIP line) unless running as root.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIP {test}: needs root");
    false
}

/// Full path of an executable on PATH or in the sbin directories.
pub fn tool_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs: Vec<String> = path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(String::from))
        .collect();
    dirs.iter().map(|d| Path::new(d).join(tool)).find(|p| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The tool's path; None (after a SKIP line) when missing, a panic when missing under CI=true.
pub fn require_tool(test: &str, tool: &str) -> Option<PathBuf> {
    if let Some(path) = tool_path(tool) {
        return Some(path);
    }
    if under_ci() {
        panic!("{test}: `{tool}` not found; under CI=true this is a failure");
    }
    eprintln!("SKIP {test}: needs `{tool}`");
    None
}

/// The `switchboard` agent binary, built beside the hook (`cargo build --workspace`).
pub fn agent_bin(test: &str) -> Option<PathBuf> {
    let bin = Path::new(HOOK).with_file_name("switchboard");
    if bin.is_file() {
        return Some(bin);
    }
    if under_ci() {
        panic!(
            "{test}: {} is missing; build the workspace (cargo build --workspace) first",
            bin.display()
        );
    }
    eprintln!(
        "SKIP {test}: {} is missing; run `cargo build --workspace` first",
        bin.display()
    );
    None
}

/// `sb-hook-<tag>-<pid>-<n>`, unique to this test process.
pub fn unique_id(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sb-hook-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory under /tmp (short paths: unix socket paths must fit 108 bytes).
pub fn tmpdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sb-hook-")
        .tempdir_in("/tmp")
        .expect("create temp dir under /tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl RunOutput {
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

fn read_in_background<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` (stdin null, output captured), killing it after `timeout`.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> RunOutput {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = read_in_background(child.stdout.take().unwrap());
    let err = read_in_background(child.stderr.take().unwrap());
    let (status, timed_out) = match wait_timeout(&mut child, timeout) {
        Some(s) => (s, false),
        None => {
            let _ = child.kill();
            (child.wait().unwrap(), true)
        }
    };
    let collect =
        |rx: mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    RunOutput {
        status,
        stdout: collect(out),
        stderr: collect(err),
        timed_out,
    }
}

/// Runs the hook with `args`.
pub fn hook(args: &[&str]) -> RunOutput {
    run_cmd(Command::new(HOOK).args(args), Duration::from_secs(20))
}

// ---------------------------------------------------------------------------
// Busybox bundles
// ---------------------------------------------------------------------------

fn busybox_path() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("busybox not found (Debian package busybox-static)")
}

/// A temporary OCI bundle whose rootfs is a static busybox with its applets linked into /bin.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub config: Value,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tmpdir();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "tmp", "proc", "dev", "sys", "etc", "root"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        let busybox = busybox_path();
        fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
        let listed = Command::new(&busybox)
            .arg("--list")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut applets: Vec<&str> = listed.lines().filter(|l| !l.contains('/')).collect();
        applets.extend([
            "sh", "mkdir", "rmdir", "chroot", "echo", "true", "cat", "ls",
        ]);
        for a in applets {
            let link = rootfs.join("bin").join(a);
            if a != "busybox" && !link.exists() {
                symlink("busybox", link).unwrap();
            }
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "HOME=/root"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "switchboard-hook-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
            ],
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "network"}
                ]
            }
        });
        let bundle = Bundle { dir, config };
        bundle.save();
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    pub fn set_seccomp(&mut self, profile: Value) {
        self.config["linux"]["seccomp"] = profile;
        self.save();
    }

    fn save(&self) {
        fs::write(
            self.config_path(),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------

/// Runs `runc run --bundle DIR ID`, deleting the container afterwards (also on timeout).
pub fn runc_run(runc: &Path, bundle: &Path, id: &str, timeout: Duration) -> RunOutput {
    let _guard = RuncGuard {
        runc: runc.to_path_buf(),
        id: id.to_string(),
    };
    run_cmd(
        Command::new(runc).args(["run", "--bundle", bundle.to_str().unwrap(), id]),
        timeout,
    )
}

struct RuncGuard {
    runc: PathBuf,
    id: String,
}

impl Drop for RuncGuard {
    fn drop(&mut self) {
        quiet(Command::new(&self.runc).args(["kill", &self.id, "KILL"]));
        quiet(Command::new(&self.runc).args(["delete", "--force", &self.id]));
    }
}

pub fn quiet(cmd: &mut Command) {
    let _ = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `podman --cgroup-manager=cgroupfs --events-backend=file --runtime RUNTIME`, the
/// invocation that works on the project's machines (runc, as podman's default crun
/// refuses hybrid cgroups there).
pub fn podman(podman: &Path, runtime: &Path) -> Command {
    let mut c = Command::new(podman);
    c.args([
        "--cgroup-manager=cgroupfs",
        "--events-backend=file",
        "--runtime",
    ])
    .arg(runtime);
    c
}

/// `podman run --rm --name ID` with the flags this host needs; EXTRA goes before `--rootfs`.
pub fn podman_run(
    podman_bin: &Path,
    runtime: &Path,
    id: &str,
    extra: &[&str],
    rootfs: &Path,
    args: &[&str],
) -> Command {
    let mut c = podman(podman_bin, runtime);
    c.args([
        "run",
        "--rm",
        "--name",
        id,
        "--network=none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ])
    .args(extra)
    .arg("--rootfs")
    .arg(rootfs)
    .args(args);
    c
}

/// Removes a podman container when dropped.
pub struct PodmanGuard {
    pub podman: PathBuf,
    pub runtime: PathBuf,
    pub id: String,
}

impl Drop for PodmanGuard {
    fn drop(&mut self) {
        quiet(
            podman(&self.podman, &self.runtime)
                .args(["rm", "--force", "--ignore", "--time", "0", &self.id]),
        );
    }
}

// ---------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------

type Lines = Arc<Mutex<Vec<String>>>;

fn collect_lines<R: Read + Send + 'static>(r: R) -> Lines {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    lines
}

/// A running `switchboard agent` with a policy, killed when dropped.
pub struct Agent {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub policy: PathBuf,
    stdout: Lines,
    stderr: Lines,
}

impl Agent {
    /// `switchboard agent --socket <tmp>/agent.sock --policy <tmp>/policy.yaml
    /// --metrics-addr 127.0.0.1:0 --log-format json`; returns once the socket exists
    /// and the metrics server has been logged.
    pub fn start(bin: &Path, policy: &str) -> Agent {
        let dir = tmpdir();
        let socket = dir.path().join("agent.sock");
        let policy_path = dir.path().join("policy.yaml");
        fs::write(&policy_path, policy).unwrap();
        let mut child = Command::new(bin)
            .arg("agent")
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(&policy_path)
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("metrics server listening"));
            if listening && socket.exists() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "agent exited during startup ({status}); stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "agent not ready after 10 s; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        Agent {
            child,
            dir,
            socket,
            policy: policy_path,
            stdout,
            stderr,
        }
    }

    pub fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    pub fn policy_str(&self) -> &str {
        self.policy.to_str().unwrap()
    }

    /// Every stdout line that parses as JSON.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn output(&self) -> String {
        format!(
            "agent stdout:\n{}\nagent stderr:\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// The first event matching `pred`, waiting up to 5 s.
    pub fn wait_event(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The syscall event for one of `names`, waiting for it.
    pub fn syscall_event(&self, names: &[&str]) -> Value {
        self.wait_event(|e| e["event"] == "syscall" && names.iter().any(|n| e["syscall"] == *n))
            .unwrap_or_else(|| panic!("no syscall event for {names:?}\n{}", self.output()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
