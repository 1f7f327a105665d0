//! The policy file: its YAML form, validation with file:line:column errors, and the embedded default.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::handover;
use crate::syscalls;

/// The policy used when no `--policy` is given: log every flagged syscall, deny nothing.
pub(crate) const EMBEDDED_DEFAULT: &str = include_str!("../../examples/default.yaml");

/// What the agent does with a flagged syscall; serialized as [`Action::as_str`] spells it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it run; counted, no event.
    Allow,
    /// Let it run; counted, with an event.
    Log,
    /// Fail it with an errno; counted, with an event.
    Deny,
    /// Fail it, then SIGKILL the container's init.
    Kill,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Allow, Action::Log, Action::Deny, Action::Kill];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Log => "log",
            Action::Deny => "deny",
            Action::Kill => "kill",
        }
    }

    fn parse(word: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == word)
    }

    /// Whether the syscall proceeds.
    pub fn lets_through(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }

    /// Position in per-action counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an argument is compared with a rule's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

const ARG_OPS: [(&str, ArgOp); 7] = [
    ("eq", ArgOp::Eq),
    ("ne", ArgOp::Ne),
    ("lt", ArgOp::Lt),
    ("le", ArgOp::Le),
    ("gt", ArgOp::Gt),
    ("ge", ArgOp::Ge),
    ("masked_eq", ArgOp::MaskedEq),
];

/// One argument condition; all of a rule's conditions must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCondition {
    pub index: usize,
    pub op: ArgOp,
    pub value: u64,
    pub mask: u64,
}

impl ArgCondition {
    #[inline]
    pub fn holds(&self, args: &[u64; 6]) -> bool {
        let arg = args[self.index];
        match self.op {
            ArgOp::Eq => arg == self.value,
            ArgOp::Ne => arg != self.value,
            ArgOp::Lt => arg < self.value,
            ArgOp::Le => arg <= self.value,
            ArgOp::Gt => arg > self.value,
            ArgOp::Ge => arg >= self.value,
            ArgOp::MaskedEq => arg & self.mask == self.value,
        }
    }
}

/// Which containers a rule applies to; an empty list matches everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub namespace: Vec<glob::Pattern>,
    pub pod: Vec<glob::Pattern>,
    pub container: Vec<glob::Pattern>,
    pub metadata: Vec<glob::Pattern>,
}

/// The fields of a container that selectors look at.
#[derive(Debug, Clone, Copy)]
pub struct SelectorInput<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub metadata: &'a str,
}

impl Selector {
    pub fn matches(&self, who: SelectorInput<'_>) -> bool {
        fn any(patterns: &[glob::Pattern], value: &str) -> bool {
            patterns.is_empty() || patterns.iter().any(|p| p.matches(value))
        }
        any(&self.namespace, who.namespace)
            && any(&self.pod, who.pod)
            && any(&self.container, who.container)
            && any(&self.metadata, who.metadata)
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    pub selector: Selector,
    pub syscalls: Vec<String>,
    pub args: Vec<ArgCondition>,
    pub action: Action,
    pub errno: i32,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it came from, for messages.
    pub source: String,
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name}:{line}:{column}: {message}")]
    Invalid {
        source_name: String,
        line: u64,
        column: u64,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(default, rename = "match")]
    selector: RawSelector,
    syscalls: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    args: Vec<Spanned<RawArg>>,
    action: Spanned<String>,
    errno: Option<Spanned<RawErrno>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    namespace: Vec<Spanned<String>>,
    #[serde(default)]
    pod: Vec<Spanned<String>>,
    #[serde(default)]
    container: Vec<Spanned<String>>,
    #[serde(default)]
    metadata: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    index: Spanned<u64>,
    op: Spanned<String>,
    value: u64,
    mask: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawErrno {
    Number(i64),
    Name(String),
}

/// Resolves an errno name such as "EPERM" through nix's table.
pub fn errno_from_name(name: &str) -> Option<i32> {
    static BY_NAME: OnceLock<HashMap<String, i32>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| {
            (1..4096)
                .map(Errno::from_raw)
                .filter(|errno| *errno != Errno::UnknownErrno)
                .map(|errno| (format!("{errno:?}"), errno as i32))
                .collect()
        })
        .get(name)
        .copied()
}

/// The symbolic name of an errno value, e.g. "EPERM".
pub fn errno_name(errno: i32) -> String {
    match Errno::from_raw(errno) {
        Errno::UnknownErrno => errno.to_string(),
        known => format!("{known:?}"),
    }
}

struct Checker<'a> {
    source: &'a str,
}

impl Checker<'_> {
    fn error<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            source_name: self.source.to_string(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            message: message.into(),
        }
    }

    fn patterns(&self, raw: &[Spanned<String>]) -> Result<Vec<glob::Pattern>, PolicyError> {
        raw.iter()
            .map(|p| {
                glob::Pattern::new(&p.value)
                    .map_err(|e| self.error(p, format!("bad pattern {:?}: {e}", p.value)))
            })
            .collect()
    }

    fn action(&self, raw: &Spanned<String>) -> Result<Action, PolicyError> {
        Action::parse(&raw.value).ok_or_else(|| {
            self.error(
                raw,
                format!(
                    "unknown action {:?}, expected one of allow, log, deny, kill",
                    raw.value
                ),
            )
        })
    }

    fn errno(&self, raw: &Spanned<RawErrno>) -> Result<i32, PolicyError> {
        match &raw.value {
            RawErrno::Number(n) if (1..4096).contains(n) => {
                Ok(i32::try_from(*n).expect("1 to 4095 fits"))
            }
            RawErrno::Number(n) => Err(self.error(
                raw,
                format!("errno {n} is out of range, expected 1 to 4095 or a name such as EPERM"),
            )),
            RawErrno::Name(name) => errno_from_name(name).ok_or_else(|| {
                self.error(
                    raw,
                    format!("unknown errno {name:?}, expected a name such as EPERM or a number"),
                )
            }),
        }
    }

    fn arg(&self, raw: &Spanned<RawArg>) -> Result<ArgCondition, PolicyError> {
        let arg = &raw.value;
        if arg.index.value > 5 {
            return Err(self.error(&arg.index, "argument index must be 0 to 5"));
        }
        let op = ARG_OPS
            .iter()
            .find(|(word, _)| *word == arg.op.value)
            .map(|(_, op)| *op)
            .ok_or_else(|| {
                self.error(
                    &arg.op,
                    format!(
                        "unknown op {:?}, expected one of eq, ne, lt, le, gt, ge, masked_eq",
                        arg.op.value
                    ),
                )
            })?;
        let mask = match (&arg.mask, op) {
            (Some(mask), ArgOp::MaskedEq) => mask.value,
            (None, ArgOp::MaskedEq) => return Err(self.error(raw, "masked_eq needs a mask")),
            (Some(mask), _) => return Err(self.error(mask, "mask is only for masked_eq")),
            (None, _) => u64::MAX,
        };
        Ok(ArgCondition {
            index: usize::try_from(arg.index.value).expect("checked to be 0 to 5"),
            op,
            value: arg.value,
            mask,
        })
    }

    fn rule(&self, raw: &Spanned<RawRule>) -> Result<Rule, PolicyError> {
        let rule = &raw.value;
        if rule.name.value.trim().is_empty() {
            return Err(self.error(&rule.name, "rule name must not be empty"));
        }
        if rule.syscalls.value.is_empty() {
            return Err(self.error(&rule.syscalls, "a rule needs at least one syscall"));
        }
        for name in &rule.syscalls.value {
            if !syscalls::is_known(&name.value) {
                return Err(self.error(name, format!("unknown syscall {:?}", name.value)));
            }
            // Checked here so that `check`, `run`, the agent and the OCI hook refuse the same files.
            if let Some(why) = handover::reason(&name.value) {
                return Err(self.error(
                    name,
                    format!(
                        "the policy names {}, which cannot be flagged: {why}; the container would hang at start",
                        name.value
                    ),
                ));
            }
        }
        let action = self.action(&rule.action)?;
        let errno = match (&rule.errno, action) {
            (Some(errno), Action::Deny | Action::Kill) => self.errno(errno)?,
            (Some(errno), _) => {
                return Err(self.error(errno, "errno is only for deny and kill rules"));
            }
            (None, _) => Errno::EPERM as i32,
        };
        Ok(Rule {
            name: Arc::from(rule.name.value.as_str()),
            selector: Selector {
                namespace: self.patterns(&rule.selector.namespace)?,
                pod: self.patterns(&rule.selector.pod)?,
                container: self.patterns(&rule.selector.container)?,
                metadata: self.patterns(&rule.selector.metadata)?,
            },
            syscalls: rule
                .syscalls
                .value
                .iter()
                .map(|s| s.value.clone())
                .collect(),
            args: rule
                .args
                .iter()
                .map(|a| self.arg(a))
                .collect::<Result<_, _>>()?,
            action,
            errno,
        })
    }
}

impl Policy {
    /// Parses and validates policy text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|at| (at.line(), at.column()))
                .unwrap_or((1, 1));
            PolicyError::Invalid {
                source_name: source.to_string(),
                line,
                column,
                message: first_line(&e.to_string()),
            }
        })?;
        let checker = Checker { source };
        let default = match &raw.default {
            Some(word) => checker.action(word)?,
            None => Action::Log,
        };
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rules.len());
        for raw_rule in &raw.rules {
            let rule = checker.rule(raw_rule)?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(checker.error(
                    &raw_rule.value.name,
                    format!("duplicate rule name {:?}", rule.name),
                ));
            }
            rules.push(rule);
        }
        Ok(Policy {
            source: source.to_string(),
            default,
            rules,
        })
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// The policy from `path`, or the embedded default.
    pub fn load_or_default(path: Option<&Path>) -> Result<Policy, PolicyError> {
        match path {
            Some(path) => Policy::load(path),
            None => Policy::parse(EMBEDDED_DEFAULT, "<embedded default policy>"),
        }
    }

    /// Every syscall name some rule names, sorted and without repeats.
    pub fn named_syscalls(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.syscalls.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The message without the location and source snippet the YAML library appends.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or(rendered).trim();
    match line.find(" at line ") {
        Some(cut) => line[..cut].to_string(),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Policy::parse(text, "policy.yaml").unwrap_err().to_string()
    }

    #[test]
    fn full_example_parses() {
        let policy = Policy::parse(
            "default: log\nrules:\n  - name: no-mkdir\n    match:\n      namespace: [prod-*]\n    syscalls: [mkdir, mkdirat]\n    args:\n      - { index: 0, op: eq, value: 16 }\n      - { index: 1, op: masked_eq, mask: 0xff, value: 7 }\n    action: deny\n    errno: EACCES\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(policy.default, Action::Log);
        let rule = &policy.rules[0];
        assert_eq!(&*rule.name, "no-mkdir");
        assert_eq!(rule.errno, libc::EACCES);
        assert_eq!(rule.args.len(), 2);
        assert_eq!(rule.args[1].mask, 0xff);
        assert!(rule.selector.matches(SelectorInput {
            namespace: "prod-eu",
            pod: "",
            container: "",
            metadata: ""
        }));
        assert!(!rule.selector.matches(SelectorInput {
            namespace: "dev",
            pod: "",
            container: "",
            metadata: ""
        }));
    }

    #[test]
    fn unknown_action_names_line_and_column() {
        let text = "default: log\nrules:\n  - name: a\n    syscalls: [mkdir]\n    action: denyy\n";
        assert_eq!(
            error_of(text),
            "policy.yaml:5:13: unknown action \"denyy\", expected one of allow, log, deny, kill"
        );
    }

    #[test]
    fn unknown_syscall_names_its_position() {
        let text = "rules:\n  - name: a\n    syscalls: [mkdir, mkdri]\n    action: deny\n";
        assert_eq!(
            error_of(text),
            "policy.yaml:3:23: unknown syscall \"mkdri\""
        );
    }

    #[test]
    fn handover_syscalls_are_refused_where_they_are_named() {
        let text = "rules:\n  - name: a\n    syscalls: [mkdir, write]\n    action: log\n";
        let message = error_of(text);
        assert!(
            message.starts_with(
                "policy.yaml:3:23: the policy names write, which cannot be flagged: runc writes"
            ),
            "{message}"
        );
    }

    #[test]
    fn duplicate_rule_name_names_the_second() {
        let text = "rules:\n  - name: a\n    syscalls: [mkdir]\n    action: deny\n  - name: a\n    syscalls: [rmdir]\n    action: log\n";
        assert_eq!(
            error_of(text),
            "policy.yaml:5:11: duplicate rule name \"a\""
        );
    }

    #[test]
    fn errno_by_name_and_number() {
        assert_eq!(errno_from_name("EPERM"), Some(1));
        assert_eq!(errno_from_name("EACCES"), Some(13));
        assert_eq!(errno_from_name("ENOPE"), None);
        let text = "rules:\n  - name: a\n    syscalls: [mkdir]\n    action: deny\n    errno: 38\n";
        assert_eq!(Policy::parse(text, "p").unwrap().rules[0].errno, 38);
        let text =
            "rules:\n  - name: a\n    syscalls: [mkdir]\n    action: log\n    errno: EPERM\n";
        assert!(error_of(text).starts_with("policy.yaml:5:12: errno is only for"));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let message = error_of("rules:\n  - name: a\n    syscalls: [mkdir\n");
        assert!(message.starts_with("policy.yaml:"), "{message}");
        let message = error_of("rules:\n  - name: a\n    syscals: [mkdir]\n    action: log\n");
        assert!(message.starts_with("policy.yaml:3:"), "{message}");
    }

    #[test]
    fn arg_conditions_compare() {
        let cond = ArgCondition {
            index: 1,
            op: ArgOp::MaskedEq,
            value: 0x40,
            mask: 0xc0,
        };
        assert!(cond.holds(&[0, 0x41, 0, 0, 0, 0]));
        assert!(!cond.holds(&[0, 0x81, 0, 0, 0, 0]));
    }

    #[test]
    fn every_example_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
        assert!(checked >= 4, "only {checked} examples");
    }

    #[test]
    fn embedded_default_is_valid() {
        let policy = Policy::load_or_default(None).unwrap();
        assert_eq!(policy.default, Action::Log);
        assert!(policy.rules.iter().all(|r| r.action.lets_through()));
        assert!(policy.named_syscalls().contains(&"mkdir".to_string()));
    }
}
