//! The versioned messages by which the holding process, its deciding child and a takeover successor hand listeners to each other.
//!
//! Each message is one SOCK_SEQPACKET datagram of JSON, with its fds as SCM_RIGHTS. The
//! `version` is the format's major number: a reader refuses a larger one (a successor that
//! cannot read the old agent's format refuses the takeover, and the old agent goes on
//! serving), while fields it does not know are ignored, so a newer writer may add fields
//! without a new major number.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::container::Container;
use crate::decision::Ceiling;
use crate::record::OriginalProfile;
use crate::sys;

/// The format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Largest message: a listener's identity with its original-profile record.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("message of {0} bytes, more than {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("handover format version {0} is newer than this build reads ({FORMAT_VERSION})")]
    NewerVersion(u32),
    #[error("not a handover message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("{kind} came with {got} fds, not {expected}")]
    FdCount {
        kind: &'static str,
        got: usize,
        expected: &'static str,
    },
    #[error("socket error: {0}")]
    Io(#[from] Errno),
}

/// A served container as it is handed over: what intake parsed, so nothing a runtime sent
/// is parsed again, and what the ceiling is compiled from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub init_pid: i32,
    pub bundle: String,
    pub metadata: String,
    pub record: Option<OriginalProfile>,
    /// The bounding capabilities read from the bundle when the record was compiled.
    pub capabilities: Option<Vec<String>>,
}

impl Identity {
    pub fn of(container: &Container) -> Identity {
        Identity {
            container_id: container.container_id.clone(),
            namespace: container.namespace.clone(),
            pod: container.pod.clone(),
            container: container.container.clone(),
            init_pid: container.init_pid,
            bundle: container.bundle.clone(),
            metadata: container.metadata.clone(),
            record: container.record.as_deref().cloned(),
            capabilities: container.capabilities.clone(),
        }
    }

    /// The container again, its ceiling compiled as intake compiled it.
    pub fn into_container(self) -> Container {
        let original = self
            .record
            .as_ref()
            .map(|record| Arc::new(Ceiling::for_container(record, self.capabilities.as_deref())));
        Container {
            container_id: self.container_id,
            namespace: self.namespace,
            pod: self.pod,
            container: self.container,
            init_pid: self.init_pid,
            bundle: self.bundle,
            metadata: self.metadata,
            record: self.record.map(Arc::new),
            capabilities: self.capabilities,
            original,
        }
    }
}

/// One message; the comment says who sends it and which fds come with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// Child → holder, before serving a new listener. Fds: listener, page, [init pidfd].
    Hold { key: u64, identity: Identity },
    /// Child → holder: the listener's last task is gone.
    Release { key: u64 },
    /// Child → holder: started, every restored listener served.
    Serving,
    /// Holder → child, first. Fds: agent socket, counters page, metrics listener, [scrape listener].
    Sockets,
    /// Holder → child (and old holder → successor). Fds: listener, page, [init pidfd].
    Restore { key: u64, identity: Identity },
    /// Holder → child (and old holder → successor): no more listeners follow.
    Restored,
    /// Successor → old holder, first: which format it reads.
    Takeover,
    /// Old holder → successor: the reply to `Takeover`. Fds (after `Restored` is acked):
    /// none here.
    Offer { listeners: usize },
    /// Successor → old holder: go ahead (stop deciding and send everything).
    Accept,
    /// Successor → old holder: cannot take over; the old agent keeps serving.
    Refuse { reason: String },
    /// Old holder → successor after `Accept`. Fds: agent socket, counters page, metrics
    /// listener, [scrape listener].
    Handover,
    /// Successor → old holder: everything arrived; the old agent exits 0.
    Done,
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hold { .. } => "hold",
            Message::Release { .. } => "release",
            Message::Serving => "serving",
            Message::Sockets => "sockets",
            Message::Restore { .. } => "restore",
            Message::Restored => "restored",
            Message::Takeover => "takeover",
            Message::Offer { .. } => "offer",
            Message::Accept => "accept",
            Message::Refuse { .. } => "refuse",
            Message::Handover => "handover",
            Message::Done => "done",
        }
    }
}

#[derive(Serialize)]
struct Outgoing<'a> {
    version: u32,
    #[serde(flatten)]
    message: &'a Message,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(flatten)]
    message: Message,
}

/// The bytes of `message` in this build's format.
pub fn encode(message: &Message) -> Vec<u8> {
    serde_json::to_vec(&Outgoing {
        version: FORMAT_VERSION,
        message,
    })
    .unwrap_or_default()
}

/// A message from its bytes; a newer major version is refused before anything else is read.
pub fn decode(bytes: &[u8]) -> Result<Message, KeepError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(KeepError::TooLarge(bytes.len()));
    }
    let VersionOnly { version } = serde_json::from_slice(bytes)?;
    if version > FORMAT_VERSION {
        return Err(KeepError::NewerVersion(version));
    }
    Ok(serde_json::from_slice::<Incoming>(bytes)?.message)
}

/// Sends `message` with `fds` as one datagram.
pub fn send(
    socket: BorrowedFd<'_>,
    message: &Message,
    fds: &[BorrowedFd<'_>],
) -> Result<(), KeepError> {
    let bytes = encode(message);
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => return Ok(()),
        }
    }
}

/// Receives one datagram, waiting for it: the message and its fds.
pub fn receive(
    socket: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
) -> Result<(Message, Vec<OwnedFd>), KeepError> {
    buf.resize(MAX_MESSAGE_BYTES + 1, 0);
    let mut fds = Vec::new();
    let chunk = loop {
        match sys::receive_with_fds(socket, buf, &mut fds) {
            Err(Errno::EINTR) => continue,
            // Blocks until the peer sends (or hangs up).
            Err(Errno::EAGAIN) => crate::handoff::wait_readable(socket, None)
                .map_err(|_| KeepError::Io(Errno::EIO))?,
            other => break other?,
        }
    };
    if chunk.bytes == 0 && fds.is_empty() {
        return Err(KeepError::Closed);
    }
    let message = decode(&buf[..chunk.bytes])?;
    Ok((message, fds))
}

/// Checks that `fds` has between `min` and `max` entries for `message`.
pub fn expect_fds(
    message: &Message,
    fds: &[OwnedFd],
    min: usize,
    max: usize,
    expected: &'static str,
) -> Result<(), KeepError> {
    if fds.len() < min || fds.len() > max {
        return Err(KeepError::FdCount {
            kind: message.kind(),
            got: fds.len(),
            expected,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            container_id: "c1".into(),
            namespace: "ns".into(),
            init_pid: 42,
            capabilities: Some(vec!["CAP_SYS_ADMIN".into()]),
            ..Identity::default()
        }
    }

    #[test]
    fn same_version_round_trips() {
        for message in [
            Message::Hold {
                key: 7,
                identity: identity(),
            },
            Message::Release { key: 7 },
            Message::Restore {
                key: 9,
                identity: identity(),
            },
            Message::Refuse {
                reason: "no".into(),
            },
            Message::Offer { listeners: 3 },
            Message::Done,
        ] {
            assert_eq!(decode(&encode(&message)).unwrap(), message);
        }
    }

    #[test]
    fn unknown_newer_fields_are_ignored() {
        let text = r#"{"version":1,"kind":"restore","key":5,"added_later":[1,2],
            "identity":{"container_id":"c","namespace":"","pod":"","container":"","init_pid":1,
            "bundle":"/b","metadata":"","record":null,"capabilities":null,"cgroup_later":"x"}}"#;
        match decode(text.as_bytes()).unwrap() {
            Message::Restore { key, identity } => {
                assert_eq!(key, 5);
                assert_eq!(identity.bundle, "/b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn newer_major_version_is_refused() {
        let text = r#"{"version":2,"kind":"takeover"}"#;
        assert!(matches!(
            decode(text.as_bytes()),
            Err(KeepError::NewerVersion(2))
        ));
    }

    #[test]
    fn truncated_messages_are_refused() {
        let bytes = encode(&Message::Restore {
            key: 9,
            identity: identity(),
        });
        for len in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "accepted {len} bytes");
        }
    }

    #[test]
    fn hostile_messages_are_refused() {
        for text in [
            r#"{"kind":"takeover"}"#,
            r#"{"version":-1,"kind":"takeover"}"#,
            r#"{"version":1,"kind":"format_disk"}"#,
            r#"{"version":1,"kind":"release","key":-5}"#,
            r#"{"version":1,"kind":"restore","key":1,"identity":{"init_pid":"x"}}"#,
            r#"[1,2,3]"#,
            "\u{0}\u{1}binary",
        ] {
            assert!(decode(text.as_bytes()).is_err(), "accepted {text}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode(deep.as_bytes()).is_err());
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(decode(&huge), Err(KeepError::TooLarge(_))));
    }

    #[test]
    fn fds_travel_with_their_message() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        send(a.as_fd(), &Message::Release { key: 1 }, &[r.as_fd()]).unwrap();
        let mut buf = Vec::new();
        let (message, fds) = receive(b.as_fd(), &mut buf).unwrap();
        assert_eq!(message, Message::Release { key: 1 });
        assert_eq!(fds.len(), 1);
        assert!(expect_fds(&message, &fds, 2, 3, "two or three").is_err());
        drop(a);
        assert!(matches!(
            receive(b.as_fd(), &mut buf),
            Err(KeepError::Closed)
        ));
    }
}
