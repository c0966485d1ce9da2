//! The Kubernetes 1.36 OpenAPI schemas, as kubernetes-validate ships them
//! (`kubernetes_validate/kubernetes-json-schema/v1.36.0-local-strict/_definitions.json`,
//! generated from the API server's own OpenAPI document; "strict" closes every object
//! with `additionalProperties: false`), read at test time from the Python venv the test
//! scripts build (no network). Used to know which fields a built-in kind has.
//!
//! API: [`Schemas::get`] (loaded once per test process), [`Schemas::unknown_fields`].
//! Self-contained on purpose: other parts of the fake may load the same files.
//!
//! Where the venv is: `$PULSEDEV_VENV`, else the directory above the `kubernetes-validate`
//! found on PATH (scripts/test puts `$venv/bin` there), else `<repo>/.venv`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    /// An element of a list, with its `x-kubernetes-list-map-keys` values when the list
    /// is a map list (`containers[name="api"]`).
    Index(usize, Vec<(String, String)>),
}

/// A path as the strict decoder names it: `spec.template.spec.containers[0].imagePull`.
pub fn decoder_path(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(f);
            }
            Step::Index(i, _) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A path as structured-merge-diff names it: `.spec.template.spec.containers[name="api"].x`
/// (sigs.k8s.io/structured-merge-diff fieldpath PathElement String).
pub fn smd_path(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Step::Index(i, keys) if keys.is_empty() => s.push_str(&format!("[{i}]")),
            Step::Index(_, keys) => {
                let k: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                s.push_str(&format!("[{}]", k.join(",")));
            }
        }
    }
    s
}

pub struct Schemas {
    defs: serde_json::Map<String, Value>,
    /// (group, version, kind) → definition name.
    kinds: HashMap<(String, String, String), String>,
}

/// The virtualenvs that may hold kubernetes-validate, in order: `$PULSEDEV_VENV`, the one
/// whose `bin` is on PATH (scripts/test puts it there), the repository's `.venv`.
fn venvs() -> Vec<PathBuf> {
    let mut venvs: Vec<PathBuf> = std::env::var_os("PULSEDEV_VENV")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        venvs.extend(
            std::env::split_paths(&path)
                .filter(|d| d.join("kubernetes-validate").is_file())
                .filter_map(|d| d.parent().map(Path::to_path_buf)),
        );
    }
    venvs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    venvs
}

/// `_definitions.json` of kubernetes-validate's Kubernetes 1.36 schemas in `flavour`
/// (`v1.36.0-local-strict`: no extra fields allowed; `v1.36.0-local`: with the list
/// extensions server-side apply merges by). Both fake-server modules find them here.
pub fn kubernetes_validate_file(flavour: &str) -> Result<PathBuf, String> {
    let venvs = venvs();
    for venv in &venvs {
        let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e
                .path()
                .join("site-packages/kubernetes_validate/kubernetes-json-schema")
                .join(flavour)
                .join("_definitions.json");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "kubernetes-validate's {flavour} schemas are in none of {} (run scripts/venv, or set PULSEDEV_VENV to the test virtualenv)",
        venvs
            .iter()
            .map(|v| v.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn definitions_file() -> Result<PathBuf, String> {
    kubernetes_validate_file("v1.36.0-local-strict")
}

impl Schemas {
    /// The schemas, loaded on first use. Panics with what to do when they are missing:
    /// a fake that silently stops validating would let the tests pass for the wrong reason.
    pub fn get() -> &'static Schemas {
        static S: OnceLock<Schemas> = OnceLock::new();
        S.get_or_init(|| Schemas::load().unwrap_or_else(|e| panic!("fake API server: {e}")))
    }

    pub fn load() -> Result<Schemas, String> {
        let path = definitions_file()?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(Value::Object(defs)) = doc.get_mut("$defs").map(Value::take) else {
            return Err(format!("{}: no $defs", path.display()));
        };
        let mut kinds = HashMap::new();
        for (name, d) in &defs {
            for gvk in d["x-kubernetes-group-version-kind"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let s = |k: &str| gvk[k].as_str().unwrap_or_default().to_string();
                kinds.insert((s("group"), s("version"), s("kind")), name.clone());
            }
        }
        Ok(Schemas { defs, kinds })
    }

    /// Whether the schemas know this built-in kind (custom resources are not in them).
    pub fn knows(&self, group: &str, version: &str, kind: &str) -> bool {
        self.kinds
            .contains_key(&(group.into(), version.into(), kind.into()))
    }

    /// The paths of every field of `obj` its kind's schema does not declare (empty for
    /// a kind the schemas do not know).
    pub fn unknown_fields(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        obj: &Value,
    ) -> Vec<Vec<Step>> {
        let Some(name) = self.kinds.get(&(group.into(), version.into(), kind.into())) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.walk(&self.defs[name], obj, &mut Vec::new(), &mut out);
        out
    }

    fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match self.defs.get(name) {
                Some(d) => schema = d,
                None => break,
            }
        }
        schema
    }

    fn walk(&self, schema: &Value, v: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        let schema = self.resolve(schema);
        if schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return;
        }
        match v {
            Value::Object(map) => {
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (k, child) in map {
                        path.push(Step::Field(k.clone()));
                        match props.get(k) {
                            Some(s) => self.walk(s, child, path, out),
                            None if schema.get("additionalProperties")
                                == Some(&Value::Bool(false)) =>
                            {
                                out.push(path.clone())
                            }
                            None => {}
                        }
                        path.pop();
                    }
                } else if let Some(values) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    for (k, child) in map {
                        path.push(Step::Field(k.clone()));
                        self.walk(values, child, path, out);
                        path.pop();
                    }
                }
            }
            Value::Array(items) => {
                let Some(item_schema) = schema.get("items") else {
                    return;
                };
                let keys: Vec<String> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                for (i, item) in items.iter().enumerate() {
                    let kv = keys
                        .iter()
                        .map(|k| {
                            let val = match &item[k] {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (k.clone(), val)
                        })
                        .collect();
                    path.push(Step::Index(i, kv));
                    self.walk(item_schema, item, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// Removes the field at `path` from `obj` (what the decoder does with an unknown field
/// when it does not refuse it).
pub fn drop_field(obj: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parents {
        cur = match step {
            Step::Field(f) => match cur.get_mut(f) {
                Some(c) => c,
                None => return,
            },
            Step::Index(i, _) => match cur.get_mut(*i) {
                Some(c) => c,
                None => return,
            },
        };
    }
    if let (Step::Field(f), Some(map)) = (last, cur.as_object_mut()) {
        map.remove(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_of_a_deployment_are_found_with_both_path_styles() {
        let s = Schemas::get();
        assert!(s.knows("apps", "v1", "Deployment"));
        assert!(!s.knows("example.com", "v1", "Widget"));
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "labels": {"any": "label"}},
            "spec": {"replicas": 1, "replicaz": 2,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "x", "imagePullPolicyy": "Always",
                        "resources": {"limits": {"cpu": "1"}}}]}}}});
        let found = s.unknown_fields("apps", "v1", "Deployment", &d);
        let smd: Vec<String> = found.iter().map(|p| smd_path(p)).collect();
        let dec: Vec<String> = found.iter().map(|p| decoder_path(p)).collect();
        assert_eq!(
            smd,
            [
                ".spec.replicaz",
                ".spec.template.spec.containers[name=\"api\"].imagePullPolicyy"
            ]
        );
        assert_eq!(
            dec,
            [
                "spec.replicaz",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
        let mut d2 = d.clone();
        for p in &found {
            drop_field(&mut d2, p);
        }
        assert!(s.unknown_fields("apps", "v1", "Deployment", &d2).is_empty());
        assert_eq!(d2["spec"]["replicas"], 1);
    }
}
