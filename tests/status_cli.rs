//! `pulsedev status` through the real binary, without a cluster: the kubeconfig pulsedev
//! keeps under the XDG state directory decides what it reports.

use std::process::Command;

fn status(state_home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pulsedev"))
        .arg("status")
        .args(args)
        .env("XDG_STATE_HOME", state_home)
        .env("NO_COLOR", "1")
        .env_remove("PULSEDEV_NAME")
        .current_dir(state_home)
        .output()
        .expect("run pulsedev");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_without_a_cluster_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = status(dir.path(), &["--name", "demo"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("cluster   demo  missing"), "{stdout}");
    assert!(
        stderr.contains("error[not-ready]: the cluster `demo` does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: run `pulsedev up`"), "{stderr}");
}

#[test]
fn status_json_is_one_document_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = status(dir.path(), &["--output", "json"]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["id"], "not-ready");
    assert_eq!(doc["cluster"]["context"], "kind-pulsedev");
    assert!(
        doc["cluster"]["kubeconfig"]
            .as_str()
            .unwrap()
            .ends_with("pulsedev/pulsedev/kubeconfig")
    );
    assert!(!stderr.contains("error["), "no second rendering: {stderr}");
}

#[test]
fn status_of_a_stopped_cluster_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("pulsedev/pulsedev/kubeconfig");
    std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-pulsedev\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\ncontexts:\n- name: kind-pulsedev\n  context: {cluster: kind-pulsedev, user: kind-pulsedev}\ncurrent-context: kind-pulsedev\nusers:\n- name: kind-pulsedev\n  user: {token: x}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = status(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(stdout.contains("unreachable"), "{stdout}");
    assert!(
        stdout.to_lowercase().contains("connection refused"),
        "{stdout}"
    );
    assert!(
        stderr.contains("the cluster `pulsedev` is unreachable"),
        "{stderr}"
    );
}
