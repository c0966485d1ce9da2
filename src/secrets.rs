//! Dev secrets: generated once per cluster from the OS random source, stored only as
//! Kubernetes Secrets (created if absent, never updated), reused by later `up`s and
//! rotated only by `reset` (which deletes the cluster).
//!
//! Owns: generating the values and shaping the Secret objects. Must never print, log
//! or serialise a value anywhere but into the Secret sent to the API server; `Debug`
//! is redacted so a stray `{:?}` cannot leak one.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Names the charts and manifests reference (manifests/envs/dev/values.yaml `global.secrets`).
pub const DB_SECRET: &str = "pulsewatch-db";
pub const APP_SECRET: &str = "pulsewatch-app";
pub const DB_USER: &str = "pulsewatch";
pub const GRAFANA_SECRET: &str = "grafana-admin";

/// The keys of pulsedev's Secrets that hold secret values (usernames do not): what
/// `crate::redact` is fed with, from the values generated and from the cluster.
pub const SECRET_KEYS: [(&str, &str); 3] = [
    (DB_SECRET, "password"),
    (APP_SECRET, "jwt-secret"),
    (GRAFANA_SECRET, "admin-password"),
];

pub fn is_secret_key(secret: &str, key: &str) -> bool {
    SECRET_KEYS.contains(&(secret, key))
}

pub struct DevSecrets {
    db_password: String,
    jwt_secret: String,
}

impl std::fmt::Debug for DevSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevSecrets { <redacted> }")
    }
}

/// Grafana's admin login (manifests/platform/observability: `existingSecret`),
/// created once like the dev secrets.
pub fn grafana_admin(namespace: &str) -> Result<Vec<Value>> {
    Ok(vec![json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": GRAFANA_SECRET,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "pulsewatch",
                "app.kubernetes.io/managed-by": "pulsedev",
                "pulsedev.dev/dev-secret": "true"
            }
        },
        "type": "Opaque",
        "stringData": { "admin-user": "admin", "admin-password": random_token(24)? }
    })])
}

/// `n` bytes from the OS random source, URL-safe base64 without padding.
fn random_token(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::internal(format!("failed to read the OS random source: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

impl DevSecrets {
    /// Fresh values: a 32-byte JWT secret and a 24-byte database password.
    pub fn generate() -> Result<DevSecrets> {
        Ok(DevSecrets {
            db_password: random_token(24)?,
            jwt_secret: random_token(32)?,
        })
    }

    /// The Secret objects to create when absent. `stringData` keeps the values out of
    /// any YAML we render; the objects go straight to the API server.
    pub fn objects(&self, namespace: &str) -> Vec<Value> {
        let meta = |name: &str| {
            json!({
                "name": name,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/part-of": "pulsewatch",
                    "app.kubernetes.io/managed-by": "pulsedev",
                    // Not the stack label: a pruned Secret would rotate credentials
                    // under a live database.
                    "pulsedev.dev/dev-secret": "true"
                }
            })
        };
        vec![
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(DB_SECRET),
                "type": "Opaque",
                "stringData": { "username": DB_USER, "password": self.db_password }
            }),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(APP_SECRET),
                "type": "Opaque",
                "stringData": { "jwt-secret": self.jwt_secret }
            }),
        ]
    }

    /// Every form a value could leak in (raw and base64), for tests that scan output.
    pub fn leak_patterns(&self) -> Vec<String> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut v = Vec::new();
        for s in [&self.db_password, &self.jwt_secret] {
            v.push(s.clone());
            v.push(b64(s));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_long_random_and_distinct() {
        let a = DevSecrets::generate().unwrap();
        let b = DevSecrets::generate().unwrap();
        // 32 bytes of entropy -> 43 base64 characters.
        assert_eq!(a.jwt_secret.len(), 43);
        assert_eq!(a.db_password.len(), 32);
        assert_ne!(a.jwt_secret, b.jwt_secret);
        assert_ne!(a.db_password, a.jwt_secret);
    }

    #[test]
    fn debug_is_redacted() {
        let s = DevSecrets::generate().unwrap();
        let shown = format!("{s:?}");
        for p in s.leak_patterns() {
            assert!(!shown.contains(&p));
        }
    }

    #[test]
    fn objects_reference_the_names_the_charts_use() {
        let s = DevSecrets::generate().unwrap();
        let objs = s.objects("pulsewatch-dev");
        assert_eq!(objs[0]["metadata"]["name"], DB_SECRET);
        assert_eq!(objs[0]["stringData"]["username"], DB_USER);
        assert_eq!(objs[1]["metadata"]["name"], APP_SECRET);
        assert_eq!(
            objs[1]["stringData"]["jwt-secret"].as_str().unwrap().len(),
            43
        );
        assert!(
            objs.iter()
                .all(|o| o["metadata"]["labels"].get("pulsedev.dev/stack").is_none())
        );
        // The charts and the dev manifests name the same Secrets.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let values = std::fs::read_to_string(root.join("manifests/envs/dev/values.yaml")).unwrap();
        assert!(values.contains(&format!("database: {DB_SECRET}")));
        assert!(values.contains(&format!("app: {APP_SECRET}")));
    }
}
