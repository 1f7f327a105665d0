//! A decided call as strace prints it: strings quoted, flags and constants by name.

use std::fmt::Write as _;

use crate::capture::{self, Arg, Capture, Read};

/// `bytes` as text: UTF-8 kept, a backslash doubled, and every byte that is not UTF-8 as
/// `\xNN`, so any path fits a JSON string and reads back unambiguously.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Appends `bytes` quoted as strace would: C escapes for quotes, controls and non-UTF-8.
fn quote(bytes: &[u8], out: &mut String) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
}

/// The name of `value`'s bits from `names`, `|`-joined, with what is left in hex.
fn flags(value: u64, names: &[(u64, &str)], out: &mut String) {
    let mut rest = value;
    let mut first = true;
    for (bit, name) in names {
        if *bit != 0 && rest & bit == *bit {
            if !first {
                out.push('|');
            }
            out.push_str(name);
            first = false;
            rest &= !bit;
        }
    }
    if rest != 0 || first {
        if !first {
            out.push('|');
        }
        let _ = write!(out, "{rest:#x}");
    }
}

#[cfg(target_arch = "aarch64")]
const O_ARCH: [(u64, &str); 4] = [
    (0o200000, "O_DIRECT"),
    (0o400000, "O_LARGEFILE"),
    (0o40000, "O_DIRECTORY"),
    (0o100000, "O_NOFOLLOW"),
];
#[cfg(not(target_arch = "aarch64"))]
const O_ARCH: [(u64, &str); 4] = [
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
];

fn open_flags(value: u64, out: &mut String) {
    out.push_str(match value & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    });
    let rest = value & !3;
    if rest == 0 {
        return;
    }
    out.push('|');
    let mut names = vec![
        (0o20000000 | O_ARCH[2].0, "O_TMPFILE"),
        (0o4010000, "O_SYNC"),
        (0o10000000, "O_PATH"),
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o10000, "O_DSYNC"),
        (0o20000, "O_ASYNC"),
        (0o1000000, "O_NOATIME"),
        (0o2000000, "O_CLOEXEC"),
    ];
    names.extend(O_ARCH);
    flags(rest, &names, out);
}

const AT_FLAGS: &[(u64, &str)] = &[
    (0x100, "AT_SYMLINK_NOFOLLOW"),
    (0x200, "AT_REMOVEDIR"),
    (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (0x1000, "AT_EMPTY_PATH"),
];

const MOUNT_FLAGS: &[(u64, &str)] = &[
    (1, "MS_RDONLY"),
    (2, "MS_NOSUID"),
    (4, "MS_NODEV"),
    (8, "MS_NOEXEC"),
    (16, "MS_SYNCHRONOUS"),
    (32, "MS_REMOUNT"),
    (64, "MS_MANDLOCK"),
    (128, "MS_DIRSYNC"),
    (256, "MS_NOSYMFOLLOW"),
    (1024, "MS_NOATIME"),
    (2048, "MS_NODIRATIME"),
    (4096, "MS_BIND"),
    (8192, "MS_MOVE"),
    (16384, "MS_REC"),
    (32768, "MS_SILENT"),
    (1 << 16, "MS_POSIXACL"),
    (1 << 17, "MS_UNBINDABLE"),
    (1 << 18, "MS_PRIVATE"),
    (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"),
    (1 << 21, "MS_RELATIME"),
    (1 << 22, "MS_KERNMOUNT"),
    (1 << 23, "MS_I_VERSION"),
    (1 << 24, "MS_STRICTATIME"),
    (1 << 25, "MS_LAZYTIME"),
];

const UMOUNT_FLAGS: &[(u64, &str)] = &[
    (1, "MNT_FORCE"),
    (2, "MNT_DETACH"),
    (4, "MNT_EXPIRE"),
    (8, "UMOUNT_NOFOLLOW"),
];

const CLONE_FLAGS: &[(u64, &str)] = &[
    (0x80, "CLONE_NEWTIME"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x0200_0000, "CLONE_NEWCGROUP"),
    (0x0400_0000, "CLONE_NEWUTS"),
    (0x0800_0000, "CLONE_NEWIPC"),
    (0x1000_0000, "CLONE_NEWUSER"),
    (0x2000_0000, "CLONE_NEWPID"),
    (0x4000_0000, "CLONE_NEWNET"),
];

fn sock_domain(value: u64, out: &mut String) {
    let name = match value {
        0 => "AF_UNSPEC",
        1 => "AF_UNIX",
        2 => "AF_INET",
        4 => "AF_IPX",
        5 => "AF_APPLETALK",
        10 => "AF_INET6",
        16 => "AF_NETLINK",
        17 => "AF_PACKET",
        29 => "AF_CAN",
        31 => "AF_BLUETOOTH",
        38 => "AF_ALG",
        40 => "AF_VSOCK",
        44 => "AF_XDP",
        _ => {
            let _ = write!(out, "{value}");
            return;
        }
    };
    out.push_str(name);
}

fn sock_type(value: u64, out: &mut String) {
    let base = match value & 0xf {
        1 => "SOCK_STREAM",
        2 => "SOCK_DGRAM",
        3 => "SOCK_RAW",
        4 => "SOCK_RDM",
        5 => "SOCK_SEQPACKET",
        6 => "SOCK_DCCP",
        10 => "SOCK_PACKET",
        _ => "",
    };
    let rest = if base.is_empty() { value } else { value & !0xf };
    out.push_str(base);
    if rest != 0 || base.is_empty() {
        if !base.is_empty() {
            out.push('|');
        }
        flags(
            rest,
            &[(0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC")],
            out,
        );
    }
}

/// The argument registers an int parameter reads: the kernel truncates to 32 bits.
#[allow(
    clippy::cast_possible_truncation,
    reason = "int parameters are 32 bits"
)]
fn int(raw: u64) -> i32 {
    (raw as u32).cast_signed()
}

/// Appends `name(args…)` for the call, from its integer arguments and what was captured.
pub fn format_call(
    name: &str,
    location: Option<(usize, usize)>,
    args: &[u64; 6],
    capture: Option<&Capture>,
    out: &mut String,
) {
    out.push_str(name);
    out.push('(');
    let narrow = capture::is_32_bit(location);
    let pointer = |raw: u64| if narrow { raw & 0xffff_ffff } else { raw };
    let Some(spec) = capture::args_of(location) else {
        let shown = args.iter().rposition(|a| *a != 0).map_or(0, |i| i + 1);
        for (i, arg) in args[..shown].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{:#x}", pointer(*arg));
        }
        out.push(')');
        return;
    };
    for (i, (kind, raw)) in spec.iter().zip(args).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let raw = *raw;
        match kind {
            Arg::Int => {
                let _ = write!(out, "{}", int(raw));
            }
            Arg::Hex if raw == 0 => out.push('0'),
            Arg::Hex => {
                let _ = write!(out, "{:#x}", pointer(raw));
            }
            Arg::Fd => {
                let _ = write!(out, "{}", int(raw));
            }
            Arg::DirFd if int(raw) == -100 => out.push_str("AT_FDCWD"),
            Arg::DirFd => {
                let _ = write!(out, "{}", int(raw));
            }
            Arg::Path | Arg::Str => {
                string_arg(capture.and_then(|c| c.string(i)), pointer(raw), out);
            }
            Arg::Argv => argv_arg(capture, pointer(raw), out),
            Arg::OpenFlags => open_flags(raw & 0xffff_ffff, out),
            Arg::Mode => {
                let _ = write!(out, "0{:o}", raw & 0o7777);
            }
            Arg::AtFlags => flags(raw & 0xffff_ffff, AT_FLAGS, out),
            Arg::SockDomain => sock_domain(raw & 0xffff_ffff, out),
            Arg::SockType => sock_type(raw & 0xffff_ffff, out),
            Arg::MountFlags => flags(pointer(raw), MOUNT_FLAGS, out),
            Arg::UmountFlags => flags(raw & 0xffff_ffff, UMOUNT_FLAGS, out),
            Arg::CloneFlags => flags(raw & 0xffff_ffff, CLONE_FLAGS, out),
        }
    }
    out.push(')');
}

/// A string argument: quoted when read, else NULL or its address and why.
fn string_arg(read: Option<(&[u8], Read)>, address: u64, out: &mut String) {
    match read {
        Some((bytes, Read::Whole)) => quote(bytes, out),
        Some((_, Read::Null)) => out.push_str("NULL"),
        Some((bytes, Read::TooLong | Read::Clipped)) => {
            quote(bytes, out);
            out.push_str("...");
        }
        Some((_, Read::Failed(errno))) => {
            let _ = write!(out, "{address:#x} /* unreadable: {errno} */");
        }
        None if address == 0 => out.push_str("NULL"),
        None => {
            let _ = write!(out, "{address:#x}");
        }
    }
}

fn argv_arg(capture: Option<&Capture>, address: u64, out: &mut String) {
    let Some(capture) = capture.filter(|c| !c.discarded) else {
        let _ = write!(out, "{address:#x}");
        return;
    };
    if capture.argv_read == Read::Null {
        out.push_str("NULL");
        return;
    }
    if let Read::Failed(errno) = capture.argv_read {
        if capture.argv().next().is_none() {
            let _ = write!(out, "{address:#x} /* unreadable: {errno} */");
            return;
        }
    }
    out.push('[');
    for (i, arg) in capture.argv().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        quote(arg, out);
    }
    if capture.argv_read != Read::Whole {
        out.push_str(", ...");
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls;

    fn call(name: &str, args: [u64; 6]) -> String {
        let mut out = String::new();
        format_call(
            name,
            syscalls::numbers(name).first().copied(),
            &args,
            None,
            &mut out,
        );
        out
    }

    #[test]
    fn flags_and_constants_are_named() {
        let at_fdcwd = (-100i64).cast_unsigned();
        assert_eq!(
            call("openat", [at_fdcwd, 0x1000, 0o2000000, 0, 0, 0]),
            "openat(AT_FDCWD, 0x1000, O_RDONLY|O_CLOEXEC, 00)"
        );
        assert_eq!(
            call("openat", [3, 0, 0o1101, 0o644, 0, 0]),
            "openat(3, NULL, O_WRONLY|O_CREAT|O_TRUNC, 0644)"
        );
        assert_eq!(
            call("socket", [17, 3, 0, 0, 0, 0]),
            "socket(AF_PACKET, SOCK_RAW, 0)"
        );
        assert_eq!(
            call("socket", [2, 1 | 0o2000000, 6, 0, 0, 0]),
            "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 6)"
        );
        assert_eq!(
            call("mount", [0, 0, 0, 4096 | 16384, 0, 0]),
            "mount(NULL, NULL, NULL, MS_BIND|MS_REC, 0)"
        );
        assert_eq!(
            call("unshare", [0x2002_0000, 0, 0, 0, 0, 0]),
            "unshare(CLONE_NEWNS|CLONE_NEWPID)"
        );
        assert_eq!(call("getppid", [7, 0, 0, 0, 0, 0]), "getppid()");
        assert_eq!(
            call("mkdir", [0x10, 0o777, 0, 0, 0, 0]),
            "mkdir(0x10, 0777)"
        );
    }

    #[test]
    fn non_utf8_is_escaped_and_backslashes_doubled() {
        assert_eq!(
            escaped(b"/tmp/\xff\xfe-\\-\xc3\xa9"),
            "/tmp/\\xff\\xfe-\\\\-\u{e9}"
        );
        let mut out = String::new();
        quote(b"a\"\n\x01\xff", &mut out);
        assert_eq!(out, "\"a\\\"\\n\\x01\\xff\"");
    }
}
