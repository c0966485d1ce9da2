//! One YAML document read the way kubectl and Helm read it, into JSON.
//!
//! kubectl and Helm turn YAML into JSON with sigs.k8s.io/yaml, which decodes with its fork
//! of go-yaml v2 (kubernetes-sigs/yaml goyaml.v2/resolve.go): YAML 1.1 scalar rules, so
//! the plain scalar `0644` is the octal integer 420 and `yes`/`on` are booleans.
//! serde-saphyr follows YAML 1.2 (`0644` is 644). A file mode or a port read differently
//! is a different object on the cluster, so manifests are read here with go-yaml v2's
//! rules, and what pulsedev cannot read exactly as kubectl would is refused with its line.
//!
//! Owns: building a `serde_json::Value` from the parser's events (anchors, aliases and
//! `<<` merge keys included) and the scalar rules. Must not know about Kubernetes objects
//! (that is `manifest`).
//!
//! The rules of an untagged plain scalar, as `resolve` in goyaml.v2/resolve.go applies
//! them (quoted and block scalars are always strings):
//! - exact spellings `y Y yes Yes YES true True TRUE on On ON` are true, `n N no No NO
//!   false False FALSE off Off OFF` false, `~ null Null NULL` and the empty scalar null;
//! - a scalar starting with a digit or sign: underscores are dropped, then Go's
//!   `strconv.ParseInt(s, 0, 64)` (`0x`, `0o`, `0b` prefixes, a leading `0` means octal,
//!   a sign allowed), then `ParseUint`, then a YAML-style float
//!   (`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`), so `08` is the float 8;
//! - a scalar starting with `.` is a float when Go's `ParseFloat` reads it (`.5`);
//!   `.inf`, `.nan` and their spellings are infinities and NaN, which JSON cannot carry
//!   (kubectl fails on them): refused;
//! - timestamps stay strings (goyaml.v2 decode.go keeps a timestamp-looking scalar a
//!   string when decoding into `interface{}`); everything else is a string.
//!
//! Floats that hold an integer are written as JSON integers (`8`, not `8.0`), as Go's
//! `encoding/json` writes a float64 (and as the API server's decoder needs for an integer
//! field). Mapping keys become strings as sigs.k8s.io/yaml's `convertToJSONableObject`
//! makes them: a boolean key is `"true"`/`"false"`, an integer key its decimal digits;
//! other non-string keys are refused. Tags: `!!str` and non-core tags (`!foo`, `!`) make
//! a string; `!!int`, `!!float`, `!!bool`, `!!null` must agree with what the scalar is.
//! Merge keys follow goyaml.v2 decode.go: merged in place in document order (a later
//! `<<` overrides an earlier explicit key), a sequence of mappings merged last to first.
//! A key defined twice is refused (its value would depend on the reader).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// A problem and the 1-based line (within the document text) where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// What a plain scalar resolves to.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

const TRUE: [&str; 11] = [
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
];
const FALSE: [&str; 11] = [
    "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
];

/// goyaml.v2 `resolve` for an untagged plain scalar.
fn resolve(s: &str) -> Scalar {
    if TRUE.contains(&s) {
        return Scalar::Bool(true);
    }
    if FALSE.contains(&s) {
        return Scalar::Bool(false);
    }
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if first == b'.' {
        return match go_parse_float(s) {
            Some(f) => Scalar::Float(f),
            None => Scalar::Str,
        };
    }
    if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
        return Scalar::Str;
    }
    if looks_like_timestamp(s) {
        return Scalar::Str;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if let Some(i) = go_parse_int(&plain) {
        return Scalar::Int(i);
    }
    if yaml_style_float(&plain)
        && let Some(f) = go_parse_float(&plain)
    {
        return Scalar::Float(f);
    }
    // goyaml.v2 retries `0b`/`-0b` by hand; ParseInt(s, 0) already reads them, so
    // nothing is left to find here.
    Scalar::Str
}

/// goyaml.v2 `parseTimestamp`'s quick check plus its formats, enough to know a scalar is
/// one: four digits, `-`, then a date Go's layouts accept. Any such scalar stays a string.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    // "2006-1-2" then optionally [Tt ] and a time: month and day of one or two digits.
    let rest = &s[5..];
    let mut parts = rest.splitn(2, '-');
    let month = parts.next().unwrap_or_default();
    let Some(tail) = parts.next() else {
        return false;
    };
    let day_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    let ok_num = |t: &str, max: u32| {
        (1..=2).contains(&t.len())
            && t.bytes().all(|c| c.is_ascii_digit())
            && t.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n))
    };
    if !ok_num(month, 12) || !ok_num(&tail[..day_len], 31) {
        return false;
    }
    let after = &tail[day_len..];
    after.is_empty() || after.starts_with(['T', 't', ' '])
}

/// Go's `strconv.ParseInt(s, 0, 64)`, falling back to `ParseUint(s, 0, 64)` as goyaml.v2
/// does: an optional sign, then `0x`/`0o`/`0b` (either case) or a leading `0` (octal).
fn go_parse_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if lower.len() >= 3 && lower.starts_with("0x") {
        (16, &body[2..])
    } else if lower.len() >= 3 && lower.starts_with("0o") {
        (8, &body[2..])
    } else if lower.len() >= 3 && lower.starts_with("0b") {
        (2, &body[2..])
    } else if let Some(rest) = body.strip_prefix('0') {
        (8, rest)
    } else {
        (10, body)
    };
    if !digits.bytes().all(|c| (c as char).is_digit(radix)) {
        return None;
    }
    let magnitude = if digits.is_empty() {
        0
    } else {
        u64::from_str_radix(digits, radix).ok()?
    };
    let v = i128::from(magnitude);
    if neg {
        // ParseInt: down to i64::MIN. ParseUint takes no sign.
        (v <= i128::from(i64::MAX) + 1).then_some(-v)
    } else {
        Some(v)
    }
}

/// goyaml.v2's `yamlStyleFloat` regular expression.
fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for the decimal forms the callers pass (a leading
/// `.` or a `yamlStyleFloat` match); Rust's parser reads the same decimal syntax.
fn go_parse_float(s: &str) -> Option<f64> {
    if !s
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// A float as Go's `encoding/json` writes it: integers without a fraction.
fn float_value(f: f64) -> Option<Value> {
    if !f.is_finite() {
        return None;
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if f.abs() < 9_007_199_254_740_992.0 {
            return Some(Value::from(f as i64));
        }
        // Exact in f64 but beyond 2^53: Go prints the same digits.
        return Some(Value::Number(Number::from_f64(f)?));
    }
    Number::from_f64(f).map(Value::Number)
}

fn int_value(i: i128) -> Option<Value> {
    if let Ok(v) = i64::try_from(i) {
        return Some(Value::from(v));
    }
    u64::try_from(i).ok().map(Value::from)
}

/// The core-schema name of a tag (`str`, `int`, ...), or `None` for another tag.
fn core(tag: &Tag) -> Option<String> {
    tag.suffix_in_namespace("tag:yaml.org,2002:")
        .map(|s| s.into_owned())
}

struct Builder {
    anchors: HashMap<usize, Value>,
    problems: Vec<Problem>,
}

/// A node under construction.
enum Frame {
    Seq {
        anchor: usize,
        items: Vec<Value>,
    },
    Map {
        anchor: usize,
        entries: Map<String, Value>,
        /// The key read, waiting for its value: `None` between entries.
        key: Option<Key>,
    },
}

enum Key {
    Plain(String),
    Merge(usize),
}

impl Builder {
    fn problem(&mut self, span: &Span, message: String) {
        self.problems.push(Problem {
            line: span.start.line(),
            message,
        });
    }

    /// The JSON value of a scalar event, or `None` (and a problem) if it has none.
    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        span: &Span,
    ) -> Option<Value> {
        let quoted = style != ScalarStyle::Plain;
        let tag_name = tag.map(|t| core(t).unwrap_or_else(|| "custom".into()));
        match tag_name.as_deref() {
            Some("str") | Some("binary") | Some("custom") => {
                return Some(Value::String(text.to_string()));
            }
            None if quoted => return Some(Value::String(text.to_string())),
            _ => {}
        }
        let resolved = resolve(text);
        let agrees = matches!(
            (tag_name.as_deref(), &resolved),
            (None, _)
                | (Some("int"), Scalar::Int(_))
                | (Some("float"), Scalar::Int(_) | Scalar::Float(_))
                | (Some("bool"), Scalar::Bool(_))
                | (Some("null"), Scalar::Null)
        );
        if !agrees {
            self.problem(
                span,
                format!("`{text}` is not a valid !!{}", tag_name.unwrap_or_default()),
            );
            return None;
        }
        let value = match resolved {
            Scalar::Null => Some(Value::Null),
            Scalar::Bool(b) => Some(Value::Bool(b)),
            Scalar::Int(i) => int_value(i),
            Scalar::Float(f) => float_value(f),
            Scalar::Str => Some(Value::String(text.to_string())),
        };
        if value.is_none() {
            self.problem(
                span,
                format!(
                    "`{text}` is a number JSON cannot carry (kubectl fails on it too); quote it if it is a string"
                ),
            );
        }
        value
    }

    /// A mapping key as sigs.k8s.io/yaml makes it a JSON key.
    fn key(&mut self, v: &Value, span: &Span) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            other => {
                self.problem(
                    span,
                    format!("a mapping key must be a string, found {other}; quote it"),
                );
                None
            }
        }
    }
}

/// Reads one YAML document (the text between two `---` markers) as kubectl would.
/// `Ok(None)` for a document holding no node.
pub fn document(text: &str) -> std::result::Result<Option<Value>, Vec<Problem>> {
    let mut b = Builder {
        anchors: HashMap::new(),
        problems: Vec::new(),
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let line = e.marker().line();
                b.problems.push(Problem {
                    line,
                    message: format!("invalid YAML: {}", e.info()),
                });
                return Err(b.problems);
            }
        };
        // A finished node: its value (with its anchor, `0` for none).
        let done: Option<(Value, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => None,
            Event::DocumentStart(..) => {
                if root.is_some() {
                    b.problem(&span, "a second document without a `---` marker".into());
                    return Err(b.problems);
                }
                None
            }
            Event::Alias(id) => match b.anchors.get(&id) {
                Some(v) => Some((v.clone(), 0)),
                None => {
                    b.problem(&span, "an alias to an unknown anchor".into());
                    return Err(b.problems);
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                // `<<` as a plain key is goyaml.v2's merge key.
                if let Some(Frame::Map { key: k @ None, .. }) = stack.last_mut()
                    && style == ScalarStyle::Plain
                    && tag.is_none()
                    && text == "<<"
                {
                    *k = Some(Key::Merge(span.start.line()));
                    continue;
                }
                match b.scalar(&text, style, tag.as_deref(), &span) {
                    Some(v) => Some((v, anchor)),
                    None => Some((Value::Null, anchor)),
                }
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq {
                    anchor,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map {
                    anchor,
                    entries: Map::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { anchor, items }) => Some((Value::Array(items), anchor)),
                _ => unreachable!("the parser balances sequences"),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    anchor, entries, ..
                }) => Some((Value::Object(entries), anchor)),
                _ => unreachable!("the parser balances mappings"),
            },
            _ => None,
        };
        let Some((value, anchor)) = done else {
            continue;
        };
        if anchor != 0 {
            b.anchors.insert(anchor, value.clone());
        }
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if let Some(k) = b.key(&value, &span) {
                        if entries.contains_key(&k) {
                            b.problem(&span, format!("key `{k}` is defined twice"));
                        }
                        *key = Some(Key::Plain(k));
                    } else {
                        *key = Some(Key::Plain(String::new()));
                    }
                }
                Some(Key::Plain(k)) => {
                    entries.insert(k, value);
                }
                Some(Key::Merge(line)) => {
                    let maps: Vec<Value> = match value {
                        Value::Object(_) => vec![value],
                        // Last to first, so the first mapping wins.
                        Value::Array(items) => items.into_iter().rev().collect(),
                        _ => Vec::new(),
                    };
                    for m in maps {
                        match m {
                            Value::Object(o) => entries.extend(o),
                            _ => b.problems.push(Problem {
                                line,
                                message: "`<<` must merge a mapping or a sequence of mappings"
                                    .into(),
                            }),
                        }
                    }
                }
            },
        }
    }
    if b.problems.is_empty() {
        Ok(root)
    } else {
        Err(b.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Value {
        document(text).unwrap().unwrap()
    }

    #[test]
    fn numbers_are_read_as_go_yaml_v2_reads_them() {
        let v = read(
            "octal: 0644\nzero_four: 0400\nhex: 0x1F\nupper_hex: 0X1f\no: 0o17\nbin: 0b101\nneg_bin: -0b11\nunder: 1_000\nplus: +12\nneg_octal: -010\nzero: 0\nzeros: 00\neight: 08\nexp: 1e3\nfrac: 1.5\nwhole: 2.0\ndot: .5\nbig: 18446744073709551615\n",
        );
        assert_eq!(
            v,
            json!({"octal": 420, "zero_four": 256, "hex": 31, "upper_hex": 31, "o": 15,
                "bin": 5, "neg_bin": -3, "under": 1000, "plus": 12, "neg_octal": -8, "zero": 0,
                "zeros": 0, "eight": 8, "exp": 1000, "frac": 1.5, "whole": 2, "dot": 0.5,
                "big": 18446744073709551615u64})
        );
        // Integers, not floats, in the JSON sent.
        assert_eq!(serde_json::to_string(&v["octal"]).unwrap(), "420");
        assert_eq!(serde_json::to_string(&v["eight"]).unwrap(), "8");
    }

    #[test]
    fn booleans_and_nulls_are_yaml_1_1_exact_spellings() {
        let v = read(
            "a: yes\nb: No\nc: on\nd: OFF\ne: y\nf: N\ng: TRUE\nh: yEs\ni: ~\nj:\nk: Null\nl: nULL\n",
        );
        assert_eq!(
            v,
            json!({"a": true, "b": false, "c": true, "d": false, "e": true, "f": false,
                "g": true, "h": "yEs", "i": null, "j": null, "k": null, "l": "nULL"})
        );
    }

    #[test]
    fn quoted_block_and_tagged_scalars_stay_strings() {
        // A quoted scalar with an explicit tag is resolved by the tag (goyaml.v2
        // decode.go `scalar`: only an untagged non-plain scalar skips `resolve`).
        let v = read(
            "a: \"0644\"\nb: '0644'\nc: |\n  0644\nd: !!str 0644\ne: !custom 0644\nf: ! yes\ng: !!int \"0644\"\nh: \"yes\"\n",
        );
        assert_eq!(
            v,
            json!({"a": "0644", "b": "0644", "c": "0644\n", "d": "0644", "e": "0644",
                "f": "yes", "g": 420, "h": "yes"})
        );
    }

    #[test]
    fn other_scalars_are_strings() {
        let v = read(
            "ts: 2026-11-30\nts2: 2026-11-30T12:00:00Z\nver: 1.2.3\nsexa: 1:20\nimg: nginx:1.27\nsign: -x\nword: .hidden\nip: 10.0.0.1\nbin_bad: 0b\nhex_bad: 0xZZ\n",
        );
        assert_eq!(
            v,
            json!({"ts": "2026-11-30", "ts2": "2026-11-30T12:00:00Z", "ver": "1.2.3",
                "sexa": "1:20", "img": "nginx:1.27", "sign": "-x", "word": ".hidden",
                "ip": "10.0.0.1", "bin_bad": "0b", "hex_bad": "0xZZ"})
        );
    }

    #[test]
    fn keys_become_strings_as_sigs_yaml_makes_them() {
        let v = read("on: 1\n0x10: 2\nplain: 3\n\"yes\": 4\n");
        assert_eq!(v, json!({"true": 1, "16": 2, "plain": 3, "yes": 4}));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let v = read(
            "base: &b {mode: 0644, name: x}\nuse: *b\nmerged:\n  name: early\n  <<: *b\n  extra: 1\nlist:\n  <<: [{a: 1, b: 1}, {a: 2, c: 2}]\n",
        );
        assert_eq!(v["use"], json!({"mode": 420, "name": "x"}));
        // goyaml.v2 merges in place: the `<<` after `name` overrides it.
        assert_eq!(v["merged"], json!({"name": "x", "mode": 420, "extra": 1}));
        // The first mapping of a merged sequence wins.
        assert_eq!(v["list"], json!({"a": 1, "c": 2, "b": 1}));
    }

    #[test]
    fn what_json_cannot_carry_or_is_ambiguous_is_refused_with_its_line() {
        let e = document("a: 1\nb: .inf\nc: .nan\n").unwrap_err();
        assert_eq!(e.iter().map(|p| p.line).collect::<Vec<_>>(), [2, 3]);
        assert!(
            e[0].message
                .contains("`.inf` is a number JSON cannot carry"),
            "{e:?}"
        );
        let e = document("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e[0].line, 3);
        assert_eq!(e[0].message, "key `a` is defined twice");
        let e = document("x:\n  1.5: a\n").unwrap_err();
        assert_eq!(e[0].line, 2);
        let e = document("a: !!int yes\n").unwrap_err();
        assert_eq!(e[0].message, "`yes` is not a valid !!int");
        let e = document("a: [1\n").unwrap_err();
        assert!(e[0].message.starts_with("invalid YAML"), "{e:?}");
    }

    #[test]
    fn an_empty_document_has_no_node() {
        assert_eq!(document("# only a comment\n").unwrap(), None);
        assert_eq!(read("0644\n"), json!(420));
    }

    #[test]
    fn go_parse_int_edges() {
        assert_eq!(
            go_parse_int("-9223372036854775808"),
            Some(i128::from(i64::MIN))
        );
        assert_eq!(go_parse_int("-9223372036854775809"), None);
        assert_eq!(go_parse_int("+"), None);
        assert_eq!(go_parse_int("0"), Some(0));
        assert_eq!(go_parse_int("09"), None);
        assert_eq!(go_parse_int("0b12"), None);
        assert!(yaml_style_float("08"));
        assert!(yaml_style_float("-1.e5"));
        assert!(!yaml_style_float("1e"));
        assert!(!yaml_style_float("."));
        assert!(!yaml_style_float("1.2.3"));
    }
}
