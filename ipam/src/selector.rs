//! Calico-style label selectors (`all()`, `rack == 'a'`, `has(x) && !has(y)`, `k in {'a','b'}`).
//!
//! Calico uses one small expression language wherever a resource picks nodes or endpoints by
//! label: `IPPool.spec.nodeSelector`, `BGPPeer.spec.nodeSelector` / `peerSelector`, network
//! policy. This module is the parser and the matcher, shared by the pool code here and by the
//! agent for BGP peers.
//!
//! Grammar (lowest precedence first), following the Calico selector reference:
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | "(" expr ")" | "all()" | "global()" | "has(" key ")" | key op
//! op      := "==" str | "!=" str | "in" set | "not" "in" set
//!          | "contains" str | "starts" "with" str | "ends" "with" str
//! set     := "{" [ str ( "," str )* ] "}"
//! str     := '...' | "..."          (no escapes, as in Calico)
//! key     := [A-Za-z0-9_./-]+        (label keys, including `kubernetes.io/hostname`)
//! ```
//!
//! An empty selector means `all()`, as an empty `nodeSelector` does in Calico. As in Calico,
//! `k != 'v'` and `k not in {...}` also match when the label `k` is absent.
//!
//! The parser is a bounded recursive descent: nesting deeper than [`MAX_DEPTH`] is rejected with
//! an error instead of risking the stack, because selectors come from users.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Deepest nesting of `!` / parentheses accepted; user input must never exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// A selector could not be parsed; `position` is the byte offset in the source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at byte {position}: {message}")]
pub struct SelectorError {
    /// Byte offset into the selector text where parsing failed.
    pub position: usize,
    /// What the parser expected or found.
    pub message: String,
}

/// Anything that can answer "what is the value of label `key`?" (node labels, peer labels).
pub trait Labels {
    /// The value of `key`, if the label is present.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

/// A parsed selector expression.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selector {
    /// `all()`: matches everything.
    #[default]
    All,
    /// `global()`: in Calico, matches non-namespaced resources; nodes are global, so it matches
    /// every label set here.
    Global,
    /// `has(k)`: the label is present, whatever its value.
    Has(String),
    /// `k == 'v'`.
    Eq(String, String),
    /// `k != 'v'` (also true when `k` is absent).
    Ne(String, String),
    /// `k in {'a','b'}`.
    In(String, BTreeSet<String>),
    /// `k not in {'a','b'}` (also true when `k` is absent).
    NotIn(String, BTreeSet<String>),
    /// `k contains 's'`.
    Contains(String, String),
    /// `k starts with 's'`.
    StartsWith(String, String),
    /// `k ends with 's'`.
    EndsWith(String, String),
    /// `!e`.
    Not(Box<Selector>),
    /// `a && b`.
    And(Box<Selector>, Box<Selector>),
    /// `a || b`.
    Or(Box<Selector>, Box<Selector>),
}

impl Selector {
    /// Parses selector text; empty (or all-whitespace) text is `all()`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { src: text, pos: 0 };
        p.skip_ws();
        if p.at_end() {
            return Ok(Selector::All);
        }
        let sel = p.expr(0)?;
        p.skip_ws();
        if !p.at_end() {
            return Err(p.error("unexpected trailing text"));
        }
        Ok(sel)
    }

    /// Evaluates the selector against a label set.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Selector::All | Selector::Global => true,
            Selector::Has(k) => labels.label(k).is_some(),
            Selector::Eq(k, v) => labels.label(k) == Some(v.as_str()),
            Selector::Ne(k, v) => labels.label(k) != Some(v.as_str()),
            Selector::In(k, set) => labels.label(k).is_some_and(|v| set.contains(v)),
            Selector::NotIn(k, set) => !labels.label(k).is_some_and(|v| set.contains(v)),
            Selector::Contains(k, s) => labels.label(k).is_some_and(|v| v.contains(s.as_str())),
            Selector::StartsWith(k, s) => {
                labels.label(k).is_some_and(|v| v.starts_with(s.as_str()))
            }
            Selector::EndsWith(k, s) => labels.label(k).is_some_and(|v| v.ends_with(s.as_str())),
            Selector::Not(e) => !e.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// Quotes a string value with whichever quote it does not contain (Calico has no escapes, and
/// the parser guarantees a value never contains both kinds).
fn quote(v: &str) -> String {
    if v.contains('\'') {
        format!("\"{v}\"")
    } else {
        format!("'{v}'")
    }
}

fn fmt_set(set: &BTreeSet<String>) -> String {
    let items: Vec<String> = set.iter().map(|v| quote(v)).collect();
    format!("{{{}}}", items.join(", "))
}

/// Canonical text: parenthesised wherever precedence would otherwise change the meaning, so
/// `Selector::parse(&s.to_string()) == s` holds.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => write!(f, "all()"),
            Selector::Global => write!(f, "global()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Eq(k, v) => write!(f, "{k} == {}", quote(v)),
            Selector::Ne(k, v) => write!(f, "{k} != {}", quote(v)),
            Selector::In(k, s) => write!(f, "{k} in {}", fmt_set(s)),
            Selector::NotIn(k, s) => write!(f, "{k} not in {}", fmt_set(s)),
            Selector::Contains(k, v) => write!(f, "{k} contains {}", quote(v)),
            Selector::StartsWith(k, v) => write!(f, "{k} starts with {}", quote(v)),
            Selector::EndsWith(k, v) => write!(f, "{k} ends with {}", quote(v)),
            Selector::Not(e) => match **e {
                Selector::And(..) | Selector::Or(..) => write!(f, "!({e})"),
                _ => write!(f, "!{e}"),
            },
            Selector::And(a, b) => {
                let side = |e: &Selector| match e {
                    Selector::Or(..) => format!("({e})"),
                    _ => e.to_string(),
                };
                // `&&` is left-associative: a right-hand `And` needs parentheses to round-trip.
                let right = match **b {
                    Selector::And(..) | Selector::Or(..) => format!("({b})"),
                    _ => b.to_string(),
                };
                write!(f, "{} && {}", side(a), right)
            }
            Selector::Or(a, b) => {
                let right = match **b {
                    Selector::Or(..) => format!("({b})"),
                    _ => b.to_string(),
                };
                write!(f, "{a} || {right}")
            }
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn error(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            position: self.pos,
            message: message.into(),
        }
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
    }

    /// Consumes `token` (after whitespace) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// Consumes a keyword only if it is not the prefix of a longer key (`in` vs `inside`).
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with(word) && !rest[word.len()..].starts_with(is_key_char) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), SelectorError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("expected `{token}`")))
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Selector, SelectorError> {
        let mut left = self.and(depth)?;
        while self.eat("||") {
            let right = self.and(depth)?;
            left = Selector::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Selector, SelectorError> {
        let mut left = self.unary(depth)?;
        while self.eat("&&") {
            let right = self.unary(depth)?;
            left = Selector::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Selector, SelectorError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH}")));
        }
        self.skip_ws();
        // `!=` never starts an operand, so a leading `!` is always negation.
        if self.eat("!") {
            let inner = self.unary(depth + 1)?;
            return Ok(Selector::Not(Box::new(inner)));
        }
        if self.eat("(") {
            let inner = self.expr(depth + 1)?;
            self.expect(")")?;
            return Ok(inner);
        }
        let start = self.pos;
        let key = self.key()?;
        match key.as_str() {
            "all" | "global" | "has" if self.rest().trim_start().starts_with('(') => {
                self.expect("(")?;
                let sel = match key.as_str() {
                    "all" => Selector::All,
                    "global" => Selector::Global,
                    _ => Selector::Has(self.key()?),
                };
                self.expect(")")?;
                return Ok(sel);
            }
            _ => {}
        }
        if self.eat("==") {
            return Ok(Selector::Eq(key, self.string()?));
        }
        if self.eat("!=") {
            return Ok(Selector::Ne(key, self.string()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(key, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.error("expected `in` after `not`"));
            }
            return Ok(Selector::NotIn(key, self.set()?));
        }
        if self.eat_word("contains") {
            return Ok(Selector::Contains(key, self.string()?));
        }
        if self.eat_word("starts") {
            if !self.eat_word("with") {
                return Err(self.error("expected `with` after `starts`"));
            }
            return Ok(Selector::StartsWith(key, self.string()?));
        }
        if self.eat_word("ends") {
            if !self.eat_word("with") {
                return Err(self.error("expected `with` after `ends`"));
            }
            return Ok(Selector::EndsWith(key, self.string()?));
        }
        self.skip_ws();
        Err(SelectorError {
            position: if self.at_end() { self.pos } else { start },
            message: format!("expected an operator after label `{key}`"),
        })
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest.find(|c: char| !is_key_char(c)).unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a label key"));
        }
        let key = rest[..len].to_string();
        self.pos += len;
        Ok(key)
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let rest = self.rest();
        let quote = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        let body = &rest[1..];
        let Some(end) = body.find(quote) else {
            return Err(self.error("unterminated string"));
        };
        let value = body[..end].to_string();
        self.pos += end + 2;
        Ok(value)
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect("{")?;
        let mut set = BTreeSet::new();
        if self.eat("}") {
            return Ok(set);
        }
        loop {
            set.insert(self.string()?);
            if self.eat("}") {
                return Ok(set);
            }
            self.expect(",")?;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn m(sel: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(sel).unwrap().matches(&labels(pairs))
    }

    #[test]
    fn empty_and_all_match_everything() {
        assert!(m("", &[]));
        assert!(m("   ", &[("a", "b")]));
        assert!(m("all()", &[]));
        assert!(m("global()", &[("x", "y")]));
    }

    #[test]
    fn equality_and_inequality() {
        assert!(m("rack == 'a'", &[("rack", "a")]));
        assert!(!m("rack == 'a'", &[("rack", "b")]));
        assert!(!m("rack == 'a'", &[]));
        assert!(m("rack != 'a'", &[("rack", "b")]));
        assert!(!m("rack != 'a'", &[("rack", "a")]));
        // Calico: `!=` matches when the label is absent.
        assert!(m("rack != 'a'", &[]));
        assert!(m("rack==\"a\"", &[("rack", "a")]));
    }

    #[test]
    fn has_and_not_has() {
        assert!(m("has(x)", &[("x", "")]));
        assert!(!m("has(x)", &[("y", "1")]));
        assert!(m("!has(x)", &[("y", "1")]));
        assert!(!m("! has( x )", &[("x", "1")]));
    }

    #[test]
    fn sets() {
        assert!(m("k in {'a','b'}", &[("k", "b")]));
        assert!(!m("k in {'a','b'}", &[("k", "c")]));
        assert!(!m("k in {'a','b'}", &[]));
        assert!(!m("k in {}", &[("k", "a")]));
        assert!(m("k not in {'a', 'b'}", &[("k", "c")]));
        assert!(m("k not in {'a'}", &[]));
        assert!(!m("k not in {'a'}", &[("k", "a")]));
    }

    #[test]
    fn string_operators() {
        assert!(m("zone contains 'west'", &[("zone", "us-west-1")]));
        assert!(m("zone starts with 'us-'", &[("zone", "us-west-1")]));
        assert!(m("zone ends with '-1'", &[("zone", "us-west-1")]));
        assert!(!m("zone ends with '-2'", &[("zone", "us-west-1")]));
        assert!(!m("zone contains 'x'", &[]));
    }

    #[test]
    fn boolean_precedence_and_parentheses() {
        // `&&` binds tighter than `||`.
        let l = &[("a", "1")];
        assert!(m("a == '1' || b == '1' && c == '1'", l));
        assert!(!m("(a == '1' || b == '1') && c == '1'", l));
        assert!(m("!(a == '2' || has(b))", l));
        assert!(m("has(a) && !has(b) && a in {'1'}", l));
    }

    #[test]
    fn keys_with_prefixes_and_keyword_like_names() {
        assert!(m(
            "kubernetes.io/hostname == 'node-1'",
            &[("kubernetes.io/hostname", "node-1")]
        ));
        // A key that starts with an operator word is still a key.
        assert!(m("inside == 'y'", &[("inside", "y")]));
        assert!(m("all == 'y'", &[("all", "y")]));
    }

    #[test]
    fn rejects_malformed_text_with_position() {
        for (text, pos) in [
            ("rack ==", 7),
            ("rack == 'a", 8),
            ("rack", 4),
            ("rack = 'a'", 0),
            ("has(", 4),
            ("(rack == 'a'", 12),
            ("rack == 'a' &&", 14),
            ("k in {'a' 'b'}", 10),
            ("k not {'a'}", 6),
            ("all() all()", 6),
            ("== 'a'", 0),
        ] {
            let err = Selector::parse(text).unwrap_err();
            assert_eq!(err.position, pos, "{text}: {err}");
        }
    }

    #[test]
    fn rejects_deep_nesting_without_overflowing() {
        let deep = format!("{}all(){}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Selector::parse(&deep).is_err());
        let bangs = format!("{}all()", "!".repeat(10_000));
        assert!(Selector::parse(&bangs).is_err());
        let ok = format!("{}all(){}", "(".repeat(20), ")".repeat(20));
        assert_eq!(Selector::parse(&ok).unwrap(), Selector::All);
    }

    #[test]
    fn serde_as_string() {
        let s: Selector = serde_json::from_str("\"rack in {'a','b'}\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"rack in {'a', 'b'}\"");
        assert!(serde_json::from_str::<Selector>("\"rack ==\"").is_err());
    }

    fn arb_value() -> impl Strategy<Value = String> {
        "[a-z0-9' -]{0,6}"
    }

    fn arb_selector() -> impl Strategy<Value = Selector> {
        let key = "[a-z][a-z0-9./_-]{0,8}";
        let leaf = prop_oneof![
            Just(Selector::All),
            key.prop_map(Selector::Has),
            (key, arb_value()).prop_map(|(k, v)| Selector::Eq(k, v)),
            (key, arb_value()).prop_map(|(k, v)| Selector::Ne(k, v)),
            (key, prop::collection::btree_set(arb_value(), 0..3))
                .prop_map(|(k, s)| Selector::In(k, s)),
            (key, prop::collection::btree_set(arb_value(), 0..3))
                .prop_map(|(k, s)| Selector::NotIn(k, s)),
            (key, arb_value()).prop_map(|(k, v)| Selector::StartsWith(k, v)),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Selector::Not(Box::new(e))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Selector::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Selector::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        #[test]
        fn display_round_trips(sel in arb_selector()) {
            let text = sel.to_string();
            prop_assert_eq!(Selector::parse(&text).unwrap(), sel, "text: {}", text);
        }

        #[test]
        fn never_panics_on_arbitrary_text(text in "[ -~]{0,40}") {
            let _ = Selector::parse(&text);
        }
    }
}
