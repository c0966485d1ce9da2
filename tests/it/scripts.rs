//! The README's test command on a machine that cannot run it: it must say so at once,
//! with the commands to run, before any of the slow steps (fmt, clippy, the build).

use std::process::Command;

/// `scripts/test` as an unprivileged user (nobody, when these tests run as root) with no
/// Docker engine anywhere it looks: it stops within seconds, names the packages and
/// commands, and never reaches `cargo fmt`.
#[test]
fn scripts_test_without_an_engine_stops_first_with_the_commands_to_run() {
    use std::os::unix::fs::PermissionsExt;
    // A copy in a directory any user can read: the checkout may live under /root. The
    // engine check comes before anything that needs the rest of the repository.
    let empty = tempfile::tempdir().unwrap();
    std::fs::set_permissions(empty.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let scripts = empty.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    let script = scripts.join("test");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test"),
        &script,
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The private engine's directory: nothing listens there.
    let private = empty.path().join("docker");
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(&script);
        c
    } else {
        Command::new(&script)
    };
    let out = cmd
        .env_remove("DOCKER_HOST")
        .env_remove("CI")
        .env("PULSEDEV_TEST_DOCKER_DIR", &private)
        // The system socket it also tries: one where nothing listens.
        .env(
            "PULSEDEV_TEST_SYSTEM_SOCKET",
            empty.path().join("docker.sock"),
        )
        .env("HOME", empty.path())
        .output()
        .expect("scripts/test runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no Docker engine answers") || stderr.contains("curl is needed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sudo apt-get install -y docker.io"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cargo fmt"),
        "fmt ran before the check: {stderr}"
    );
}
