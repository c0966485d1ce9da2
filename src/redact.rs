//! Known secret values, and scrubbing them out of every string pulsedev writes.
//!
//! Owns: the process-wide set of secret values (the dev credentials pulsedev generates
//! or reads back from the cluster) and the replacement of each value, raw or base64,
//! by `[redacted secret <name>:<key>]`. `ui` runs everything it prints (progress lines,
//! warnings, the error with its details and hint, JSON documents, stdout data, -v
//! lines) through [`scrub`] / [`scrub_json`]: one place at the output boundary, so a
//! server that echoes a request body (an admission webhook, a 422 Invalid quoting the
//! value) cannot make a call site leak it. Must not print or store a value anywhere.
//!
//! Modelled on Tilt: pkg/model/secret.go (`SecretSet.AddSecret` keeps the value and its
//! `base64.StdEncoding` form with the replacement `[redacted secret name:key]`) and
//! pkg/model/logstore/logstore.go (`Append` scrubs every log event before it is stored,
//! so no reader ever sees the value).

use std::borrow::Cow;
use std::sync::RwLock;

use aho_corasick::AhoCorasick;
use base64::Engine as _;

/// Values shorter than this are not treated as secrets: scrubbing "admin" or a short
/// word would mangle ordinary output and protect nothing.
pub const MIN_LEN: usize = 8;

/// The known values and their replacements, with one automaton over all the values so
/// that [`scrub`] reads the text once.
struct Set {
    needles: Vec<String>,
    replacements: Vec<String>,
    matcher: Option<AhoCorasick>,
}

static SECRETS: RwLock<Set> = RwLock::new(Set {
    needles: Vec::new(),
    replacements: Vec::new(),
    matcher: None,
});

/// Remembers `value` of `key` in Secret `name` for the rest of the process: from now on
/// it (and its base64 form) never reaches the terminal or stdout.
pub fn add(name: &str, key: &str, value: &[u8]) {
    let raw = String::from_utf8_lossy(value).into_owned();
    if raw.len() < MIN_LEN {
        return;
    }
    let replacement = format!("[redacted secret {name}:{key}]");
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let mut set = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    let before = set.needles.len();
    for needle in [raw, b64] {
        if !set.needles.contains(&needle) {
            set.needles.push(needle);
            set.replacements.push(replacement.clone());
        }
    }
    if set.needles.len() != before {
        // Fails only past u32 states: never for a handful of secret values.
        set.matcher =
            Some(AhoCorasick::new(&set.needles).expect("the secret values fit one automaton"));
    }
}

/// `text` with every known secret value replaced.
///
/// Every match is found in the text as it was given (so a value can never match inside
/// a replacement already made), overlapping ones included: where values overlap, the
/// whole span they cover is replaced by their labels, so no piece of either is left;
/// a value wholly inside another is covered by the outer one's label.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let set = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    let Some(matcher) = &set.matcher else {
        return Cow::Borrowed(text);
    };
    // Spans by start, the longest first where several start together (the overlapping
    // iterator reports them by end).
    let mut spans: Vec<(usize, std::cmp::Reverse<usize>, usize)> = matcher
        .find_overlapping_iter(text)
        .map(|m| {
            (
                m.start(),
                std::cmp::Reverse(m.end()),
                m.pattern().as_usize(),
            )
        })
        .collect();
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut i = 0;
    while i < spans.len() {
        let (start, std::cmp::Reverse(mut end), first) = spans[i];
        let mut labels = vec![set.replacements[first].as_str()];
        i += 1;
        while i < spans.len() && spans[i].0 < end {
            let (_, std::cmp::Reverse(next_end), pattern) = spans[i];
            // A value wholly inside the span is covered by its label already.
            if next_end > end {
                end = next_end;
                let label = set.replacements[pattern].as_str();
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
            i += 1;
        }
        out.push_str(&text[done..start]);
        out.push_str(&labels.concat());
        done = end;
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

/// `value` with every string in it (keys too) scrubbed.
pub fn scrub_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(scrub(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(scrub_json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (scrub(k).into_owned(), scrub_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_base64_values_are_replaced_everywhere() {
        add(
            "pulsewatch-db",
            "password",
            b"s3cr3t-Pa55w0rd-for-redact-test",
        );
        let b64 =
            base64::engine::general_purpose::STANDARD.encode("s3cr3t-Pa55w0rd-for-redact-test");
        let text = format!(
            "422: Secret \"pulsewatch-db\" is invalid: stringData: {{\"password\":\"s3cr3t-Pa55w0rd-for-redact-test\"}} data: {b64}"
        );
        let out = scrub(&text);
        assert!(!out.contains("s3cr3t-Pa55w0rd"), "{out}");
        assert!(!out.contains(&b64), "{out}");
        assert_eq!(
            out.matches("[redacted secret pulsewatch-db:password]")
                .count(),
            2
        );
        let doc = serde_json::json!({"error": {"details": [text.clone()], text.clone(): 1}});
        let shown = scrub_json(&doc).to_string();
        assert!(!shown.contains("s3cr3t-Pa55w0rd"), "{shown}");
        // Unrelated text is borrowed untouched, and short values are not secrets.
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
        add("grafana-admin", "admin-user", b"admin");
        assert_eq!(scrub("admin"), "admin");
    }

    #[test]
    fn a_value_never_matches_inside_a_replacement_already_made() {
        // The second value is a piece of the first one's replacement label: replaced one
        // after the other, it would be found again inside "[redacted secret …]".
        add("nesting-a", "token", b"first-value-for-nesting-test");
        add("nesting-b", "key", b"redacted secret nesting-a");
        let out = scrub("a=first-value-for-nesting-test b=redacted secret nesting-a");
        assert_eq!(
            out,
            "a=[redacted secret nesting-a:token] b=[redacted secret nesting-b:key]"
        );
        // Overlapping values: the span both cover goes, no piece of either is left.
        add("nesting-c", "x", b"overlap-AAAA-BBBB");
        add("nesting-d", "y", b"BBBB-overlap-tail");
        assert_eq!(
            scrub("<overlap-AAAA-BBBB-overlap-tail>"),
            "<[redacted secret nesting-c:x][redacted secret nesting-d:y]>"
        );
        // A value inside another: the outer one's label only.
        add("nesting-e", "z", b"inner-value-xyz");
        add("nesting-f", "w", b"outer(inner-value-xyz)");
        assert_eq!(
            scrub("outer(inner-value-xyz) inner-value-xyz"),
            "[redacted secret nesting-f:w] [redacted secret nesting-e:z]"
        );
    }
}
