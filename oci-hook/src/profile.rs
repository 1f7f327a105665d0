//! Merging the policy's NOTIFY rules into a seccomp profile, recording what the original did with each flagged syscall.
//!
//! Works on both shapes of profile: the OCI `linux.seccomp` object and the
//! Docker-format profile file (podman, CRI-O, containerd, Kubernetes `Localhost`),
//! which adds `archMap`, legacy `name`, and `includes`/`excludes`. The profile is a
//! `serde_json::Value`; every field the merge does not change passes through.
//!
//! The record keeps the original's rules in the form the runtime hands them to
//! libseccomp, for the agent to build the original filter from (see
//! `switchboard_shared::record`). What the engine resolves before the runtime sees a
//! Docker-format profile is resolved here:
//! - `includes.caps` / `excludes.caps` become the record's `caps` / `notCaps`;
//!   the agent checks them against the container's bounding set.
//! - `includes.arches` / `excludes.arches`: a rule is kept only if it applies on
//!   this host's native architecture (as the engines apply it: only Go's
//!   `runtime.GOARCH` is compared). A profile merged here is for hosts of this
//!   architecture.
//! - `minKernel`: treated as applicable. The profile may be merged on another host
//!   than the one that runs it, and the kernels that run containers with a
//!   seccomp listener (5.0+) meet every `minKernel` in the engines' defaults.
//! - A rule whose action is already SCMP_ACT_NOTIFY (a listener replaced with
//!   `--force`, or our own socket set by hand) is recorded as it is; the agent
//!   reads its answer as allow: the policy now decides in the old listener's place.

use std::collections::BTreeSet;

use libseccomp::ScmpAction;
use serde_json::{json, Value};
use switchboard_shared::policy::errno_from_name;
use switchboard_shared::record::{
    ListenerMetadata, OriginalProfile, OriginalRule, RecordAction, RecordArg, RecordOp,
    METADATA_RECORD_KEY, RECORD_VERSION,
};

use crate::arch::{self, Arch};
use switchboard_shared::handover;

/// The action the merge writes.
pub const NOTIFY: &str = "SCMP_ACT_NOTIFY";

/// The errnos a seccomp rule can return (the kernel caps SECCOMP_RET_ERRNO at MAX_ERRNO).
const ERRNO_RANGE: std::ops::RangeInclusive<u32> = 1..=4095;

/// Why a profile could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("the seccomp profile is not a JSON object")]
    NotAnObject,
    #[error("the seccomp profile has no defaultAction")]
    NoDefaultAction,
    #[error("defaultAction SCMP_ACT_NOTIFY is refused: every syscall would wait for the agent, including the write(2) with which the runtime hands the listener over, so the container would hang")]
    NotifyDefault,
    #[error("{0}")]
    Handover(String),
    #[error("listenerPath is already set to {existing:?}, not to the agent's socket {ours:?}; pass --force to replace it")]
    OtherListener { existing: String, ours: String },
    #[error("{at}: {message}")]
    BadField { at: String, message: String },
}

fn bad(at: impl Into<String>, message: impl Into<String>) -> MergeError {
    MergeError::BadField {
        at: at.into(),
        message: message.into(),
    }
}

/// What the merge is asked to do.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Every syscall the policy names.
    pub flagged: Vec<String>,
    /// The agent's socket, written to `listenerPath`.
    pub socket: String,
    /// Replace a `listenerPath` that names another socket.
    pub force: bool,
    /// For allowlist profiles, also flag every syscall the default denies.
    pub log_default_denied: bool,
    /// Flag every syscall of the profile's arches but the handover ones, and mark the
    /// record so that the agent records what the container calls.
    pub record: bool,
}

/// The merge's result besides the rewritten profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// What the original profile did with every NOTIFY syscall (earlier merges included).
    pub record: OriginalProfile,
    /// Things the user should know; printed to stderr.
    pub warnings: Vec<String>,
}

/// One rule of the profile, as far as the merge needs it.
struct ParsedRule {
    /// The rule as the record keeps it.
    rule: OriginalRule,
    /// Action and errno as the runtime compares them with the default's.
    key: ScmpAction,
    /// Whether the rule exists on this host's native architecture.
    native: bool,
}

/// An action the runtime knows, by name.
fn action_of(action: &str, at: &str) -> Result<RecordAction, MergeError> {
    RecordAction::parse(action).ok_or_else(|| bad(at, format!("unknown action {action:?}")))
}

/// `at.key`, or `key` at the top level.
fn field(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// The errno of a rule or of the default: the numeric field, else the symbolic one, else none.
fn errno_field(
    object: &Value,
    number_key: &str,
    name_key: &str,
    at: &str,
) -> Result<Option<u32>, MergeError> {
    let errno = if let Some(value) = object.get(number_key).filter(|v| !v.is_null()) {
        let errno = value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| ERRNO_RANGE.contains(n))
            .ok_or_else(|| {
                bad(
                    field(at, number_key),
                    format!("{number_key} {value} is out of range: an errno is 1 to 4095"),
                )
            })?;
        Some(errno)
    } else {
        match object.get(name_key).and_then(Value::as_str) {
            Some(name) if !name.is_empty() => Some(
                errno_from_name(name)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad(field(at, name_key), format!("unknown errno {name:?}")))?,
            ),
            _ => None,
        }
    };
    Ok(errno)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The names a rule lists (`names`, plus the legacy single `name`).
fn rule_names(rule: &Value) -> Vec<String> {
    let mut names = strings(rule.get("names"));
    if let Some(name) = rule.get("name").and_then(Value::as_str) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

fn parse_arg(arg: &Value, at: &str) -> Result<RecordArg, MergeError> {
    let number = |key: &str| -> Result<u64, MergeError> {
        match arg.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| {
                bad(
                    format!("{at}.{key}"),
                    format!("expected an unsigned number, found {v}"),
                )
            }),
        }
    };
    let index = number("index")?;
    if index > 5 {
        return Err(bad(
            format!("{at}.index"),
            format!("argument index {index} is out of range 0 to 5"),
        ));
    }
    let op = arg.get("op").and_then(Value::as_str).unwrap_or_default();
    let op = RecordOp::parse(op).ok_or_else(|| {
        bad(
            format!("{at}.op"),
            format!("unknown op {op:?}, expected SCMP_CMP_EQ, NE, LT, LE, GT, GE or MASKED_EQ"),
        )
    })?;
    Ok(RecordArg {
        index: u32::try_from(index).expect("checked to be 0 to 5"),
        op,
        value: number("value")?,
        value_two: number("valueTwo")?,
    })
}

fn parse_args(rule: &Value, at: &str) -> Result<Vec<RecordArg>, MergeError> {
    match rule.get("args") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(args)) => args
            .iter()
            .enumerate()
            .map(|(i, a)| parse_arg(a, &format!("{at}.args[{i}]")))
            .collect(),
        Some(other) => Err(bad(
            format!("{at}.args"),
            format!("expected a list, found {other}"),
        )),
    }
}

fn parse_rule(rule: &Value, at: &str) -> Result<ParsedRule, MergeError> {
    if !rule.is_object() {
        return Err(bad(at, "a rule must be a JSON object"));
    }
    let action = rule
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(at, "the rule has no action"))?;
    let action = action_of(action, &format!("{at}.action"))?;
    let errno_ret = errno_field(rule, "errnoRet", "errno", at)?;
    let includes = rule.get("includes");
    let excludes = rule.get("excludes");
    let go_arch = arch::native_go_arch();
    let included_arches = strings(includes.and_then(|i| i.get("arches")));
    let excluded_arches = strings(excludes.and_then(|e| e.get("arches")));
    let native = (included_arches.is_empty() || included_arches.iter().any(|a| a == go_arch))
        && !excluded_arches.iter().any(|a| a == go_arch);
    Ok(ParsedRule {
        key: action.scmp(errno_ret),
        native,
        rule: OriginalRule {
            names: rule_names(rule),
            action,
            errno_ret,
            args: parse_args(rule, at)?,
            caps: strings(includes.and_then(|i| i.get("caps"))),
            not_caps: strings(excludes.and_then(|e| e.get("caps"))),
        },
    })
}

/// Whether `profile` is what an earlier merge that left `record` wrote: a listener is
/// set and every recorded syscall is NOTIFY. Only then is the record trusted; a record
/// that came without that (an annotation a user passed to the engine, say) could claim
/// the original allowed what the profile at hand denies.
fn continues(profile: &Value, record: &OriginalProfile) -> bool {
    let listener = profile
        .get("listenerPath")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    let notified: BTreeSet<String> = profile
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("action").and_then(Value::as_str) == Some(NOTIFY))
        .flat_map(rule_names)
        .collect();
    listener && record.notify.iter().all(|name| notified.contains(name))
}

/// Whether a rule is the NOTIFY rule an earlier merge wrote.
fn is_our_notify_rule(rule: &Value, notified: &BTreeSet<String>) -> bool {
    let Some(object) = rule.as_object() else {
        return false;
    };
    object.get("action").and_then(Value::as_str) == Some(NOTIFY)
        && object.keys().all(|k| k == "names" || k == "action")
        && rule_names(rule).iter().all(|n| notified.contains(n))
}

/// An original rule back in profile form, naming only `names`: what a syscall an earlier
/// merge flagged returns to when the policy no longer names it.
fn restored_rule(rule: &OriginalRule, names: Vec<String>) -> Value {
    let mut out = json!({"names": names, "action": rule.action});
    if let Some(errno) = rule.errno_ret {
        out["errnoRet"] = json!(errno);
    }
    if !rule.args.is_empty() {
        let args: Vec<Value> = rule
            .args
            .iter()
            .map(|a| json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}))
            .collect();
        out["args"] = Value::Array(args);
    }
    if !rule.caps.is_empty() {
        out["includes"] = json!({"caps": rule.caps});
    }
    if !rule.not_caps.is_empty() {
        out["excludes"] = json!({"caps": rule.not_caps});
    }
    out
}

/// Merges the policy's NOTIFY rules into `profile` (the seccomp object).
///
/// `prior` is the record an earlier merge left; with it, syscalls already NOTIFY
/// keep their record and a repeated merge changes nothing.
pub fn merge(
    profile: &mut Value,
    prior: Option<OriginalProfile>,
    options: &MergeOptions,
) -> Result<Merged, MergeError> {
    let mut warnings = Vec::new();
    if !profile.is_object() {
        return Err(MergeError::NotAnObject);
    }

    let refused: Vec<String> = options
        .flagged
        .iter()
        .filter_map(|name| handover::reason(name).map(|why| format!("{name} ({why})")))
        .collect();
    if !refused.is_empty() {
        return Err(MergeError::Handover(format!(
            "the policy names {}; a syscall the runtime makes before it hands the listener to the agent cannot be NOTIFY, or the container would hang at start. Remove it from the policy",
            refused.join("; ")
        )));
    }

    let default_action = profile
        .get("defaultAction")
        .and_then(Value::as_str)
        .ok_or(MergeError::NoDefaultAction)?
        .to_string();
    if default_action == NOTIFY {
        return Err(MergeError::NotifyDefault);
    }
    let default_errno = errno_field(profile, "defaultErrnoRet", "defaultErrno", "")?;
    let default = action_of(&default_action, "defaultAction")?;
    let default_key = default.scmp(default_errno);

    match profile.get("listenerPath") {
        None | Some(Value::Null) => {}
        Some(Value::String(existing)) if existing.is_empty() || *existing == options.socket => {}
        Some(Value::String(existing)) if options.force => warnings.push(format!(
            "replacing listenerPath {existing:?} with {:?} (--force)",
            options.socket
        )),
        Some(Value::String(existing)) => {
            return Err(MergeError::OtherListener {
                existing: existing.clone(),
                ours: options.socket.clone(),
            })
        }
        Some(other) => {
            return Err(bad(
                "listenerPath",
                format!("expected a string, found {other}"),
            ))
        }
    }

    let rules: Vec<Value> = match profile.get("syscalls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rules)) => rules.clone(),
        Some(other) => return Err(bad("syscalls", format!("expected a list, found {other}"))),
    };
    let parsed = rules
        .iter()
        .enumerate()
        .map(|(i, r)| parse_rule(r, &format!("syscalls[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;

    let mut unknown_arches = Vec::new();
    let listed = arch::listed_arches(profile, &mut unknown_arches);
    let arches = arch::with_native(&listed);
    for name in unknown_arches {
        warnings.push(format!(
            "architecture {name:?} is unknown to libseccomp; ignored"
        ));
    }

    let prior = match prior {
        Some(record) if !continues(profile, &record) => {
            warnings.push(
                "ignoring a recorded original profile that this profile does not carry out (no listenerPath, or recorded syscalls not NOTIFY); recording the profile as it is"
                    .into(),
            );
            None
        }
        prior => prior,
    };

    let mut wanted = BTreeSet::new();
    for name in &options.flagged {
        let missing: Vec<&str> = arches
            .iter()
            .filter(|a| !a.flags(name))
            .map(|a| a.name)
            .collect();
        if missing.len() == arches.len() {
            warnings.push(format!(
                "libseccomp's filter cannot flag syscall {name:?} on any architecture of the profile ({}); skipped",
                arches.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        if !missing.is_empty() {
            warnings.push(format!(
                "syscall {name:?} is unknown to libseccomp on {}, where the filter cannot flag it; flagged on the other architectures only",
                missing.join(", ")
            ));
        }
        wanted.insert(name.clone());
    }

    if options.log_default_denied {
        if matches!(
            default,
            RecordAction::Allow | RecordAction::Log | RecordAction::Notify
        ) {
            warnings.push(format!(
                "--log-default-denied has no effect: defaultAction {default_action} denies nothing"
            ));
        } else {
            // After an earlier merge the profile's NOTIFY rule hides what the original's
            // default decided: ask the record, which is the original.
            let decided: BTreeSet<&str> = match &prior {
                Some(record) => record
                    .rules
                    .iter()
                    .filter(|r| r.action.scmp(r.errno_ret) != default_key)
                    .flat_map(|r| r.names.iter().map(String::as_str))
                    .collect(),
                None => parsed
                    .iter()
                    .filter(|r| r.native && r.key != default_key)
                    .flat_map(|r| r.rule.names.iter().map(String::as_str))
                    .collect(),
            };
            wanted.extend(default_denied(&decided, &arches));
        }
    }

    if options.record {
        wanted.extend(
            arches
                .iter()
                .flat_map(|a| a.syscall_names())
                .filter(|name| handover::reason(name).is_none()),
        );
    }

    let mut record = prior.unwrap_or_else(|| OriginalProfile {
        version: RECORD_VERSION,
        default_action: default,
        default_errno_ret: default_errno,
        architectures: listed.iter().map(|a| a.name.to_string()).collect(),
        rules: parsed
            .iter()
            .filter(|r| r.native)
            .map(|r| r.rule.clone())
            .collect(),
        notify: BTreeSet::new(),
        recording: false,
    });
    record.recording |= options.record;
    // The record is the original: the syscalls flagged now are what this policy wants, and
    // those an earlier merge flagged that it no longer names go back to their original rules,
    // so re-merging gives what merging into the original would.
    let previously = std::mem::replace(&mut record.notify, wanted);
    let released: BTreeSet<String> = previously.difference(&record.notify).cloned().collect();
    if record.notify.is_empty() {
        warnings.push(
            "the policy names no syscall this profile can flag; the profile is left as it was"
                .into(),
        );
        return Ok(Merged { record, warnings });
    }

    let notify: Vec<String> = record.notify.iter().cloned().collect();
    let mut ours = None;
    let mut out_rules = Vec::with_capacity(rules.len() + 1);
    let ours_before: BTreeSet<String> = previously.union(&record.notify).cloned().collect();
    for rule in rules {
        if ours.is_none() && is_our_notify_rule(&rule, &ours_before) {
            ours = Some(out_rules.len());
            out_rules.push(rule);
            continue;
        }
        if let Some(rule) = without_names(rule, &record) {
            out_rules.push(rule);
        }
    }
    for rule in &record.rules {
        let names: Vec<String> = rule
            .names
            .iter()
            .filter(|n| released.contains(*n))
            .cloned()
            .collect();
        if !names.is_empty() {
            out_rules.push(restored_rule(rule, names));
        }
    }
    match ours {
        Some(index) => out_rules[index]["names"] = json!(notify),
        None => out_rules.push(json!({"names": notify, "action": NOTIFY})),
    }

    let object = profile.as_object_mut().ok_or(MergeError::NotAnObject)?;
    object.insert("syscalls".into(), Value::Array(out_rules));
    object.insert("listenerPath".into(), Value::String(options.socket.clone()));
    Ok(Merged { record, warnings })
}

/// The rule without the NOTIFY syscalls; None when it names nothing else.
fn without_names(mut rule: Value, record: &OriginalProfile) -> Option<Value> {
    let Some(object) = rule.as_object_mut() else {
        return Some(rule);
    };
    let flagged = |n: &Value| n.as_str().is_some_and(|n| record.notify.contains(n));
    let legacy_flagged = object.get("name").is_some_and(flagged);
    if legacy_flagged {
        object.remove("name");
    }
    let had_names = match object.get_mut("names") {
        Some(Value::Array(names)) => {
            names.retain(|n| !flagged(n));
            true
        }
        _ => false,
    };
    let names_left = object
        .get("names")
        .and_then(Value::as_array)
        .is_some_and(|n| !n.is_empty());
    let name_left = object.contains_key("name");
    if (had_names || legacy_flagged) && !names_left && !name_left {
        return None;
    }
    Some(rule)
}

/// Every syscall of the profile's arches that only the (denying) default decides.
///
/// A syscall some native rule names with another action than the default is left
/// out, also when that rule has argument or capability conditions: its calls that
/// match no rule keep the default's denial in the filter and are not seen.
fn default_denied(decided: &BTreeSet<&str>, arches: &[Arch]) -> BTreeSet<String> {
    arches
        .iter()
        .flat_map(|a| a.syscall_names())
        .filter(|name| !decided.contains(name.as_str()) && handover::reason(name).is_none())
        .collect()
}

/// A profile for a container that had none: allow everything, on the host's arch family.
pub fn empty_profile() -> Value {
    let arches: Vec<&str> = arch::native_family().iter().map(|a| a.name).collect();
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": arches})
}

/// Reads the record a profile-mode merge left in `listenerMetadata`, and the user's own metadata.
///
/// Returns (user metadata, record). A `listenerMetadata` that is not our JSON is the user's.
pub fn split_listener_metadata(
    profile: &Value,
) -> Result<(Option<String>, Option<OriginalProfile>), MergeError> {
    let raw = match profile.get("listenerMetadata") {
        None | Some(Value::Null) => return Ok((None, None)),
        Some(Value::String(raw)) => raw,
        Some(other) => {
            return Err(bad(
                "listenerMetadata",
                format!("expected a string, found {other}"),
            ))
        }
    };
    let split = ListenerMetadata::split(raw);
    let record = split.record.transpose().map_err(|e| {
        bad(
            "listenerMetadata",
            format!("holds an unreadable {METADATA_RECORD_KEY} record: {e}"),
        )
    })?;
    Ok((split.user, record))
}

/// Profile mode: merges a Docker-format profile, carrying the record in `listenerMetadata`.
pub fn merge_profile(profile: &mut Value, options: &MergeOptions) -> Result<Merged, MergeError> {
    let (user, prior) = split_listener_metadata(profile)?;
    let merged = merge(profile, prior, options)?;
    if !merged.record.notify.is_empty() {
        let metadata = ListenerMetadata::encode(user, &merged.record);
        profile
            .as_object_mut()
            .ok_or(MergeError::NotAnObject)?
            .insert("listenerMetadata".into(), Value::String(metadata));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(flagged: &[&str]) -> MergeOptions {
        MergeOptions {
            flagged: flagged.iter().map(|s| s.to_string()).collect(),
            socket: "/run/sb.sock".into(),
            force: false,
            log_default_denied: false,
            record: false,
        }
    }

    #[test]
    fn splits_rules_and_records_the_original_rules() {
        let mut profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [
                {"names": ["mkdir", "read"], "action": "SCMP_ACT_ALLOW"},
                {"name": "rmdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        });
        let merged = merge(&mut profile, None, &options(&["mkdir", "rmdir", "chmod"])).unwrap();
        assert_eq!(
            profile["syscalls"],
            json!([
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["chmod", "mkdir", "rmdir"], "action": "SCMP_ACT_NOTIFY"}
            ])
        );
        let r = &merged.record;
        assert_eq!(r.version, RECORD_VERSION);
        assert_eq!(
            (r.default_action, r.default_errno_ret),
            (RecordAction::Errno, Some(38))
        );
        assert_eq!(r.rules.len(), 2);
        assert_eq!(r.rules[0].names, ["mkdir", "read"]);
        assert_eq!(r.rules[1].names, ["rmdir"]);
        assert_eq!(
            (r.rules[1].action, r.rules[1].errno_ret),
            (RecordAction::Errno, Some(13))
        );
        assert_eq!(
            r.notify.iter().collect::<Vec<_>>(),
            ["chmod", "mkdir", "rmdir"]
        );
    }

    #[test]
    fn arguments_are_kept_as_the_runtime_gets_them() {
        let mut profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_KILL",
                 "args": [{"index": 0, "value": 255, "valueTwo": 7, "op": "SCMP_CMP_MASKED_EQ"},
                          {"index": 0, "value": 1, "op": "SCMP_CMP_GT"}]}
            ]
        });
        let merged = merge(&mut profile, None, &options(&["personality"])).unwrap();
        let args = &merged.record.rules[0].args;
        assert_eq!(
            args[0],
            RecordArg {
                index: 0,
                op: RecordOp::MaskedEq,
                value: 255,
                value_two: 7
            }
        );
        assert_eq!(args[1].op, RecordOp::Gt);
    }

    #[test]
    fn errno_outside_1_to_4095_is_refused() {
        for (profile, at) in [
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}),
                "syscalls[0].errnoRet",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0}]}),
                "syscalls[0].errnoRet",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}),
                "defaultErrnoRet",
            ),
        ] {
            let mut profile = profile;
            let e = merge(&mut profile, None, &options(&["mkdir"]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{at}: ")) && e.contains("1 to 4095"),
                "{e}"
            );
        }
        let mut fine = json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4095});
        merge(&mut fine, None, &options(&["mkdir"])).unwrap();
    }

    #[test]
    fn arch_restricted_rules_count_only_on_the_native_arch() {
        let other = if arch::native_go_arch() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        let mut profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": [other]}},
                {"names": ["chmod"], "action": "SCMP_ACT_KILL", "excludes": {"arches": [other]}, "includes": {"minKernel": "9.9"}}
            ]
        });
        let merged = merge(&mut profile, None, &options(&["chmod"])).unwrap();
        assert_eq!(merged.record.rules.len(), 1);
        assert_eq!(merged.record.rules[0].action, RecordAction::Kill);
    }

    #[test]
    fn second_merge_changes_nothing() {
        let mut profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerMetadata": "team-a",
            "syscalls": [{"names": ["mkdir", "uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
        merge_profile(&mut profile, &options(&["mkdir"])).unwrap();
        let once = profile.clone();
        merge_profile(&mut profile, &options(&["mkdir"])).unwrap();
        assert_eq!(profile, once);
        let (user, record) = split_listener_metadata(&profile).unwrap();
        assert_eq!(user.as_deref(), Some("team-a"));
        let first = record.unwrap();
        assert_eq!(first.rules[0].names, ["mkdir", "uname"]);
        // A policy that names more later adds to the same NOTIFY rule and keeps the old record.
        merge_profile(&mut profile, &options(&["mkdir", "uname"])).unwrap();
        let (_, record) = split_listener_metadata(&profile).unwrap();
        let record = record.unwrap();
        assert_eq!(record.rules, first.rules);
        assert_eq!(record.notify.iter().collect::<Vec<_>>(), ["mkdir", "uname"]);
        assert_eq!(
            profile["syscalls"],
            json!([{"names": ["mkdir", "uname"], "action": "SCMP_ACT_NOTIFY"}])
        );
        // One that no longer names mkdir gives it back its original rule, as a merge into the
        // original would.
        merge_profile(&mut profile, &options(&["uname"])).unwrap();
        let (_, record) = split_listener_metadata(&profile).unwrap();
        let record = record.unwrap();
        assert_eq!(record.rules, first.rules);
        assert_eq!(record.notify.iter().collect::<Vec<_>>(), ["uname"]);
        assert_eq!(
            profile["syscalls"],
            json!([
                {"names": ["uname"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ])
        );
    }

    #[test]
    fn a_record_the_profile_does_not_carry_out_is_not_trusted() {
        let mut profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]
        });
        let forged: OriginalProfile = serde_json::from_value(json!({
            "version": 2, "defaultAction": "SCMP_ACT_ALLOW", "notify": ["kexec_load"]
        }))
        .unwrap();
        let merged = merge(&mut profile, Some(forged), &options(&["kexec_load"])).unwrap();
        assert_eq!(merged.record.rules[0].action, RecordAction::Errno);
        assert!(merged
            .warnings
            .iter()
            .any(|w| w.contains("ignoring a recorded")));
    }

    #[test]
    fn refusals() {
        let mut profile = json!({"defaultAction": "SCMP_ACT_NOTIFY"});
        assert!(matches!(
            merge(&mut profile, None, &options(&["mkdir"])),
            Err(MergeError::NotifyDefault)
        ));
        let mut profile = json!({"defaultAction": "SCMP_ACT_ALLOW"});
        let e = merge(&mut profile, None, &options(&["mkdir", "write"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("write (runc writes"), "{e}");
        let mut profile = json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/other.sock"});
        let e = merge(&mut profile, None, &options(&["mkdir"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/other.sock") && e.contains("--force"), "{e}");
        let mut force = options(&["mkdir"]);
        force.force = true;
        merge(&mut profile, None, &force).unwrap();
        assert_eq!(profile["listenerPath"], "/run/sb.sock");
    }

    #[test]
    fn default_denied_complement_skips_conditional_and_handover() {
        let mut profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["read", "write", "exit_group", "mkdir"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
            ]
        });
        let mut opts = options(&["mkdir"]);
        opts.log_default_denied = true;
        let merged = merge(&mut profile, None, &opts).unwrap();
        let names = &merged.record.notify;
        assert!(names.contains("mkdir") && names.contains("rmdir") && names.contains("reboot"));
        assert!(!names.contains("personality") && !names.contains("read"));
        assert!(!names.contains("sendmsg") && !names.contains("futex"));
        assert_eq!(merged.record.default_action, RecordAction::Errno);
    }

    #[test]
    fn recording_flags_everything_but_the_handover_and_marks_the_record() {
        let mut profile = empty_profile();
        let mut opts = options(&[]);
        opts.record = true;
        let merged = merge_profile(&mut profile, &opts).unwrap();
        let names = &merged.record.notify;
        assert!(merged.record.recording);
        assert!(names.contains("mkdir") && names.contains("execve") && names.contains("read"));
        assert!(handover::RUNTIME_HANDOVER
            .iter()
            .all(|(name, _)| !names.contains(*name)));
        let (_, record) = split_listener_metadata(&profile).unwrap();
        assert!(record.unwrap().recording);
    }
}
