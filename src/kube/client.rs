//! The Kubernetes client: built from pulsedev's own kubeconfig file and a named context,
//! never from `~/.kube/config` or `KUBECONFIG`, so pulsedev cannot touch a cluster it did
//! not make.
//!
//! Owns: reading a kubeconfig (the cluster module decides where it lives) and turning
//! it into a `kube::Client`; the deadline of every request; collecting the `Warning`
//! headers the API server sends. Must not create or change kubeconfig files.
//!
//! Deadlines: kube 5 builds its client with a connect and a write timeout but no read
//! timeout (kube-client src/config/mod.rs, `read_timeout: None`), so a request to an
//! API server that accepted the connection and stopped answering (a kind node being
//! restarted, a paused container) waits forever, past any `--timeout`. Every request
//! here has a deadline ([`REQUEST_TIMEOUT`]) from sending to the answer's headers, and
//! the connection a read timeout of twice that for a body that stalls.
//!
//! Warnings: the API server reports deprecated APIs, dropped fields and the like in
//! `Warning: 299 - "text"` headers (RFC 7234 §5.5 as used by k8s.io/apiserver
//! pkg/endpoints/handlers, written by `warning.AddWarning`; client-go prints them through
//! rest.WarningHandler). kube 5 discards headers of typed calls, so a layer reads them and
//! hands them to the task that made the request ([`with_warnings`]).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ::kube::Client;
use ::kube::client::ClientBuilder;
use ::kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::error::{Error, ErrorKind, Result};

/// How long one request may take until its answer's headers arrive. Longer than the
/// longest admission webhook call the API server makes (`timeoutSeconds` is at most 30,
/// k8s.io/api admissionregistration/v1 types.go) so a slow webhook is not cut short;
/// short enough that a hung server is noticed within a wait's poll budget.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

tokio::task_local! {
    static WARNINGS: Arc<Mutex<Vec<String>>>;
}

/// Runs `fut` and returns what it returned with the texts of the `Warning` headers of
/// every API answer it received (in order, duplicates kept).
pub(crate) async fn with_warnings<F: Future>(fut: F) -> (F::Output, Vec<String>) {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let out = WARNINGS.scope(sink.clone(), fut).await;
    let warnings = std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
    (out, warnings)
}

/// The texts of `Warning` header values: `299 - "text"` (several may share one value,
/// comma-separated). The text is unquoted (backslash escapes), as
/// k8s.io/apimachinery pkg/util/net/http.go `ParseWarningHeader` does; a value that is
/// not in that form is kept whole.
pub(crate) fn parse_warnings(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        // code SP agent SP "text" [SP "date"]
        let parsed = (|| {
            let (code, r) = rest.split_once(' ')?;
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (_agent, r) = r.trim_start().split_once(' ')?;
            let r = r.trim_start().strip_prefix('"')?;
            let mut text = String::new();
            let mut chars = r.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => text.push(chars.next()?.1),
                    '"' => return Some((text, &r[i + 1..])),
                    c => text.push(c),
                }
            }
            None
        })();
        let Some((text, r)) = parsed else {
            out.push(rest.to_string());
            break;
        };
        out.push(text);
        // Skip an optional date, then the comma before the next warning.
        let r = r.trim_start();
        let r = match r.strip_prefix('"') {
            Some(d) => d.split_once('"').map_or("", |(_, r)| r),
            None => r,
        };
        rest = r.trim_start().strip_prefix(',').unwrap_or("").trim_start();
    }
    out
}

/// The layer of pulsedev's client: a deadline per request, and `Warning` headers to
/// [`with_warnings`].
#[derive(Clone)]
struct Guard {
    timeout: Duration,
    endpoint: String,
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    guard: Guard,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, Q> tower::Service<http::Request<Q>> for Guarded<S>
where
    S: tower::Service<http::Request<Q>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<http::Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Q>) -> Self::Future {
        let what = format!(
            "{} {}",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        let Guard { timeout, endpoint } = self.guard.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(Into::into)?,
                Err(_) => {
                    return Err(format!(
                        "the API server at {endpoint} did not answer {what} within {}s",
                        timeout.as_secs_f64()
                    )
                    .into());
                }
            };
            let texts: Vec<String> = resp
                .headers()
                .get_all(http::header::WARNING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_warnings)
                .collect();
            if !texts.is_empty() {
                // Polled in the caller's task (kube's Buffer hands the future back), so
                // the caller's sink is in scope.
                let _ = WARNINGS.try_with(|w| {
                    w.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(texts.iter().cloned())
                });
            }
            Ok(resp)
        })
    }
}

/// The context kind writes for cluster `name`.
pub fn context_name(name: &str) -> String {
    format!("kind-{name}")
}

/// A client for `context` in the kubeconfig file at `path`, every request bounded by
/// [`REQUEST_TIMEOUT`].
///
/// Errors: `not-ready` when the file does not exist (the cluster was never made, or was
/// removed), `config-invalid` when it cannot be read or lacks the context.
pub async fn connect(path: &Path, context: &str) -> Result<Client> {
    connect_with_timeout(path, context, REQUEST_TIMEOUT).await
}

/// No proxy for an API server on this machine (kind's is on 127.0.0.1). kube 5 takes
/// HTTPS_PROXY from the environment for every cluster (kube-client
/// src/config/file_loader.rs `proxy_url`) and, built without its `http-proxy` feature,
/// then refuses to make a client at all; with it, it would send loopback traffic to the
/// proxy, where NO_PROXY is compared with the proxy's address instead of the server's.
/// kubectl never proxies loopback: client-go uses Go's `http.ProxyFromEnvironment`,
/// whose rules (golang.org/x/net/http/httpproxy `useProxy`) exempt "localhost" and
/// loopback addresses whatever NO_PROXY says.
pub fn direct_to_loopback(config: &mut kube::Config) {
    let host = config.cluster_url.host().unwrap_or_default();
    let host = host.trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        config.proxy_url = None;
    }
}

/// [`connect`] with another request deadline.
pub async fn connect_with_timeout(path: &Path, context: &str, timeout: Duration) -> Result<Client> {
    if !path.exists() {
        return Err(Error::new(
            ErrorKind::NotReady,
            format!(
                "the cluster does not exist (no kubeconfig at {})",
                path.display()
            ),
        )
        .with_hint("run `pulsedev up` to create it"));
    }
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("failed to read the kubeconfig {}: {e}", path.display()),
        )
        .with_hint("run `pulsedev up` to rewrite it, or `pulsedev reset` to start over")
    })?;
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "failed to use context `{context}` of the kubeconfig {}: {e}",
                    path.display()
                ),
            )
            .with_hint("run `pulsedev up` to rewrite it, or `pulsedev reset` to start over")
        })?;
    // The read timeout bounds a body that stops mid-way; counted from the request's
    // write, not from when a pooled connection went idle (kube's advice on
    // `reset_reader_on_write`). Twice the deadline, so that a request without any answer
    // ends by the deadline below, whose error names the server and the request.
    config.read_timeout = Some(timeout.saturating_mul(2));
    config.reset_reader_on_write = true;
    config.connect_timeout = Some(config.connect_timeout.unwrap_or(timeout).min(timeout));
    direct_to_loopback(&mut config);
    let guard = Guard {
        timeout,
        endpoint: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
    };
    let builder = ClientBuilder::try_from(config).map_err(|e| {
        Error::internal(format!(
            "failed to build a Kubernetes client for `{context}`: {e}"
        ))
    })?;
    Ok(builder.with_layer(&guard).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: with HTTPS_PROXY set (a corporate proxy, or an unreachable one when
    /// offline) `up` failed to make any client for the cluster on 127.0.0.1; loopback
    /// servers go direct, as kubectl's do, and other servers keep their proxy.
    #[test]
    fn loopback_servers_never_go_through_a_proxy() {
        let proxied = |server: &str| {
            let mut c = kube::Config::new(server.parse().unwrap());
            c.proxy_url = Some("http://proxy.corp:3128".parse().unwrap());
            direct_to_loopback(&mut c);
            c.proxy_url.is_some()
        };
        assert!(!proxied("https://127.0.0.1:41234"));
        assert!(!proxied("https://localhost:6443"));
        assert!(!proxied("https://[::1]:6443"));
        assert!(proxied("https://10.0.0.5:6443"));
        assert!(proxied("https://k8s.example.com"));
    }

    const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: kind-pulsedev
  cluster:
    server: https://127.0.0.1:41234
    insecure-skip-tls-verify: true
contexts:
- name: kind-pulsedev
  context:
    cluster: kind-pulsedev
    user: kind-pulsedev
current-context: kind-pulsedev
users:
- name: kind-pulsedev
  user:
    token: not-a-real-token
"#;

    #[tokio::test]
    async fn connects_from_a_file_and_context_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let client = connect(&path, "kind-pulsedev").await.unwrap();
        assert_eq!(client.default_namespace(), "default");
    }

    #[tokio::test]
    async fn a_missing_file_means_no_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let Err(e) = connect(&dir.path().join("nope"), "kind-pulsedev").await else {
            panic!("connected without a kubeconfig");
        };
        assert_eq!(e.id(), "not-ready");
        assert!(e.message.contains("does not exist"), "{}", e.message);
        assert_eq!(e.hint.as_deref(), Some("run `pulsedev up` to create it"));
    }

    #[tokio::test]
    async fn an_unknown_context_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let Err(e) = connect(&path, "kind-other").await else {
            panic!("connected to an unknown context");
        };
        assert_eq!(e.id(), "config-invalid");
        assert!(e.message.contains("kind-other"), "{}", e.message);
    }

    fn kubeconfig_for(server: &str) -> String {
        KUBECONFIG.replace("https://127.0.0.1:41234", server)
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_is_an_error_naming_it_on_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads nothing, answers nothing: a paused kind node.
        let held = std::thread::spawn(move || listener.accept().map(|(c, _)| c));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig_for(&format!("http://{addr}"))).unwrap();
        let client = connect_with_timeout(&path, "kind-pulsedev", Duration::from_millis(300))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let api: ::kube::Api<k8s_openapi::api::core::v1::Namespace> = ::kube::Api::all(client);
        let e = api.get("default").await.unwrap_err();
        let took = started.elapsed();
        let text = super::super::describe(&e);
        assert!(
            text.contains(&format!(
                "the API server at http://{addr} did not answer GET /api/v1/namespaces/default within 0.3s"
            )),
            "{text}"
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
        drop(held);
    }

    #[test]
    fn warning_headers_are_read_as_client_go_reads_them() {
        assert_eq!(
            parse_warnings(r#"299 - "unknown field \"spec.foo\"""#),
            [r#"unknown field "spec.foo""#]
        );
        assert_eq!(
            parse_warnings(
                r#"299 - "policy/v1beta1 PodDisruptionBudget is deprecated", 299 - "second" "Mon, 30 Nov 2026 12:00:00 GMT""#
            ),
            ["policy/v1beta1 PodDisruptionBudget is deprecated", "second"]
        );
        assert_eq!(parse_warnings("not in the form"), ["not in the form"]);
        assert_eq!(
            parse_warnings(r#"299 kube-apiserver "a \\ b""#),
            [r#"a \ b"#]
        );
        assert!(parse_warnings("").is_empty());
    }

    #[tokio::test]
    async fn warnings_reach_the_task_that_made_the_request_only() {
        use tower::Layer as _;
        let (svc, mut handle) = tower_test::mock::pair::<
            http::Request<::kube::client::Body>,
            http::Response<::kube::client::Body>,
        >();
        let guarded = Guard {
            timeout: Duration::from_secs(5),
            endpoint: "https://127.0.0.1:6443".into(),
        }
        .layer(svc);
        let client = Client::new(guarded, "default");
        let server = tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.unwrap();
            send.send_response(
                http::Response::builder()
                    .header("warning", r#"299 - "spec.foo: deprecated""#)
                    .header("content-type", "application/json")
                    .body(::kube::client::Body::from(
                        br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}"#
                            .to_vec(),
                    ))
                    .unwrap(),
            );
        });
        let api: ::kube::Api<k8s_openapi::api::core::v1::Namespace> = ::kube::Api::all(client);
        let (got, warnings) = with_warnings(api.get("x")).await;
        got.unwrap();
        server.await.unwrap();
        assert_eq!(warnings, ["spec.foo: deprecated"]);
    }

    #[test]
    fn context_names() {
        assert_eq!(context_name("dev"), "kind-dev");
    }
}
