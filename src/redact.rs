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

use base64::Engine as _;

/// Values shorter than this are not treated as secrets: scrubbing "admin" or a short
/// word would mangle ordinary output and protect nothing.
pub const MIN_LEN: usize = 8;

struct Entry {
    needle: String,
    replacement: String,
}

static SECRETS: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

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
    for needle in [raw, b64] {
        if !set.iter().any(|e| e.needle == needle) {
            set.push(Entry {
                needle,
                replacement: replacement.clone(),
            });
        }
    }
    // Longest first: a value that contains another is replaced whole.
    set.sort_by_key(|e| std::cmp::Reverse(e.needle.len()));
}

/// `text` with every known secret value replaced.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let set = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for e in set.iter() {
        if out.contains(&e.needle) {
            out = Cow::Owned(out.replace(&e.needle, &e.replacement));
        }
    }
    out
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
}
