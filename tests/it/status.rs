//! `pulsedev status` through the real binary, without a cluster: the kubeconfig pulsedev
//! keeps under the XDG state directory decides what it reports.

use crate::harness::Pd;

#[test]
fn status_without_a_cluster_says_so_and_exits_1() {
    let run = Pd::new().args(&["status", "--name", "demo"]).run();
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("cluster   demo  missing"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("error[not-ready]: pulsedev has no cluster `demo` on this machine"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: run `pulsedev up`"),
        "{}",
        run.stderr
    );
}

#[test]
fn status_json_is_one_document_with_the_error() {
    let run = Pd::new().args(&["status", "--output", "json"]).run();
    assert_eq!(run.code, 1);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["id"], "not-ready");
    assert_eq!(doc["cluster"]["context"], "kind-pulsedev");
    assert!(
        doc["cluster"]["kubeconfig"]
            .as_str()
            .unwrap()
            .ends_with("pulsedev/pulsedev/kubeconfig")
    );
    assert!(
        !run.stderr.contains("error["),
        "no second rendering: {}",
        run.stderr
    );
}

#[test]
fn status_of_a_stopped_cluster_is_unreachable() {
    let pd = Pd::new();
    let kc = pd.home.path().join("state/pulsedev/pulsedev/kubeconfig");
    std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-pulsedev\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\ncontexts:\n- name: kind-pulsedev\n  context: {cluster: kind-pulsedev, user: kind-pulsedev}\ncurrent-context: kind-pulsedev\nusers:\n- name: kind-pulsedev\n  user: {token: x}\n",
    )
    .unwrap();
    let run = pd.args(&["status"]).run();
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("unreachable"), "{}", run.stdout);
    assert!(
        run.stdout.to_lowercase().contains("connection refused"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("the cluster `pulsedev` is unreachable"),
        "{}",
        run.stderr
    );
}
