//! Checks the test harness and the host's container runtimes without Switchboard:
//! when an end-to-end test of the agent fails, these tell whether the runtime
//! plumbing (bundle, listenerPath, seccomp) or the agent is at fault.
//!
//! A minimal listener written here takes the place of the agent: it receives the
//! runtime's `listenerPath` message, records it and the notified syscall numbers,
//! and answers every notification with CONTINUE.

mod common;

use common::*;
use serde_json::Value;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

/// What the minimal listener saw.
#[derive(Default)]
struct Seen {
    /// The JSON payload of each connection, and the number of fds that came with it.
    messages: Vec<(Value, usize)>,
    /// `seccomp_data.nr` of every notification answered.
    syscalls: Vec<i32>,
}

struct Listener {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

impl Listener {
    fn start() -> Listener {
        let dir = tmpdir();
        let socket = dir.path().join("listener.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (payload, mut fds) = recv_with_fds(conn.as_raw_fd());
                let value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                s.lock().unwrap().messages.push((value, fds.len()));
                if !fds.is_empty() {
                    let fd = fds.remove(0);
                    let s = s.clone();
                    thread::spawn(move || serve(fd, s));
                }
            }
        });
        Listener {
            _dir: dir,
            socket,
            seen,
        }
    }
}

fn recv_with_fds(sock: RawFd) -> (Vec<u8>, Vec<OwnedFd>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .expect("recvmsg");
    let n = msg.bytes;
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS just installed these fds in our table; nothing else owns them.
            fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    (buf[..n].to_vec(), fds)
}

/// Answers every notification on `fd` with CONTINUE until the filter has no tasks.
fn serve(fd: OwnedFd, seen: Arc<Mutex<Seen>>) {
    let raw = fd.as_raw_fd();
    loop {
        let mut p = libc::pollfd {
            fd: raw,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one live pollfd, and the count says one.
        if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
            continue;
        }
        if p.revents & libc::POLLIN == 0 {
            break; // POLLHUP: every task of the filter is gone
        }
        // SAFETY: seccomp_notif is plain integers; all-zero is valid and what RECV requires.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into `req`, which is ours and large enough on
        // the kernels the harness runs on (a self-check, so it does not ask for the sizes).
        if unsafe { libc::ioctl(raw, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            continue; // EINTR, or ENOENT: the caller died before we got to it
        }
        seen.lock().unwrap().syscalls.push(req.data.nr);
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: u32::try_from(libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE).unwrap(),
        };
        // SAFETY: SEND reads one seccomp_notif_resp from `resp`, which outlives the call.
        unsafe { libc::ioctl(raw, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}

/// The runtime hands the listener a seccomp fd with the state the OCI spec
/// describes, and a notified `uname` goes through the listener and succeeds.
fn notifies_listener(runtime: Runtime, test: &str) {
    if !require_root(test) || !runtime.require() {
        return;
    }
    let listener = Listener::start();
    let mut bundle = Bundle::new(&["sh", "-c", "uname; echo uname=$?"]);
    bundle.set_seccomp(notify_profile(
        &listener.socket,
        &["uname"],
        Some("selfcheck-metadata"),
    ));
    let id = unique_id(test);
    let out = run(runtime, &bundle, &id, TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    assert!(out.stdout.contains("Linux\n"), "{out:?}");
    assert!(out.stdout.contains("uname=0"), "{out:?}");

    let seen = listener.seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 1, "one listenerPath connection");
    let (state, nfds) = &seen.messages[0];
    eprintln!("{} sent: {state}", runtime.name());
    assert_eq!(*nfds, 1, "one fd: {state}");
    assert_eq!(state["fds"], serde_json::json!(["seccompFd"]), "{state}");
    assert_eq!(state["metadata"], "selfcheck-metadata", "{state}");
    assert!(state["pid"].as_u64().unwrap_or(0) > 0, "{state}");
    let state_id = state["state"]["id"].as_str().unwrap_or_default();
    if runtime == Runtime::Podman {
        assert!(!state_id.is_empty(), "{state}"); // podman's own 64-hex id
    } else {
        assert_eq!(state_id, id, "{state}");
    }
    assert!(
        seen.syscalls
            .contains(&i32::try_from(libc::SYS_uname).unwrap()),
        "uname not notified: {:?}",
        seen.syscalls
    );
}

/// A plain SCMP_ACT_ERRNO profile is applied by the runtime.
fn errno_profile_denies(runtime: Runtime, test: &str) {
    if !require_root(test) || !runtime.require() {
        return;
    }
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    bundle.set_seccomp(errno_profile(&["mkdir", "mkdirat"], 13));
    let out = run(runtime, &bundle, &unique_id(test), TIMEOUT);
    assert!(!out.timed_out, "{out:?}");
    assert!(out.stdout.contains("mkdir=1"), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(!bundle.rootfs().join("tmp/x").exists());
}

#[test]
fn runc_notifies_listener() {
    notifies_listener(Runtime::Runc, "runc_notifies_listener");
}

#[test]
fn crun_notifies_listener() {
    notifies_listener(Runtime::Crun, "crun_notifies_listener");
}

#[test]
fn podman_notifies_listener() {
    notifies_listener(Runtime::Podman, "podman_notifies_listener");
}

#[test]
fn runc_errno_profile_denies() {
    errno_profile_denies(Runtime::Runc, "runc_errno_profile_denies");
}

#[test]
fn crun_errno_profile_denies() {
    errno_profile_denies(Runtime::Crun, "crun_errno_profile_denies");
}

#[test]
fn podman_errno_profile_denies() {
    errno_profile_denies(Runtime::Podman, "podman_errno_profile_denies");
}

/// Without a profile the same command succeeds, so the two tests above test the profile.
#[test]
fn runc_mkdir_allowed_without_profile() {
    if !require_root("runc_mkdir_allowed_without_profile") || !Runtime::Runc.require() {
        return;
    }
    let bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/x; echo mkdir=$?; uname"]);
    let out = run_runc(&bundle, &unique_id("noprofile"), TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("mkdir=0\nLinux\n"), "{out:?}");
    assert!(bundle.rootfs().join("tmp/x").is_dir());
}

/// On timeout the harness kills and deletes the container.
#[test]
fn runc_timeout_kills_and_deletes() {
    if !require_root("runc_timeout_kills_and_deletes") || !Runtime::Runc.require() {
        return;
    }
    let bundle = Bundle::new(&["sleep", "30"]);
    let id = unique_id("timeout");
    let out = run_runc(&bundle, &id, Duration::from_millis(500));
    assert!(out.timed_out, "{out:?}");
    assert!(out.elapsed < Duration::from_secs(10), "{out:?}");
    let state = std::process::Command::new(tool("runc"))
        .args(["state", &id])
        .output()
        .unwrap();
    assert!(!state.status.success(), "container {id} still exists");
}

#[test]
fn metric_value_sums_matching_samples() {
    let text = "# HELP switchboard_syscalls_total x\n\
        # TYPE switchboard_syscalls_total counter\n\
        switchboard_syscalls_total{action=\"deny\",syscall=\"mkdir\"} 2\n\
        switchboard_syscalls_total{action=\"deny\",syscall=\"mkdirat\"} 3\n\
        switchboard_syscalls_total{action=\"log\",syscall=\"uname\"} 1\n\
        switchboard_syscalls_total_other 100\n\
        switchboard_listeners 4\n";
    let name = "switchboard_syscalls_total";
    assert_eq!(metric_value(text, name, &[]), 6.0);
    assert_eq!(metric_value(text, name, &["action=\"deny\""]), 5.0);
    assert_eq!(metric_value(text, name, &["syscall=\"mkdir\""]), 2.0);
    assert_eq!(metric_value(text, "switchboard_listeners", &[]), 4.0);
    assert_eq!(metric_value(text, "switchboard_listener", &[]), 0.0);
}

#[test]
fn parse_addr_finds_the_metrics_address() {
    let text = "INFO metrics server listening addr=127.0.0.1:40123";
    assert_eq!(parse_addr(text).as_deref(), Some("127.0.0.1:40123"));
    let json = r#"{"level":"INFO","message":"metrics server listening","addr":"127.0.0.1:9"}"#;
    assert_eq!(parse_addr(json).as_deref(), Some("127.0.0.1:9"));
    assert_eq!(parse_addr("addr=\"[::1]:80\"").as_deref(), Some("[::1]:80"));
    assert_eq!(parse_addr("no address here"), None);
}
