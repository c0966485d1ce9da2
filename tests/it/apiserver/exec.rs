//! The exec subresource, `GET|POST /api/v1/namespaces/<ns>/pods/<pod>/exec`, as the
//! API server and the kubelet answer it, with the command really run: each pod that a
//! test maps with [`super::Options::exec_into`] is stood in for by a running Docker
//! container on the test engine, and the command runs in it through `docker exec`, so
//! the bytes a client sends really go through `tar`, `sh` or `psql` and the exit code is
//! the program's own.
//!
//! Before the upgrade (k8s.io/kubernetes pkg/registry/core/pod/strategy.go
//! `streamLocation`): a pod that does not exist is 404 NotFound; `container` must name
//! one of the pod's containers (400 "container X is not valid for pod Y"), and may be
//! left out only when the pod has one container (400 "a container name must be
//! specified for pod Y, choose one of: [a b]"); a pod without a node is 400 "pod Y does
//! not have a host assigned".
//!
//! The upgrade: a WebSocket handshake (RFC 6455 §4.2; `Sec-WebSocket-Accept` is the
//! base64 SHA-1 of the key and the RFC's GUID). A client offering
//! `v5.channel.k8s.io` is served by the API server's stream translator
//! (k8s.io/apiserver pkg/util/proxy/streamtranslator.go, chosen for v5 requests by
//! pkg/registry/core/pod/rest/subresources.go; its websocket.go opens only v5);
//! otherwise the request is proxied to the kubelet, whose WebSocket server speaks
//! `v4.channel.k8s.io` (pkg/kubelet/cri/streaming/remotecommand/websocket.go). A
//! client offering neither fails the handshake, which golang.org/x/net/websocket
//! (server.go `newServerConn`) answers 403 Forbidden.
//!
//! The session: binary messages whose first byte is the channel (k8s.io/apimachinery
//! pkg/util/remotecommand/constants.go: 0 stdin, 1 stdout, 2 stderr, 3 error/status,
//! 4 resize). The server first writes an empty message on the lowest writable channel
//! ("the connection is established", websocket.go `createWebSocketStreams`). With v5
//! the client ends stdin with `[255, 0]` (k8s.io/streaming wsstream/conn.go, the close
//! signal); with v4 it can only close the whole WebSocket, after which nothing more may
//! be sent to it (RFC 6455 §5.5.1), so output after stdin's end is lost. When the
//! command ends the server writes one `metav1.Status` on channel 3: Success; Failure
//! `NonZeroExitCode` with the code in a cause `{"reason": "ExitCode", "message": "N"}`
//! (streamtranslator.go `codeExitToStatusError`); or an InternalError
//! (k8s.io/apimachinery pkg/api/errors `NewInternalError`) when the runtime could not
//! run it: a container that is not running ("container not found", pkg/kubelet
//! kubelet_pods.go `findContainer` sees running containers only; the translator has
//! already upgraded, so it arrives as a status, while the kubelet's own v4 endpoint
//! answers it with a plain 500 before upgrading, pkg/kubelet/cri/streaming/errors.go
//! `WriteError`), or an executable that is not there (the runtime's "OCI runtime exec
//! failed"). Then it sends a WebSocket close frame and waits for the client to close
//! (websocket.go `finish`).
//!
//! Not modelled: TTY allocation (a TTY request runs without one; stderr goes to the
//! stdout channel, as a terminal merges them), resize events (read and ignored), SPDY,
//! exec over the fake's TLS transport (recorded as unexpected), the base64 subprotocols.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Value, json};
use sha1::Digest as _;

use super::{Call, Request, Response, Shared, fail, str_of};

/// One exec the fake served (or refused).
#[derive(Debug, Clone)]
pub struct Record {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// The negotiated subprotocol ("" when refused before the upgrade).
    pub protocol: String,
    /// Bytes received on the stdin channel.
    pub stdin_bytes: u64,
    /// Whether the client asked for a TTY.
    pub tty: bool,
    /// The status written on channel 3 (Null when none was).
    pub status: Value,
}

/// A stream the fake can read and write from two threads at once.
pub(super) trait Split: Read + Write {
    /// A reading and a writing handle, or None when the transport cannot be split (TLS).
    fn halves(&self) -> Option<(TcpStream, TcpStream)>;
}

impl Split for TcpStream {
    fn halves(&self) -> Option<(TcpStream, TcpStream)> {
        Some((self.try_clone().ok()?, self.try_clone().ok()?))
    }
}

impl Split for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn halves(&self) -> Option<(TcpStream, TcpStream)> {
        None
    }
}

/// Whether `req` is an exec of a pod.
pub(super) fn wants(req: &Request) -> bool {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segs.as_slice(),
        ["api", "v1", "namespaces", _, "pods", _, "exec"]
    ) && (req.method == "GET" || req.method == "POST")
}

/// Go's strconv.ParseBool, which the query parameter conversion uses.
fn flag(req: &Request, name: &str) -> bool {
    matches!(
        req.q(name),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    V4,
    V5,
}

/// Serves the exec `req`. Returns the answer when it is an ordinary HTTP one (the
/// connection goes on), or None when the connection was upgraded and is finished.
pub(super) fn serve<S: Split>(
    shared: &Shared,
    req: &Request,
    conn: &mut BufReader<S>,
) -> Option<Response> {
    let at = shared.started.elapsed();
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let (ns, pod_name) = (segs[3].to_string(), segs[5].to_string());
    let command: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let (stdin, stdout, stderr, tty) = (
        flag(req, "stdin"),
        flag(req, "stdout"),
        flag(req, "stderr"),
        flag(req, "tty"),
    );
    let mut record = Record {
        namespace: ns.clone(),
        pod: pod_name.clone(),
        container: req.q("container").unwrap_or("").to_string(),
        command: command.clone(),
        protocol: String::new(),
        stdin_bytes: 0,
        tty,
        status: Value::Null,
    };
    let offered: Vec<String> = req
        .header("sec-websocket-protocol")
        .unwrap_or("")
        .split(',')
        .map(|p| p.trim().to_string())
        .collect();
    let protocol = if offered.iter().any(|p| p == "v5.channel.k8s.io") {
        Some(Protocol::V5)
    } else if offered.iter().any(|p| p == "v4.channel.k8s.io") {
        Some(Protocol::V4)
    } else {
        None
    };

    // Everything decided under the lock; the command runs outside it.
    let decided = {
        let mut st = shared.state.lock().unwrap();
        st.reconcile();
        let pod = st
            .objects
            .get(&super::key("", "pods", &ns, &pod_name))
            .cloned();
        let decision = decide(&st.opts, req, pod.as_ref(), &record.container, protocol);
        if let Decision::Run { container, .. } | Decision::NotRunning { container } = &decision {
            record.container = container.clone();
        }
        if let Decision::Unexpected(why) = &decision {
            st.unexpected
                .push(format!("{} {} ({why})", req.method, req.target));
        }
        let code = match &decision {
            Decision::Answer(r) => r.code,
            Decision::Unexpected(_) => 400,
            _ => 101,
        };
        st.calls.push(Call {
            method: req.method.clone(),
            target: req.target.clone(),
            content_type: req.header("content-type").map(str::to_string),
            body: String::new(),
            status: code,
            at,
        });
        decision
    };
    let (reader, writer) = match decided {
        Decision::Answer(resp) => {
            push(shared, record);
            return Some(resp);
        }
        Decision::Unexpected(why) => {
            push(shared, record);
            return Some(fail(400, "BadRequest", &why, json!({})));
        }
        _ => match conn.get_ref().halves() {
            Some(h) => h,
            None => {
                shared.state.lock().unwrap().unexpected.push(format!(
                    "{} {} (exec over TLS is not modelled)",
                    req.method, req.target
                ));
                return Some(fail(
                    501,
                    "NotImplemented",
                    "exec over TLS is not modelled",
                    json!({}),
                ));
            }
        },
    };
    let protocol = protocol.expect("decided to upgrade");
    record.protocol = match protocol {
        Protocol::V4 => "v4.channel.k8s.io",
        Protocol::V5 => "v5.channel.k8s.io",
    }
    .to_string();
    let key = req.header("sec-websocket-key").unwrap_or("");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    ));
    let session = Session {
        out: Arc::new(Mutex::new(writer)),
        closed: Arc::new(AtomicBool::new(false)),
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        record.protocol
    );
    if session
        .out
        .lock()
        .unwrap()
        .write_all(head.as_bytes())
        .is_err()
    {
        return None;
    }
    // The empty message on the lowest writable channel.
    let first = if stdout {
        1
    } else if stderr {
        2
    } else {
        3
    };
    session.binary(first, &[]);
    let leftover = conn.buffer().to_vec();
    let mut input = FrameReader {
        inner: leftover.as_slice().chain(reader),
    };
    match decided {
        Decision::NotRunning { container } => {
            let why =
                format!("unable to upgrade connection: container not found (\"{container}\")");
            record.status = internal_error(&why);
            let status = serde_json::to_vec(&record.status).unwrap();
            push(shared, record);
            session.binary(3, &status);
            session.close();
            drain(&mut input, &session);
        }
        Decision::Run { docker, .. } => {
            let child = Child {
                docker,
                command,
                stdin,
                stdout,
                stderr,
                tty,
            };
            child.run(shared, protocol, &session, &mut input, record);
        }
        _ => unreachable!(),
    }
    None
}

fn push(shared: &Shared, record: Record) {
    shared.state.lock().unwrap().execs.push(record);
}

enum Decision {
    /// An ordinary HTTP answer (an error before the upgrade).
    Answer(Response),
    /// Something the fake does not model, or a test forgot to map the pod.
    Unexpected(String),
    /// Upgrade, then report the container as not running.
    NotRunning { container: String },
    /// Upgrade and run the command in Docker container `docker`.
    Run { container: String, docker: String },
}

fn decide(
    opts: &super::Options,
    req: &Request,
    pod: Option<&Value>,
    container: &str,
    protocol: Option<Protocol>,
) -> Decision {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let name = segs[5];
    let Some(pod) = pod else {
        return Decision::Answer(fail(
            404,
            "NotFound",
            &format!("pods \"{name}\" not found"),
            json!({"name": name, "kind": "pods"}),
        ));
    };
    let names: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .map(|c| str_of(c, &["name"]).to_string())
        .collect();
    let container = if container.is_empty() {
        match pod["spec"]["containers"].as_array().map_or(0, Vec::len) {
            1 => names[0].clone(),
            0 => {
                return Decision::Answer(bad(&format!(
                    "a container name must be specified for pod {name}"
                )));
            }
            _ => {
                return Decision::Answer(bad(&format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                )));
            }
        }
    } else if !names.iter().any(|n| n == container) {
        return Decision::Answer(bad(&format!(
            "container {container} is not valid for pod {name}"
        )));
    } else {
        container.to_string()
    };
    if str_of(pod, &["spec", "nodeName"]).is_empty() {
        return Decision::Answer(bad(&format!("pod {name} does not have a host assigned")));
    }
    let command: Vec<&str> = req
        .query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.as_str())
        .collect();
    if command.is_empty() {
        return Decision::Unexpected("an exec without a command".into());
    }
    if !req
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    {
        return Decision::Unexpected("an exec that is not a WebSocket upgrade (SPDY)".into());
    }
    let Some(protocol) = protocol else {
        // golang.org/x/net/websocket: a failed handshake is a bare 403.
        return Decision::Answer(Response {
            code: 403,
            content_type: "text/plain",
            body: Vec::new(),
            warnings: Vec::new(),
        });
    };
    let running = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == container.as_str() && c["state"].get("running").is_some());
    let phase = str_of(pod, &["status", "phase"]);
    if !running || phase == "Succeeded" || phase == "Failed" {
        return match protocol {
            Protocol::V5 => Decision::NotRunning { container },
            // The kubelet answers before upgrading (streaming/errors.go WriteError).
            Protocol::V4 => Decision::Answer(Response::text(
                500,
                &format!("container not found (\"{container}\")"),
            )),
        };
    }
    match opts
        .exec_into
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix.as_str()))
    {
        Some((_, docker)) => Decision::Run {
            container,
            docker: docker.clone(),
        },
        None => Decision::Unexpected(format!(
            "no Docker container stands in for pod {name}: map it with Options::exec_into"
        )),
    }
}

fn bad(message: &str) -> Response {
    fail(400, "BadRequest", message, json!({}))
}

fn internal_error(why: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": format!("Internal error occurred: {why}"),
        "reason": "InternalError", "details": {"causes": [{"message": why}]}, "code": 500})
}

/// The writing side of an upgraded connection, shared by the output threads.
#[derive(Clone)]
struct Session {
    out: Arc<Mutex<TcpStream>>,
    /// A close frame was sent or received: no more data frames (RFC 6455 §5.5.1).
    closed: Arc<AtomicBool>,
}

impl Session {
    /// Writes one unmasked frame (servers never mask, RFC 6455 §5.1).
    fn frame(&self, opcode: u8, payload: &[u8]) -> bool {
        let mut head = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => head.push(n as u8),
            n if n <= 0xffff => {
                head.push(126);
                head.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                head.push(127);
                head.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut out = self.out.lock().unwrap();
        out.write_all(&head).is_ok() && out.write_all(payload).is_ok() && out.flush().is_ok()
    }

    fn binary(&self, channel: u8, data: &[u8]) -> bool {
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(channel);
        msg.extend_from_slice(data);
        self.frame(0x2, &msg)
    }

    /// The server's close frame, status 1000 (normal closure).
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.frame(0x8, &1000u16.to_be_bytes());
        }
    }
}

/// Reads the client's frames (masked, RFC 6455 §5.3), reassembling fragments.
struct FrameReader<R: Read> {
    inner: R,
}

enum Frame {
    Binary(Vec<u8>),
    Text,
    Close,
    Ping(Vec<u8>),
    Pong,
}

impl<R: Read> FrameReader<R> {
    fn next(&mut self) -> Option<Frame> {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.inner.read_exact(&mut h).ok()?;
            let fin = h[0] & 0x80 != 0;
            let opcode = h[0] & 0x0f;
            // A client must mask every frame; a server closes the connection otherwise.
            if h[1] & 0x80 == 0 {
                return None;
            }
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.inner.read_exact(&mut b).ok()?;
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.inner.read_exact(&mut b).ok()?;
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            if len > 64 << 20 {
                return None;
            }
            let mut mask = [0u8; 4];
            self.inner.read_exact(&mut mask).ok()?;
            let mut payload = vec![0u8; len as usize];
            self.inner.read_exact(&mut payload).ok()?;
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match opcode {
                0x8 => return Some(Frame::Close),
                0x9 => return Some(Frame::Ping(payload)),
                0xA => return Some(Frame::Pong),
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return Some(if opcode == 0x1 {
                            Frame::Text
                        } else {
                            Frame::Binary(message)
                        });
                    }
                }
                _ => return None,
            }
        }
    }
}

/// After the server's close: reads until the client closes (or goes away).
fn drain<R: Read>(input: &mut FrameReader<R>, session: &Session) {
    while let Some(f) = input.next() {
        match f {
            Frame::Close => return,
            Frame::Ping(p) => {
                session.frame(0xA, &p);
            }
            _ => {}
        }
    }
}

/// The command to run in the stand-in, and the streams asked for.
struct Child {
    docker: String,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Child {
    /// Runs the command until it ends and the client has its status, recording the
    /// exec (before the status is sent, so a test that has the status sees the record).
    fn run<R: Read>(
        self,
        shared: &Shared,
        protocol: Protocol,
        session: &Session,
        input: &mut FrameReader<R>,
        mut record: Record,
    ) {
        let mut cmd = Command::new("docker");
        cmd.arg("exec");
        if self.stdin {
            cmd.arg("-i");
        }
        cmd.arg(&self.docker).args(&self.command);
        cmd.stdin(if self.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                record.status = internal_error(&format!("fake: cannot run docker: {e}"));
                let status = serde_json::to_vec(&record.status).unwrap();
                push(shared, record);
                session.binary(3, &status);
                session.close();
                return;
            }
        };
        let mut child_stdin = child.stdin.take();
        let out_pipe = child.stdout.take().unwrap();
        let err_pipe = child.stderr.take().unwrap();
        let child = Mutex::new(child);
        let stdin_bytes = AtomicU64::new(0);
        // Output: stdout on 1; stderr on 2, or on 1 under a TTY (one terminal), or
        // nowhere when not asked for. The runtime's own failure to start the program
        // (which the docker CLI prints on either stream) is not the program's output:
        // it is held back and becomes the status.
        let pump = |mut pipe: Box<dyn Read + Send>, channel: Option<u8>| {
            let mut held = Vec::new();
            let mut holding = false;
            let mut first = true;
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if first && buf[..n].starts_with(b"OCI runtime exec failed") {
                    holding = true;
                }
                first = false;
                if holding {
                    held.extend_from_slice(&buf[..n]);
                } else if let Some(c) = channel {
                    session.binary(c, &buf[..n]);
                }
            }
            held
        };
        let err_channel = if self.tty {
            Some(1)
        } else {
            self.stderr.then_some(2)
        };
        std::thread::scope(|scope| {
            let out_thread = scope.spawn(|| pump(Box::new(out_pipe), self.stdout.then_some(1)));
            let err_thread = scope.spawn(|| pump(Box::new(err_pipe), err_channel));
            let finisher = scope.spawn(|| {
                let mut held = out_thread.join().unwrap_or_default();
                held.extend(err_thread.join().unwrap_or_default());
                // Both pipes ended: the docker CLI is exiting. Not `wait()` under the
                // lock, so that the reader can still kill it.
                let code = loop {
                    if let Ok(Some(s)) = child.lock().unwrap().try_wait() {
                        break s.code().unwrap_or(-1);
                    }
                    std::thread::park_timeout(std::time::Duration::from_millis(2));
                };
                let status = if !held.is_empty() && (code == 126 || code == 127) {
                    let text = String::from_utf8_lossy(&held).trim().to_string();
                    internal_error(&format!("error executing command in container: {text}"))
                } else if code == 0 {
                    json!({"metadata": {}, "status": "Success"})
                } else {
                    json!({"metadata": {}, "status": "Failure",
                        "message": format!("command terminated with non-zero exit code: command terminated with exit code {code}"),
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
                };
                let bytes = serde_json::to_vec(&status).unwrap();
                record.status = status;
                record.stdin_bytes = stdin_bytes.load(Ordering::SeqCst);
                push(shared, record);
                session.binary(3, &bytes);
                session.close();
            });
            // The client's side: stdin, its end, pings, close.
            while let Some(frame) = input.next() {
                match frame {
                    Frame::Binary(msg) => match (msg.first(), protocol) {
                        (Some(0), _) => {
                            stdin_bytes.fetch_add((msg.len() - 1) as u64, Ordering::SeqCst);
                            if let Some(w) = child_stdin.as_mut()
                                && w.write_all(&msg[1..]).is_err()
                            {
                                child_stdin = None;
                            }
                        }
                        (Some(255), Protocol::V5) if msg.get(1) == Some(&0) => child_stdin = None,
                        _ => {}
                    },
                    Frame::Ping(p) => {
                        session.frame(0xA, &p);
                    }
                    Frame::Close => {
                        child_stdin = None;
                        if !session.closed.swap(true, Ordering::SeqCst) {
                            session.frame(0x8, &1000u16.to_be_bytes());
                        }
                        break;
                    }
                    Frame::Text | Frame::Pong => {}
                }
            }
            drop(child_stdin);
            // The client went away: stop the docker CLI (the process in the container
            // may go on, as it does under a real kubelet). std's kill is a no-op once
            // the child was reaped, so this cannot hit a reused pid.
            if !finisher.is_finished() {
                let _ = child.lock().unwrap().kill();
            }
        });
    }
}
