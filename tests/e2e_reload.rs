//! End-to-end: the agent reloads its policy when the file changes, without SIGHUP, as a ConfigMap volume (the kubelet's `..data` swap) or an editor (write and rename, write in place) changes it.
//!
//! Each change is checked by what a runc container's mkdir gets, and by
//! `switchboard_policy_reloads_total`: one change is one reload, a bad policy is
//! refused and counted and the previous one stays. Needs root (SKIP otherwise).

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::thread;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(5);
const RELOADS: &str = "switchboard_policy_reloads_total";
const SUCCESS: &[&str] = &["result=\"success\""];
const FAILURE: &[&str] = &["result=\"failure\""];
const MKDIRS: &[&str] = &["mkdir", "mkdirat"];
const BROKEN: &str = "default: log\nrules:\n  - name: broken\n    syscalls: [mkdir, mkdirat\n";

fn log_mkdir() -> String {
    policy_yaml("log", "mkdir-log", MKDIRS, "log", None)
}

fn deny_mkdir(errno: &str) -> String {
    policy_yaml("log", "no-mkdir", MKDIRS, "deny", Some(errno))
}

/// What a runc container's mkdir got: its shell's output and the agent's event.
fn try_mkdir(agent: &Agent, tag: &str) -> (RunOutput, Value) {
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    bundle.set_seccomp(notify_profile(agent.socket(), MKDIRS, None));
    let id = unique_id(tag);
    let out = run_runc(&bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{tag}: {out:?}");
    let event = agent
        .wait_event(
            |e| {
                e["event"] == "syscall"
                    && e["container_id"] == id.as_str()
                    && MKDIRS.iter().any(|s| e["syscall"] == *s)
            },
            WAIT,
        )
        .unwrap_or_else(|| panic!("{tag}: no mkdir event\n{}", agent.output()));
    (out, event)
}

/// Waits until the reload counter `labels` reaches `want`, then checks that it stays
/// there past the debounce (one change, one reload) and what the other counter says.
fn assert_reloads(agent: &Agent, labels: &[&str], want: f64, other: &[&str], other_want: f64) {
    agent.wait_metric(RELOADS, labels, |v| v >= want, WAIT);
    thread::sleep(Duration::from_millis(600));
    let page = agent.metrics();
    assert_eq!(
        metric_value(&page, RELOADS, labels),
        want,
        "{labels:?}\n{page}\n{}",
        agent.output()
    );
    assert_eq!(metric_value(&page, RELOADS, other), other_want, "{page}");
}

/// A ConfigMap volume as the kubelet writes it (its AtomicWriter): the data in a
/// timestamped directory, `..data` a symlink to it, `policy.yaml` a symlink to
/// `..data/policy.yaml`. Each update writes a new directory, points `..data_tmp` at it,
/// renames that over `..data` and removes the old directory.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(policy: &str) -> ConfigMapVolume {
        let mut v = ConfigMapVolume {
            dir: tmpdir_with_prefix("sb-cm-"),
            generation: 0,
        };
        v.update(policy);
        symlink("..data/policy.yaml", v.file()).unwrap();
        v
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn timestamped(&self, generation: u32) -> String {
        format!("..2026_11_23_18_00_{generation:02}.12345678{generation}")
    }

    fn update(&mut self, policy: &str) {
        let old = self.dir.path().join(self.timestamped(self.generation));
        self.generation += 1;
        let name = self.timestamped(self.generation);
        let new = self.dir.path().join(&name);
        fs::create_dir(&new).unwrap();
        fs::write(new.join("policy.yaml"), policy).unwrap();
        let tmp = self.dir.path().join("..data_tmp");
        symlink(&name, &tmp).unwrap();
        fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        if old.exists() {
            fs::remove_dir_all(old).unwrap();
        }
    }
}

fn agent_on(policy: &Path) -> Agent {
    Agent::start_in(
        Path::new(BIN),
        tmpdir(),
        &["--policy", policy.to_str().unwrap()],
    )
}

#[test]
fn configmap_swap_reloads_the_policy() {
    if !require_root("configmap_swap_reloads_the_policy") || !require_tool("runc") {
        return;
    }
    let mut volume = ConfigMapVolume::new(&log_mkdir());
    let agent = agent_on(&volume.file());
    let (out, e) = try_mkdir(&agent, "cm-a");
    assert!(out.stdout.contains("mkdir=0"), "{out:?}");
    assert_eq!(e["action"], "log", "{e}");

    // A ConfigMap edit that does not validate: refused, counted once, the old policy stays.
    volume.update(BROKEN);
    assert_reloads(&agent, FAILURE, 1.0, SUCCESS, 0.0);
    assert!(
        agent.stderr_text().contains("policy reload refused"),
        "{}",
        agent.output()
    );
    let (out, e) = try_mkdir(&agent, "cm-b");
    assert!(out.stdout.contains("mkdir=0"), "{out:?}");
    assert_eq!(e["action"], "log", "{e}");

    // A good one: in force for the next container, reloaded once.
    volume.update(&deny_mkdir("EACCES"));
    assert_reloads(&agent, SUCCESS, 1.0, FAILURE, 1.0);
    let (out, e) = try_mkdir(&agent, "cm-c");
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert_eq!(
        (e["action"].as_str(), e["errno"].as_i64()),
        (Some("deny"), Some(13)),
        "{e}"
    );

    // The kubelet's periodic resync rewrites nothing when the data is the same; a swap to an
    // identical copy is no change either.
    volume.update(&deny_mkdir("EACCES"));
    assert_reloads(&agent, SUCCESS, 1.0, FAILURE, 1.0);
    // And the watch followed the swaps: a third good policy still arrives.
    volume.update(&deny_mkdir("EPERM"));
    assert_reloads(&agent, SUCCESS, 2.0, FAILURE, 1.0);
    let (out, e) = try_mkdir(&agent, "cm-d");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
    assert_eq!(e["errno"], 1, "{e}");
}

#[test]
fn editor_write_and_rename_reloads_the_policy() {
    if !require_root("editor_write_and_rename_reloads_the_policy") || !require_tool("runc") {
        return;
    }
    let dir = tmpdir_with_prefix("sb-edit-");
    let file = dir.path().join("policy.yaml");
    fs::write(&file, log_mkdir()).unwrap();
    let agent = agent_on(&file);

    // An editor's save: the new text in a temporary file, renamed over the old one.
    let save = |text: &str| {
        let tmp = dir.path().join(".policy.yaml.swp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, &file).unwrap();
    };
    save(&deny_mkdir("EACCES"));
    assert_reloads(&agent, SUCCESS, 1.0, FAILURE, 0.0);
    let (out, e) = try_mkdir(&agent, "edit-a");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert_eq!(
        (e["action"].as_str(), e["errno"].as_i64()),
        (Some("deny"), Some(13)),
        "{e}"
    );

    save(BROKEN);
    assert_reloads(&agent, FAILURE, 1.0, SUCCESS, 1.0);
    let (out, e) = try_mkdir(&agent, "edit-b");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert_eq!(e["errno"], 13, "the previous policy stays: {e}");

    // Written in place (truncate and write, as `>` does).
    fs::write(&file, log_mkdir()).unwrap();
    assert_reloads(&agent, SUCCESS, 2.0, FAILURE, 1.0);
    let (out, e) = try_mkdir(&agent, "edit-c");
    assert!(out.stdout.contains("mkdir=0"), "{out:?}");
    assert_eq!(e["action"], "log", "{e}");
}
