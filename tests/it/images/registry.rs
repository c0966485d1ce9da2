//! Registry delivery against a real engine and a real registry on loopback
//! (Debian's docker-registry): which layers move on the first push and after a
//! one-file change, and the registry container's create / reuse / restart path with
//! a stand-in for `registry:3` built FROM scratch.

use crate::support::{build, docker, registry};
use std::collections::BTreeSet;

use pulsedev::images::deliver::Deliver;
use pulsedev::images::registry::{self as reg, RegistryPush, RegistrySpec};

#[tokio::test]
async fn a_second_push_moves_only_the_changed_layer() {
    let Some(engine) = docker::engine("a_second_push_moves_only_the_changed_layer").await else {
        return;
    };
    let registry = registry::LocalRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    std::fs::create_dir_all(ctx.join("lib")).unwrap();
    std::fs::create_dir_all(ctx.join("app")).unwrap();
    let nonce = build::nonce();
    std::fs::write(
        ctx.join("lib/blob.bin"),
        build::noise(3 << 20, nonce.len() as u64 + 7),
    )
    .unwrap();
    std::fs::write(ctx.join("app/main.txt"), format!("v1 {nonce}\n")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY lib/ /lib/\nCOPY app/ /app/\n",
    )
    .unwrap();

    let first = build::build(&engine, "layers", ctx).await;
    let push = RegistryPush::new(&engine, registry.port);
    assert_eq!(push.present(&first).await.unwrap(), None);

    // First push: three layers and the config move.
    let d1 = push.deliver(&first).await.unwrap();
    let t1 = d1.transfer.clone().expect("something was sent");
    assert_eq!((t1.layers_sent, t1.layers_present), (3, 0), "{d1:?}");
    let digest = d1.image.digest.clone().expect("a digest");
    assert!(digest.starts_with("sha256:"));
    assert_eq!(
        d1.image.to_string(),
        format!(
            "localhost:{}/pdtest-layers:{}@{digest}",
            registry.port, first.tag
        )
    );
    let uploads1 = registry.uploads();
    assert_eq!(
        uploads1.len(),
        4,
        "3 layers + config:\n{}",
        registry.log_text()
    );
    let blobs1 = registry.blobs();
    let big = blobs1.iter().map(|(_, s)| *s).max().unwrap();
    assert!(big > 3_000_000, "the 3 MiB layer is stored: {blobs1:?}");

    // Same image again: found in the registry, nothing sent.
    let again = push.deliver(&first).await.unwrap();
    assert_eq!(again.transfer, None);
    assert_eq!(again.image.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(registry.uploads().len(), 4);

    // One file changes: a new tag, and only its layer (plus the config) moves.
    std::fs::write(ctx.join("app/main.txt"), format!("v2 {nonce}\n")).unwrap();
    let second = build::build(&engine, "layers", ctx).await;
    assert_ne!(second.tag, first.tag);
    let d2 = push.deliver(&second).await.unwrap();
    let t2 = d2.transfer.clone().unwrap();
    assert_eq!((t2.layers_sent, t2.layers_present), (1, 2), "{d2:?}");
    let uploads2: Vec<String> = registry.uploads()[4..].to_vec();
    assert_eq!(uploads2.len(), 2, "changed layer + config: {uploads2:?}");
    for u in &uploads2 {
        assert!(!uploads1.contains(u), "{u} was uploaded twice");
    }
    let blobs2 = registry.blobs();
    let new: BTreeSet<_> = blobs2.difference(&blobs1).collect();
    let new_bytes: u64 = new.iter().map(|(_, s)| *s).sum();
    assert!(
        new_bytes < 16 * 1024,
        "only small blobs are new (layer, config, manifest): {new:?}"
    );
    assert_eq!(
        reg::manifest_digest(registry.port, "pdtest-layers", &second.tag)
            .await
            .unwrap(),
        d2.image.digest
    );

    for i in [&first, &second] {
        build::remove_image(&engine, &i.reference()).await;
        build::remove_image(
            &engine,
            &format!("localhost:{}/{}", registry.port, i.reference()),
        )
        .await;
    }
}

#[tokio::test]
async fn the_registry_container_is_created_reused_restarted_and_pushed_to() {
    let Some(engine) =
        docker::engine("the_registry_container_is_created_reused_restarted_and_pushed_to").await
    else {
        return;
    };
    let nonce = build::nonce();
    let stand_in_dir = tempfile::tempdir().unwrap();
    registry::stand_in_context(stand_in_dir.path());
    let stand_in = build::build(&engine, "registry-stand-in", stand_in_dir.path()).await;

    let network = format!("pdtest-kind-{nonce}");
    engine
        .docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let cluster = format!("t{nonce}");
    let spec = RegistrySpec {
        cluster: cluster.clone(),
        port: registry::free_port(),
        image: stand_in.reference(),
        network: Some(network.clone()),
    };

    let s1 = reg::ensure(&engine, &spec).await.unwrap();
    assert!(s1.created && s1.started, "{s1:?}");
    assert_eq!(s1.container, format!("pulsedev-{cluster}-registry"));
    assert_eq!(s1.network.as_deref(), Some(network.as_str()));
    let c = engine
        .docker
        .inspect_container(&s1.container, None)
        .await
        .unwrap();
    let labels = c.config.unwrap().labels.unwrap();
    assert_eq!(labels.get(reg::CLUSTER_LABEL), Some(&cluster));
    let binding = &c.host_config.unwrap().port_bindings.unwrap()["5000/tcp"]
        .clone()
        .unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        binding.host_port.as_deref(),
        Some(spec.port.to_string().as_str())
    );
    assert!(
        c.network_settings
            .unwrap()
            .networks
            .unwrap()
            .contains_key(&network)
    );

    // Again: the same container, untouched.
    let s2 = reg::ensure(&engine, &spec).await.unwrap();
    assert_eq!((s2.created, s2.started, &s2.id), (false, false, &s1.id));

    // Stopped: started again, not recreated.
    engine
        .docker
        .stop_container(&s1.container, None)
        .await
        .unwrap();
    let s3 = reg::ensure(&engine, &spec).await.unwrap();
    assert_eq!((s3.created, s3.started, &s3.id), (false, true, &s1.id));

    // A push through it works, and the manifest is found by HEAD.
    let app = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", app.path().join("busybox")).unwrap();
    std::fs::write(app.path().join("nonce"), &nonce).unwrap();
    std::fs::write(
        app.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY nonce /nonce\n",
    )
    .unwrap();
    let img = build::build(&engine, "via-container", app.path()).await;
    let push = RegistryPush::new(&engine, spec.port);
    let d = push.deliver(&img).await.unwrap();
    assert!(d.transfer.is_some());
    assert_eq!(
        push.present(&img).await.unwrap().and_then(|r| r.digest),
        d.image.digest
    );

    assert!(reg::remove(&engine, &cluster).await.unwrap());
    assert!(!reg::remove(&engine, &cluster).await.unwrap());
    let _ = engine.docker.remove_network(&network).await;
    build::remove_image(&engine, &img.reference()).await;
    build::remove_image(
        &engine,
        &format!("localhost:{}/{}", spec.port, img.reference()),
    )
    .await;
}

/// The longest valid cluster name (50 characters): the registry container's name is a
/// DNS label that another container on the network resolves (containerd's hosts.toml
/// pulls from it by that name), and a container an older pulsedev made under the
/// over-long name is replaced.
#[tokio::test]
async fn the_longest_cluster_name_gives_a_resolvable_registry_name() {
    let Some(engine) =
        docker::engine("the_longest_cluster_name_gives_a_resolvable_registry_name").await
    else {
        return;
    };
    let nonce = build::nonce();
    let cluster = format!("{nonce}-{}", "x".repeat(49 - nonce.len()));
    assert_eq!(cluster.len(), 50);
    assert!(pulsedev::config::check_name(&cluster).is_ok());
    let name = reg::container_name(&cluster);
    let legacy = reg::legacy_container_name(&cluster);
    assert!(name.len() <= 63 && legacy.len() > 63, "{name} {legacy}");

    let stand_in_dir = tempfile::tempdir().unwrap();
    registry::stand_in_context(stand_in_dir.path());
    let stand_in = build::build(&engine, "registry-stand-in", stand_in_dir.path()).await;
    let network = format!("pdtest-longname-{nonce}");
    let d = &engine.docker;
    d.create_network(bollard::models::NetworkCreateRequest {
        name: network.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    // What an older pulsedev left: the same registry under the old name.
    let fd = crate::fakes::docker(&crate::harness::docker_host().unwrap()).await;
    crate::fakes::run_container(&fd, &legacy, &[(reg::CLUSTER_LABEL, &cluster)]).await;

    let spec = RegistrySpec {
        cluster: cluster.clone(),
        port: registry::free_port(),
        image: stand_in.reference(),
        network: Some(network.clone()),
    };
    let s = reg::ensure(&engine, &spec).await.unwrap();
    assert_eq!(s.container, name);
    let legacy_left = d.inspect_container(&legacy, None).await.is_ok();

    // A busybox on the same network looks the name up through Docker's DNS.
    let client = format!("pdtest-resolver-{nonce}");
    crate::fakes::run_container(&fd, &client, &[]).await;
    d.connect_network(
        &network,
        bollard::models::NetworkConnectRequest {
            container: client.clone(),
            endpoint_config: None,
        },
    )
    .await
    .unwrap();
    let lookup = pulsedev::images::archive::exec_with_stdin(
        d,
        &client,
        &["nslookup".to_string(), name.clone()],
        futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
    )
    .await
    .unwrap();

    crate::fakes::remove_container(&fd, &client).await;
    let removed = reg::remove(&engine, &cluster).await.unwrap();
    crate::fakes::remove_container(&fd, &legacy).await;
    let _ = d.remove_network(&network).await;
    assert!(!legacy_left, "the old-named container was replaced");
    assert_eq!(lookup.exit_code, 0, "{lookup:?}");
    assert!(lookup.stdout.contains(&name), "{lookup:?}");
    assert!(removed);
}
