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
    /// The reason is part of the message, not a `source`, so that a chain printed with `{:#}` says it once.
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
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

fn errnos_by_name() -> &'static HashMap<String, i32> {
    static BY_NAME: OnceLock<HashMap<String, i32>> = OnceLock::new();
    BY_NAME.get_or_init(|| {
        (1..4096)
            .map(Errno::from_raw)
            .filter(|errno| *errno != Errno::UnknownErrno)
            .map(|errno| (format!("{errno:?}"), errno as i32))
            .collect()
    })
}

/// Resolves an errno name such as "EPERM" through nix's table.
pub fn errno_from_name(name: &str) -> Option<i32> {
    errnos_by_name().get(name).copied()
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment), for
/// "did you mean" suggestions: `mkdri` is one typo away from `mkdir`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate nearest to `word`, when it is near enough to be a likely typo; ties go to the
/// alphabetically first, so the suggestion does not depend on table order.
fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| {
            (
                edit_distance(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, c)| c)
}

/// ", did you mean `x`?" or nothing.
fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
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
                    "unknown action {:?}, expected one of allow, log, deny, kill{}",
                    raw.value,
                    did_you_mean(&raw.value, Action::ALL.map(Action::as_str))
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
                    format!(
                        "unknown errno {name:?}, expected a name such as EPERM or a number{}",
                        did_you_mean(name, errnos_by_name().keys().map(String::as_str))
                    ),
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
                        "unknown op {:?}, expected one of eq, ne, lt, le, gt, ge, masked_eq{}",
                        arg.op.value,
                        did_you_mean(&arg.op.value, ARG_OPS.iter().map(|(word, _)| *word))
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

    /// Checks one rule, adding every error it has to `errors`; the rule only when it has none.
    fn rule(&self, raw: &Spanned<RawRule>, errors: &mut Vec<PolicyError>) -> Option<Rule> {
        fn keep<T>(result: Result<T, PolicyError>, errors: &mut Vec<PolicyError>) -> Option<T> {
            result.map_err(|e| errors.push(e)).ok()
        }
        let rule = &raw.value;
        let before = errors.len();
        if rule.name.value.trim().is_empty() {
            errors.push(self.error(&rule.name, "rule name must not be empty"));
        }
        if rule.syscalls.value.is_empty() {
            errors.push(self.error(&rule.syscalls, "a rule needs at least one syscall"));
        }
        for name in &rule.syscalls.value {
            if !syscalls::is_known(&name.value) {
                errors.push(self.error(
                    name,
                    format!(
                        "unknown syscall {:?}{}",
                        name.value,
                        did_you_mean(&name.value, syscalls::all_names())
                    ),
                ));
            } else if let Some(why) = handover::reason(&name.value) {
                // Checked here so that `check`, `run`, the agent and the OCI hook refuse the same files.
                errors.push(self.error(
                    name,
                    format!(
                        "the policy names {}, which cannot be flagged: {why}; the container would hang at start",
                        name.value
                    ),
                ));
            }
        }
        let action = keep(self.action(&rule.action), errors);
        let errno = match (&rule.errno, action) {
            (Some(errno), Some(Action::Deny | Action::Kill)) => keep(self.errno(errno), errors),
            (Some(errno), Some(_)) => {
                errors.push(self.error(errno, "errno is only for deny and kill rules"));
                None
            }
            (Some(errno), None) => keep(self.errno(errno), errors),
            (None, _) => Some(Errno::EPERM as i32),
        };
        let selector = Selector {
            namespace: keep(self.patterns(&rule.selector.namespace), errors).unwrap_or_default(),
            pod: keep(self.patterns(&rule.selector.pod), errors).unwrap_or_default(),
            container: keep(self.patterns(&rule.selector.container), errors).unwrap_or_default(),
            metadata: keep(self.patterns(&rule.selector.metadata), errors).unwrap_or_default(),
        };
        let args: Vec<ArgCondition> = rule
            .args
            .iter()
            .filter_map(|a| keep(self.arg(a), errors))
            .collect();
        if errors.len() > before {
            return None;
        }
        Some(Rule {
            name: Arc::from(rule.name.value.as_str()),
            selector,
            syscalls: rule
                .syscalls
                .value
                .iter()
                .map(|s| s.value.clone())
                .collect(),
            args,
            action: action?,
            errno: errno?,
        })
    }
}

/// Everything `switchboard check` says about a policy file: all its errors, and warnings
/// about rules that are valid but can never apply.
#[derive(Debug)]
pub struct CheckReport {
    /// The policy, when there are no errors.
    pub policy: Option<Policy>,
    /// Every error, in file order.
    pub errors: Vec<PolicyError>,
    /// `file:line:column: message` lines that do not make the policy invalid.
    pub warnings: Vec<String>,
}

impl Selector {
    fn same_patterns(&self, other: &Selector) -> bool {
        fn strings(patterns: &[glob::Pattern]) -> Vec<&str> {
            let mut all: Vec<&str> = patterns.iter().map(glob::Pattern::as_str).collect();
            all.sort_unstable();
            all.dedup();
            all
        }
        strings(&self.namespace) == strings(&other.namespace)
            && strings(&self.pod) == strings(&other.pod)
            && strings(&self.container) == strings(&other.container)
            && strings(&self.metadata) == strings(&other.metadata)
    }
}

impl Policy {
    /// Parses and validates policy text, collecting every error and the shadowed-rule warnings.
    pub fn check(text: &str, source: &str) -> CheckReport {
        let failed = |error| CheckReport {
            policy: None,
            errors: vec![error],
            warnings: Vec::new(),
        };
        let raw = match parse_yaml(text, source) {
            Ok(raw) => raw,
            Err(error) => return failed(error),
        };
        let checker = Checker { source };
        let mut errors = Vec::new();
        let default = match &raw.default {
            Some(word) => checker.action(word).map_err(|e| errors.push(e)).ok(),
            None => Some(Action::Log),
        };
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rules.len());
        let mut warnings = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for raw_rule in &raw.rules {
            let name = raw_rule.value.name.value.as_str();
            if names.contains(&name) {
                errors.push(checker.error(
                    &raw_rule.value.name,
                    format!("duplicate rule name {name:?}"),
                ));
            }
            names.push(name);
            let Some(rule) = checker.rule(raw_rule, &mut errors) else {
                continue;
            };
            // An earlier rule with the same match, no argument conditions and all of this rule's
            // syscalls decides every call this rule could: this one is dead text, likely a mistake
            // in the order (a kill after a deny of the same syscall).
            if let Some(earlier) = rules.iter().find(|r| {
                r.args.is_empty()
                    && r.selector.same_patterns(&rule.selector)
                    && rule.syscalls.iter().all(|s| r.syscalls.contains(s))
            }) {
                let at = &raw_rule.value.name;
                warnings.push(format!(
                    "{source}:{}:{}: warning: rule {:?} never applies: rule {:?} comes first with the same match, no argument conditions and all of its syscalls",
                    at.referenced.line(),
                    at.referenced.column(),
                    rule.name,
                    earlier.name
                ));
            }
            rules.push(rule);
        }
        errors.sort_by_key(|e| match e {
            PolicyError::Invalid { line, column, .. } => (*line, *column),
            PolicyError::Read { .. } => (0, 0),
        });
        let policy = match (errors.is_empty(), default) {
            (true, Some(default)) => Some(Policy {
                source: source.to_string(),
                default,
                rules,
            }),
            _ => None,
        };
        CheckReport {
            policy,
            errors,
            warnings,
        }
    }

    /// Parses and validates policy text; `source` names it in errors. Fails with the first error.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let mut report = Policy::check(text, source);
        match report.policy.take() {
            Some(policy) => Ok(policy),
            None => Err(report.errors.remove(0)),
        }
    }
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Read {
            path: path.to_path_buf(),
            error,
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

/// The YAML as the raw policy. Syntax is checked over the whole text first: deserializing
/// stops at the first field it misses, before the parser has reached a syntax error further on,
/// and would report "missing field" at the wrong place.
fn parse_yaml(text: &str, source: &str) -> Result<RawPolicy, PolicyError> {
    let located = |e: serde_saphyr::Error| {
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
    };
    serde_saphyr::from_str::<serde::de::IgnoredAny>(text).map_err(located)?;
    serde_saphyr::from_str(text).map_err(located)
}

/// The message without the location and source snippet the YAML library adds (our own
/// `file:line:column` prefix already says where).
fn first_line(rendered: &str) -> String {
    let mut line = rendered.lines().next().unwrap_or(rendered).trim();
    line = line.strip_prefix("error: ").unwrap_or(line);
    if let Some(rest) = line.strip_prefix("line ") {
        if let Some((position, message)) = rest.split_once(": ") {
            if position
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                line = message;
            }
        }
    }
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
            "policy.yaml:5:13: unknown action \"denyy\", expected one of allow, log, deny, kill; did you mean `deny`?"
        );
    }

    #[test]
    fn unknown_syscall_names_its_position() {
        let text = "rules:\n  - name: a\n    syscalls: [mkdir, mkdri]\n    action: deny\n";
        assert_eq!(
            error_of(text),
            "policy.yaml:3:23: unknown syscall \"mkdri\"; did you mean `mkdir`?"
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
    fn syntax_error_is_reported_where_the_indentation_breaks() {
        // Deserializing alone stopped at rule `a`'s mapping with "missing field `syscalls`" at 2:5.
        let text = "rules:\n  - name: a\n  syscalls: [mkdir]\n    action: log\n";
        let message = error_of(text);
        assert!(message.starts_with("policy.yaml:3:3: "), "{message}");
        assert!(!message.contains("missing field"), "{message}");
        assert!(
            !message.contains("line 3"),
            "position said twice: {message}"
        );
    }

    #[test]
    fn unknown_names_get_the_nearest_known_one() {
        let rule = |syscall: &str, action: &str, errno: &str| {
            format!("rules:\n  - name: a\n    syscalls: [{syscall}]\n    action: {action}\n    errno: {errno}\n")
        };
        let report = Policy::check(&rule("mkdri", "denyy", "EPREM"), "p");
        let messages: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages[0].ends_with("did you mean `mkdir`?"),
            "{messages:?}"
        );
        assert!(
            messages[1].ends_with("did you mean `deny`?"),
            "{messages:?}"
        );
        assert!(
            messages[2].ends_with("did you mean `EPERM`?"),
            "{messages:?}"
        );
        assert!(error_of(&rule("mkdiratt", "deny", "EPERM")).ends_with("did you mean `mkdirat`?"));
        // Nothing near: no guess.
        assert!(!error_of(&rule("frobnicate", "deny", "EPERM")).contains("did you mean"));
    }

    #[test]
    fn every_error_in_the_file_is_reported() {
        let text = "default: logg\nrules:\n  - name: a\n    syscalls: [mkdri, write]\n    action: log\n  - name: a\n    syscalls: [rmdir]\n    args: [{index: 7, op: eq, value: 1}]\n    action: kil\n";
        let report = Policy::check(text, "p");
        assert!(report.policy.is_none());
        let at: Vec<(u64, u64)> = report
            .errors
            .iter()
            .map(|e| match e {
                PolicyError::Invalid { line, column, .. } => (*line, *column),
                PolicyError::Read { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(
            at,
            [(1, 10), (4, 16), (4, 23), (6, 11), (8, 20), (9, 13)],
            "{:?}",
            report.errors
        );
        // `parse` (run, agent, hook) fails with the first of them.
        assert!(error_of(text).starts_with("policy.yaml:1:10: unknown action \"logg\""));
    }

    #[test]
    fn a_rule_an_earlier_one_shadows_is_warned_about() {
        let text = "rules:\n  - name: deny\n    match: {namespace: [prod-*]}\n    syscalls: [kexec_load, reboot]\n    action: deny\n  - name: kill\n    match: {namespace: [prod-*]}\n    syscalls: [kexec_load]\n    action: kill\n  - name: other-ns\n    match: {namespace: [dev]}\n    syscalls: [reboot]\n    action: kill\n  - name: narrower-first\n    syscalls: [mount]\n    args: [{index: 0, op: eq, value: 1}]\n    action: deny\n  - name: after-args\n    syscalls: [mount]\n    action: log\n";
        let report = Policy::check(text, "p");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.policy.unwrap().rules.len(),
            5,
            "a warning does not refuse the policy"
        );
        assert_eq!(
            report.warnings,
            ["p:6:11: warning: rule \"kill\" never applies: rule \"deny\" comes first with the same match, no argument conditions and all of its syscalls"]
        );
    }

    #[test]
    fn a_missing_file_says_why_once() {
        let error = Policy::load(Path::new("/nonexistent/policy.yaml")).unwrap_err();
        // anyhow's `{:#}` prints the message, then each source: the reason must be in one of them.
        assert!(std::error::Error::source(&error).is_none());
        let message = error.to_string();
        assert_eq!(
            message,
            "/nonexistent/policy.yaml: No such file or directory (os error 2)"
        );
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
