//! End-to-end under containerd: the hook as the runc shim's binary (`ctr run --runc-binary`), merging into containerd's default profile.
//!
//! The test starts its own containerd (temporary root, state and socket, CRI plugin
//! off, its own namespace) and stops it at the end, also when the test fails.
//! Needs root (prints SKIP otherwise) and the `switchboard` binary beside the
//! hook's. Under CI=true a missing containerd, ctr or runc fails the test.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A private containerd; its containers are removed and the daemon stopped on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    ctr: PathBuf,
    namespace: String,
    containers: Vec<String>,
}

impl Containerd {
    fn start(containerd: &Path, ctr: &Path) -> Containerd {
        let dir = tmpdir();
        let d = dir.path().display();
        let config = format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \
                 \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.aufs\", \
                 \"io.containerd.snapshotter.v1.devmapper\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n"
            );
        let child = spawn_containerd(containerd, dir.path(), &config, &[]);
        Containerd {
            child,
            dir,
            ctr: ctr.to_path_buf(),
            namespace: format!("sb-hook-{}", std::process::id()),
            containers: Vec::new(),
        }
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .arg("--namespace")
            .arg(&self.namespace);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in &self.containers {
            quiet(self.ctr().args(["task", "kill", "--signal", "SIGKILL", id]));
            quiet(self.ctr().args(["task", "delete", "--force", id]));
            quiet(self.ctr().args(["container", "delete", id]));
        }
        quiet(self.ctr().args(["namespace", "remove", &self.namespace]));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
    }
}

#[test]
fn containerd_with_the_hook_as_runc_binary() {
    let test = "containerd_with_the_hook_as_runc_binary";
    if !require_root(test) {
        return;
    }
    let (Some(containerd_bin), Some(ctr), Some(runc), Some(agent_bin)) = (
        require_tool(test, "containerd"),
        require_tool(test, "ctr"),
        require_tool(test, "runc"),
        agent_bin(test),
    ) else {
        return;
    };
    let agent = Agent::start(&agent_bin, MKDIR_EMLINK_POLICY);
    let wrapper = hook_as_runtime(&agent, &runc, "sb-runc");

    let mut containerd = Containerd::start(&containerd_bin, &ctr);
    let bundle = Bundle::new(&["true"]);
    let id = unique_id("ctr");
    containerd.containers.push(id.clone());
    let out = run_cmd(
        containerd
            .ctr()
            .args([
                "run",
                "--rm",
                "--seccomp",
                "--cap-drop",
                "CAP_SYS_CHROOT",
                "--runc-binary",
            ])
            .arg(&wrapper)
            .arg("--rootfs")
            .arg(bundle.rootfs())
            .args([
                &id,
                "/bin/sh",
                "-c",
                "mkdir /tmp/x; echo mkdir=$?; chroot / /bin/true; echo chroot=$?",
            ]),
        TIMEOUT,
    );
    assert!(!out.timed_out, "{out:?}\n{}", agent.output());
    assert!(
        out.stdout.contains("mkdir=1"),
        "{out:?}\n{}",
        agent.output()
    );
    assert!(
        out.stderr.contains("Too many links"),
        "the policy's EMLINK: {out:?}"
    );
    let mkdir = agent.syscall_event(&["mkdir", "mkdirat"]);
    assert_eq!(mkdir["container_id"], id.as_str(), "{mkdir}");
    assert_eq!(
        (mkdir["action"].as_str(), mkdir["rule"].as_str()),
        (Some("deny"), Some("no-mkdir")),
        "{mkdir}"
    );

    // containerd's default profile allows chroot only with CAP_SYS_CHROOT: denied, though the policy only logs it.
    assert!(out.stdout.contains("chroot=1"), "{out:?}");
    let chroot = agent.syscall_event(&["chroot"]);
    assert_eq!(chroot["action"], "deny", "{chroot}");
    assert_ne!(chroot["rule"], "watch-chroot", "{chroot}");
}
