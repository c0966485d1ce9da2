//! Fakes at the process and HTTP boundary for the cluster tests: a recording `kind`,
//! a tiny API server that answers the node list and ConfigMap applies, a tool mirror,
//! and Docker helpers (busybox node containers built FROM scratch, nothing pulled).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A `kind` that appends its argv to `$FAKE_KIND_DIR/log` (one line per call) and
/// keeps the clusters it "made" in `$FAKE_KIND_DIR/clusters`. `FAKE_KIND_MODE`:
/// ok (default), slow (2 s, then ok), hang (records the cluster, then sleeps),
/// hang-in-lock (records the cluster, takes the kubeconfig lock, then sleeps: killed
/// there, it leaves the lock), fail (kind's kubeadm failure text), exists (kind's
/// "already exist" text).
/// `create cluster` copies its --config to `$FAKE_KIND_DIR/config-<name>.yaml` and
/// writes --kubeconfig pointing at `$FAKE_API` (default https://127.0.0.1:6443). With
/// `$FAKE_API_CA_DATA`, `$FAKE_API_CERT_DATA` and `$FAKE_API_KEY_DATA` (an HTTPS fake
/// API server's, `FakeApiServer::kind_credentials`) it is the file kind writes: the
/// node's /etc/kubernetes/admin.conf (cluster CA, the admin's client certificate and
/// key) with the server set to the host's endpoint and every name `kind-<name>`
/// (kubernetes-sigs/kind pkg/cluster/internal/kubeconfig/kubeconfig.go `get`,
/// internal/kubeconfig/helpers.go `KINDFromRawKubeadm`), keys sorted as
/// sigs.k8s.io/yaml writes them (internal/kubeconfig/encode.go). Without them, a token
/// the plain-HTTP fake accepts stands in for the credentials.
///
/// Like kind v0.32.0 it also:
/// - picks its node provider per call and records it in `$FAKE_KIND_DIR/providers`:
///   KIND_EXPERIMENTAL_PROVIDER when set, announced on stderr (pkg/internal/runtime/
///   runtime.go), else docker when `docker -v` prints one line starting "Docker
///   version", then nerdctl, then podman, else docker (pkg/cluster/provider.go
///   `DetectNodeProvider`, pkg/cluster/internal/providers/*/util.go `IsAvailable`).
///   Clusters made by another provider live in `clusters.<provider>`: invisible to
///   docker, as podman's nodes are to the Docker API.
/// - takes `<kubeconfig>.lock` with O_EXCL around its kubeconfig writes (pkg/cluster/
///   internal/kubeconfig/internal/kubeconfig/lock.go): a lock already there fails
///   `create` after the nodes exist (create.go exports the kubeconfig after every
///   action, and deletes nothing then) and fails `delete` after the nodes are gone
///   (pkg/cluster/internal/delete/delete.go), both with "failed to lock config file".
pub const FAKE_KIND: &str = r#"
d="${FAKE_KIND_DIR:?FAKE_KIND_DIR is not set}"
echo "$*" >> "$d/log"
touch "$d/clusters"
verb="$1 $2"
case "$verb" in
  "version "*) echo "${FAKE_KIND_VERSION:-kind v0.32.0 go1.24.2 linux/amd64}"; exit 0 ;;
esac
case "${KIND_EXPERIMENTAL_PROVIDER:-}" in
  docker|podman) provider="$KIND_EXPERIMENTAL_PROVIDER"
    echo "using $provider due to KIND_EXPERIMENTAL_PROVIDER" >&2 ;;
  nerdctl|finch|nerdctl.lima) provider=nerdctl
    echo "using $KIND_EXPERIMENTAL_PROVIDER due to KIND_EXPERIMENTAL_PROVIDER" >&2 ;;
  *)
    [ -n "${KIND_EXPERIMENTAL_PROVIDER:-}" ] && echo "ignoring unknown value "$KIND_EXPERIMENTAL_PROVIDER" for KIND_EXPERIMENTAL_PROVIDER" >&2
    v="$(docker -v 2>/dev/null)"
    if [ "$(printf '%s
' "$v" | wc -l)" = 1 ] && [ "${v#Docker version}" != "$v" ]; then provider=docker
    elif [ "$(nerdctl -v 2>/dev/null | cut -c1-15)" = "nerdctl version" ]; then provider=nerdctl
    elif [ "$(podman -v 2>/dev/null | cut -c1-14)" = "podman version" ]; then provider=podman
    else provider=docker; fi ;;
esac
echo "$provider" >> "$d/providers"
cf="$d/clusters"
[ "$provider" = docker ] || { cf="$d/clusters.$provider"; touch "$cf"; }
if [ "$verb" = "get clusters" ]; then
  if [ -s "$cf" ]; then cat "$cf"; else echo "No kind clusters found." >&2; fi
  exit 0
fi
name=kind; config=; kubeconfig=
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift ;;
    --config) config="$2"; shift ;;
    --kubeconfig) kubeconfig="$2"; shift ;;
  esac
  shift
done
lock() {
  if ( set -C; : > "$kubeconfig.lock" ) 2>/dev/null; then return 0; fi
  echo "ERROR: failed to lock config file: open $kubeconfig.lock: file exists" >&2
  exit 1
}
if [ "$verb" = "create cluster" ]; then
  [ -n "$config" ] && cp "$config" "$d/config-$name.yaml"
  case "${FAKE_KIND_MODE:-ok}" in
    exists)
      echo "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"$name\"" >&2
      exit 1 ;;
    fail)
      echo "Creating cluster \"$name\" ..." >&2
      echo "ERROR: failed to create cluster: failed to init node with kubeadm: command \"docker exec --privileged $name-control-plane kubeadm init --skip-phases=preflight --config=/kind/kubeadm.conf --skip-token-print --v=6\" failed with error: exit status 1" >&2
      exit 1 ;;
    hang)
      echo "$name" >> "$cf"
      echo "Creating cluster \"$name\" ..." >&2
      echo $$ > "$d/hang.pid"
      exec sleep 300 ;;
    hang-in-lock)
      echo "$name" >> "$cf"
      echo "Creating cluster \"$name\" ..." >&2
      lock
      echo $$ > "$d/hang.pid"
      exec sleep 300 ;;
    slow) sleep 2 ;;
  esac
  echo "$name" >> "$cf"
  echo "Creating cluster \"$name\" ..." >&2
  echo " ✓ Ensuring node image (kindest/node:v1.36.1) 🖼" >&2
  lock
  server="${FAKE_API:-https://127.0.0.1:6443}"
  if [ -n "${FAKE_API_CA_DATA:-}" ]; then
    cat > "$kubeconfig" <<KC
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $FAKE_API_CA_DATA
    server: $server
  name: kind-$name
contexts:
- context:
    cluster: kind-$name
    user: kind-$name
  name: kind-$name
current-context: kind-$name
kind: Config
preferences: {}
users:
- name: kind-$name
  user:
    client-certificate-data: $FAKE_API_CERT_DATA
    client-key-data: $FAKE_API_KEY_DATA
KC
  else
  cat > "$kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kind-$name
  cluster:
    server: $server
contexts:
- name: kind-$name
  context:
    cluster: kind-$name
    user: kind-$name
current-context: kind-$name
preferences: {}
users:
- name: kind-$name
  user:
    token: fake-token
KC
  fi
  rm -f "$kubeconfig.lock"
  echo "Set kubectl context to \"kind-$name\"" >&2
  exit 0
fi
if [ "$verb" = "delete cluster" ]; then
  echo "Deleting cluster \"$name\" ..." >&2
  grep -vx "$name" "$cf" > "$cf.new"; mv "$cf.new" "$cf"
  lock
  rm -f "$kubeconfig.lock"
  exit 0
fi
echo "ERROR: unknown command" >&2
exit 1
"#;

/// The provider the fake kind used for each call but `version`, in order.
pub fn kind_providers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("providers"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `docker -v` of Docker's own CLI (kind checks only the start of this line).
pub const FAKE_DOCKER_CLI: &str = r#"[ "$1" = -v ] && echo "Docker version 28.2.2, build e6534b4""#;

/// The recorded kind calls, one string per call.
pub fn kind_calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn kind_clusters(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("clusters"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A fake API server on 127.0.0.1: GET /api/v1/nodes lists one node (Ready or not),
/// PATCH of a ConfigMap echoes it back. Every request line (and body) is recorded.
pub struct FakeApi {
    pub url: String,
    pub ready: Arc<AtomicBool>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    pub fn start(node: &str) -> FakeApi {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let ready = Arc::new(AtomicBool::new(true));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (r, q, node) = (ready.clone(), requests.clone(), node.to_string());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let Some((line, body)) = read_request(&mut s) else {
                    continue;
                };
                q.lock()
                    .unwrap()
                    .push(format!("{line} {body}").trim().to_string());
                let status = if r.load(Ordering::SeqCst) {
                    "True"
                } else {
                    "False"
                };
                let json = if line.starts_with("GET /api/v1/nodes") {
                    format!(
                        r#"{{"apiVersion":"v1","kind":"NodeList","metadata":{{"resourceVersion":"1"}},"items":[{{"metadata":{{"name":"{node}"}},"status":{{"conditions":[{{"type":"Ready","status":"{status}","reason":"KubeletNotReady"}}]}}}}]}}"#
                    )
                } else {
                    body.clone()
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                );
            }
        });
        FakeApi {
            url,
            ready,
            requests,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(s: &mut std::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Some((head.lines().next().unwrap_or_default().to_string(), body))
}

/// Serves files from a map path → bytes on 127.0.0.1 (a tool mirror); 404 otherwise.
pub struct Mirror {
    pub url: String,
    pub hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Mirror {
    pub fn start(files: Vec<(String, Vec<u8>)>) -> Mirror {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                let Some((line, _)) = read_request(&mut s) else {
                    continue;
                };
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                h.lock().unwrap().push(path.clone());
                match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(body);
                    }
                    None => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                }
            }
        });
        Mirror {
            url: format!("http://127.0.0.1:{port}"),
            hits,
            stop,
            port,
        }
    }

    /// Stops answering: later connections are refused (the machine is "offline").
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

// ---- Docker (real engine) ----

pub const NODE_IMAGE: &str = "pulsedev-test-cluster-node:busybox";

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub async fn docker(host: &str) -> bollard::Docker {
    let path = host
        .strip_prefix("unix://")
        .expect("unix socket DOCKER_HOST");
    bollard::Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// A FROM-scratch image holding busybox, whose default command sleeps: it stands in
/// for a kind node (and for the registry) without pulling anything.
pub async fn ensure_node_image(d: &bollard::Docker) {
    use futures::StreamExt;
    if d.inspect_image(NODE_IMAGE).await.is_ok() {
        return;
    }
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"/bin/sleep\", \"3600\"]\n";
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("busybox", &busybox[..], 0o755),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    }
    let body = tar.into_inner().unwrap();
    let opts = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .t(NODE_IMAGE)
        .rm(true)
        .build();
    let mut stream = d.build_image(opts, None, Some(bollard::body_full(body.into())));
    while let Some(msg) = stream.next().await {
        let msg = msg.expect("test image builds");
        if let Some(e) = msg.error_detail {
            panic!("test image build failed: {e:?}");
        }
    }
}

/// Names the busybox stand-in as the kind node image (PULSEDEV_NODE_IMAGE), building it
/// first: `cluster create` then finds the image present and pulls nothing, as on a
/// machine that pulled the real one before.
pub fn with_node_image(pd: crate::harness::Pd, host: &str) -> crate::harness::Pd {
    rt().block_on(async { ensure_node_image(&docker(host).await).await });
    pd.env("PULSEDEV_NODE_IMAGE", NODE_IMAGE)
}

/// Runs a busybox container named `name` with `labels`; it sleeps until removed.
pub async fn run_container(d: &bollard::Docker, name: &str, labels: &[(&str, &str)]) {
    ensure_node_image(d).await;
    run_container_of(d, NODE_IMAGE, name, labels).await;
}

/// `run_container` with another image (whose default command keeps it running).
pub async fn run_container_of(
    d: &bollard::Docker,
    image: &str,
    name: &str,
    labels: &[(&str, &str)],
) {
    let _ = remove_container(d, name).await;
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.to_string()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(name)
        .build();
    d.create_container(Some(opts), body).await.unwrap();
    d.start_container(name, None).await.unwrap();
}

pub async fn remove_container(d: &bollard::Docker, name: &str) -> bool {
    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .build();
    d.remove_container(name, Some(opts)).await.is_ok()
}

pub async fn container_state(d: &bollard::Docker, name: &str) -> Option<String> {
    let info = d.inspect_container(name, None).await.ok()?;
    info.state?.status.map(|s| s.to_string())
}

/// Reads a file inside a running container (busybox cat).
pub async fn cat(d: &bollard::Docker, container: &str, path: &str) -> String {
    use futures::StreamExt;
    let exec = d
        .create_exec(
            container,
            bollard::exec::CreateExecOptions {
                cmd: Some(vec!["cat".to_string(), path.to_string()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = String::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } =
        d.start_exec(&exec.id, None).await.unwrap()
    {
        while let Some(Ok(c)) = output.next().await {
            out.push_str(&String::from_utf8_lossy(&c.into_bytes()));
        }
    }
    out
}

/// A name unique to this test process and call site.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn state_dir(home: &Path, name: &str) -> PathBuf {
    home.join("state/pulsedev").join(name)
}
