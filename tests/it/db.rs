//! `pulsedev db psql|dump|restore` end to end: the real binary, the fake API server's
//! exec endpoint, and a real PostgreSQL (Debian's postgresql-15 binaries and the
//! libraries they link, copied into an image built FROM scratch here) in a container
//! standing in for the dev Postgres pod, laid out as manifests/dev/postgres.yaml lays it
//! out: the Secret's files at /etc/pulsewatch/secrets/db, database pulsewatch on
//! 127.0.0.1:5432 with password authentication over TCP, running as uid 70.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::apiserver::{FakeApiServer, Options};
use crate::harness::Pd;
use crate::support::docker;
use crate::support::standin::{Spec, StandIn};

pub(crate) const PASSWORD: &str = "s3cret-pg-password-for-the-db-test";
const PG: &str = "/usr/lib/postgresql/15";

/// The libraries the PostgreSQL binaries link, as ldd resolves them here.
fn libraries() -> Vec<String> {
    let mut libs = std::collections::BTreeSet::new();
    for b in [
        "postgres",
        "initdb",
        "pg_ctl",
        "psql",
        "pg_dump",
        "pg_restore",
        "pg_isready",
    ] {
        let out = Command::new("ldd")
            .arg(format!("{PG}/bin/{b}"))
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(p.to_string());
            }
        }
    }
    libs.into_iter().collect()
}

pub(crate) async fn postgres(engine: &pulsedev::docker::Engine) -> StandIn {
    let mut host_paths: Vec<String> = [
        format!("{PG}/bin"),
        format!("{PG}/lib"),
        "/usr/share/postgresql/15".to_string(),
        "/usr/share/zoneinfo/UTC".to_string(),
        "/usr/share/zoneinfo/Etc/UTC".to_string(),
        "/usr/lib/x86_64-linux-gnu/libnss_files.so.2".to_string(),
    ]
    .into();
    host_paths.extend(libraries());
    let links = [
        "postgres",
        "initdb",
        "pg_ctl",
        "psql",
        "pg_dump",
        "pg_restore",
        "pg_isready",
    ]
    .map(|b| format!("ln -s {PG}/bin/{b} /bin/{b}"))
    .join(" && ");
    StandIn::start(
        engine,
        Spec {
            files: vec![
                ("etc/passwd".into(), b"root:x:0:0::/:/bin/sh\npostgres:x:70:70::/data:/bin/sh\n".to_vec()),
                ("etc/group".into(), b"root:x:0:\npostgres:x:70:\n".to_vec()),
                ("etc/nsswitch.conf".into(), b"passwd: files\ngroup: files\n".to_vec()),
                ("etc/pulsewatch/secrets/db/username".into(), b"pulsewatch".to_vec()),
                ("etc/pulsewatch/secrets/db/password".into(), PASSWORD.as_bytes().to_vec()),
            ],
            host_paths,
            setup: Some(format!("rm -rf {PG}/lib/bitcode && {links}")),
            // As the image's entrypoint does: initdb with the Secret's user and password,
            // password authentication over TCP, then the server on 127.0.0.1.
            cmd: Some(
                "set -e; export TZ=UTC; s=/etc/pulsewatch/secrets/db; \
                 initdb -D /data/pgdata -U \"$(cat $s/username)\" --pwfile=$s/password \
                   --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >/data/initdb.log; \
                 pg_ctl -D /data/pgdata -w -o '-k /tmp -c listen_addresses=127.0.0.1' -l /data/pg.log start; \
                 PGPASSWORD=\"$(cat $s/password)\" psql -h 127.0.0.1 -U \"$(cat $s/username)\" -d postgres -c 'create database pulsewatch'; \
                 touch /data/ready; exec sleep 86400"
                    .into(),
            ),
            user: Some("70:70".into()),
            writable: vec!["/data".into(), "/tmp".into()],
            ..Spec::default()
        },
    )
    .await
}

/// Waits until the stand-in's start script created the database (an observable file).
pub(crate) fn wait_ready(pg: &StandIn) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = Command::new("docker")
            .args(["exec", &pg.container, "test", "-e", "/data/ready"])
            .status()
            .unwrap()
            .success();
        if done {
            return;
        }
        let logs = Command::new("docker")
            .args(["logs", &pg.container])
            .output()
            .unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "postgres did not start: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
        std::thread::park_timeout(std::time::Duration::from_millis(200));
    }
}

#[tokio::test]
async fn dump_then_restore_round_trips_data_through_a_real_postgres() {
    let Some(engine) = docker::engine("db_dump_restore_round_trip").await else {
        return;
    };
    let pg = postgres(&engine).await;
    let api = FakeApiServer::start(Options::new("pddb").exec_into("postgres", &pg.container));
    let pd = Pd::new();
    let kubeconfig = pd.home.path().join("state/pulsedev/pddb/kubeconfig");
    api.write_kubeconfig(&kubeconfig, "kind-pddb");
    let client = pulsedev::kube::connect(&kubeconfig, "kind-pddb")
        .await
        .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pulsewatch-dev"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let labels =
        json!({"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": "postgres"});
    Api::<Deployment>::namespaced(client.clone(), "pulsewatch-dev")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "postgres", "namespace": "pulsewatch-dev"},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "postgres", "image": "localhost/pg:15"}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    crate::exec::wait_running(
        &client,
        "pulsewatch-dev",
        "app.kubernetes.io/instance=postgres",
        "postgres",
    )
    .await;
    wait_ready(&pg);
    let pd = pd.env("PULSEDEV_NAME", "pddb");
    let run = |args: &[&str]| {
        let mut all = vec!["db"];
        all.extend_from_slice(args);
        let r = pd.run_with(&all);
        assert!(!r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD));
        r
    };

    let r = run(&[
        "psql",
        "--",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "create table notes(id int primary key, body text); insert into notes values (1, 'keep me'), (2, 'and me')",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw.dump");
    let r = run(&["--output", "json", "dump", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(doc["bytes"], bytes.len());
    assert!(bytes.starts_with(b"PGDMP"), "pg_dump's custom format");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );

    let r = run(&[
        "psql",
        "--",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "delete from notes; insert into notes values (3, 'new')",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Without a terminal to ask on, restore wants --yes, and changes nothing.
    let r = run(&["restore", file.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);

    let r = run(&["restore", "--yes", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(&[
        "psql",
        "--",
        "-At",
        "-c",
        "select id, body from notes order by id",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "1|keep me\n2|and me\n"),
        "{}",
        r.stderr
    );

    // On a terminal (a pty from util-linux `script`): the exec asks for a TTY, the local
    // terminal goes raw and comes back, and psql's output arrives.
    let c = pd.command_with(&[
        "db",
        "psql",
        "--",
        "-At",
        "-c",
        "select count(*) from notes",
    ]);
    let line = std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .stdin(std::process::Stdio::null());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    if let Some(d) = c.get_current_dir() {
        script.current_dir(d);
    }
    let out = script.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains('2'), "{text:?}");
    assert!(!text.contains(PASSWORD));
    assert!(api.execs().last().unwrap().tty, "a TTY was asked for");

    // A file that is no dump: pg_restore's own words, exit 1.
    let junk = dir.path().join("junk.dump");
    std::fs::write(&junk, "not a dump").unwrap();
    let r = run(&["restore", "--yes", junk.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("error[exec-failed]"), "{}", r.stderr);
    assert!(
        r.stderr.contains("does not appear to be a valid archive"),
        "{}",
        r.stderr
    );

    // A failed pg_dump (the database refuses connections) leaves no file behind.
    let r = run(&[
        "psql",
        "--",
        "-d",
        "postgres",
        "-c",
        "alter database pulsewatch allow_connections false",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let none = dir.path().join("none.dump");
    let r = run(&["dump", none.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("error[exec-failed]"), "{}", r.stderr);
    assert!(
        r.stderr.contains("not currently accepting connections"),
        "{}",
        r.stderr
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "only pw.dump and junk.dump: {left:?}");

    // The password went nowhere: no exec carried it in its command line.
    let execs = api.execs();
    assert!(execs.len() >= 8, "{execs:#?}");
    for e in &execs {
        assert!(!e.command.join(" ").contains(PASSWORD), "{:?}", e.command);
        assert_eq!(e.namespace, "pulsewatch-dev");
        assert_eq!(e.container, "postgres");
    }
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
}
