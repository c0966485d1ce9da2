//! Exec into a pod (src/kube/exec.rs) through the fake API server's exec endpoint
//! (tests/it/apiserver/exec.rs), with the command really run in a container on the
//! test Docker engine: bytes through stdin to EOF and back, stderr, exit codes, and the
//! errors of a pod that is missing, not running, or lacks the program.

use std::io::{Read, Write};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use pulsedev::kube::exec::{self, Io, Target};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::apiserver::{FakeApiServer, Options};
use crate::support::standin::{Spec, StandIn};
use crate::support::{build, docker};

/// A fake cluster whose Deployment `name` (one container, `name`) has a Running pod,
/// exec into which runs in `standin`; and a client of it.
pub async fn cluster_with(
    name: &str,
    standin: &StandIn,
    opts: Options,
) -> (FakeApiServer, kube::Client) {
    let api = FakeApiServer::start(opts.exec_into(name, &standin.container));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path, "kind-pdtest");
    let client = pulsedev::kube::connect(&path, "kind-pdtest").await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "app.kubernetes.io/instance": name}},
                "spec": {"containers": [{"name": name, "image": "localhost/standin:1"}]}}}
    });
    deployments
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
    wait_running(&client, "default", &format!("app={name}"), name).await;
    (api, client)
}

/// Waits until a pod matching `selector` runs `container`: a new pod is
/// ContainerCreating for a few reconcile passes, as a real kubelet's is
/// (apiserver/rollout.rs); every look lets the fake's controllers run.
pub async fn wait_running(client: &kube::Client, ns: &str, selector: &str, container: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while exec::pick_pod(client, ns, selector, container)
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no pod of {selector} ran {container} within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn sh(script: &str) -> Vec<String> {
    ["sh", "-c", script].map(String::from).to_vec()
}

async fn run(
    client: &kube::Client,
    target: &Target,
    command: &[String],
    stdin: Option<&[u8]>,
) -> pulsedev::error::Result<(exec::Exit, Vec<u8>, Vec<u8>)> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = stdin.map(|b| std::io::Cursor::new(b.to_vec()));
    let exit = exec::run(
        client,
        target,
        command,
        Io {
            stdin: input
                .as_mut()
                .map(|c| c as &mut (dyn tokio::io::AsyncRead + Unpin + Send)),
            stdout: &mut out,
            stderr: &mut err,
            tty: false,
        },
        &CancellationToken::new(),
    )
    .await?;
    Ok((exit, out, err))
}

#[tokio::test]
async fn bytes_go_through_a_real_process_to_eof_and_the_exit_code_comes_back() {
    let Some(engine) = docker::engine("exec_bytes_round_trip").await else {
        return;
    };
    let standin = StandIn::start(&engine, Spec::default()).await;
    let (api, client) = cluster_with("web", &standin, Options::new("pdtest")).await;
    let target = exec::pick_pod(&client, "default", "app=web", "web")
        .await
        .unwrap();
    assert!(target.pod.starts_with("web-"), "{target}");

    // 3 MB through cat and back: stdin reaches EOF (cat ends) while output still
    // flows (v5's close signal), stderr is separate, the exit code is the script's.
    let input = build::noise(3 << 20, 7);
    let (exit, out, err) = run(
        &client,
        &target,
        &sh("cat; echo done-reading >&2; exit 3"),
        Some(&input),
    )
    .await
    .unwrap();
    assert_eq!(exit.code, 3);
    assert!(out == input, "stdout differs: {} bytes", out.len());
    assert_eq!(String::from_utf8_lossy(&err), "done-reading\n");
    assert_eq!(exit.stderr_tail, "done-reading\n");
    let e = exit.check(&target, "copy the noise").unwrap_err();
    assert_eq!(e.id(), "exec-failed");
    assert_eq!(e.details, ["done-reading"]);

    // Into a file through sh, as a copy into the container does.
    let (exit, _, _) = run(&client, &target, &sh("cat > /arrived"), Some(&input))
        .await
        .unwrap();
    assert_eq!(exit.code, 0);
    assert_eq!(standin.sh("wc -c < /arrived").trim(), (3 << 20).to_string());

    let (exit, out, _) = run(&client, &target, &sh("id -u; pwd"), None)
        .await
        .unwrap();
    assert_eq!(
        (exit.code, String::from_utf8_lossy(&out).as_ref()),
        (0, "0\n/\n")
    );

    let execs = api.execs();
    assert_eq!(execs.len(), 3, "{execs:#?}");
    assert_eq!(execs[0].protocol, "v5.channel.k8s.io");
    assert_eq!(execs[0].stdin_bytes, 3 << 20);
    assert_eq!(execs[0].command, sh("cat; echo done-reading >&2; exit 3"));
    assert_eq!(execs[2].status["status"], "Success");
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
}

#[tokio::test]
async fn a_missing_pod_container_or_program_is_named() {
    let Some(engine) = docker::engine("exec_errors").await else {
        return;
    };
    let standin = StandIn::start(&engine, Spec::default()).await;
    let (api, client) = cluster_with("api", &standin, Options::new("pdtest")).await;
    let target = exec::pick_pod(&client, "default", "app=api", "api")
        .await
        .unwrap();

    let gone = Target {
        pod: "api-gone".into(),
        ..target.clone()
    };
    let e = run(&client, &gone, &sh("true"), None).await.unwrap_err();
    assert_eq!(e.id(), "pod-unavailable");
    assert!(
        e.message.contains("pods \"api-gone\" not found"),
        "{}",
        e.message
    );

    let other = Target {
        container: "sidecar".into(),
        ..target.clone()
    };
    let e = run(&client, &other, &sh("true"), None).await.unwrap_err();
    assert_eq!(e.id(), "pod-unavailable");
    assert!(
        e.message.contains(&format!(
            "container sidecar is not valid for pod {}",
            target.pod
        )),
        "{}",
        e.message
    );

    let e = run(&client, &target, &["no-such-program".to_string()], None)
        .await
        .unwrap_err();
    assert_eq!(e.id(), "exec-failed");
    assert!(e.message.contains("no-such-program"), "{}", e.message);
    assert!(
        e.message.contains("Internal error occurred"),
        "{}",
        e.message
    );

    let e = exec::pick_pod(&client, "default", "app=worker", "worker")
        .await
        .unwrap_err();
    assert_eq!(e.id(), "pod-unavailable");
    assert!(e.message.contains("app=worker"), "{}", e.message);
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
}

#[tokio::test]
async fn a_container_that_stopped_running_is_pod_unavailable() {
    let Some(engine) = docker::engine("exec_not_running").await else {
        return;
    };
    let standin = StandIn::start(&engine, Spec::default()).await;
    let (api, client) = cluster_with("api", &standin, Options::new("pdtest")).await;
    let target = exec::pick_pod(&client, "default", "app=api", "api")
        .await
        .unwrap();
    // The container crash-loops from now on: the pod is still there, its container
    // is waiting in CrashLoopBackOff.
    api.configure(|o| o.crash_looping.push("api".into()));
    let e = run(&client, &target, &sh("true"), None).await.unwrap_err();
    assert_eq!(e.id(), "pod-unavailable");
    assert!(
        e.message.contains("container not found (\"api\")"),
        "{}",
        e.message
    );
    assert_eq!(api.execs()[0].status["reason"], "InternalError");
    let e = exec::pick_pod(&client, "default", "app=api", "api")
        .await
        .unwrap_err();
    assert_eq!(e.id(), "pod-unavailable");
}

/// The handshake as a client other than kube-rs may do it: only v4, or no protocol
/// the server speaks.
#[tokio::test]
async fn subprotocols_are_negotiated_as_the_real_servers_do() {
    let Some(engine) = docker::engine("exec_subprotocols").await else {
        return;
    };
    let standin = StandIn::start(&engine, Spec::default()).await;
    let (api, client) = cluster_with("web", &standin, Options::new("pdtest")).await;
    let target = exec::pick_pod(&client, "default", "app=web", "web")
        .await
        .unwrap();
    let addr = api.url().trim_start_matches("http://").to_string();
    let handshake = |protocols: &str| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "GET /api/v1/namespaces/default/pods/{}/exec?command=true&stdout=true&container=web HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n",
            target.pod
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        (String::from_utf8(head).unwrap(), c)
    };
    let (head, _) = handshake("base64.channel.k8s.io");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (head, mut c) = handshake("v4.channel.k8s.io");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // RFC 6455 §1.3's example key and its accept value.
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n"),
        "{head}"
    );
    // The empty "connected" message on stdout, then the status, then a close frame.
    let frames = server_frames(&mut c);
    assert_eq!(frames[0], (0x2, vec![1]));
    assert_eq!(frames[1].0, 0x2);
    assert_eq!(frames[1].1[0], 3);
    let status: serde_json::Value = serde_json::from_slice(&frames[1].1[1..]).unwrap();
    assert_eq!(status["status"], "Success");
    assert_eq!(frames[2], (0x8, vec![0x03, 0xe8]));
    assert_eq!(frames.len(), 3);

    // A container that is not running, asked with v4 only: the kubelet's plain 500.
    api.configure(|o| o.crash_looping.push("web".into()));
    let (head, mut c) = handshake("v4.channel.k8s.io");
    assert!(head.starts_with("HTTP/1.1 500 "), "{head}");
    let mut body = vec![0u8; "container not found (\"web\")".len()];
    c.read_exact(&mut body).unwrap();
    assert_eq!(body, b"container not found (\"web\")");
    drop(client);
}

/// Frames from the server (never masked) up to and including its close frame.
fn server_frames(c: &mut std::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        let mut h = [0u8; 2];
        c.read_exact(&mut h).unwrap();
        assert_eq!(h[1] & 0x80, 0, "a server frame is never masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                c.read_exact(&mut b).unwrap();
                usize::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                c.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).unwrap();
        let opcode = h[0] & 0x0f;
        frames.push((opcode, payload));
        if opcode == 0x8 {
            return frames;
        }
    }
}
