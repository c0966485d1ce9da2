//! Manifests: multi-document YAML (a `helm template` stream, a file of plain objects)
//! turned into `DynamicObject`s that remember where they came from.
//!
//! Owns: splitting a stream into documents, skipping empty and comment-only ones, reading
//! each with the YAML rules kubectl uses (`yaml11`), the basic shape checks (apiVersion, kind, metadata.name), and naming the source file and
//! document index of every problem. Must not talk to the API server: whether a kind exists
//! is discovery's business (`apply`).

use std::fmt;

use ::kube::api::DynamicObject;

use crate::error::{Error, ErrorKind, Result};

/// One object to apply and where it was written.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub object: DynamicObject,
    /// The file (or stream name, e.g. `helm template api`) the document came from.
    pub source: String,
    /// 1-based position of the document in `source`, counting empty documents too, so
    /// it matches what a reader counts between `---` lines.
    pub index: usize,
    /// The chart template named by Helm's `# Source:` comment, when there is one.
    pub template: Option<String>,
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object
            .types
            .as_ref()
            .map(|t| t.api_version.as_str())
            .unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.object
            .types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object.metadata.namespace.as_deref()
    }

    /// A Helm hook (`helm.sh/hook` annotation): tests and install-time jobs of a chart,
    /// not part of its steady state.
    pub fn is_helm_hook(&self) -> bool {
        self.object
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("helm.sh/hook"))
    }

    /// The hosts of an Ingress's rules (empty for other kinds).
    pub fn hosts(&self) -> Vec<String> {
        if self.kind() != "Ingress" {
            return Vec::new();
        }
        self.object.data["spec"]["rules"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .filter_map(|r| r["host"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `file.yaml document 3 (api/templates/deployment.yaml)`.
    pub fn origin(&self) -> String {
        let mut s = format!("{} document {}", self.source, self.index);
        if let Some(t) = &self.template {
            s.push_str(&format!(" ({t})"));
        }
        s
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace() {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind(), self.name()),
            None => write!(f, "{} {}", self.kind(), self.name()),
        }
    }
}

/// A document of a stream before parsing: its text and where it starts.
struct RawDoc {
    index: usize,
    /// 1-based line of the document's first line in the stream.
    line: usize,
    text: String,
}

/// Splits a YAML stream at `---` document markers (a marker may carry content after a
/// space, e.g. `--- # comment`). `...` document-end lines are dropped.
fn split(text: &str) -> Vec<RawDoc> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut seen_marker = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        let is_marker =
            trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t");
        if is_marker {
            // Text before the first marker is a document only when it holds something.
            if seen_marker || has_content(&current) {
                docs.push(RawDoc {
                    index: docs.len() + 1,
                    line: start_line,
                    text: std::mem::take(&mut current),
                });
            }
            current.clear();
            seen_marker = true;
            start_line = i + 1;
            current.push_str(&trimmed[3..]);
            current.push('\n');
        } else if trimmed == "..." {
            continue;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if seen_marker || has_content(&current) {
        docs.push(RawDoc {
            index: docs.len() + 1,
            line: start_line,
            text: current,
        });
    }
    docs
}

/// Whether a document holds anything but blank lines and comments.
fn has_content(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    })
}

/// Helm's `# Source: chart/templates/x.yaml` comment, if the document has one.
fn helm_source(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .take_while(|l| l.is_empty() || l.starts_with('#'))
        .find_map(|l| l.strip_prefix("# Source:").map(|s| s.trim().to_string()))
}

/// Parses a multi-document YAML stream named `source`. Empty and comment-only documents
/// are skipped; `kind: List` documents are expanded into their items. Every invalid
/// document is reported (source file, document index, line), not only the first.
pub fn parse(source: &str, text: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for doc in split(text) {
        if !has_content(&doc.text) {
            continue;
        }
        let at = format!("{source} document {} (line {})", doc.index, doc.line);
        // Read as kubectl and Helm read it (YAML 1.1 scalars: `0644` is 420), see yaml11.
        let value: serde_json::Value = match super::yaml11::document(&doc.text) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(found) => {
                for p in found {
                    // The document's text starts on its marker's line.
                    let line = doc.line + p.line.saturating_sub(1);
                    problems.push(format!(
                        "{source} document {} (line {line}): {}",
                        doc.index, p.message
                    ));
                }
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        let template = helm_source(&doc.text);
        let items = match expand_list(value) {
            Ok(items) => items,
            Err(p) => {
                problems.push(format!("{at}: {p}"));
                continue;
            }
        };
        for item in items {
            match to_object(item) {
                Ok(object) => out.push(Manifest {
                    object,
                    source: source.to_string(),
                    index: doc.index,
                    template: template.clone(),
                }),
                Err(p) => problems.push(format!("{at}: {p}")),
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        let n = problems.len();
        Err(Error::new(
            ErrorKind::ApplyFailed,
            format!(
                "failed to read the manifests of {source} ({n} invalid document{})",
                if n == 1 { "" } else { "s" }
            ),
        )
        .with_details(problems)
        .with_hint("fix the documents named above; `pulsedev render` prints what would be applied"))
    }
}

fn expand_list(value: serde_json::Value) -> std::result::Result<Vec<serde_json::Value>, String> {
    let is_list = value.get("apiVersion").and_then(|v| v.as_str()) == Some("v1")
        && value.get("kind").and_then(|v| v.as_str()) == Some("List");
    if !is_list {
        return Ok(vec![value]);
    }
    match value.get("items") {
        Some(serde_json::Value::Array(items)) => Ok(items.clone()),
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(_) => Err("`items` of a List must be a sequence".to_string()),
    }
}

fn to_object(value: serde_json::Value) -> std::result::Result<DynamicObject, String> {
    if !value.is_object() {
        return Err("expected a Kubernetes object (a mapping), found a scalar or sequence".into());
    }
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let mut missing = Vec::new();
    if field("apiVersion").is_empty() {
        missing.push("apiVersion");
    }
    if field("kind").is_empty() {
        missing.push("kind");
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    if name.is_empty() {
        missing.push("metadata.name");
    }
    if !missing.is_empty() {
        let what = if field("kind").is_empty() {
            "object".to_string()
        } else {
            field("kind").to_string()
        };
        return Err(format!("{what} is missing {}", missing.join(", ")));
    }
    serde_json::from_value(value).map_err(|e| format!("not a valid Kubernetes object: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_and_ingress_hosts() {
        let m = parse(
            "t",
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n  rules:\n  - host: pulsewatch.localhost\n  - host: api.pulsewatch.localhost\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: check\n  annotations: {helm.sh/hook: post-install}\n",
        )
        .unwrap();
        assert_eq!(
            m[0].hosts(),
            vec!["pulsewatch.localhost", "api.pulsewatch.localhost"]
        );
        assert!(!m[0].is_helm_hook());
        assert!(m[1].is_helm_hook());
        assert!(m[1].hosts().is_empty());
    }

    const HELM: &str = r#"---
# Source: api/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: api
  namespace: pulsewatch-dev
---
# Source: api/templates/hpa.yaml
# only a comment: the HPA is disabled in dev
---

---
# Source: api/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels:
    pulsedev.dev/stack: pulsewatch
spec:
  replicas: 1
  template:
    spec:
      containers:
        - name: api
          args: ["--listen", "0.0.0.0:8080"]
          command:
            - |
              --- not a marker: indented inside a block scalar
...
"#;

    #[test]
    fn helm_stream_with_empty_and_comment_only_documents() {
        let ms = parse("helm template api", HELM).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].kind(), "ServiceAccount");
        assert_eq!(ms[0].index, 1);
        assert_eq!(ms[0].namespace(), Some("pulsewatch-dev"));
        assert_eq!(
            ms[0].template.as_deref(),
            Some("api/templates/serviceaccount.yaml")
        );
        assert_eq!(ms[1].kind(), "Deployment");
        assert_eq!(ms[1].api_version(), "apps/v1");
        assert_eq!(ms[1].index, 4, "empty documents still count");
        assert_eq!(
            ms[1].origin(),
            "helm template api document 4 (api/templates/deployment.yaml)"
        );
        assert_eq!(ms[1].to_string(), "Deployment api");
        let cmd = &ms[1].object.data["spec"]["template"]["spec"]["containers"][0]["command"][0];
        assert!(cmd.as_str().unwrap().starts_with("--- not a marker"));
        assert_eq!(
            ms[1].object.metadata.labels.as_ref().unwrap()["pulsedev.dev/stack"],
            "pulsewatch"
        );
    }

    #[test]
    fn a_stream_without_markers_is_one_document() {
        let ms = parse(
            "a.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        )
        .unwrap();
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].index, 1);
        assert!(parse("empty.yaml", "").unwrap().is_empty());
        assert!(
            parse("c.yaml", "# nothing\n---\n# still nothing\n")
                .unwrap()
                .is_empty()
        );
    }

    /// kubectl and Helm read `0644` as octal (420) and `0400` as 256 (sigs.k8s.io/yaml,
    /// goyaml.v2 resolve.go); a YAML 1.2 reader would apply 644 and 400 (mode 0620).
    #[test]
    fn file_modes_are_read_as_kubectl_reads_them() {
        let text = "---\n# Source: postgres/templates/statefulset.yaml\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: postgres}\nspec:\n  template:\n    spec:\n      volumes:\n      - name: init\n        configMap: {name: init, defaultMode: 0644}\n      - name: creds\n        secret: {secretName: creds, defaultMode: 0400}\n      - name: quoted\n        secret: {secretName: q, defaultMode: \"0400\"}\n";
        let ms = parse("helm template postgres", text).unwrap();
        let vols = &ms[0].object.data["spec"]["template"]["spec"]["volumes"];
        assert_eq!(vols[0]["configMap"]["defaultMode"], 420);
        assert_eq!(vols[1]["secret"]["defaultMode"], 256);
        assert_eq!(
            vols[2]["secret"]["defaultMode"], "0400",
            "quoted stays a string"
        );
        let sent = serde_json::to_string(&vols[0]["configMap"]).unwrap();
        assert!(sent.contains("\"defaultMode\":420"), "{sent}");
    }

    #[test]
    fn a_value_kubectl_cannot_send_is_refused_with_file_and_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata:\n  ratio: .inf\n";
        let e = parse("dev/cm.yaml", text).unwrap_err();
        assert_eq!(e.id(), "apply-failed");
        assert_eq!(e.details.len(), 1);
        assert!(
            e.details[0].starts_with(
                "dev/cm.yaml document 2 (line 9): `.inf` is a number JSON cannot carry"
            ),
            "{}",
            e.details[0]
        );
    }

    #[test]
    fn lists_are_expanded() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n";
        let ms = parse("l.yaml", text).unwrap();
        assert_eq!(ms.iter().map(|m| m.name()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn every_invalid_document_is_named_with_source_and_index() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\nkind: Secret\nmetadata: {}\n---\napiVersion: v1\nkind: [unclosed\n---\n- just\n- a list\n";
        let e = parse("dev/bad.yaml", text).unwrap_err();
        assert_eq!(e.id(), "apply-failed");
        assert_eq!(
            e.message,
            "failed to read the manifests of dev/bad.yaml (3 invalid documents)"
        );
        assert_eq!(e.details.len(), 3);
        assert_eq!(
            e.details[0],
            "dev/bad.yaml document 2 (line 4): Secret is missing apiVersion, metadata.name"
        );
        assert!(
            e.details[1].starts_with("dev/bad.yaml document 3 (line 9): invalid YAML:"),
            "{}",
            e.details[1]
        );
        assert!(
            e.details[2]
                .starts_with("dev/bad.yaml document 4 (line 10): expected a Kubernetes object"),
            "{}",
            e.details[2]
        );
    }
}
