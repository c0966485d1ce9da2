//! The command handlers for `down`, `kubeconfig` and the hidden `cluster create`:
//! they read the flags from `cli::Ctx`, wire the real side effects (`Live`) and render
//! the result. Kept here rather than in `cli` so that `cli` stays free of process,
//! Docker and kube code.

use std::time::Duration;

use serde_json::json;

use super::kindconfig::HostPorts;
use super::{Live, Options, PortPlan, Recreate};
use crate::cli::{ClusterCreateArgs, Ctx, KubeconfigArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::state::Dirs;

const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);

fn env_set(k: &str) -> bool {
    std::env::var(k).is_ok_and(|v| !v.is_empty())
}

/// Which host ports to publish: as configured, or (CI mode, nothing configured) free
/// ones chosen now; `--no-host-ports` publishes none.
pub fn port_plan(ctx: &Ctx, config: &Config, no_host_ports: bool) -> PortPlan {
    let g = &ctx.global;
    let explicit_host = g.http_port.is_some()
        || g.https_port.is_some()
        || env_set("PULSEDEV_HTTP_PORT")
        || env_set("PULSEDEV_HTTPS_PORT")
        || config.ports.http != 80
        || config.ports.https != 443;
    let explicit_registry = g.registry_port.is_some()
        || env_set("PULSEDEV_REGISTRY_PORT")
        || config.ports.registry != 5001;
    let ci = ctx.ci();
    if no_host_ports {
        PortPlan::NoHostPorts {
            registry: (explicit_registry || !ci).then_some(config.ports.registry),
        }
    } else if ci && !explicit_host && !explicit_registry {
        PortPlan::Auto
    } else {
        PortPlan::Fixed {
            ports: HostPorts {
                http: config.ports.http,
                https: config.ports.https,
            },
            registry: config.ports.registry,
        }
    }
}

async fn live(ctx: &Ctx, dirs: Dirs) -> Result<Live> {
    let kind = ctx
        .interruptible(crate::tools::ensure(&crate::tools::KIND, &dirs, &ctx.ui))
        .await??;
    ctx.interruptible(Live::connect(dirs, kind, DOCKER_TIMEOUT))
        .await?
}

/// `pulsedev cluster create`: exactly `cluster::ensure`, with the journal and Ctrl-C.
pub async fn create(ctx: &Ctx, args: &ClusterCreateArgs) -> Result<()> {
    let config = ctx.cluster_config()?;
    let dirs = Dirs::from_process()?;
    let mut opts = Options::new(&config.name, port_plan(ctx, &config, args.no_host_ports));
    opts.node_image = super::node_image(&|k| std::env::var(k).ok());
    opts.template = super::template_for(&config.root)?;
    opts.ready_timeout = Duration::from_secs(args.wait);
    opts.allow_external_binds = args.allow_external_binds;
    opts.recreate = if args.reset {
        Recreate::Always
    } else if args.recreate {
        Recreate::OnDrift
    } else {
        Recreate::Never
    };
    let live = live(ctx, dirs).await?;
    let deps = live.deps(&ctx.ui, &ctx.cancel);
    let session = super::begin(&live.dirs, &config.name, "pulsedev cluster create")?;
    let result = super::ensure(&deps, &opts, &session).await;
    session.finish(&result);
    let info = result?;
    if ctx.ui.json() {
        ctx.ui.out_json(&json!({"ok": true, "cluster": info}));
    } else {
        let what = match (info.created, info.recreated, info.resumed) {
            (true, true, _) => "made again",
            (true, false, _) => "created",
            (false, _, true) => "resumed",
            (false, _, false) => "reused",
        };
        let mut text = format!(
            "cluster {} {what} (context {})\nkubeconfig: {}\n",
            info.name,
            info.context,
            info.kubeconfig.display()
        );
        match info.ports {
            Some(p) => text.push_str(&format!(
                "ports: http 127.0.0.1:{}, https 127.0.0.1:{}, registry 127.0.0.1:{}\n",
                p.http, p.https, info.registry_port
            )),
            None => text.push_str(&format!(
                "ports: no host ports, registry 127.0.0.1:{}\n",
                info.registry_port
            )),
        }
        ctx.ui.out(&text);
    }
    Ok(())
}

/// `pulsedev down`.
pub async fn down(ctx: &Ctx) -> Result<()> {
    let config = ctx.existing_cluster_config()?;
    let dirs = Dirs::from_process()?;
    let has_state = super::Paths::new(&dirs, &config.name).dir.exists();
    let report = if has_state && super::may_have_made_cluster(&dirs, &config.name)? {
        let live = live(ctx, dirs).await?;
        let deps = live.deps(&ctx.ui, &ctx.cancel);
        super::down(&deps, &config.name).await?
    } else {
        // pulsedev's records say it made no kind cluster for this name (never, or an `up`
        // failed before creating one): no kind call, no download of kind. Only a
        // registry container and the state may be left.
        let registry_removed = leftover_registry(&config.name).await?;
        let state_removed = has_state && super::forget(&dirs, &config.name)?;
        warn_if_someone_elses(ctx, &config.name).await;
        super::DownReport {
            name: config.name.clone(),
            registry_removed,
            state_removed,
            ..super::DownReport::default()
        }
    };
    if ctx.ui.json() {
        ctx.ui.out_json(&json!({"ok": true, "down": report}));
    } else {
        let mut lines = Vec::new();
        if report.cluster_deleted {
            lines.push(format!("deleted the kind cluster {}", report.name));
        }
        if report.registry_removed {
            lines.push(format!(
                "removed the registry container {}",
                super::registry_container(&report.name)
            ));
        }
        if report.state_removed {
            lines.push(format!("removed pulsedev's state for {}", report.name));
        }
        if lines.is_empty() {
            lines.push(format!("nothing to remove for {}", report.name));
        }
        ctx.ui.out(&format!("{}\n", lines.join("\n")));
    }
    Ok(())
}

/// A kind cluster of this name that pulsedev did not make is left alone; say so when a
/// kind already at hand (on PATH, nothing downloaded) can tell.
async fn warn_if_someone_elses(ctx: &Ctx, name: &str) {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let Some(bin) = crate::tools::locate(
        &crate::tools::KIND,
        std::env::var_os("PATH").as_deref(),
        &cwd,
    ) else {
        return;
    };
    let kind = super::kind::Kind {
        runner: &super::process::ProcessRunner,
        bin: &bin,
    };
    if let Ok(Ok(clusters)) = ctx.interruptible(kind.clusters()).await
        && clusters.iter().any(|c| c == name)
    {
        ctx.ui.warn(&format!(
            "a kind cluster named {name} exists, but pulsedev did not make it: left alone \
             (delete it yourself with `kind delete cluster --name {name}` if it is yours)"
        ));
    }
}

/// Removes the registry container of `name` if one is left. No engine running (its
/// socket absent) means no container can be running either; an engine that is there but
/// does not answer (hangs, refuses, denies) is an error: `down` cannot say "nothing to
/// remove" about what it could not look at.
async fn leftover_registry(name: &str) -> Result<bool> {
    let endpoint = crate::docker::resolve(&|k| std::env::var(k).ok(), dirs::home_dir().as_deref())?;
    if let Some(path) = endpoint.host.strip_prefix("unix://")
        && !std::path::Path::new(path).exists()
    {
        return Ok(false);
    }
    let engine = crate::docker::connect(&endpoint, DOCKER_TIMEOUT)
        .await
        .map_err(|e| {
            let message = format!(
                "could not check for a leftover registry container of {name}: {}",
                e.message
            );
            Error::new(e.kind, message).with_hint(format!(
                "{}; then run `pulsedev down` again",
                e.hint.as_deref().unwrap_or("start the Docker engine")
            ))
        })?;
    crate::images::registry::remove(&engine, name).await
}

/// `pulsedev kubeconfig [--merge [--use]]`.
pub async fn kubeconfig(ctx: &Ctx, args: &KubeconfigArgs) -> Result<()> {
    let config = ctx.existing_cluster_config()?;
    let dirs = Dirs::from_process()?;
    let target = super::guard(&dirs, &config.name)?;
    if !args.merge {
        if ctx.ui.json() {
            ctx.ui.out_json(
                &json!({"ok": true, "kubeconfig": target.kubeconfig, "context": target.context}),
            );
        } else {
            ctx.ui.out(&format!("{}\n", target.kubeconfig.display()));
        }
        return Ok(());
    }
    let user = super::kubeconfig::user_kubeconfig(
        &|k| std::env::var(k).ok(),
        dirs::home_dir().as_deref(),
    )?;
    // ~/.kube/config is shared by every process of this user: one writer at a time.
    let _lock = super::lock::FileLock::exclusive(&dirs.state.join(".lock")).await?;
    let merged =
        super::kubeconfig::merge(&target.kubeconfig, &user, &target.context, args.use_context)?;
    if ctx.ui.json() {
        ctx.ui.out_json(&json!({"ok": true, "merged": merged}));
    } else {
        let mut text = format!(
            "added the context {} to {}\n",
            merged.context,
            merged.path.display()
        );
        if let Some(b) = &merged.backup {
            text.push_str(&format!("backup: {}\n", b.display()));
        }
        text.push_str(&match (&merged.current_context, args.use_context) {
            (_, true) => format!("current context: {} (now)\n", merged.context),
            (Some(c), false) => format!(
                "current context: {c} (unchanged; `kubectl config use-context {}` switches)\n",
                merged.context
            ),
            (None, false) => "no current context set\n".to_string(),
        });
        ctx.ui.out(&text);
    }
    Ok(())
}
