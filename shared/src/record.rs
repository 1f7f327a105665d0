//! The record of a container's original seccomp profile, and the filter runc 1.1.5 would build from it.
//!
//! `switchboard-oci-hook` writes the record into the merged profile's
//! `listenerMetadata`, so it reaches the agent only as part of what the kernel
//! loaded. It holds the original's rules in the form runc hands them to libseccomp;
//! the agent compiles them with libseccomp as runc does ([`OriginalProfile::program`])
//! and evaluates that program to learn what the original filter would have answered.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::{Deserialize, Serialize};

use crate::bpf::{self, Insn};
use crate::syscalls::X32_SYSCALL_BIT;

/// Key of the record inside a JSON `listenerMetadata`.
pub const METADATA_RECORD_KEY: &str = "switchboard_original_profile";
/// Key of the user's own metadata string inside a JSON `listenerMetadata`.
pub(crate) const METADATA_USER_KEY: &str = "metadata";
/// Prefix of the annotations this project owns; the hook strips incoming ones.
pub const ANNOTATION_PREFIX: &str = "io.switchboard.";

/// The record format this build writes. Readers take newer versions too, ignoring fields
/// they do not know; older formats (without the original's rules) are refused.
pub const RECORD_VERSION: u32 = 2;

/// `SECCOMP_RET_ERRNO | ENOSYS`: runc's `retErrnoEnosys`.
const RET_ERRNO_ENOSYS: u32 = bpf::RET_ERRNO | libc::ENOSYS as u32;

/// Why a record cannot be compiled; the agent then answers every flagged call with a denial.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "record version {0} is older than {RECORD_VERSION}, which carries the original's rules"
    )]
    Version(u32),
    #[error("architecture {0:?} is not one runc accepts")]
    Arch(String),
    #[error("SCMP_ACT_NOTIFY as the default action")]
    NotifyDefault,
    #[error("argument index {0} is out of range 0 to 5")]
    ArgIndex(u32),
    #[error("libseccomp refused {what}: {source}")]
    Libseccomp {
        what: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("exporting the filter: {0}")]
    Export(String),
}

/// An action as the OCI spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordAction {
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

impl RecordAction {
    /// The action runc 1.1.5 knows by this name.
    pub fn parse(name: &str) -> Option<RecordAction> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    /// runc's `getAction`: KILL is KILL_THREAD, errno and trace data default to EPERM and
    /// keep 16 bits.
    pub fn scmp(self, errno: Option<u32>) -> ScmpAction {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "runc keeps the low 16 bits"
        )]
        let data = errno.map_or(libc::EPERM as u16, |e| e as u16);
        match self {
            RecordAction::Kill | RecordAction::KillThread => ScmpAction::KillThread,
            RecordAction::KillProcess => ScmpAction::KillProcess,
            RecordAction::Trap => ScmpAction::Trap,
            RecordAction::Errno => ScmpAction::Errno(i32::from(data)),
            RecordAction::Trace => ScmpAction::Trace(data),
            RecordAction::Allow => ScmpAction::Allow,
            RecordAction::Log => ScmpAction::Log,
            RecordAction::Notify => ScmpAction::Notify,
        }
    }

    /// The `SECCOMP_RET_*` value runc's filter returns for this action with `errno`.
    pub fn ret(self, errno: Option<u32>) -> u32 {
        let data = errno.map_or(libc::EPERM as u32, |e| e & bpf::RET_DATA);
        match self {
            RecordAction::Kill | RecordAction::KillThread => bpf::RET_KILL_THREAD,
            RecordAction::KillProcess => bpf::RET_KILL_PROCESS,
            RecordAction::Trap => bpf::RET_TRAP,
            RecordAction::Errno => bpf::RET_ERRNO | data,
            RecordAction::Trace => bpf::RET_TRACE | data,
            RecordAction::Allow => bpf::RET_ALLOW,
            RecordAction::Log => bpf::RET_LOG,
            RecordAction::Notify => bpf::RET_USER_NOTIF,
        }
    }

    /// runc's `isAllowAction`: defaults that get no -ENOSYS stub.
    fn lets_unknown_through(self) -> bool {
        matches!(
            self,
            RecordAction::Allow | RecordAction::Log | RecordAction::Trace
        )
    }
}

/// A comparison operator as the OCI spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordOp {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

impl RecordOp {
    /// The operator runc 1.1.5 knows by this name.
    pub fn parse(name: &str) -> Option<RecordOp> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

/// One argument condition, as in the OCI spec (`value` is the mask of MASKED_EQ, `valueTwo` its datum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordArg {
    pub index: u32,
    pub op: RecordOp,
    #[serde(default)]
    pub value: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value_two: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl RecordArg {
    /// libseccomp-golang's `MakeCondition(index, op, value, valueTwo)`.
    fn condition(&self) -> Result<ScmpArgCompare, RecordError> {
        if self.index > 5 {
            return Err(RecordError::ArgIndex(self.index));
        }
        let (op, datum) = match self.op {
            RecordOp::Ne => (ScmpCompareOp::NotEqual, self.value),
            RecordOp::Lt => (ScmpCompareOp::Less, self.value),
            RecordOp::Le => (ScmpCompareOp::LessOrEqual, self.value),
            RecordOp::Eq => (ScmpCompareOp::Equal, self.value),
            RecordOp::Ge => (ScmpCompareOp::GreaterEqual, self.value),
            RecordOp::Gt => (ScmpCompareOp::Greater, self.value),
            RecordOp::MaskedEq => (ScmpCompareOp::MaskedEqual(self.value), self.value_two),
        };
        Ok(ScmpArgCompare::new(self.index, op, datum))
    }
}

/// One rule of the original profile, for each of its syscall names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalRule {
    pub names: Vec<String>,
    pub action: RecordAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<RecordArg>,
    /// Capabilities the container must have for the rule to exist (Docker `includes.caps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    /// Capabilities whose presence removes the rule (Docker `excludes.caps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_caps: Vec<String>,
}

impl OriginalRule {
    /// Whether the engine passes this rule to the runtime for a container with these capabilities.
    pub fn applies(&self, has_capability: &impl Fn(&str) -> bool) -> bool {
        self.caps.iter().all(|c| has_capability(c))
            && !self.not_caps.iter().any(|c| has_capability(c))
    }
}

/// The original seccomp profile of a container, as runc would have loaded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalProfile {
    pub version: u32,
    pub default_action: RecordAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `architectures` as handed to runc (the native one is implied, as in libseccomp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// Every rule, in profile order; rules for other host architectures already left out.
    #[serde(default)]
    pub rules: Vec<OriginalRule>,
    /// The syscalls the hook made SCMP_ACT_NOTIFY.
    #[serde(default)]
    pub notify: BTreeSet<String>,
    /// The hook made every syscall it could NOTIFY (`--record`): the agent records what the
    /// container calls (with `--record-dir`) as well as deciding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recording: bool,
}

/// A `listenerMetadata` string split into the user's own metadata and the record.
pub struct ListenerMetadata {
    /// The user's metadata: all of it when the string is not ours, else what it carried under
    /// [`METADATA_USER_KEY`].
    pub user: Option<String>,
    /// The record, if the string carries one; `Err` if it does but this build cannot read it.
    pub record: Option<Result<OriginalProfile, serde_json::Error>>,
}

impl ListenerMetadata {
    /// Splits a `listenerMetadata` written by the OCI hook; a string that is not our JSON is the user's.
    pub fn split(raw: &str) -> ListenerMetadata {
        let theirs = || ListenerMetadata {
            user: Some(raw.to_string()),
            record: None,
        };
        let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(raw) else {
            return theirs();
        };
        let Some(record) = object.remove(METADATA_RECORD_KEY) else {
            return theirs();
        };
        let user = match object.remove(METADATA_USER_KEY) {
            Some(serde_json::Value::String(user)) => Some(user),
            _ => None,
        };
        ListenerMetadata {
            user,
            record: Some(serde_json::from_value(record)),
        }
    }

    /// The `listenerMetadata` string carrying the user's metadata and the record.
    pub fn encode(user: Option<String>, record: &OriginalProfile) -> String {
        let mut object = serde_json::Map::new();
        if let Some(user) = user {
            object.insert(METADATA_USER_KEY.into(), serde_json::Value::String(user));
        }
        object.insert(
            METADATA_RECORD_KEY.into(),
            serde_json::to_value(record).expect("a record is plain data"),
        );
        serde_json::Value::Object(object).to_string()
    }
}

/// The architectures runc 1.1.5 accepts in a profile.
const RUNC_ARCHES: [&str; 16] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
];

fn runc_arch(name: &str) -> Result<ScmpArch, RecordError> {
    if !RUNC_ARCHES.contains(&name) {
        return Err(RecordError::Arch(name.to_string()));
    }
    ScmpArch::from_str(name).map_err(|_| RecordError::Arch(name.to_string()))
}

/// `AUDIT_ARCH_*` of an architecture, as runc's `archToNative` maps it.
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    use libseccomp_sys::*;
    Some(match arch {
        ScmpArch::X86 => SCMP_ARCH_X86,
        ScmpArch::X8664 | ScmpArch::X32 => SCMP_ARCH_X86_64,
        ScmpArch::Arm => SCMP_ARCH_ARM,
        ScmpArch::Aarch64 => SCMP_ARCH_AARCH64,
        ScmpArch::Mips => SCMP_ARCH_MIPS,
        ScmpArch::Mips64 => SCMP_ARCH_MIPS64,
        ScmpArch::Mips64N32 => SCMP_ARCH_MIPS64N32,
        ScmpArch::Mipsel => SCMP_ARCH_MIPSEL,
        ScmpArch::Mipsel64 => SCMP_ARCH_MIPSEL64,
        ScmpArch::Mipsel64N32 => SCMP_ARCH_MIPSEL64N32,
        ScmpArch::Ppc => SCMP_ARCH_PPC,
        ScmpArch::Ppc64 => SCMP_ARCH_PPC64,
        ScmpArch::Ppc64Le => SCMP_ARCH_PPC64LE,
        ScmpArch::S390 => SCMP_ARCH_S390,
        ScmpArch::S390X => SCMP_ARCH_S390X,
        _ => return None,
    })
}

fn scmp_error(
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> RecordError {
    let what = what.into();
    move |source| RecordError::Libseccomp { what, source }
}

impl OriginalProfile {
    /// Stands for a record that could not be read: it compiles to an error, so the ceiling denies.
    pub fn unreadable() -> OriginalProfile {
        OriginalProfile {
            version: 0,
            default_action: RecordAction::Errno,
            default_errno_ret: None,
            architectures: Vec::new(),
            rules: Vec::new(),
            notify: BTreeSet::new(),
            recording: false,
        }
    }

    /// The seccomp program runc 1.1.5 loads for this profile in a container with these
    /// capabilities: its -ENOSYS stub followed by libseccomp's filter.
    pub fn program(&self, has_capability: impl Fn(&str) -> bool) -> Result<Vec<Insn>, RecordError> {
        if self.version < RECORD_VERSION {
            return Err(RecordError::Version(self.version));
        }
        if self.default_action == RecordAction::Notify {
            return Err(RecordError::NotifyDefault);
        }
        let rules: Vec<&OriginalRule> = self
            .rules
            .iter()
            .filter(|r| r.applies(&has_capability))
            .collect();
        let default = self.default_action.scmp(self.default_errno_ret);
        let mut filter =
            ScmpFilterContext::new(default).map_err(scmp_error("the default action"))?;
        for name in &self.architectures {
            filter
                .add_arch(runc_arch(name)?)
                .map_err(scmp_error(format!("architecture {name}")))?;
        }
        for rule in &rules {
            let action = rule.action.scmp(rule.errno_ret);
            for name in &rule.names {
                add_rule(&mut filter, name, action, default, &rule.args)?;
            }
        }
        let mut program = self.enosys_stub(&rules)?;
        program.extend(export(&filter)?);
        Ok(program)
    }

    /// runc's `generatePatch`: per listed architecture, syscall numbers above the largest
    /// one the profile names fail with ENOSYS instead of reaching the default action.
    fn enosys_stub(&self, rules: &[&OriginalRule]) -> Result<Vec<Insn>, RecordError> {
        // runc compares defaultErrnoRet with the whole SCMP_ACT_ERRNO(ENOSYS) value.
        if self.default_errno_ret == Some(RET_ERRNO_ENOSYS)
            || self.default_action.lets_unknown_through()
        {
            return Ok(Vec::new());
        }
        // (audit arch, [(arch, largest nr)]) in first-listed order.
        let mut groups: Vec<(u32, Vec<(ScmpArch, u32)>)> = Vec::new();
        for name in &self.architectures {
            let arch = runc_arch(name)?;
            let audit = audit_arch(arch).ok_or_else(|| RecordError::Arch(name.clone()))?;
            let at = match groups.iter().position(|(a, _)| *a == audit) {
                Some(at) => at,
                None => {
                    groups.push((audit, Vec::new()));
                    groups.len() - 1
                }
            };
            if groups[at].1.iter().any(|(a, _)| *a == arch) {
                continue;
            }
            let largest = rules
                .iter()
                .flat_map(|r| r.names.iter())
                .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
                .map(|s| s.as_raw_syscall())
                .max()
                .unwrap_or(0);
            if largest > 0 {
                groups[at].1.push((arch, largest.cast_unsigned()));
            }
        }
        Ok(stub(&groups))
    }
}

/// A jump target in the stub, resolved once its length is known.
#[derive(Clone, Copy)]
enum To {
    Next,
    Enosys,
    Filter,
    /// Skip this many instructions of the current section.
    Skip(u8),
}

/// The stub's instructions: `LD arch`, a section per audit arch, `JA filter`, `RET ENOSYS`.
fn stub(groups: &[(u32, Vec<(ScmpArch, u32)>)]) -> Vec<Insn> {
    let mut symbolic: Vec<(Insn, To, To)> = vec![(Insn::load(4), To::Next, To::Next)];
    let jgt = |nr: u32| (Insn::jgt(nr, 0, 0), To::Enosys, To::Filter);
    for (audit, arches) in groups {
        let mut section: Vec<(Insn, To, To)> = vec![(Insn::load(0), To::Next, To::Next)];
        match arches.as_slice() {
            [] => continue,
            [(arch, nr)] => {
                if matches!(arch, ScmpArch::S390 | ScmpArch::S390X) {
                    section.push((Insn::jeq(0, 0, 0), To::Enosys, To::Next));
                }
                match arch {
                    ScmpArch::X8664 => {
                        section.push((Insn::jset(X32_SYSCALL_BIT, 0, 0), To::Filter, To::Next))
                    }
                    ScmpArch::X32 => {
                        section.push((Insn::jset(X32_SYSCALL_BIT, 0, 0), To::Next, To::Filter))
                    }
                    _ => {}
                }
                section.push(jgt(*nr));
            }
            pair => {
                let nr_of =
                    |want: ScmpArch| pair.iter().find(|(a, _)| *a == want).map(|(_, nr)| *nr);
                let (x86_64, x32) = (nr_of(ScmpArch::X8664), nr_of(ScmpArch::X32));
                let (Some(x86_64), Some(x32)) = (x86_64, x32) else {
                    // runc refuses to start such a container; nothing reaches the filter.
                    return vec![Insn::ret(bpf::RET_KILL_PROCESS)];
                };
                section.push((Insn::jset(X32_SYSCALL_BIT, 0, 0), To::Skip(1), To::Next));
                section.push(jgt(x86_64));
                section.push(jgt(x32));
            }
        }
        let len = u8::try_from(section.len()).expect("a stub section is short");
        symbolic.push((Insn::jeq(*audit, 0, 0), To::Next, To::Skip(len)));
        symbolic.extend(section);
    }
    symbolic.push((Insn::jump(0), To::Filter, To::Filter));
    symbolic.push((Insn::ret(RET_ERRNO_ENOSYS), To::Next, To::Next));
    let enosys = symbolic.len() - 1;
    let filter = symbolic.len();
    symbolic
        .iter()
        .enumerate()
        .map(|(pc, (insn, jt, jf))| {
            let offset = |to: To| -> usize {
                match to {
                    To::Next => 0,
                    To::Enosys => enosys - pc - 1,
                    To::Filter => filter - pc - 1,
                    To::Skip(n) => usize::from(n),
                }
            };
            let mut insn = *insn;
            if insn == Insn::jump(0) {
                insn.k = u32::try_from(offset(To::Filter)).expect("a stub is short");
            } else {
                insn.jt = u8::try_from(offset(*jt)).expect("a stub section is short");
                insn.jf = u8::try_from(offset(*jf)).expect("a stub section is short");
            }
            insn
        })
        .collect()
}

/// runc's `matchCall` for one syscall name.
fn add_rule(
    filter: &mut ScmpFilterContext,
    name: &str,
    action: ScmpAction,
    default: ScmpAction,
    args: &[RecordArg],
) -> Result<(), RecordError> {
    if action == default {
        // "This rule is redundant, silently skip it".
        return Ok(());
    }
    // "If we can't resolve the syscall, assume it is not supported by this kernel."
    let Ok(syscall) = ScmpSyscall::from_name(name) else {
        return Ok(());
    };
    let what = || format!("the rule for {name}");
    if args.is_empty() {
        filter
            .add_rule(action, syscall)
            .map_err(scmp_error(what()))?;
        return Ok(());
    }
    let conditions = args
        .iter()
        .map(RecordArg::condition)
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = BTreeSet::new();
    if args.iter().all(|a| seen.insert(a.index)) {
        filter
            .add_rule_conditional(action, syscall, &conditions)
            .map_err(scmp_error(what()))?;
    } else {
        // "If two or more arguments have the same condition, revert to old behavior,
        // adding each condition as a separate rule."
        for condition in conditions {
            filter
                .add_rule_conditional(action, syscall, &[condition])
                .map_err(scmp_error(what()))?;
        }
    }
    Ok(())
}

/// The program libseccomp generates for `filter` (`seccomp_export_bpf`, through a memfd).
pub fn export(filter: &ScmpFilterContext) -> Result<Vec<Insn>, RecordError> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| RecordError::Export(format!("{what}: {e}"));
    let fd =
        nix::sys::memfd::memfd_create(c"switchboard-bpf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| failed("memfd_create", &e))?;
    let mut file = std::fs::File::from(fd);
    filter
        .export_bpf(&file)
        .map_err(|e| failed("seccomp_export_bpf", &e))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| failed("reading the memfd", &e))?;
    bpf::parse(&bytes).ok_or_else(|| failed("parsing", &"not a whole number of instructions"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{run, SeccompData};
    use libseccomp_sys::{SCMP_ARCH_X86, SCMP_ARCH_X86_64};

    fn data(arch: u32, nr: i32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch,
            instruction_pointer: 0,
            args,
        }
    }

    fn profile(json: serde_json::Value) -> OriginalProfile {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn libseccomp_decides_overlapping_rules_not_profile_order() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        // Issue 11's example: LOG when arg0 > 1, then EACCES when arg0 == 8.
        let p = profile(serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ALLOW",
            "rules": [
                {"names": ["personality"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "op": "SCMP_CMP_GT", "value": 1}]},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 8}]}
            ]
        }));
        let program = p.program(|_| false).unwrap();
        let at = |arg0| {
            run(
                &program,
                &data(SCMP_ARCH_X86_64, 135, [arg0, 0, 0, 0, 0, 0]),
            )
        };
        assert_eq!(at(8), bpf::RET_ERRNO | 13);
        assert_eq!(at(9), bpf::RET_LOG);
        assert_eq!(at(0), bpf::RET_ALLOW);
    }

    #[test]
    fn the_enosys_stub_follows_runc() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let p = profile(serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "rules": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW"},
                      {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]
        }));
        let program = p.program(|_| false).unwrap();
        let x86_64 = |nr| run(&program, &data(SCMP_ARCH_X86_64, nr, [0; 6]));
        let x86 = |nr| run(&program, &data(SCMP_ARCH_X86, nr, [0; 6]));
        // personality is 135 on x86_64 and 136 on x86; getpid (39 / 20) equals the default
        // and is no rule, but still counts for the stub.
        assert_eq!(x86_64(135), bpf::RET_ALLOW);
        assert_eq!(x86_64(134), bpf::RET_ERRNO | 1);
        assert_eq!(x86_64(136), RET_ERRNO_ENOSYS);
        assert_eq!(x86(136), bpf::RET_ALLOW);
        assert_eq!(x86(137), RET_ERRNO_ENOSYS);
        assert_eq!(x86(20), bpf::RET_ERRNO | 1);
        assert_eq!(x86_64(135 | X32_SYSCALL_BIT.cast_signed()), bpf::RET_ALLOW);
        assert_eq!(
            x86_64(136 | X32_SYSCALL_BIT.cast_signed()),
            RET_ERRNO_ENOSYS
        );
        // An allowing default gets no stub.
        let allow = profile(serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "rules": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]
        }));
        let program = allow.program(|_| false).unwrap();
        assert_eq!(
            run(&program, &data(SCMP_ARCH_X86_64, 300, [0; 6])),
            bpf::RET_ALLOW
        );
    }

    #[test]
    fn socketcall_names_are_flagged_through_both_entries_on_x86() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let p = profile(serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "rules": [{"names": ["socket"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let program = p.program(|_| false).unwrap();
        let x86 = |nr, arg0| run(&program, &data(SCMP_ARCH_X86, nr, [arg0, 0, 0, 0, 0, 0]));
        assert_eq!(x86(102, 1), bpf::RET_USER_NOTIF, "socketcall(SYS_SOCKET)");
        assert_eq!(x86(359, 0), bpf::RET_USER_NOTIF, "i386 socket");
        assert_eq!(x86(102, 3), bpf::RET_ALLOW, "socketcall(SYS_CONNECT)");
        assert_eq!(
            run(&program, &data(SCMP_ARCH_X86_64, 41, [0; 6])),
            bpf::RET_USER_NOTIF
        );
    }

    #[test]
    fn capabilities_and_repeated_indexes() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let p = profile(serde_json::json!({
            "version": 2, "defaultAction": "SCMP_ACT_ALLOW",
            "rules": [
                {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22, "caps": ["CAP_SYS_NICE"]},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1}, {"index": 0, "op": "SCMP_CMP_EQ", "value": 2}]},
                {"names": ["prctl"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 255, "valueTwo": 7}]}
            ]
        }));
        let plain = p.program(|_| false).unwrap();
        let nice = p.program(|c| c == "CAP_SYS_NICE").unwrap();
        let call = |program: &[Insn], nr, arg0| {
            run(program, &data(SCMP_ARCH_X86_64, nr, [arg0, 0, 0, 0, 0, 0]))
        };
        assert_eq!(call(&plain, 140, 0), bpf::RET_ALLOW);
        assert_eq!(call(&nice, 140, 0), bpf::RET_ERRNO | 22);
        assert_eq!(call(&plain, 135, 1), bpf::RET_ERRNO | 13);
        assert_eq!(call(&plain, 135, 2), bpf::RET_ERRNO | 13);
        assert_eq!(call(&plain, 135, 3), bpf::RET_ALLOW);
        assert_eq!(call(&plain, 157, 0x107), bpf::RET_KILL_PROCESS);
        assert_eq!(call(&plain, 157, 0x108), bpf::RET_ALLOW);
    }

    #[test]
    fn old_or_unbuildable_records_are_refused() {
        let old = profile(serde_json::json!({"version": 1, "defaultAction": "SCMP_ACT_ALLOW"}));
        assert!(matches!(
            old.program(|_| false),
            Err(RecordError::Version(1))
        ));
        let arch = profile(
            serde_json::json!({"version": 2, "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_RISCV64"]}),
        );
        assert!(matches!(arch.program(|_| false), Err(RecordError::Arch(_))));
        // A newer version's unknown fields are ignored.
        let newer = profile(
            serde_json::json!({"version": 3, "defaultAction": "SCMP_ACT_ALLOW", "future": 1}),
        );
        assert!(newer.program(|_| false).is_ok());
    }
}
