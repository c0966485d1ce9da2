//! Secrets that must exist once and never be overwritten (dev credentials), and reading
//! one public key of a Secret (the local CA certificate).
//!
//! Owns: create-if-absent and single-key reads. Must not log or return secret values
//! other than the key explicitly asked for.

use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, PostParams};
use k8s_openapi::api::core::v1::Secret;

use crate::error::{Error, ErrorKind, Result};

/// Creates each Secret unless one with its name already exists; existing ones are left
/// untouched (their values are what the running database was initialised with).
/// Returns, per Secret, whether this call created it.
///
/// Every secret value sent, and the value already in the cluster when the Secret
/// exists, is handed to `crate::redact` first, so no echo of it is ever printed.
pub async fn create_if_absent(
    client: &Client,
    objects: &[serde_json::Value],
) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for obj in objects {
        let secret: Secret = serde_json::from_value(obj.clone())
            .map_err(|e| Error::internal(format!("failed to build a Secret: {e}")))?;
        let name = secret.metadata.name.clone().unwrap_or_default();
        let ns = secret.metadata.namespace.clone().unwrap_or_default();
        let secret_keys: Vec<String> = obj["stringData"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| crate::secrets::is_secret_key(&name, k))
            .map(|(k, v)| {
                crate::redact::add(&name, k, v.as_str().unwrap_or_default().as_bytes());
                k.clone()
            })
            .collect();
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => out.push((name, true)),
            Err(::kube::Error::Api(s)) if s.code == 409 => {
                for key in &secret_keys {
                    if let Some(v) = read_key(client, &ns, &name, key).await? {
                        crate::redact::add(&name, key, &v);
                    }
                }
                out.push((name, false))
            }
            Err(e) => {
                // The error text of a create never echoes the object's data.
                return Err(Error::new(
                    ErrorKind::ApplyFailed,
                    format!("failed to create Secret {ns}/{name}: {e}"),
                )
                .with_hint("check that the namespace exists and the cluster is reachable (`pulsedev status`)"));
            }
        }
    }
    Ok(out)
}

/// Hands the stack's secret values already in the cluster (`crate::secrets::SECRET_KEYS`:
/// the dev credentials in `app`, Grafana's admin password in `monitoring`) to
/// `crate::redact`, for commands that print what the cluster says (pod messages, log
/// lines) without having created the Secrets themselves. Best effort and bounded by
/// `limit`: a Secret that is absent or cannot be read is skipped (there is nothing of it
/// to scrub that this process could know).
pub async fn remember_stack(client: &Client, app: &str, monitoring: &str, limit: Duration) {
    for &(name, key) in &crate::secrets::SECRET_KEYS {
        let ns = if name == crate::secrets::GRAFANA_SECRET {
            monitoring
        } else {
            app
        };
        if let Ok(Ok(Some(v))) = tokio::time::timeout(limit, read_key(client, ns, name, key)).await
        {
            crate::redact::add(name, key, &v);
        }
    }
}

/// The bytes of `key` in Secret `ns/name`; `None` when the Secret or key is absent.
pub async fn read_key(client: &Client, ns: &str, name: &str, key: &str) -> Result<Option<Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get_opt(name).await.map_err(|e| {
        Error::new(
            ErrorKind::NotReady,
            format!("failed to read Secret {ns}/{name}: {e}"),
        )
        .with_hint("check the cluster with `pulsedev status`")
    })?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{Exchange, Scenario, status_failure};
    use serde_json::json;

    fn secret(name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": "pulsewatch-dev"},
               "stringData": {"password": "s3cret-value"}})
    }

    #[tokio::test(start_paused = true)]
    async fn the_stacks_secret_values_in_the_cluster_are_scrubbed_from_then_on() {
        use base64::Engine as _;
        let value = "remembered-from-the-cluster-7f3a";
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        let (client, server) = Scenario::new()
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/secrets/pulsewatch-db").ok(
                    json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "pulsewatch-db", "namespace": "pulsewatch-dev"},
                    "data": {"username": "cHVsc2V3YXRjaA==", "password": b64}}),
                ),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/secrets/pulsewatch-app").fail(
                    404,
                    "NotFound",
                    "secrets \"pulsewatch-app\" not found",
                ),
            )
            .then(
                Exchange::get("/api/v1/namespaces/monitoring/secrets/grafana-admin").fail(
                    403,
                    "Forbidden",
                    "secrets \"grafana-admin\" is forbidden",
                ),
            )
            .start();
        assert_eq!(crate::redact::scrub(value), value, "not known before");
        remember_stack(
            &client,
            "pulsewatch-dev",
            "monitoring",
            Duration::from_secs(5),
        )
        .await;
        server.finish().await;
        assert_eq!(
            crate::redact::scrub(&format!(
                "DATABASE_URL=postgres://pulsewatch:{value}@postgres"
            )),
            "DATABASE_URL=postgres://pulsewatch:[redacted secret pulsewatch-db:password]@postgres"
        );
        // Usernames are not secrets.
        assert_eq!(crate::redact::scrub("pulsewatch"), "pulsewatch");
    }

    #[tokio::test(start_paused = true)]
    async fn creates_missing_and_keeps_existing() {
        let (client, server) = Scenario::new()
            .then(
                Exchange::post("/api/v1/namespaces/pulsewatch-dev/secrets")
                    .check(|seen| assert_eq!(seen.body["metadata"]["name"], "pulsewatch-db"))
                    .echo(),
            )
            .then(
                Exchange::post("/api/v1/namespaces/pulsewatch-dev/secrets").reply(
                    409,
                    status_failure(
                        409,
                        "AlreadyExists",
                        "secrets \"pulsewatch-app\" already exists",
                    ),
                ),
            )
            .start();
        let made = create_if_absent(
            &client,
            &[secret("pulsewatch-db"), secret("pulsewatch-app")],
        )
        .await
        .unwrap();
        assert_eq!(
            made,
            vec![
                ("pulsewatch-db".into(), true),
                ("pulsewatch-app".into(), false)
            ]
        );
        server.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_fail_without_the_value() {
        let (client, server) = Scenario::new()
            .then(
                Exchange::post("/api/v1/namespaces/pulsewatch-dev/secrets").reply(
                    404,
                    status_failure(404, "NotFound", "namespaces \"pulsewatch-dev\" not found"),
                ),
            )
            .start();
        let e = create_if_absent(&client, &[secret("pulsewatch-db")])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ApplyFailed);
        assert!(e.message.contains("pulsewatch-dev/pulsewatch-db"));
        assert!(!format!("{e:?}").contains("s3cret-value"));
        server.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn reads_one_key() {
        let (client, server) = Scenario::new()
            .then(
                Exchange::get("/api/v1/namespaces/cert-manager/secrets/pulsewatch-local-ca").ok(
                    json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "pulsewatch-local-ca", "namespace": "cert-manager"},
                        "type": "kubernetes.io/tls",
                        "data": {"ca.crt": "Q0VSVA==", "tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}
                    }),
                ),
            )
            .then(
                Exchange::get("/api/v1/namespaces/cert-manager/secrets/gone").reply(
                    404,
                    status_failure(404, "NotFound", "secrets \"gone\" not found"),
                ),
            )
            .start();
        let ca = read_key(&client, "cert-manager", "pulsewatch-local-ca", "ca.crt")
            .await
            .unwrap();
        assert_eq!(ca.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(
            read_key(&client, "cert-manager", "gone", "ca.crt")
                .await
                .unwrap(),
            None
        );
        server.finish().await;
    }
}
