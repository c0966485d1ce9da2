//! `pulsedev dev`: `up`, then the inner loop until Ctrl-C. A change in a service's
//! build context rebuilds that image only, delivers it, re-applies that service's chart
//! only and waits until its workload is ready with the engine's rules; a change in the
//! charts or values re-applies the charts whose rendering changed. Failures are shown
//! with their diagnosis and the loop goes on. Pod logs of the stack are merged in.
//! `pulsedev logs` (`logs.rs`) shows the same merged view outside the loop.
//!
//! Owns: the loop and what it prints. Must not contain the mechanics of building,
//! rendering, applying or reading logs (images, stack, kube do that).

pub mod logs;
pub mod view;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cli::Ctx;
use crate::config::{Config, LoadMode};
use crate::docker::Engine as DockerEngine;
use crate::error::{Error, ErrorKind, Result};
use crate::helm::Helm;
use crate::images::deliver::{Deliver, ImageRef};
use crate::images::{self, Status};
use crate::kube::{self, ApplyOptions};
use crate::stack;
use crate::state::{self, Dirs};
use crate::up::{self, MIGRATIONS, STACK, UpOptions};
use view::View;
use watch::{Layout, Watch};

/// How long the watcher waits for quiet before acting on a batch of changes.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest wait between two log requests of one container (pods come by a watch).
const LOG_POLL: Duration = Duration::from_secs(1);
const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub up: UpOptions,
    /// `--no-logs`: only the loop's own lines.
    pub no_logs: bool,
}

/// What the loop works with once `up` is done.
struct Loop {
    config: Config,
    opts: DevOptions,
    view: Arc<View>,
    docker: DockerEngine,
    build: images::BuildOptions,
    deliver: Box<dyn Deliver>,
    helm: Helm,
    kube: kube::Engine,
    https: Option<u16>,
    /// The image of each service as deployed now.
    refs: BTreeMap<String, ImageRef>,
    /// The rendering of each service's chart as applied now.
    rendered: BTreeMap<String, String>,
    /// The objects each chart may still have in the cluster: its last applied set, plus
    /// the earlier ones not pruned yet (a re-apply whose wait failed prunes on the next
    /// one that succeeds). What a re-apply no longer renders is pruned from these only.
    owned: BTreeMap<String, BTreeSet<kube::ObjectKey>>,
    /// `up`'s record of workload generations (applied.json), kept current.
    generations_file: std::path::PathBuf,
}

/// Runs `dev`. Ctrl-C while watching ends it with success: it is how `dev` is meant to
/// stop, and the stack stays up. Ctrl-C during `up` or in the middle of a rebuild is an
/// interruption (130), as for `up`.
pub async fn run(ctx: &Ctx, config: Config, mut opts: DevOptions) -> Result<()> {
    opts.up.summary_event = ctx.ui.json();
    let summary = up::run_summary(ctx, config.clone(), opts.up.clone()).await?;
    let cluster = summary
        .cluster
        .clone()
        .ok_or_else(|| Error::internal("up finished without a cluster"))?;
    let dirs = Dirs::from_process()?;
    let services: Vec<String> = config.services.keys().cloned().collect();
    let view = Arc::new(View::new(&ctx.ui, &services));

    let docker = ctx
        .interruptible(images::connect_engine(DOCKER_TIMEOUT))
        .await??;
    let build = images::build_options(&config, &docker).await?;
    let helm = Helm {
        bin: ctx
            .interruptible(crate::tools::ensure(&crate::tools::HELM, &dirs, &ctx.ui))
            .await??,
    };
    let client = ctx
        .interruptible(kube::connect(&cluster.kubeconfig, &cluster.context))
        .await??;
    let load = opts.up.load.unwrap_or(config.images.load);
    let deliver: Box<dyn Deliver> = match load {
        LoadMode::Registry => Box::new(images::registry::RegistryPush::new(
            &docker,
            cluster.registry_port,
        )),
        LoadMode::Archive => {
            let kind = crate::tools::ensure(&crate::tools::KIND, &dirs, &ctx.ui).await?;
            let live = crate::cluster::Live::connect(dirs.clone(), kind, DOCKER_TIMEOUT).await?;
            let nodes = live.nodes_of(&cluster.name).await?;
            let platform = crate::docker::platform(&docker.info().await?);
            Box::new(images::archive::ArchiveImport::detect(&docker, nodes, &platform).await?)
        }
    };
    let mut lp = Loop {
        generations_file: crate::cluster::Paths::new(&dirs, &config.name)
            .dir
            .join("applied.json"),
        config,
        opts,
        view: view.clone(),
        docker,
        build,
        deliver,
        helm,
        kube: kube::Engine::new(client.clone()),
        https: cluster.ports.as_ref().map(|p| p.https),
        refs: summary.refs.clone(),
        rendered: BTreeMap::new(),
        owned: BTreeMap::new(),
    };
    lp.rendered = lp.render_all().await?;
    for (name, yaml) in &lp.rendered {
        let manifests = kube::parse(&format!("helm template {name}"), yaml)?;
        let keys = lp
            .kube
            .keys_of(&manifests, &stack::namespace(lp.config.env))
            .await?;
        lp.owned.insert(name.clone(), keys);
    }

    let layout = Layout::of(&lp.config);
    let mut watch = Watch::start(&layout, DEBOUNCE)?;

    // Logs: followed in their own task until the loop ends.
    let logs_stop = CancellationToken::new();
    if !lp.opts.no_logs {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let options = kube::logs::LogOptions {
            namespace: stack::namespace(lp.config.env),
            stack: STACK.to_string(),
            services: Vec::new(),
            follow: true,
            since: Some(Duration::from_secs(1)),
            poll: LOG_POLL,
        };
        let stop = logs_stop.clone();
        let v = view.clone();
        tokio::spawn(async move {
            if let Err(e) = kube::logs::follow(client, options, tx, stop).await {
                v.error(&e);
            }
        });
        let v = view.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                v.log(&line);
            }
        });
    }

    let contexts: Vec<String> = layout.contexts.keys().cloned().collect();
    view.say(&format!(
        "watching the build contexts of {} and the charts; Ctrl-C stops watching (the stack keeps running)",
        contexts.join(", ")
    ));
    view.event(serde_json::json!({
        "event": "watching",
        "services": contexts,
        "charts": layout.charts.iter().map(|c| c.strip_prefix(&layout.root).unwrap_or(c).to_string_lossy().into_owned()).collect::<Vec<_>>(),
    }));

    let result = lp.watch_loop(ctx, &layout, &mut watch).await;
    logs_stop.cancel();
    result
}

impl Loop {
    async fn watch_loop(&mut self, ctx: &Ctx, layout: &Layout, watch: &mut Watch) -> Result<()> {
        loop {
            let batch = tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    self.view.say("stopped watching; the stack keeps running (`pulsedev down` removes it)");
                    self.view.event(serde_json::json!({"event": "stopped"}));
                    return Ok(());
                }
                b = watch.next() => b,
            };
            let Some(batch) = batch else {
                return Err(Error::internal("the file watcher stopped"));
            };
            // A watch limit hit while adding a new directory: said, and the loop goes
            // on with what it watches (the fix needs no restart of the cluster).
            let paths = match batch {
                Ok(p) => p,
                Err(e) => {
                    self.view.error(&e);
                    continue;
                }
            };
            let changes = layout.classify(&paths);
            if changes.is_empty() {
                continue;
            }
            for (service, changed) in &changes.services {
                let r = self.rebuild(service, changed, &ctx.cancel).await;
                self.outcome(ctx, r)?;
            }
            if !changes.charts.is_empty() {
                let r = self.reapply_charts(&changes.charts, &ctx.cancel).await;
                self.outcome(ctx, r)?;
            }
        }
    }

    /// Shows a failure and goes on; an interruption ends the loop (130: work was cut).
    fn outcome(&self, ctx: &Ctx, r: Result<()>) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind == ErrorKind::Interrupted || ctx.cancel.is_cancelled() => {
                Err(Error::interrupted().with_hint(
                    "the change was not rolled out completely; `pulsedev up` (or `pulsedev dev`) converges the stack",
                ))
            }
            Err(e) => {
                self.view.error(&e);
                self.view
                    .say("still watching: save a fix and it is picked up");
                Ok(())
            }
        }
    }

    async fn render_one(&self, name: &str) -> Result<Option<String>> {
        Ok(stack::render_service(
            &self.config,
            &self.helm,
            self.config.env,
            name,
            self.refs.get(name),
            self.https,
        )
        .await?
        .map(|p| p.yaml))
    }

    async fn render_all(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for name in self.config.services.keys() {
            if let Some(y) = self.render_one(name).await? {
                out.insert(name.clone(), y);
            }
        }
        Ok(out)
    }

    /// Rebuilds `service`'s image and, when it changed, rolls out its chart.
    async fn rebuild(
        &mut self,
        service: &str,
        changed: &BTreeSet<String>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let t0 = Instant::now();
        let what = describe_paths(changed);
        let Some(svc) = self.config.services.get(service).cloned() else {
            return Ok(());
        };
        if !svc.live_update.sync.is_empty()
            && self.live_update(service, &svc, changed, cancel).await?
        {
            return Ok(());
        }
        let one = BTreeMap::from([(service.to_string(), svc.clone())]);
        let noop: images::Events = Arc::new(|_| {});
        let outcome = images::build(&self.docker, &one, &self.build, cancel, noop)
            .await
            .into_iter()
            .next()
            .ok_or_else(|| Error::internal("the build returned no outcome"))?;
        let build_s = outcome.seconds;
        match outcome.status {
            Status::Failed(e) => {
                self.view.event(serde_json::json!({
                    "event": "build", "service": service, "status": "failed",
                    "changed": changed, "seconds": round(build_s),
                }));
                return Err(e);
            }
            Status::Skipped { reason } => {
                self.view.say(&format!(
                    "{service}: {what} changed; the image is the same ({reason}): nothing to do"
                ));
                self.view.event(serde_json::json!({
                    "event": "build", "service": service, "status": "skipped",
                    "changed": changed, "reason": reason,
                }));
                return Ok(());
            }
            Status::Built => {}
        }
        let image = outcome.image;
        self.view.event(serde_json::json!({
            "event": "build", "service": service, "status": "built",
            "changed": changed, "image": image.reference(), "seconds": round(build_s),
        }));
        let delivered = tokio::select! {
            r = self.deliver.deliver(&image) => r?,
            _ = cancel.cancelled() => return Err(Error::interrupted()),
        };
        self.refs
            .insert(service.to_string(), delivered.image.clone());
        let t_roll = Instant::now();
        let (rolled, pruned) = self.apply_chart(service, cancel).await?;
        let total = t0.elapsed().as_secs_f64();
        self.view.event(serde_json::json!({
            "event": "rollout", "service": service, "trigger": "image",
            "image": delivered.image.to_string(), "workloads": rolled, "pruned": pruned,
            "seconds": round(t_roll.elapsed().as_secs_f64()), "total_seconds": round(total),
        }));
        let layers = delivered
            .transfer
            .as_ref()
            .map_or("nothing new to send".to_string(), |t| {
                format!("{} layer(s) sent", t.layers_sent)
            });
        self.view.say(&format!(
            "{service}: {what} changed → rebuilt {} ({build_s:.1}s, {layers}), rolled out {}, ready in {total:.1}s",
            image.reference(),
            if rolled.is_empty() { "nothing".to_string() } else { rolled.join(", ") },
        ));
        Ok(())
    }

    /// Live update (`sync::live_update`, tar over exec into the running pods) when the
    /// service has rules and every changed path is covered by one; `true` when synced.
    /// A change that needs an image, or a sync that failed (no running pod, a path that
    /// is not writable), goes to the rebuild: the change lands either way.
    async fn live_update(
        &self,
        service: &str,
        svc: &crate::config::Service,
        changed: &BTreeSet<String>,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let paths: Vec<std::path::PathBuf> = changed.iter().map(Into::into).collect();
        let ns = stack::namespace(self.config.env);
        match crate::sync::live_update(&self.kube, &ns, service, svc, &paths, cancel).await {
            Ok(crate::sync::Outcome::Synced(r)) => {
                self.view.event(serde_json::json!({
                    "event": "sync", "service": service, "changed": changed,
                    "copied": r.copied, "deleted": r.deleted, "pods": r.pods,
                    "seconds": round(r.took.as_secs_f64()),
                }));
                self.view.say(&format!(
                    "{service}: {} changed → {}",
                    describe_paths(changed),
                    r.summary()
                ));
                Ok(true)
            }
            Ok(crate::sync::Outcome::NeedsRebuild { path, reason }) => {
                self.view.say(&format!(
                    "{service}: {} needs a new image ({reason})",
                    path.display()
                ));
                Ok(false)
            }
            Err(e) if e.kind == ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.view.error(&e);
                self.view.say(&format!(
                    "{service}: live update failed; rebuilding instead"
                ));
                Ok(false)
            }
        }
    }

    /// Re-renders every chart; applies those whose rendering changed.
    async fn reapply_charts(
        &mut self,
        changed: &BTreeSet<String>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let t0 = Instant::now();
        let what = describe_paths(changed);
        let now = self.render_all().await?;
        let differing: Vec<String> = now
            .iter()
            .filter(|(k, v)| self.rendered.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        if differing.is_empty() {
            self.view
                .say(&format!("{what} changed; no chart renders differently"));
            return Ok(());
        }
        // Migrations first, as in `up`.
        let mut order = differing.clone();
        order.sort_by_key(|n| n != MIGRATIONS);
        for name in &order {
            let t = Instant::now();
            let (rolled, pruned) = self.apply_chart(name, cancel).await?;
            self.view.event(serde_json::json!({
                "event": "rollout", "service": name, "trigger": "chart",
                "changed": changed, "workloads": rolled, "pruned": pruned,
                "seconds": round(t.elapsed().as_secs_f64()),
            }));
            if !pruned.is_empty() {
                self.view.say(&format!(
                    "{name}: no longer rendered, pruned {}",
                    pruned.join(", ")
                ));
            }
        }
        self.view.say(&format!(
            "{what} changed → re-applied chart {} in {:.1}s",
            order.join(", "),
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Renders, applies and waits for one service's chart, then prunes what it no longer
    /// renders; returns the workloads whose generation moved (rolled out) and the
    /// objects pruned.
    async fn apply_chart(
        &mut self,
        name: &str,
        cancel: &CancellationToken,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let Some(yaml) = self.render_one(name).await? else {
            return Ok((Vec::new(), Vec::new()));
        };
        let manifests = kube::parse(&format!("helm template {name}"), &yaml)?;
        let ns = stack::namespace(self.config.env);
        for job in manifests.iter().filter(|m| m.kind() == "Job") {
            let job_ns = job.namespace().unwrap_or(&ns).to_string();
            if kube::jobs::delete_if_failed(
                self.kube.client(),
                &job_ns,
                job.name(),
                self.opts.up.timeout,
                Duration::from_secs(1),
                cancel,
            )
            .await?
            {
                self.view.say(&format!(
                    "deleted the failed Job {job_ns}/{} to run it again",
                    job.name()
                ));
            }
        }
        let options = ApplyOptions::new(STACK, &ns);
        self.kube.before_apply(&manifests, &options, cancel).await?;
        let report = self.kube.apply(&manifests, &options, cancel).await?;
        // Applied: what is in the cluster now, whatever the wait says.
        self.rendered.insert(name.to_string(), yaml);
        let now: BTreeSet<kube::ObjectKey> = report.applied.iter().map(|a| a.key()).collect();
        let owned = self.owned.entry(name.to_string()).or_default();
        owned.extend(now.iter().cloned());
        let gone: BTreeSet<kube::ObjectKey> = owned.difference(&now).cloned().collect();
        let rolled = self.record_generations(&report)?;
        self.kube
            .wait_ready(&report.targets(), self.opts.up.timeout, cancel)
            .await?;
        if gone.is_empty() {
            return Ok((rolled, Vec::new()));
        }
        // As `up` prunes last, once what is desired is ready: the same prune, the same
        // rules, the same inventory, with the candidates narrowed to this chart's: its
        // previous set minus what it applied now, cli-utils' prune set for one inventory
        // (kubernetes-sigs/cli-utils pkg/apply/prune/prune.go `GetPruneObjs`).
        let options = kube::PruneOptions {
            prune_data: self.opts.up.prune_data,
            only: Some(gone),
        };
        let pruned = self
            .kube
            .prune_with(STACK, &report, &options, cancel)
            .await?;
        self.owned.insert(name.to_string(), now);
        for left in &pruned.left_alone {
            self.view.warn(&format!(
                "{left} carries the stack label but pulsedev did not apply it: left alone"
            ));
        }
        for kept in &pruned.kept {
            self.view
                .warn(&format!("kept {kept}: no longer part of the stack"));
        }
        for data in &pruned.data {
            self.view.warn(&format!(
                "kept {data}: no longer part of the stack; `pulsedev up --prune-data` deletes it"
            ));
        }
        Ok((rolled, pruned.deleted))
    }

    /// Workloads of `report` whose generation differs from `up`'s record, which is
    /// brought up to date (so the next `up` does not report them as rolled out again).
    fn record_generations(&self, report: &kube::ApplyReport) -> Result<Vec<String>> {
        let mut known: BTreeMap<String, String> = state::read_optional(&self.generations_file)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut rolled = Vec::new();
        for a in &report.applied {
            if !matches!(
                a.kind.as_str(),
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job"
            ) {
                continue;
            }
            let key = format!(
                "{}/{}/{}",
                a.kind,
                a.namespace.as_deref().unwrap_or("-"),
                a.name
            );
            let g = a.generation.map(|g| g.to_string()).unwrap_or_default();
            if known.get(&key) != Some(&g) {
                rolled.push(format!("{}/{}", a.kind, a.name));
            }
            known.insert(key, g);
        }
        let text = serde_json::to_string_pretty(&known).expect("maps serialize");
        state::write_private(&self.generations_file, text.as_bytes())?;
        Ok(rolled)
    }
}

fn round(s: f64) -> f64 {
    (s * 100.0).round() / 100.0
}

/// `src/a.js`, `src/a.js and 2 more`.
fn describe_paths(paths: &BTreeSet<String>) -> String {
    let mut it = paths.iter();
    match (it.next(), paths.len()) {
        (None, _) => "nothing".into(),
        (Some(p), 1) => p.clone(),
        (Some(p), n) => format!("{p} and {} more", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_paths_are_named_briefly() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(describe_paths(&s(&["a.js"])), "a.js");
        assert_eq!(
            describe_paths(&s(&["b.js", "a.js", "c"])),
            "a.js and 2 more"
        );
    }
}
