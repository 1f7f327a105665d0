//! Harness shared by the end-to-end tests of `switchboard` and `switchboard-oci-hook`: preconditions, commands with time limits, busybox bundles and a running agent.
//!
//! - [`require_root`], [`require_tool`], [`tool_path`]: skip (or, under `CI=true`,
//!   fail) when the host lacks what a test needs.
//! - [`run_cmd`]: a command with its output captured and a time limit.
//! - [`Bundle`]: a temporary OCI bundle whose rootfs is a static busybox.
//! - [`Agent`]: a running `switchboard agent`, its JSON events and its `/metrics`.
//! - [`spawn_containerd`]: a private containerd.
//!
//! What differs per crate (the binaries under test, fixtures, runtimes) stays in
//! each crate's `tests/common/mod.rs`, which wraps what is here.

use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True under CI (`CI=true`), where a missing tool is a failure rather than a skip.
pub fn under_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Returns false (after printing `SKIP <test>: needs root`) unless running as root.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIP {test}: needs root");
    false
}

/// The tool's path; None (after printing a SKIP line) when `tool` is not on PATH.
/// Under `CI=true` it panics instead: there a missing tool is a failure, not a skip.
pub fn require_tool(test: &str, tool: &str) -> Option<PathBuf> {
    if let Some(path) = tool_path(tool) {
        return Some(path);
    }
    if under_ci() {
        panic!("{test}: `{tool}` not found on PATH; under CI=true this is a failure (scripts/install.sh installs it)");
    }
    eprintln!("SKIP {test}: needs `{tool}` on PATH");
    None
}

/// Full path of an executable on PATH (or in /usr/sbin, /sbin, where runc lives).
pub fn tool_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        });
    found
}

/// [`tool_path`], panicking when the tool is missing.
pub fn tool(tool: &str) -> PathBuf {
    tool_path(tool).unwrap_or_else(|| panic!("`{tool}` not found on PATH"))
}

/// A container id unique to this test process: `sb-<tag>-<pid>-<n>`, with every
/// character of `tag` other than an ASCII letter or digit made a `-`.
pub fn unique_id(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let tag: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!(
        "sb-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory `/tmp/<prefix>...` (short paths: a unix socket path must fit 108 bytes).
pub fn tmpdir_with_prefix(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir under /tmp")
}

/// A fresh directory under /tmp: [`tmpdir_with_prefix`] `sb-test-`.
pub fn tmpdir() -> tempfile::TempDir {
    tmpdir_with_prefix("sb-test-")
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// What a command (or a container run) produced. `code()` is the exit code, or
/// 128+signal if the process died of a signal.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
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

/// Reads `r` to its end on a background thread; the text arrives on the channel.
pub fn read_in_background<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// What [`read_in_background`] read, waiting at most 5 s for it.
pub fn collect_output(rx: mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
}

/// The child's exit status, or None if it is still running after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `cmd` with stdin null and stdout and stderr piped; panics if it cannot.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Runs `cmd` (stdin null, output captured), killing it after `timeout`.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> RunOutput {
    let start = Instant::now();
    let mut child = spawn_piped(cmd);
    let out = read_in_background(child.stdout.take().unwrap());
    let err = read_in_background(child.stderr.take().unwrap());
    let (status, timed_out) = match wait_timeout(&mut child, timeout) {
        Some(s) => (s, false),
        None => {
            let _ = child.kill();
            (child.wait().unwrap(), true)
        }
    };
    RunOutput {
        status,
        stdout: collect_output(out),
        stderr: collect_output(err),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// Compiles the C file `source` into a static, non-PIE binary at `out`: its `.bss` has
/// 32-bit addresses, which pointers passed through `int 0x80` need. Panics if gcc fails.
pub fn compile_static(source: &Path, out: &Path) {
    let built = run_cmd(
        Command::new("gcc")
            .args(["-O2", "-static", "-no-pie", "-o"])
            .arg(out)
            .arg(source),
        Duration::from_secs(60),
    );
    assert_eq!(built.code(), 0, "gcc {}: {built:?}", source.display());
}

/// Runs `cmd` with stdin and output on /dev/null, ignoring how it ends (cleanup).
pub fn quiet(cmd: &mut Command) {
    let _ = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Polls `f` until it returns true or `timeout` passes; returns whether it did.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

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

/// `podman ... run --rm --name ID --network=none --ulimit nofile=1024:1024 --ulimit
/// nproc=1024:1024`, to be followed by the container's flags, `--rootfs ROOTFS` and its
/// args. The explicit ulimits: podman's default RLIMIT_NOFILE (1048576) is above this
/// sandbox's hard limit and runc then fails with "error setting rlimit type 7".
pub fn podman_run_command(podman_bin: &Path, runtime: &Path, id: &str) -> Command {
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
    ]);
    c
}

// ---------------------------------------------------------------------------
// A private containerd
// ---------------------------------------------------------------------------

/// Starts `containerd --config <dir>/config.toml` (written from `config`, which must put
/// its gRPC socket at `<dir>/containerd.sock`), logging to `<dir>/containerd.log`, with
/// `env` added; returns once the socket exists. Panics with the log if it exits first
/// or is not ready within 20 s.
pub fn spawn_containerd(
    containerd: &Path,
    dir: &Path,
    config: &str,
    env: &[(&str, &Path)],
) -> Child {
    let path = dir.join("config.toml");
    fs::write(&path, config).unwrap();
    let log_path = dir.join("containerd.log");
    let log = fs::File::create(&log_path).unwrap();
    let mut child = Command::new(containerd)
        .arg("--config")
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn containerd");
    let socket = dir.join("containerd.sock");
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("containerd exited ({status}):\n{}", log());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("containerd not ready after 20 s:\n{}", log());
        }
        thread::sleep(Duration::from_millis(20));
    }
    child
}

// ---------------------------------------------------------------------------
// OCI bundle with a busybox rootfs
// ---------------------------------------------------------------------------

/// Applets linked into the rootfs when `busybox --list` is unavailable.
const APPLETS: &[&str] = &[
    "sh", "mkdir", "rmdir", "uname", "sleep", "cat", "echo", "true", "false", "ls", "test", "[",
    "kill", "id", "touch", "rm", "chroot",
];

fn busybox_path() -> PathBuf {
    let p = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("busybox not found (Debian package busybox-static)");
    assert!(
        !elf_has_interp(&p),
        "{} is dynamically linked; the bundle needs a static busybox (busybox-static)",
        p.display()
    );
    p
}

/// Whether an ELF64 file has a PT_INTERP program header (i.e. is dynamically linked).
fn elf_has_interp(path: &Path) -> bool {
    let b = fs::read(path).expect("read busybox");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let phoff = usize::try_from(u64::from_le_bytes(b[0x20..0x28].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
    })
}

/// A temporary OCI bundle: `config.json` plus a rootfs holding a static busybox
/// with every applet linked into /bin. The config is rewritten on every change.
pub struct Bundle {
    dir: tempfile::TempDir,
    config: Value,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tmpdir();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "tmp", "proc", "dev", "sys", "etc", "root"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let busybox = busybox_path();
        fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
        let listed = Command::new(&busybox).arg("--list").output().ok();
        let listed = listed
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut applets: Vec<&str> = listed.lines().filter(|l| !l.contains('/')).collect();
        applets.extend(APPLETS);
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
                "env": ["PATH=/bin", "HOME=/root", "TERM=dumb"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "switchboard-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "network"}
                ],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        let b = Bundle { dir, config };
        b.save();
        b
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

    pub fn config(&self) -> &Value {
        &self.config
    }

    pub fn set_args(&mut self, args: &[&str]) {
        self.config["process"]["args"] = json!(args);
        self.save();
    }

    /// Sets `linux.seccomp`.
    pub fn set_seccomp(&mut self, profile: Value) {
        self.config["linux"]["seccomp"] = profile;
        self.save();
    }

    /// Drops `linux.namespaces` entries of `kind` ("pid", ...): the container shares the host's.
    pub fn without_namespace(&mut self, kind: &str) {
        if let Some(list) = self.config["linux"]["namespaces"].as_array_mut() {
            list.retain(|ns| ns["type"] != kind);
        }
        self.save();
    }

    pub fn set_annotation(&mut self, key: &str, value: &str) {
        if !self.config["annotations"].is_object() {
            self.config["annotations"] = json!({});
        }
        self.config["annotations"][key] = json!(value);
        self.save();
    }

    fn save(&self) {
        let text = serde_json::to_string_pretty(&self.config).unwrap();
        fs::write(self.config_path(), text).unwrap();
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

/// Finds the address in a log line such as `... metrics server listening addr=127.0.0.1:9`
/// (also `addr="..."` and JSON `"addr":"..."`).
pub fn parse_addr(line: &str) -> Option<String> {
    let i = line.find("addr")? + "addr".len();
    let rest = line[i..].trim_start_matches(['=', ':', '"', ' ']);
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.contains(':').then_some(addr)
}

/// A `switchboard agent` process, killed when dropped. Its stdout (one JSON event
/// per line) and stderr (logs) are collected on background threads.
pub struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    policy: PathBuf,
    metrics_addr: String,
    stdout: Lines,
    stderr: Lines,
    stopped: Option<ExitStatus>,
}

impl Agent {
    /// Writes `policy` to `<dir>/policy.yaml` and starts [`Agent::start_in`] with
    /// `--policy` on it.
    pub fn with_policy_in(
        bin: &Path,
        dir: tempfile::TempDir,
        policy: &str,
        extra_args: &[&str],
    ) -> Agent {
        let file = dir.path().join("policy.yaml");
        fs::write(&file, policy).unwrap();
        let mut args = vec!["--policy", file.to_str().unwrap()];
        args.extend(extra_args);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_in(bin, dir, &args)
    }

    /// `BIN agent --socket <dir>/agent.sock --metrics-addr 127.0.0.1:0
    /// --log-format json EXTRA...`; returns once the socket exists and the metrics
    /// address has been logged.
    pub fn start_in(bin: &Path, dir: tempfile::TempDir, extra_args: &[&str]) -> Agent {
        let socket = dir.path().join("agent.sock");
        let mut child = spawn_piped(
            Command::new(bin)
                .arg("agent")
                .arg("--socket")
                .arg(&socket)
                .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
                .args(extra_args),
        );
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        let metrics_addr = loop {
            let addr = stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("metrics server listening"))
                .find_map(|l| parse_addr(l));
            if let Some(addr) = addr {
                if socket.exists() {
                    break addr;
                }
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
                    "agent not ready after 10 s (socket {} exists: {}); stderr:\n{}",
                    socket.display(),
                    socket.exists(),
                    stderr.lock().unwrap().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        let policy = dir.path().join("policy.yaml");
        Agent {
            child,
            dir,
            socket,
            policy,
            metrics_addr,
            stdout,
            stderr,
            stopped: None,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// The agent's temp dir (holds the socket and policy.yaml).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/policy.yaml`, where [`Agent::with_policy_in`] writes the policy.
    pub fn policy_path(&self) -> PathBuf {
        self.policy.clone()
    }

    pub fn policy_str(&self) -> &str {
        self.policy.to_str().unwrap()
    }

    /// Rewrites the policy file (atomically, by rename); pair with [`Agent::sighup`].
    pub fn write_policy(&self, policy: &str) {
        let tmp = self.dir.path().join(".policy.yaml.new");
        fs::write(&tmp, policy).unwrap();
        fs::rename(&tmp, self.policy_path()).unwrap();
    }

    pub fn metrics_addr(&self) -> &str {
        &self.metrics_addr
    }

    pub fn pid(&self) -> i32 {
        self.child.id().cast_signed()
    }

    /// Every stdout line that parses as JSON, in order.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Both streams, labelled, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "agent stdout:\n{}\nagent stderr:\n{}",
            self.stdout_text(),
            self.stderr_text()
        )
    }

    /// The first event matching `pred`, waiting up to `timeout` for it.
    pub fn wait_event(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
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

    /// The `syscall` event for one of `names`, waiting up to 5 s for it; panics
    /// (with the agent's output) when there is none.
    pub fn syscall_event(&self, names: &[&str]) -> Value {
        let is_one =
            |e: &Value| e["event"] == "syscall" && names.iter().any(|n| e["syscall"] == *n);
        self.wait_event(is_one, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no syscall event for {names:?}\n{}", self.output()))
    }

    /// The body of `GET /metrics`.
    pub fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics")
    }

    /// Sum of the samples of `name` whose labels contain every pair in `labels`
    /// (written as in the exposition, e.g. `syscall="mkdir"`); 0 if there are none.
    pub fn metric_value(&self, name: &str, labels: &[&str]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    /// Polls [`Agent::metric_value`] until `pred` holds or `timeout` passes; returns the last value.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[&str],
        pred: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric_value(name, labels);
            if pred(v) || Instant::now() >= deadline {
                return v;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sighup(&self) {
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal agent");
    }

    /// SIGTERM, then waits (SIGKILL after 10 s); returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(s) = self.stopped {
            return s;
        }
        if self.child.try_wait().unwrap().is_none() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
        }
        let status = wait_timeout(&mut self.child, Duration::from_secs(10)).unwrap_or_else(|| {
            let _ = self.child.kill();
            self.child.wait().unwrap()
        });
        self.stopped = Some(status);
        status
    }

    /// Waits up to `timeout` for the agent to exit by itself (after a takeover, say).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(&mut self.child, timeout)?;
        self.stopped = Some(status);
        Some(status)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A GET with the agent's own client; returns the body. Panics unless the status is 200.
pub fn http_get(addr: &str, path: &str) -> String {
    let (status, body) = switchboard::http::get(addr, path, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// See [`Agent::metric_value`].
pub fn metric_value(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (label_part, value_part) = if let Some(r) = rest.strip_prefix('{') {
                r.split_once('}')?
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            if !labels.iter().all(|p| label_part.contains(p)) {
                return None;
            }
            value_part.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}
