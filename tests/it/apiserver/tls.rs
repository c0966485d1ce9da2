//! The transport kind really gives: HTTPS with a cluster CA, and a client certificate as
//! the user's credential.
//!
//! kind's kubeconfig (kubeadm's admin.conf) holds `certificate-authority-data` (the
//! cluster CA), `client-certificate-data` and `client-key-data` (a certificate for
//! `kubernetes-admin` in group `kubeadm:cluster-admins`, signed by that CA), and a server
//! `https://127.0.0.1:<port>` whose serving certificate carries 127.0.0.1 as a SAN
//! (kubernetes-sigs/kind pkg/cluster/internal/kubeadm/config.go: the API server's
//! certSANs include the address the host reaches it on; kubernetes
//! cmd/kubeadm/app/phases/kubeconfig). The API server asks for, but does not require, a
//! client certificate (`--client-ca-file`; k8s.io/apiserver pkg/server/options/
//! authentication.go); a request without one is the anonymous user, whom RBAC gives
//! nothing beyond discovery and health (`system:public-info-viewer`), so it is refused
//! with 403 Forbidden (k8s.io/apiserver pkg/endpoints/handlers/responsewriters/errors.go
//! `forbidden`: `User "system:anonymous" cannot …`).
//!
//! Reproduced: the CA, the serving certificate for 127.0.0.1, the client certificate and
//! that kind of kubeconfig; requests without a client certificate answered 403 except
//! for `/version`, `/healthz`, `/livez`, `/readyz`. Not reproduced: certificate rotation,
//! bearer tokens, RBAC for users other than the admin.

use std::sync::Arc;

use base64::Engine as _;

/// A cluster CA, the API server's serving certificate and an admin client certificate.
pub struct Pki {
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        };
        let name = |cn: &str, org: Option<&str>| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            if let Some(o) = org {
                dn.push(DnType::OrganizationName, o);
            }
            dn
        };
        // kubeadm's CA: CN kubernetes, a CA allowed to sign.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name = name("kubernetes", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);

        // The serving certificate: kube-apiserver, SANs kind puts there.
        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
        ])
        .unwrap();
        server.distinguished_name = name("kube-apiserver", None);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        // admin.conf's user: kubernetes-admin in kubeadm:cluster-admins.
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name = name("kubernetes-admin", Some("kubeadm:cluster-admins"));
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        // Asked for, not required: without one the request is anonymous.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            server: Arc::new(server),
        }
    }

    /// kind's kubeconfig for `server` (admin.conf's shape, with context `context`).
    pub fn kubeconfig(&self, server: &str, context: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\ncurrent-context: {context}\npreferences: {{}}\nusers:\n- name: {context}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
            ca = b64(&self.ca_pem),
            cert = b64(&self.client_cert_pem),
            key = b64(&self.client_key_pem),
        )
    }
}

impl super::FakeApiServer {
    /// What the fake kind (fakes.rs) needs to write kind's kubeconfig for this server:
    /// `FAKE_API_CA_DATA`, `FAKE_API_CERT_DATA`, `FAKE_API_KEY_DATA`, base64 as in the
    /// kubeconfig; nothing for a plain-HTTP server.
    pub fn kind_credentials(&self) -> Vec<(&'static str, String)> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.pki
            .as_ref()
            .map(|p| {
                vec![
                    ("FAKE_API_CA_DATA", b64(&p.ca_pem)),
                    ("FAKE_API_CERT_DATA", b64(&p.client_cert_pem)),
                    ("FAKE_API_KEY_DATA", b64(&p.client_key_pem)),
                ]
            })
            .unwrap_or_default()
    }
}

/// Paths the anonymous user may read (the `system:public-info-viewer` ClusterRole).
pub fn public(path: &str) -> bool {
    ["/version", "/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// The 403 the API server gives the anonymous user for anything else.
pub fn forbidden(method: &str, path: &str) -> (u16, serde_json::Value) {
    let verb = method.to_ascii_lowercase();
    (
        403,
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("forbidden: User \"system:anonymous\" cannot {verb} path \"{path}\""),
            "reason": "Forbidden",
            "details": {},
            "code": 403
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{STACK, engine, rt};
    use super::super::{FakeApiServer, Options};
    use pulsedev::kube::{ApplyOptions, connect, parse};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// pulsedev's client, built from a kubeconfig shaped like kind's (CA data, client
    /// certificate and key), applies a stack and waits for it over HTTPS.
    #[test]
    fn the_engine_works_over_tls_with_kinds_client_certificate() {
        let api = FakeApiServer::start(Options::new("test").tls());
        assert!(api.url().starts_with("https://127.0.0.1:"), "{}", api.url());
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let ms = parse("stack.yaml", STACK).unwrap();
            let report = engine
                .apply(&ms, &ApplyOptions::new("demo-stack", "demo"), &cancel)
                .await
                .unwrap();
            engine
                .wait_ready(&report.targets(), Duration::from_secs(30), &cancel)
                .await
                .unwrap();
            let said = lines.lock().unwrap().join("\n");
            assert!(said.contains("deployment demo/api: ready"), "{said}");
        });
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    /// Without the client certificate the server still talks TLS, but the request is the
    /// anonymous user's and refused, as RBAC refuses it on kind.
    #[test]
    fn without_the_client_certificate_requests_are_forbidden() {
        let api = FakeApiServer::start(Options::new("test").tls());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let full = api.kubeconfig("kind-test");
        let anonymous: String = full
            .lines()
            .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace("  user:\n", "  user: {}\n");
        std::fs::write(&path, anonymous).unwrap();
        rt().block_on(async {
            let client = connect(&path, "kind-test").await.unwrap();
            let version = client.apiserver_version().await;
            assert!(version.is_ok(), "/version is public: {version:?}");
            let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                kube::Api::all(client);
            let err = namespaces
                .list(&Default::default())
                .await
                .expect_err("the anonymous user lists nothing");
            match err {
                kube::Error::Api(s) => {
                    assert_eq!(s.code, 403);
                    assert!(s.message.contains("system:anonymous"), "{}", s.message);
                }
                other => panic!("not the API's refusal: {other}"),
            }
        });
    }

    /// A client that does not trust the cluster CA does not get past the handshake.
    #[test]
    fn a_client_without_the_cluster_ca_is_refused_by_tls() {
        let api = FakeApiServer::start(Options::new("test").tls());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        // Another CA's certificate in place of the cluster's.
        let other = super::Pki::new();
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let ours = api.kubeconfig("kind-test");
        let ca_line = ours
            .lines()
            .find(|l| l.contains("certificate-authority-data"))
            .unwrap()
            .to_string();
        let swapped = ours.replace(
            &ca_line,
            &format!("    certificate-authority-data: {}", b64(&other.ca_pem)),
        );
        std::fs::write(&path, swapped).unwrap();
        rt().block_on(async {
            let client = connect(&path, "kind-test").await.unwrap();
            let err = client
                .apiserver_version()
                .await
                .expect_err("untrusted server");
            assert!(!matches!(err, kube::Error::Api(_)), "{err}");
        });
    }
}
