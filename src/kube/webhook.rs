//! Webhook gates: before applying objects an admission webhook serves (cert-manager's
//! resources, Ingress), a server-side dry-run create of a representative object is
//! retried until it passes. Pod readiness is not enough: the webhook may answer before
//! its CA bundle is injected, or its Service may have no endpoints yet.
//!
//! Owns: the probe objects, which errors count as "not ready yet" (connection refused,
//! no endpoints, x509 / CA bundle not injected, a 500 from calling the webhook), and the
//! jittered, capped backoff. Must not delete or edit webhook configurations, and never
//! creates anything for real (dry-run only).

use std::time::Duration;

use ::kube::Api;
use ::kube::api::{DynamicObject, PostParams};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::discovery::parse_gvk;
use super::manifest::Manifest;
use super::{Engine, FIELD_MANAGER, cancellable, describe, human_duration};
use crate::error::{Error, ErrorKind, Result};

/// Retry timing of a gate: the delay doubles from `initial` up to `max`, each delay is
/// varied by ±`jitter` (a fraction), and no attempt starts after `cap`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub cap: Duration,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
            cap: Duration::from_secs(180),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after attempt `n` (0-based), jitter applied.
    pub fn delay(&self, n: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(n.min(16)))
            .min(self.max);
        if self.jitter <= 0.0 {
            return base;
        }
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        base.mul_f64(factor.max(0.0))
    }
}

/// A webhook that must answer before the objects it serves are applied.
#[derive(Debug, Clone)]
pub struct WebhookGate {
    /// For messages: `cert-manager webhook`.
    pub name: String,
    /// Created with `dryRun=All` until the API server (and so the webhook) accepts it.
    pub probe: DynamicObject,
    /// (API group, kind) the webhook serves; kind `*` = every kind of the group.
    pub covers: Vec<(String, String)>,
    pub backoff: Backoff,
}

impl WebhookGate {
    /// cert-manager's webhook, probed the way `cmctl check api` does: a dry-run
    /// Certificate in `namespace`.
    pub fn cert_manager(namespace: &str) -> WebhookGate {
        let probe = json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": "pulsedev-webhook-probe", "namespace": namespace},
            "spec": {
                "secretName": "pulsedev-webhook-probe",
                "dnsNames": ["probe.pulsedev.localhost"],
                "issuerRef": {"name": "pulsedev-webhook-probe", "kind": "Issuer"}
            }
        });
        WebhookGate {
            name: "cert-manager webhook".into(),
            probe: serde_json::from_value(probe).expect("valid probe object"),
            covers: vec![
                ("cert-manager.io".into(), "*".into()),
                ("acme.cert-manager.io".into(), "*".into()),
            ],
            backoff: Backoff::default(),
        }
    }

    /// An ingress controller's validating webhook: a dry-run Ingress of `class`.
    pub fn ingress(namespace: &str, class: &str) -> WebhookGate {
        let probe = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "pulsedev-webhook-probe", "namespace": namespace},
            "spec": {
                "ingressClassName": class,
                "rules": [{
                    "host": "probe.pulsedev.localhost",
                    "http": {"paths": [{
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "pulsedev-webhook-probe", "port": {"number": 80}}}
                    }]}
                }]
            }
        });
        WebhookGate {
            name: "ingress controller webhook".into(),
            probe: serde_json::from_value(probe).expect("valid probe object"),
            covers: vec![("networking.k8s.io".into(), "Ingress".into())],
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> WebhookGate {
        self.backoff = backoff;
        self
    }

    /// Whether `m` is served by this webhook.
    pub fn covers(&self, m: &Manifest) -> bool {
        let gvk = parse_gvk(m.api_version(), m.kind());
        self.covers
            .iter()
            .any(|(g, k)| *g == gvk.group && (k == "*" || *k == gvk.kind))
    }

    fn probe_types(&self) -> (String, String) {
        let t = self.probe.types.clone().unwrap_or_default();
        (t.api_version, t.kind)
    }
}

/// Errors that mean "the webhook is not serving yet": retried. Anything else is final.
pub(crate) fn not_ready_yet(e: &::kube::Error) -> bool {
    let ::kube::Error::Api(s) = e else {
        return false;
    };
    let m = s.message.to_ascii_lowercase();
    let signs = [
        "connection refused",
        "no endpoints available",
        "x509:",
        "certificate signed by unknown authority",
        "failed to verify certificate",
        "connection reset by peer",
        "context deadline exceeded",
        ": eof",
    ];
    let sign = signs.iter().any(|x| m.contains(x));
    let webhook = m.contains("webhook");
    (webhook && (s.code == 500 || sign)) || (s.code == 500 && sign)
}

impl Engine {
    /// Retries a server-side dry-run create of `gate.probe` until the API server accepts
    /// it (or says it already exists: admission ran). Recognised not-ready errors are
    /// retried with jittered backoff up to `gate.backoff.cap`; then `webhook-not-ready`
    /// naming what was seen. Any other rejection is final (`apply-failed`).
    pub async fn gate_webhook(&self, gate: &WebhookGate, cancel: &CancellationToken) -> Result<()> {
        cancellable(cancel, self.gate_inner(gate)).await?
    }

    async fn gate_inner(&self, gate: &WebhookGate) -> Result<()> {
        let started = Instant::now();
        let (av, kind) = self.probe_types_checked(gate)?;
        // (message → times seen), in order of first sight.
        let mut seen: Vec<(String, u32)> = Vec::new();
        let mut attempt = 0u32;
        loop {
            let outcome = match self.discovery.resolve(&av, &kind).await {
                Ok(Some(r)) => {
                    let ns = self.probe_namespace(gate);
                    let api: Api<DynamicObject> = if r.namespaced {
                        Api::namespaced_with(self.client.clone(), &ns, &r.resource)
                    } else {
                        Api::all_with(self.client.clone(), &r.resource)
                    };
                    let params = PostParams {
                        dry_run: true,
                        field_manager: Some(FIELD_MANAGER.to_string()),
                    };
                    match api.create(&params, &gate.probe).await {
                        Ok(_) => Ok(()),
                        Err(::kube::Error::Api(s)) if s.code == 409 => Ok(()),
                        Err(e) if not_ready_yet(&e) => Err(describe(&e)),
                        Err(e) => {
                            return Err(Error::new(
                                ErrorKind::ApplyFailed,
                                format!(
                                    "the {} rejected a dry-run {kind}: {}",
                                    gate.name,
                                    describe(&e)
                                ),
                            )
                            .with_hint(
                                "this is not a readiness problem: the probe object or the \
                                 webhook's policy is wrong",
                            ));
                        }
                    }
                }
                Ok(None) => {
                    self.discovery.forget(&av);
                    Err(format!("{kind} ({av}) is not served yet"))
                }
                Err(e) => Err(format!("discovery of {av}: {}", describe(&e))),
            };
            let message = match outcome {
                Ok(()) => {
                    self.say(&format!("{}: ready", gate.name));
                    return Ok(());
                }
                Err(m) => m,
            };
            match seen.iter_mut().find(|(m, _)| *m == message) {
                Some((_, n)) => *n += 1,
                None => seen.push((message.clone(), 1)),
            }
            attempt += 1;
            let delay = gate.backoff.delay(attempt - 1);
            if started.elapsed() + delay > gate.backoff.cap {
                let details = seen
                    .iter()
                    .map(|(m, n)| {
                        if *n > 1 {
                            format!("{m} (x{n})")
                        } else {
                            m.clone()
                        }
                    })
                    .collect();
                return Err(Error::new(
                    ErrorKind::WebhookNotReady,
                    format!(
                        "the {} did not accept a dry-run {kind} within {} ({attempt} attempt{})",
                        gate.name,
                        human_duration(gate.backoff.cap),
                        if attempt == 1 { "" } else { "s" }
                    ),
                )
                .with_details(details)
                .with_data(json!({
                    "webhook": gate.name,
                    "attempts": attempt,
                    "seen": seen.iter().map(|(m, n)| json!({"message": m, "count": n})).collect::<Vec<_>>(),
                }))
                .with_hint(
                    "its pods may still be starting (`pulsedev status` shows the platform); \
                     run `pulsedev up` again in a minute. pulsedev never deletes webhook configurations",
                ));
            }
            self.say(&format!(
                "{}: not ready yet ({message}); retrying in {:.1}s",
                gate.name,
                delay.as_secs_f64()
            ));
            tokio::time::sleep(delay).await;
        }
    }

    fn probe_types_checked(&self, gate: &WebhookGate) -> Result<(String, String)> {
        let (av, kind) = gate.probe_types();
        if av.is_empty() || kind.is_empty() {
            return Err(Error::internal(format!(
                "the probe of the {} has no apiVersion/kind",
                gate.name
            )));
        }
        Ok((av, kind))
    }

    fn probe_namespace(&self, gate: &WebhookGate) -> String {
        gate.probe
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| self.client.default_namespace().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{Exchange, Scenario, resource_list};
    use crate::kube::{ApplyOptions, parse};

    const CERTS: &str = "/apis/cert-manager.io/v1/namespaces/cert-manager/certificates";
    const REFUSED: &str = "Internal error occurred: failed calling webhook \"webhook.cert-manager.io\": failed to call webhook: Post \"https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s\": dial tcp 10.96.143.71:443: connect: connection refused";
    const NO_ENDPOINTS: &str = "Internal error occurred: failed calling webhook \"webhook.cert-manager.io\": failed to call webhook: Post \"https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s\": no endpoints available for service \"cert-manager-webhook\"";
    const X509: &str = "Internal error occurred: failed calling webhook \"webhook.cert-manager.io\": failed to call webhook: Post \"https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s\": tls: failed to verify certificate: x509: certificate signed by unknown authority";

    fn discovery() -> Exchange {
        Exchange::get("/apis/cert-manager.io/v1").ok(resource_list(
            "cert-manager.io/v1",
            &[
                ("certificates", "Certificate", true),
                ("clusterissuers", "ClusterIssuer", false),
                ("issuers", "Issuer", true),
            ],
        ))
    }

    fn dry_run() -> Exchange {
        Exchange::post(CERTS)
            .query("dryRun", "All")
            .query("fieldManager", "pulsedev")
            .check(|seen| {
                assert_eq!(seen.body["kind"], "Certificate");
                assert_eq!(seen.body["metadata"]["name"], "pulsedev-webhook-probe");
            })
    }

    fn gate(cap: u64) -> WebhookGate {
        WebhookGate::cert_manager("cert-manager").with_backoff(Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            cap: Duration::from_secs(cap),
            jitter: 0.0,
        })
    }

    fn created() -> serde_json::Value {
        let mut probe = serde_json::to_value(&gate(1).probe).unwrap();
        probe["metadata"]["uid"] = json!("8d3c2b1a-0000-4000-8000-00000000aaaa");
        probe["metadata"]["creationTimestamp"] = json!("2026-11-26T05:30:00Z");
        probe
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_that_refuses_twice_then_accepts_opens_the_gate() {
        let (client, mock) = Scenario::new()
            .then(discovery())
            .then(dry_run().fail(500, "InternalError", REFUSED))
            .then(dry_run().fail(500, "InternalError", X509))
            .then(dry_run().reply(201, created()))
            .start();
        let started = Instant::now();
        Engine::new(client)
            .gate_webhook(&gate(60), &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "backoff 1s, then 2s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_that_never_answers_is_webhook_not_ready_within_the_cap() {
        let mut scenario = Scenario::new().then(discovery());
        // Attempts at 0, 1, 3 and 7 s; the next (7 + 4 s) would pass the 10 s cap.
        for message in [REFUSED, NO_ENDPOINTS, NO_ENDPOINTS, NO_ENDPOINTS] {
            scenario = scenario.then(dry_run().fail(500, "InternalError", message));
        }
        let (client, mock) = scenario.start();
        let started = Instant::now();
        let e = Engine::new(client)
            .gate_webhook(&gate(10), &CancellationToken::new())
            .await
            .unwrap_err();
        mock.finish().await;
        assert!(started.elapsed() <= Duration::from_secs(10));
        assert_eq!(e.id(), "webhook-not-ready");
        insta::assert_snapshot!(crate::ui::render_error(&e, false), @r#"
        error[webhook-not-ready]: the cert-manager webhook did not accept a dry-run Certificate within 10s (4 attempts)
          Internal error occurred: failed calling webhook "webhook.cert-manager.io": failed to call webhook: Post "https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s": dial tcp 10.96.143.71:443: connect: connection refused (500 InternalError)
          Internal error occurred: failed calling webhook "webhook.cert-manager.io": failed to call webhook: Post "https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s": no endpoints available for service "cert-manager-webhook" (500 InternalError) (x3)

        hint: its pods may still be starting (`pulsedev status` shows the platform); run `pulsedev up` again in a minute. pulsedev never deletes webhook configurations
        "#);
        assert_eq!(e.data.as_ref().unwrap()["attempts"], 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_denial_is_final_not_retried() {
        let (client, mock) = Scenario::new()
            .then(discovery())
            .then(dry_run().fail(
                400,
                "BadRequest",
                "admission webhook \"webhook.cert-manager.io\" denied the request: spec.issuerRef.kind: Invalid value: \"Issuer\"",
            ))
            .start();
        let e = Engine::new(client)
            .gate_webhook(&gate(60), &CancellationToken::new())
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "apply-failed");
        assert!(
            e.message.starts_with(
                "the cert-manager webhook rejected a dry-run Certificate: admission webhook"
            ),
            "{}",
            e.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn apply_gates_the_objects_a_webhook_serves_and_already_exists_passes() {
        let text = "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: pulsewatch-selfsigned}\nspec: {selfSigned: {}}\n";
        let ms = parse("platform/local-ca/issuers.yaml", text).unwrap();
        let (client, mock) = Scenario::new()
            .then(discovery())
            .then(dry_run().fail(500, "InternalError", NO_ENDPOINTS))
            // Admission ran; only storage refused: the webhook is up.
            .then(dry_run().fail(
                409,
                "AlreadyExists",
                "certificates.cert-manager.io \"pulsedev-webhook-probe\" already exists",
            ))
            .then(
                Exchange::patch("/apis/cert-manager.io/v1/clusterissuers/pulsewatch-selfsigned")
                    .query("fieldManager", "pulsedev")
                    .echo(),
            )
            .start();
        let options = ApplyOptions::new("pulsewatch", "pulsewatch-dev").with_gate(gate(60));
        let report = Engine::new(client)
            .apply(&ms, &options, &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(report.applied.len(), 1);
    }

    #[test]
    fn only_recognised_not_ready_errors_are_retried() {
        let api = |code: u16, message: &str| {
            ::kube::Error::Api(
                ::kube::core::Status::failure(message, "InternalError")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(not_ready_yet(&api(500, REFUSED)));
        assert!(not_ready_yet(&api(500, NO_ENDPOINTS)));
        assert!(not_ready_yet(&api(500, X509)));
        assert!(not_ready_yet(&api(
            500,
            "Internal error occurred: failed calling webhook \"validate.nginx.org\": failed to call webhook: Post \"https://nginx-ingress-controller-admission.platform.svc:443/networking/v1/ingresses?timeout=10s\": context deadline exceeded"
        )));
        assert!(!not_ready_yet(&api(500, "etcdserver: request timed out")));
        assert!(!not_ready_yet(&api(
            403,
            "certificates.cert-manager.io is forbidden: User \"kind\" cannot create resource"
        )));
        assert!(!not_ready_yet(&api(
            400,
            "admission webhook \"webhook.cert-manager.io\" denied the request: bad"
        )));
    }

    #[test]
    fn backoff_doubles_to_the_max_with_bounded_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
            cap: Duration::from_secs(60),
            jitter: 0.0,
        };
        let d: Vec<u64> = (0..7).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        let j = Backoff { jitter: 0.2, ..b };
        for n in 0..50 {
            let ms = j.delay(3).as_millis();
            assert!((3200..=4800).contains(&ms), "attempt {n}: {ms}");
        }
        let m = crate::kube::parse(
            "x",
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n",
        )
        .unwrap();
        assert!(WebhookGate::ingress("pulsewatch-dev", "nginx").covers(&m[0]));
        assert!(!WebhookGate::cert_manager("cert-manager").covers(&m[0]));
    }
}
