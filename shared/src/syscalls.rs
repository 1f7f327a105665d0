//! Arch-aware syscall names and numbers, from libseccomp's tables.

use std::sync::OnceLock;

use libseccomp::{ScmpArch, ScmpSyscall};

/// The kernel marks x32 syscalls with this bit in `nr`, under the x86_64 audit arch.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What the kernel sets in `seccomp_data.nr` for every call of `arch` (x32's bit), else 0.
pub fn nr_bit(arch: ScmpArch) -> i32 {
    if arch == ScmpArch::X32 {
        X32_SYSCALL_BIT.cast_signed()
    } else {
        0
    }
}

/// libseccomp's name for the syscall `arch` numbers `nr` (below [`MAX_NR`]).
pub fn name_by_arch(arch: ScmpArch, nr: usize) -> Option<String> {
    let raw = i32::try_from(nr).ok()? | nr_bit(arch);
    ScmpSyscall::from_raw_syscall(raw)
        .get_name_by_arch(arch)
        .ok()
}

/// Highest syscall number (exclusive) kept in per-arch tables.
pub const MAX_NR: usize = 1024;

/// An architecture whose syscalls a container on this host can make.
#[derive(Debug)]
pub struct Arch {
    pub scmp: ScmpArch,
    /// `seccomp_data.arch` as the kernel reports it.
    pub audit: u32,
    /// Set in `seccomp_data.nr` for this arch (x32), else 0.
    pub nr_bit: i32,
    pub name: &'static str,
}

static X86_64_FAMILY: [Arch; 3] = [
    Arch {
        scmp: ScmpArch::X8664,
        audit: libseccomp_sys::SCMP_ARCH_X86_64,
        nr_bit: 0,
        name: "x86_64",
    },
    Arch {
        scmp: ScmpArch::X86,
        audit: libseccomp_sys::SCMP_ARCH_X86,
        nr_bit: 0,
        name: "x86",
    },
    Arch {
        scmp: ScmpArch::X32,
        audit: libseccomp_sys::SCMP_ARCH_X86_64,
        nr_bit: X32_SYSCALL_BIT.cast_signed(),
        name: "x32",
    },
];

static AARCH64_FAMILY: [Arch; 2] = [
    Arch {
        scmp: ScmpArch::Aarch64,
        audit: libseccomp_sys::SCMP_ARCH_AARCH64,
        nr_bit: 0,
        name: "aarch64",
    },
    Arch {
        scmp: ScmpArch::Arm,
        audit: libseccomp_sys::SCMP_ARCH_ARM,
        nr_bit: 0,
        name: "arm",
    },
];

/// The native arch first, then the compat arches the kernel also runs.
pub fn arches() -> &'static [Arch] {
    if cfg!(target_arch = "aarch64") {
        &AARCH64_FAMILY
    } else {
        &X86_64_FAMILY
    }
}

/// Slots past `MAX_NR` hold what a multiplexer (`socketcall`, `ipc`) runs by sub-call: the
/// call libseccomp numbers `pseudo` (socket sub-call N is -(100 + N), ipc sub-call N is
/// -(200 + N)) sits at `MAX_NR - 100 - pseudo`. Direct numbers and sub-calls need slots of
/// their own: only a direct call's arguments are in registers.
const PSEUDO_SLOTS: usize = 128;

/// Slots per arch table: direct numbers, then multiplexed sub-calls.
const TABLE_SLOTS: usize = MAX_NR + PSEUDO_SLOTS;

/// Offsets (slot - MAX_NR) at or above this are ipc sub-calls; below, socketcall's.
const IPC_OFFSET: usize = 100;

/// libseccomp's tables for one arch, built once.
struct ArchTable {
    /// Name of every slot.
    names: Box<[Option<&'static str>]>,
    /// The numbers of `socketcall` and `ipc` where this arch has them.
    socketcall: Option<usize>,
    ipc: Option<usize>,
}

fn tables() -> &'static [ArchTable] {
    static TABLES: OnceLock<Vec<ArchTable>> = OnceLock::new();
    TABLES.get_or_init(|| arches().iter().map(ArchTable::load).collect())
}

impl ArchTable {
    fn load(arch: &Arch) -> ArchTable {
        let leak = |name: String| -> &'static str { Box::leak(name.into_boxed_str()) };
        let resolve = |raw: i32| -> Option<&'static str> {
            ScmpSyscall::from_raw_syscall(raw)
                .get_name_by_arch(arch.scmp)
                .ok()
                .map(leak)
        };
        let direct = |name: &str| -> Option<usize> {
            let raw = ScmpSyscall::from_name_by_arch(name, arch.scmp)
                .ok()?
                .as_raw_syscall();
            usize::try_from(raw & !arch.nr_bit)
                .ok()
                .filter(|nr| raw >= 0 && *nr < MAX_NR)
        };
        let socketcall = direct("socketcall");
        let ipc = direct("ipc");
        let names = (0..TABLE_SLOTS)
            .map(|slot| match slot.checked_sub(MAX_NR) {
                None => name_by_arch(arch.scmp, slot).map(leak),
                Some(offset) => {
                    let multiplexer = if offset < IPC_OFFSET { socketcall } else { ipc };
                    multiplexer?;
                    resolve(-i32::try_from(offset + 100).ok()?)
                }
            })
            .collect();
        ArchTable {
            names,
            socketcall,
            ipc,
        }
    }

    /// The slot of the call a multiplexer at `nr` runs for `arg0`, if `nr` is one and
    /// `arg0` names a sub-call libseccomp knows; else `nr`. Truncating `arg0` is what the
    /// kernel does: the sub-call is an `int` (socketcall) or its low 16 bits (ipc, whose
    /// upper 16 are a version).
    #[inline]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the kernel truncates the sub-call too"
    )]
    fn resolve_multiplexed(&self, nr: usize, arg0: u64) -> usize {
        let offset = if Some(nr) == self.socketcall {
            arg0 as u32 as usize
        } else if Some(nr) == self.ipc {
            IPC_OFFSET + (arg0 as u32 & 0xffff) as usize
        } else {
            return nr;
        };
        match self.names.get(MAX_NR + offset) {
            Some(Some(_)) if offset > 0 => MAX_NR + offset,
            _ => nr,
        }
    }
}

/// Finds the arch table and slot of a notification: the call the kernel will really run,
/// so a sub-call of `socketcall`/`ipc` (named by `arg0`) gets the sub-call's slot.
#[inline]
pub fn locate(audit_arch: u32, nr: i32, arg0: u64) -> Option<(usize, usize)> {
    let (arch, table_nr) = arches().iter().enumerate().find_map(|(index, arch)| {
        let matches = arch.audit == audit_arch
            && (if arch.nr_bit == 0 {
                nr & X32_SYSCALL_BIT.cast_signed() == 0
                    || arch.audit != libseccomp_sys::SCMP_ARCH_X86_64
            } else {
                nr & arch.nr_bit != 0
            });
        let table_nr = usize::try_from(nr & !arch.nr_bit).ok()?;
        (matches && table_nr < MAX_NR).then_some((index, table_nr))
    })?;
    let slot = tables()
        .get(arch)
        .map_or(table_nr, |t| t.resolve_multiplexed(table_nr, arg0));
    Some((arch, slot))
}

/// The multiplexer a location was reached through (`socketcall` or `ipc`), if any.
pub fn via(location: Option<(usize, usize)>) -> Option<&'static str> {
    let (arch, slot) = location?;
    let multiplexer = multiplexer_of(arch, slot)?;
    tables()[arch].names.get(multiplexer).copied().flatten()
}

/// The number of the multiplexer that runs the call in `slot` of arch `arch`, if it is one's.
pub fn multiplexer_of(arch: usize, slot: usize) -> Option<usize> {
    let table = tables().get(arch)?;
    let offset = slot.checked_sub(MAX_NR)?;
    if offset < IPC_OFFSET {
        table.socketcall
    } else {
        table.ipc
    }
}

/// The slots that only a multiplexer reaches on arch `arch` and libseccomp names.
pub fn multiplexed_slots(arch: usize) -> impl Iterator<Item = usize> {
    let names = tables().get(arch).map_or(&[][..], |t| &t.names[MAX_NR..]);
    names
        .iter()
        .enumerate()
        .filter(|(_, name)| name.is_some())
        .map(|(offset, _)| MAX_NR + offset)
}

/// Every slot of `name` on each arch that has it, as (arch index, slot): its direct
/// number and, where a multiplexer also runs it, its sub-call slot. libseccomp gives
/// multiplexed calls only a pseudo number by name, so their direct number (x86 `socket`
/// is 359) comes from its number-to-name table.
pub fn numbers(name: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for (index, (arch, table)) in arches().iter().zip(tables()).enumerate() {
        let Ok(raw) = ScmpSyscall::from_name_by_arch(name, arch.scmp) else {
            continue;
        };
        let raw = raw.as_raw_syscall();
        if raw >= 0 {
            if let Ok(nr) = usize::try_from(raw & !arch.nr_bit) {
                if nr < MAX_NR {
                    found.push((index, nr));
                }
            }
            continue;
        }
        let is_name = |slot: &usize| table.names.get(*slot).copied().flatten() == Some(name);
        found.extend((0..MAX_NR).find(is_name).map(|nr| (index, nr)));
        let pseudo = usize::try_from(-i64::from(raw) - 100).ok();
        found.extend(
            pseudo
                .map(|offset| MAX_NR + offset)
                .filter(is_name)
                .map(|slot| (index, slot)),
        );
    }
    found
}

/// Every syscall name libseccomp knows on this host's arches (with repeats), for suggestions.
pub(crate) fn all_names() -> impl Iterator<Item = &'static str> {
    tables()
        .iter()
        .flat_map(|table| table.names.iter().copied().flatten())
}

/// True when libseccomp knows `name` on at least one arch of this host.
pub(crate) fn is_known(name: &str) -> bool {
    !numbers(name).is_empty()
}

/// The name of the syscall in slot `slot` of arch `arch_index`, or "?" when libseccomp has none.
pub fn name(arch_index: usize, slot: usize) -> &'static str {
    tables()
        .get(arch_index)
        .and_then(|table| table.names.get(slot).copied().flatten())
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_compat_numbers_differ() {
        let mkdir = numbers("mkdir");
        assert!(mkdir.contains(&(0, 83)), "{mkdir:?}");
        assert!(mkdir.contains(&(1, 39)), "{mkdir:?}");
        assert_eq!(name(0, 83), "mkdir");
        assert_eq!(name(1, 39), "mkdir");
        assert_eq!(name(1, 83), "symlink");
    }

    #[test]
    fn locate_tells_x32_from_x86_64() {
        assert_eq!(
            locate(libseccomp_sys::SCMP_ARCH_X86_64, 83, 0),
            Some((0, 83))
        );
        assert_eq!(locate(libseccomp_sys::SCMP_ARCH_X86, 39, 0), Some((1, 39)));
        assert_eq!(
            locate(
                libseccomp_sys::SCMP_ARCH_X86_64,
                83 | X32_SYSCALL_BIT.cast_signed(),
                0
            ),
            Some((2, 83))
        );
        assert_eq!(locate(0xdead, 1, 0), None);
    }

    #[test]
    fn multiplexed_calls_are_located_by_what_the_kernel_runs() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let x86 = libseccomp_sys::SCMP_ARCH_X86;
        let socket = numbers("socket");
        assert!(socket.contains(&(0, 41)), "{socket:?}");
        assert!(socket.contains(&(1, 359)), "{socket:?}");
        let via_socketcall = locate(x86, 102, 1).unwrap();
        assert!(socket.contains(&via_socketcall), "{socket:?}");
        assert_eq!(name(1, via_socketcall.1), "socket");
        assert_eq!(via(Some(via_socketcall)), Some("socketcall"));
        assert_eq!(via(locate(x86, 359, 17)), None);
        assert_eq!(name(1, 359), "socket");

        let shmget = numbers("shmget");
        assert!(shmget.contains(&(1, 395)), "{shmget:?}");
        // ipc's upper 16 bits are a version, not part of the sub-call.
        let via_ipc = locate(x86, 117, 23 | 1 << 16).unwrap();
        assert!(shmget.contains(&via_ipc), "{shmget:?}");
        assert_eq!(via(Some(via_ipc)), Some("ipc"));
        // accept and semop have no direct i386 number: only their sub-call slot.
        assert_eq!(numbers("accept").iter().filter(|(a, _)| *a == 1).count(), 1);
        assert_eq!(name(1, locate(x86, 117, 1).unwrap().1), "semop");
        // Sub-calls the kernel refuses stay the multiplexer itself.
        assert_eq!(locate(x86, 102, 0), Some((1, 102)));
        assert_eq!(locate(x86, 102, 21), Some((1, 102)));
        assert_eq!(locate(x86, 117, 99), Some((1, 117)));
        // x86_64 has no multiplexers: its pseudo-only names stay unknown there.
        assert!(!numbers("send").iter().any(|(a, _)| *a == 0));
        assert_eq!(
            locate(libseccomp_sys::SCMP_ARCH_X86_64, 41, 1),
            Some((0, 41))
        );
    }

    #[test]
    fn unknown_names_are_unknown() {
        assert!(is_known("openat"));
        assert!(!is_known("mkdri"));
    }
}
