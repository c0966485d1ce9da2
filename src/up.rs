//! `pulsedev up`: the step graph of DESIGN.md wired to the real modules, and the
//! summary. Preflight first; then the cluster and the image builds overlap; the
//! platform (ingress controller, cert-manager) and the data stores go side by side;
//! migrations wait for Postgres and the delivered images; the services wait for the
//! migrations, the local CA and the ingress controller; prune comes last.
//!
//! Owns: the order of `up` and what each step hands the next (through `Shared`). Must
//! not contain the mechanics of any step: those live in cluster, images, kube, stack.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::cli::Ctx;
use crate::cluster::{self, ClusterInfo, Live, Options, PortPlan, Recreate, RegistryRef, Session};
use crate::config::{Config, Env, LoadMode};
use crate::docker::Engine as DockerEngine;
use crate::error::{Error, ErrorKind, Result};
use crate::helm::Helm;
use crate::images::deliver::{Deliver, ImageRef};
use crate::images::{self, LocalImage};
use crate::kube::{self, ApplyOptions, ApplyReport, Manifest, WebhookGate};
use crate::plan::{Outcome, Plan, Run, Status, interruptible, step};
use crate::stack::{self, PlatformChart};
use crate::state::{self, Dirs};
use crate::ui::{StepProgress, Ui};

/// The label value every object of the stack carries (prune finds them by it).
pub const STACK: &str = "pulsewatch";
/// The service whose chart is the migrations Job: it runs before the others.
pub const MIGRATIONS: &str = "migrations";
const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);
/// The API group of the monitoring CRDs (ServiceMonitor, PrometheusRule).
const MONITORING_GROUP: &str = "monitoring.coreos.com/";
/// The chart that brings the monitoring CRDs: applied before the other add-ons.
const OPERATOR_CHART: &str = "kube-prometheus-stack";

/// What `up` (and `reset`) are told on the command line.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub load: Option<LoadMode>,
    pub recreate: Recreate,
    /// How long each readiness wait may take.
    pub timeout: Duration,
    pub ports: PortPlan,
    /// `--allow-external-binds`: see `cluster::Options`.
    pub allow_external_binds: bool,
    /// Prune leftovers that hold data too (`--prune-data`).
    pub prune_data: bool,
    /// JSON mode of `dev`: the summary as one `{"event": "up", …}` line, the first of
    /// the event stream, instead of the one document.
    pub summary_event: bool,
}

/// State the steps share: each slot is filled by exactly one step and read by the
/// steps that depend on it (the plan guarantees the order).
struct Shared {
    config: Config,
    /// manifests/platform/pins.toml, read once.
    pins: BTreeMap<String, PlatformChart>,
    dirs: Dirs,
    ui: Ui,
    progress: Arc<StepProgress>,
    opts: UpOptions,
    session: Session,
    docker: OnceLock<DockerEngine>,
    helm: OnceLock<Helm>,
    live: OnceLock<Live>,
    cluster: OnceLock<ClusterInfo>,
    kube: OnceLock<kube::Engine>,
    registry_created: OnceLock<bool>,
    built: OnceLock<Vec<LocalImage>>,
    images: OnceLock<BTreeMap<String, ImageRef>>,
    /// Everything applied in this run, for prune and the summary.
    applied: Mutex<ApplyReport>,
    manifests: Mutex<Vec<Manifest>>,
    /// Objects of the monitoring CRDs the services render (ServiceMonitors): applied
    /// once the observability branch made those CRDs, so the services never wait for it.
    deferred: Mutex<Vec<Manifest>>,
}

impl Shared {
    fn get<'a, T>(slot: &'a OnceLock<T>, what: &str) -> Result<&'a T> {
        slot.get()
            .ok_or_else(|| Error::internal(format!("step order bug: {what} is not ready")))
    }

    fn namespace(&self) -> String {
        stack::namespace(self.config.env)
    }

    fn load_mode(&self) -> LoadMode {
        self.opts.load.unwrap_or(self.config.images.load)
    }

    /// Applies `manifests` and waits for what they contain to be ready. Boxed: the
    /// engine's futures borrow in ways that defeat `Send` inference inside the steps.
    /// Objects that name no namespace go to `namespace` (what `helm template -n` meant),
    /// or to the app's namespace when it is `None`.
    fn apply_and_wait<'a>(
        &'a self,
        manifests: Vec<Manifest>,
        gates: Vec<WebhookGate>,
        namespace: Option<&'a str>,
        cancel: &'a CancellationToken,
    ) -> futures::future::BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let engine = Shared::get(&self.kube, "the cluster client")?;
            let app = self.namespace();
            let mut options = ApplyOptions::new(STACK, namespace.unwrap_or(&app));
            for g in gates {
                options = options.with_gate(g);
            }
            // Recorded in the inventory first; never into a Terminating namespace or CRD.
            engine.before_apply(&manifests, &options, cancel).await?;
            let report = engine.apply(&manifests, &options, cancel).await?;
            let targets = report.targets();
            let n = report.applied.len();
            self.applied.lock().expect("not poisoned").extend(report);
            self.manifests
                .lock()
                .expect("not poisoned")
                .extend(manifests);
            // Certificates are targets too (Ready for their generation): the ingress
            // serves TLS for a host only once cert-manager issued it.
            engine
                .wait_ready(&targets, self.opts.timeout, cancel)
                .await?;
            Ok(n)
        })
    }

    /// Renders a pinned platform chart from the cache and applies it into its own
    /// namespace, without its Helm hooks (tests, install-time checks), then waits.
    async fn install_chart(&self, c: &PlatformChart, cancel: &CancellationToken) -> Result<usize> {
        let helm = Shared::get(&self.helm, "helm")?;
        let piece = stack::render_platform_chart(&self.config.root, helm, &self.dirs.cache, c)
            .await?
            .ok_or_else(|| {
                Error::internal(format!("{} is not in the cache after fetching", c.chart))
            })?;
        let mut manifests = kube::parse(&piece.source, &piece.yaml)?;
        manifests.retain(|m| !m.is_helm_hook());
        self.apply_and_wait(manifests, vec![], Some(&c.namespace), cancel)
            .await
    }
}

fn parse_pieces(pieces: &[stack::Piece]) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for p in pieces {
        out.extend(kube::parse(&p.source, &p.yaml)?);
    }
    Ok(out)
}

/// The `up` summary as JSON and the facts the human summary prints.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub ok: bool,
    /// The cluster's name, also when the cluster step did not get to report (`cluster`
    /// is then null): in CI without a job id it was made up for this run.
    pub name: String,
    pub cluster: Option<ClusterInfo>,
    pub urls: Vec<String>,
    pub steps: Vec<crate::plan::StepReport>,
    pub images: BTreeMap<String, String>,
    /// Workloads whose spec changed in this run (rolled out).
    pub rolled_out: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<PathBuf>,
    /// The delivered images, for `dev` to re-render one chart with the others' images.
    #[serde(skip)]
    pub refs: BTreeMap<String, ImageRef>,
}

/// Runs `up`. On success the summary; on failure the error, after the summary of
/// what ran has been printed. In JSON mode a failure before any step ran (preflight,
/// the config's paths) still names the cluster: in CI without a job id the name was
/// made up for this run, and a script needs it for `down --name`.
pub async fn run(ctx: &Ctx, config: Config, opts: UpOptions) -> Result<()> {
    run_summary(ctx, config, opts).await.map(|_| ())
}

/// As `run`, handing back the summary of a successful run (`dev` goes on from it).
pub async fn run_summary(ctx: &Ctx, config: Config, opts: UpOptions) -> Result<Summary> {
    let name = config.name.clone();
    match run_steps(ctx, config, opts).await {
        Err(mut e) if ctx.ui.json() && !e.emitted => {
            ctx.ui.out_json(&serde_json::json!({
                "ok": false,
                "name": name,
                "error": crate::ui::error_json(&e),
            }));
            e.emitted = true;
            Err(e)
        }
        other => other,
    }
}

async fn run_steps(ctx: &Ctx, config: Config, opts: UpOptions) -> Result<Summary> {
    if config.env != Env::Dev {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "`up` makes the dev environment; env is {} (from --env, PULSEDEV_ENV or pulsedev.toml)",
                config.env.as_str()
            ),
        )
        .with_hint(format!(
            "unset PULSEDEV_ENV or set env = \"dev\"; staging and prod deploy with helm (see `pulsedev render --env {}`)",
            config.env.as_str()
        )));
    }
    // The stack's layout first: outside the repository this fails before anything runs.
    config.check_services(true, true)?;
    let pins = stack::load_pins(&config.root)?;
    let dirs = Dirs::from_process()?;
    let ui = ctx.ui.clone();
    let started = tokio::time::Instant::now();

    // Preflight: doctor's checks; a failure stops here with exit 3.
    let preflight = preflight(ctx, &config, &opts).await?;

    let session = cluster::begin(&dirs, &config.name, "pulsedev up")?;
    let progress = Arc::new(StepProgress::new(&ui));
    let shared = Arc::new(Shared {
        pins,
        config,
        dirs,
        ui: ui.clone(),
        progress: progress.clone(),
        opts,
        session,
        docker: OnceLock::new(),
        helm: OnceLock::new(),
        live: OnceLock::new(),
        cluster: OnceLock::new(),
        kube: OnceLock::new(),
        registry_created: OnceLock::new(),
        built: OnceLock::new(),
        images: OnceLock::new(),
        applied: Mutex::new(ApplyReport::default()),
        manifests: Mutex::new(Vec::new()),
        deferred: Mutex::new(Vec::new()),
    });

    let plan = build_plan(&shared)?;
    let mut run = plan.run(progress.as_ref(), &ctx.cancel).await;
    progress.lines().clear();
    // The plan's clock started after preflight: one timeline for the whole run.
    let offset = preflight.finished_at.unwrap_or_default();
    for s in &mut run.steps {
        s.started_at = s.started_at.map(|t| t + offset);
        s.finished_at = s.finished_at.map(|t| t + offset);
    }
    run.steps.insert(0, preflight);

    let mut error = run.error.take();
    // Ctrl-C wins over a failure that came first: the user asked to stop, so what this
    // run made is undone and the exit code is 130; the failure stays in the details.
    if ctx.cancel.is_cancelled() {
        undo(&shared).await;
        let mut e = Error::interrupted();
        if let Some(other) = error.take().filter(|o| o.kind != ErrorKind::Interrupted) {
            e.details
                .push(format!("before that: {}: {}", other.id(), other.message));
        }
        error = Some(e);
    }
    let result: Result<()> = match error {
        Some(e) => Err(e),
        None => Ok(()),
    };
    shared.session.finish(&result);
    let summary = summarize(&shared, &run, result.is_ok())?;
    report(ctx, &shared, &summary, &run, started.elapsed(), result)?;
    Ok(summary)
}

/// After Ctrl-C: undo what this run created (the cluster, if this run made it; the
/// registry container, if this run made it). What earlier runs made stays.
async fn undo(shared: &Shared) {
    let ui = &shared.ui;
    let calm = CancellationToken::new();
    if let Some(live) = shared.live.get() {
        let deps = live.deps(ui, &calm);
        if let Err(e) = cluster::undo(&deps, &shared.session).await {
            ui.warn(&format!("failed to undo the cluster: {}", e.message));
        }
    }
    if shared.registry_created.get() == Some(&true)
        && let Some(docker) = shared.docker.get()
    {
        match images::registry::remove(docker, &shared.config.name).await {
            Ok(_) => ui.info("removed the registry container this run created"),
            Err(e) => ui.warn(&format!(
                "failed to remove the registry container: {}",
                e.message
            )),
        }
    }
}

async fn preflight(
    ctx: &Ctx,
    config: &Config,
    opts: &UpOptions,
) -> Result<crate::plan::StepReport> {
    let t0 = tokio::time::Instant::now();
    let mut machine = crate::doctor::Machine::from_process(DOCKER_TIMEOUT);
    // What `up` downloads is not probed here: each step that downloads says itself
    // why it could not (a probe is a guess; the download is the truth).
    machine.downloads = false;
    let mut checks = ctx
        .interruptible(crate::doctor::run(config, &machine))
        .await?;
    // Only the host ports this run will bind are the user's to free: CI picks free
    // ones itself, and `--no-host-ports` publishes none but (maybe) the registry's.
    checks.retain(|c| match (c.id.as_str(), &opts.ports) {
        (_, PortPlan::Fixed { .. }) => true,
        ("port-registry", PortPlan::NoHostPorts { registry }) => registry.is_some(),
        (id, _) => !id.starts_with("port-"),
    });
    for c in checks
        .iter()
        .filter(|c| c.status == crate::doctor::Status::Warn)
    {
        ctx.ui.warn(&format!("{}: {}", c.id, c.message));
    }
    if let Some(e) = crate::doctor::failure(&checks) {
        return Err(e);
    }
    let took = t0.elapsed();
    Ok(crate::plan::StepReport {
        name: "preflight".into(),
        status: Status::Done,
        seconds: took.as_secs_f64(),
        started_at: Some(Duration::ZERO),
        finished_at: Some(took),
        detail: None,
        needs: Vec::new(),
        error: None,
    })
}

/// Adds a step whose closure gets the shared state and the step's cancel token.
fn build_plan(shared: &Arc<Shared>) -> Result<Plan> {
    let mut plan = Plan::new();
    let registry_mode = shared.load_mode() == LoadMode::Registry;
    let has_migrations = shared.config.services.contains_key(MIGRATIONS);

    step(&mut plan, shared, "tools", &[], |s, cancel| async move {
        let kind = interruptible(
            &cancel,
            crate::tools::ensure(&crate::tools::KIND, &s.dirs, &s.ui),
        )
        .await?;
        let helm = interruptible(
            &cancel,
            crate::tools::ensure(&crate::tools::HELM, &s.dirs, &s.ui),
        )
        .await?;
        let docker = interruptible(&cancel, images::connect_engine(DOCKER_TIMEOUT)).await?;
        let live = interruptible(
            &cancel,
            Live::connect(s.dirs.clone(), kind.clone(), DOCKER_TIMEOUT),
        )
        .await?;
        let _ = s.docker.set(docker);
        let _ = s.live.set(live);
        let _ = s.helm.set(Helm { bin: helm.clone() });
        Ok(Outcome::Done(Some(format!(
            "kind {}, helm {}",
            kind.display(),
            helm.display()
        ))))
    });

    step(
        &mut plan,
        shared,
        "cluster",
        &["tools"],
        |s, cancel| async move {
            let live = Shared::get(&s.live, "Docker")?;
            let deps = live.deps(&s.ui, &cancel);
            let mut opts = Options::new(&s.config.name, s.opts.ports);
            opts.node_image = cluster::node_image(&|k| std::env::var(k).ok());
            opts.template = cluster::template_for(&s.config.root)?;
            opts.recreate = s.opts.recreate;
            opts.allow_external_binds = s.opts.allow_external_binds;
            let info = cluster::ensure(&deps, &opts, &s.session).await?;
            let client = kube::connect(&info.kubeconfig, &info.context).await?;
            let _ = s.kube.set(kube::Engine::new(client));
            let what = if info.created {
                Outcome::Done(Some(format!("created {}", info.context)))
            } else if info.started_nodes.is_empty() {
                Outcome::Skipped(format!("{} exists with the same definition", info.context))
            } else {
                Outcome::Done(Some(format!(
                    "started stopped nodes {}",
                    info.started_nodes.join(", ")
                )))
            };
            let _ = s.cluster.set(info);
            Ok(what)
        },
    );

    step(
        &mut plan,
        shared,
        "images",
        &["tools"],
        |s, cancel| async move {
            let docker = Shared::get(&s.docker, "Docker")?;
            let opts = images::build_options(&s.config, docker).await?;
            let lines = s.progress.clone();
            let events: images::Events = Arc::new(move |e| build_event(lines.lines(), e));
            let outcomes = images::build(docker, &s.config.services, &opts, &cancel, events).await;
            if let Some(e) = images::build::failure_summary(&outcomes) {
                return Err(e);
            }
            let built: Vec<String> = outcomes
                .iter()
                .filter(|o| matches!(o.status, images::Status::Built))
                .map(|o| o.image.service.clone())
                .collect();
            let _ = s.built.set(outcomes.into_iter().map(|o| o.image).collect());
            Ok(if built.is_empty() {
                Outcome::Skipped("every image is current (content unchanged)".into())
            } else {
                Outcome::Done(Some(format!("built {}", built.join(", "))))
            })
        },
    );

    if registry_mode {
        step(
            &mut plan,
            shared,
            "registry",
            &["cluster"],
            |s, cancel| async move {
                let docker = Shared::get(&s.docker, "Docker")?;
                let info = Shared::get(&s.cluster, "the cluster")?;
                let mut spec =
                    images::registry::RegistrySpec::new(&s.config.name, info.registry_port);
                if let Ok(image) = std::env::var("PULSEDEV_REGISTRY_IMAGE")
                    && !image.is_empty()
                {
                    spec.image = image;
                }
                // `cluster::wire_registry` below joins it to the kind network.
                spec.network = None;
                // Known before `ensure` runs, so a Ctrl-C in the middle of it still
                // knows whether this run is the one that made the container.
                let existed = images::registry::exists(docker, &s.config.name).await?;
                let _ = s.registry_created.set(!existed);
                let state = interruptible(&cancel, images::registry::ensure(docker, &spec)).await?;
                let live = Shared::get(&s.live, "Docker")?;
                let deps = live.deps(&s.ui, &cancel);
                let reg = RegistryRef {
                    container: state.container.clone(),
                    container_port: 5000,
                    host_port: info.registry_port,
                };
                let network = cluster::kind_network(&|k| std::env::var(k).ok());
                cluster::wire_registry(&deps, &cluster::Target::from(info), &network, &reg).await?;
                Ok(if state.created {
                    Outcome::Done(Some(format!(
                        "started {} on 127.0.0.1:{}",
                        state.container, info.registry_port
                    )))
                } else {
                    Outcome::Skipped(format!("{} is running and wired", state.container))
                })
            },
        );
    }

    let deliver_deps: &[&str] = if registry_mode {
        &["images", "registry"]
    } else {
        &["images", "cluster"]
    };
    step(
        &mut plan,
        shared,
        "deliver",
        deliver_deps,
        |s, cancel| async move {
            let docker = Shared::get(&s.docker, "Docker")?;
            let info = Shared::get(&s.cluster, "the cluster")?;
            let deliver: Box<dyn Deliver> = match s.load_mode() {
                LoadMode::Registry => Box::new(images::registry::RegistryPush::new(
                    docker,
                    info.registry_port,
                )),
                LoadMode::Archive => {
                    let live = Shared::get(&s.live, "Docker")?;
                    let nodes = live.nodes_of(&info.name).await?;
                    let platform = crate::docker::platform(&docker.info().await?);
                    // Each node's own snapshotter, as kind's image loading reads it.
                    Box::new(
                        interruptible(
                            &cancel,
                            images::archive::ArchiveImport::detect(docker, nodes, &platform),
                        )
                        .await?,
                    )
                }
            };
            let mut refs = BTreeMap::new();
            let mut sent = Vec::new();
            for image in Shared::get(&s.built, "the images")? {
                let d = interruptible(&cancel, deliver.deliver(image)).await?;
                if let Some(t) = &d.transfer {
                    sent.push(match t.bytes {
                        Some(b) => format!(
                            "{} ({} layers, {:.1} MB)",
                            image.service,
                            t.layers_sent,
                            b as f64 / 1e6
                        ),
                        None => format!("{} ({} layers)", image.service, t.layers_sent),
                    });
                }
                refs.insert(image.service.clone(), d.image);
            }
            let _ = s.images.set(refs);
            Ok(if sent.is_empty() {
                Outcome::Skipped(format!("every image is already in the {}", deliver.mode()))
            } else {
                Outcome::Done(Some(format!("{}: {}", deliver.mode(), sent.join(", "))))
            })
        },
    );

    step(
        &mut plan,
        shared,
        "namespaces",
        &["cluster"],
        |s, cancel| async move {
            let files = stack::shared_files(&s.config.root, s.config.env)?;
            let ns_files: Vec<_> = files
                .iter()
                .filter(|f| {
                    f.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("namespace"))
                })
                .collect();
            let mut pieces = Vec::new();
            for f in ns_files {
                pieces.push(stack::file_piece(&s.config.root, f)?);
            }
            let manifests = parse_pieces(&pieces)?;
            let n = s.apply_and_wait(manifests, vec![], None, &cancel).await?;
            // Dev credentials: created once per cluster, never printed, never updated.
            let mut created = Vec::new();
            if s.config.env == Env::Dev {
                let engine = Shared::get(&s.kube, "the cluster client")?;
                let secrets = crate::secrets::DevSecrets::generate()?;
                for (name, made) in kube::secrets::create_if_absent(
                    engine.client(),
                    &secrets.objects(&s.namespace()),
                )
                .await?
                {
                    if made {
                        created.push(name);
                    }
                }
            }
            Ok(Outcome::Done(Some(if created.is_empty() {
                format!("{n} namespaces applied; dev secrets kept")
            } else {
                format!(
                    "{n} namespaces applied; created secrets {}",
                    created.join(", ")
                )
            })))
        },
    );

    step(
        &mut plan,
        shared,
        "platform-charts",
        &["tools"],
        |s, cancel| async move {
            let helm = Shared::get(&s.helm, "helm")?;
            let pins = &s.pins;
            let mut fetched = Vec::new();
            for c in pins.values().filter(|c| c.enabled(&s.config)) {
                if interruptible(&cancel, fetch_chart(helm, &s.dirs, c, &s.ui)).await? {
                    fetched.push(format!("{} {}", c.chart, c.version));
                }
            }
            Ok(if fetched.is_empty() {
                Outcome::Skipped("charts are in the cache".into())
            } else {
                Outcome::Done(Some(format!("fetched {}", fetched.join(", "))))
            })
        },
    );

    // The images of Postgres, Redis and the platform charts from pulsedev's image cache
    // (`pulsedev fetch`) into the nodes, before their workloads are applied.
    step(
        &mut plan,
        shared,
        "workload-images",
        &["cluster", "platform-charts"],
        |s, cancel| async move {
            if !images::upstream::cache_in_use(&s.dirs.cache) {
                return Ok(Outcome::Skipped(
                    "none cached (`pulsedev fetch` caches them): the nodes pull them".into(),
                ));
            }
            let docker = Shared::get(&s.docker, "Docker")?;
            let helm = Shared::get(&s.helm, "helm")?;
            let info = Shared::get(&s.cluster, "the cluster")?;
            let live = Shared::get(&s.live, "Docker")?;
            let nodes = live.nodes_of(&info.name).await?;
            let (imported, uncached) = interruptible(
                &cancel,
                images::upstream::import_all(&s.config, helm, &s.dirs.cache, docker, nodes),
            )
            .await?;
            let pulled = if uncached.is_empty() {
                String::new()
            } else {
                format!("; not cached, the nodes pull {}", uncached.join(", "))
            };
            Ok(if imported.is_empty() {
                Outcome::Skipped(format!("the nodes have every cached image{pulled}"))
            } else {
                Outcome::Done(Some(format!("imported {}{pulled}", imported.join(", "))))
            })
        },
    );

    if shared.config.env == Env::Dev {
        for (key, label) in [
            ("ingress", "ingress-controller"),
            ("cert-manager", "cert-manager"),
        ] {
            step(
                &mut plan,
                shared,
                label,
                &["namespaces", "platform-charts", "workload-images"],
                move |s, cancel| async move {
                    let c = s.pins.get(key).ok_or_else(|| {
                        Error::new(
                            ErrorKind::ConfigInvalid,
                            format!("manifests/platform/pins.toml has no [{key}]"),
                        )
                    })?;
                    let n = s.install_chart(c, &cancel).await?;
                    Ok(Outcome::Done(Some(format!(
                        "{} {}: {n} objects ready",
                        c.chart, c.version
                    ))))
                },
            );
        }

        step(
            &mut plan,
            shared,
            "data-stores",
            &["namespaces", "workload-images"],
            |s, cancel| async move {
                let mut pieces = Vec::new();
                for f in stack::shared_files(&s.config.root, s.config.env)? {
                    if !f
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("namespace"))
                    {
                        pieces.push(stack::file_piece(&s.config.root, &f)?);
                    }
                }
                let n = s
                    .apply_and_wait(parse_pieces(&pieces)?, vec![], None, &cancel)
                    .await?;
                Ok(Outcome::Done(Some(format!(
                    "{n} objects ready (Postgres, Redis, network policies)"
                ))))
            },
        );

        step(
            &mut plan,
            shared,
            "local-ca",
            &["cert-manager"],
            |s, cancel| async move {
                let pins = &s.pins;
                let mut pieces = Vec::new();
                for c in pins.values() {
                    for f in &c.local_ca {
                        pieces.push(stack::file_piece(&s.config.root, &s.config.root.join(f))?);
                    }
                }
                let cm_ns = pins
                    .get("cert-manager")
                    .map_or("cert-manager".to_string(), |c| c.namespace.clone());
                let gate = WebhookGate::cert_manager(&cm_ns);
                let n = s
                    .apply_and_wait(parse_pieces(&pieces)?, vec![gate], None, &cancel)
                    .await?;
                Ok(Outcome::Done(Some(format!(
                    "{n} issuer and certificate objects applied"
                ))))
            },
        );
    }

    let data_ready: &[&str] = if shared.config.env == Env::Dev {
        &["data-stores", "deliver"]
    } else {
        &["namespaces", "deliver"]
    };
    if has_migrations {
        step(
            &mut plan,
            shared,
            "migrations",
            data_ready,
            |s, cancel| async move {
                let n = deploy_services(&s, &[MIGRATIONS.to_string()], &cancel).await?;
                Ok(Outcome::Done(Some(format!(
                    "{n} objects applied; the migrations Job completed"
                ))))
            },
        );
    }

    let mut app_deps: Vec<&str> = if has_migrations {
        vec!["migrations"]
    } else {
        data_ready.to_vec()
    };
    if shared.config.env == Env::Dev {
        app_deps.extend(["local-ca", "ingress-controller"]);
    }
    step(
        &mut plan,
        shared,
        "services",
        &app_deps,
        |s, cancel| async move {
            let names: Vec<String> = s
                .config
                .services
                .keys()
                .filter(|n| *n != MIGRATIONS)
                .cloned()
                .collect();
            let n = deploy_services(&s, &names, &cancel).await?;
            Ok(Outcome::Done(Some(format!(
                "{}: {n} objects applied and ready",
                names.join(", ")
            ))))
        },
    );

    if shared.config.observability && shared.config.env == Env::Dev {
        step(
            &mut plan,
            shared,
            "observability",
            &["namespaces", "platform-charts", "workload-images"],
            |s, cancel| async move { install_observability(&s, &cancel).await },
        );
        step(
            &mut plan,
            shared,
            "monitoring-objects",
            &["observability", "cert-manager", "services"],
            |s, cancel| async move {
                let pins = &s.pins;
                let mut pieces = Vec::new();
                for c in pins.values().filter(|c| c.enabled(&s.config)) {
                    for f in &c.extra {
                        pieces.push(stack::file_piece(&s.config.root, &s.config.root.join(f))?);
                    }
                }
                let mut manifests = parse_pieces(&pieces)?;
                manifests.extend(std::mem::take(
                    &mut *s.deferred.lock().expect("not poisoned"),
                ));
                let cm_ns = pins
                    .get("cert-manager")
                    .map_or("cert-manager".to_string(), |c| c.namespace.clone());
                let n = s
                    .apply_and_wait(
                        manifests,
                        vec![WebhookGate::cert_manager(&cm_ns)],
                        None,
                        &cancel,
                    )
                    .await?;
                Ok(Outcome::Done(Some(format!(
                    "{n} objects (dashboards, rules, service monitors, Grafana's certificate)"
                ))))
            },
        );
    }

    // Prune last: objects not re-applied yet must not look like leftovers.
    let before_prune: Vec<String> = plan.names().iter().map(|n| n.to_string()).collect();
    let before_prune: Vec<&str> = before_prune.iter().map(String::as_str).collect();
    step(
        &mut plan,
        shared,
        "prune",
        &before_prune,
        |s, cancel| async move {
            let engine = Shared::get(&s.kube, "the cluster client")?;
            let applied = s.applied.lock().expect("not poisoned").clone();
            let options = kube::PruneOptions {
                prune_data: s.opts.prune_data,
                only: None,
            };
            let report = engine
                .prune_with(STACK, &applied, &options, &cancel)
                .await?;
            for left in &report.left_alone {
                s.ui.warn(&format!(
                    "{left} carries the stack label but pulsedev did not apply it: left alone"
                ));
            }
            for kept in &report.kept {
                s.ui.warn(&format!("kept {kept}: no longer part of the stack"));
            }
            for data in &report.data {
                s.ui.warn(&format!(
                    "kept {data}: no longer part of the stack; `pulsedev up --prune-data` deletes it"
                ));
            }
            Ok(match report.summary() {
                None => Outcome::Skipped("nothing left over".into()),
                Some(line) => Outcome::Done(Some(line)),
            })
        },
    );

    plan.validate()?;
    Ok(plan)
}

/// The observability branch: the monitoring namespace and its policies, Grafana's admin
/// Secret (created once), the operator chart (its CRDs first), then the other add-ons
/// side by side, then the workloads the operator makes.
async fn install_observability(s: &Shared, cancel: &CancellationToken) -> Result<Outcome> {
    let engine = Shared::get(&s.kube, "the cluster client")?;
    let root = &s.config.root;
    let pins = &s.pins;
    let optional: Vec<&PlatformChart> = pins
        .values()
        .filter(|c| c.optional.is_some() && c.enabled(&s.config))
        .collect();
    let mut pieces = Vec::new();
    for c in &optional {
        for f in &c.before {
            pieces.push(stack::file_piece(root, &root.join(f))?);
        }
    }
    let ns = optional
        .first()
        .map_or("monitoring".to_string(), |c| c.namespace.clone());
    s.apply_and_wait(parse_pieces(&pieces)?, vec![], Some(&ns), cancel)
        .await?;
    let grafana = crate::secrets::grafana_admin(&ns)?;
    kube::secrets::create_if_absent(engine.client(), &grafana).await?;

    let (first, rest): (Vec<&PlatformChart>, Vec<&PlatformChart>) =
        optional.iter().partition(|c| c.chart == OPERATOR_CHART);
    let mut n = 0;
    for c in first {
        n += s.install_chart(c, cancel).await?;
    }
    for r in futures::future::join_all(rest.iter().map(|c| s.install_chart(c, cancel))).await {
        n += r?;
    }
    // Workloads an operator makes from the charts' custom resources.
    let mut targets = Vec::new();
    for c in &optional {
        for w in &c.wait {
            let (kind, name) = w.split_once('/').ok_or_else(|| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("pins.toml: wait entry {w:?} is not Kind/name"),
                )
            })?;
            let kind = kube::TargetKind::from_kind("apps/v1", kind).ok_or_else(|| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("pins.toml: cannot wait for a {kind}"),
                )
            })?;
            targets.push(kube::Target::new(kind, &c.namespace, name));
        }
    }
    engine.wait_ready(&targets, s.opts.timeout, cancel).await?;
    let names: Vec<&str> = optional.iter().map(|c| c.chart.as_str()).collect();
    Ok(Outcome::Done(Some(format!(
        "{}: {n} objects ready",
        names.join(", ")
    ))))
}

/// Renders, applies and waits for the charts of `names`, with their delivered images.
async fn deploy_services(
    s: &Shared,
    names: &[String],
    cancel: &CancellationToken,
) -> Result<usize> {
    let helm = Shared::get(&s.helm, "helm")?;
    let images = Shared::get(&s.images, "the delivered images")?;
    let https = Shared::get(&s.cluster, "the cluster")?
        .ports
        .as_ref()
        .map(|p| p.https);
    let mut pieces = Vec::new();
    for name in names {
        if let Some(p) =
            stack::render_service(&s.config, helm, s.config.env, name, images.get(name), https)
                .await?
        {
            pieces.push(p);
        }
    }
    let (now, later): (Vec<Manifest>, Vec<Manifest>) = parse_pieces(&pieces)?
        .into_iter()
        .partition(|m| !m.api_version().starts_with(MONITORING_GROUP));
    s.deferred.lock().expect("not poisoned").extend(later);
    // A Job that failed in an earlier run stays Failed under the same name: delete it
    // so this run runs it again (a fix may be outside its image, e.g. Postgres ready now).
    let engine = Shared::get(&s.kube, "the cluster client")?;
    let ns = s.namespace();
    for job in now.iter().filter(|m| m.kind() == "Job") {
        let job_ns = job.namespace().unwrap_or(&ns);
        if kube::jobs::delete_if_failed(
            engine.client(),
            job_ns,
            job.name(),
            s.opts.timeout,
            Duration::from_secs(1),
            cancel,
        )
        .await?
        {
            s.ui.info(&format!(
                "deleted the failed Job {job_ns}/{} to run it again",
                job.name()
            ));
        }
    }
    s.apply_and_wait(now, vec![], None, cancel).await
}

/// Puts a platform chart into the cache with `helm pull` unless a verified copy is
/// there (`stack::verify_chart`). A pin without `sha256` is trusted on first download:
/// the digest of what `helm pull` brought is recorded beside the archive, and only an
/// archive pulsedev downloaded and recorded is ever used; one without a record (planted,
/// copied in, or its record deleted) is downloaded again. Returns whether it fetched.
/// `helm pull` writes into a fresh directory beside the cache entry, which is renamed
/// into place once complete: a run killed mid-download leaves no half-written archive
/// where `up` and `render` would take it for the chart (`pulsedev fetch` uses this too).
pub(crate) async fn fetch_chart(
    helm: &Helm,
    dirs: &Dirs,
    c: &PlatformChart,
    ui: &Ui,
) -> Result<bool> {
    let archive = stack::chart_archive(&dirs.cache, c);
    if archive.is_file() {
        if stack::verify_chart(&archive, c)? == stack::ChartTrust::Verified {
            return Ok(false);
        }
        ui.warn(&format!(
            "the {} chart {} in the cache has no pinned SHA-256 and no record of being \
             downloaded by pulsedev; downloading it again",
            c.chart, c.version
        ));
        state::remove_file(&archive)?;
    }
    let charts_dir = archive.parent().expect("archives live in a directory");
    state::private_dir(charts_dir)?;
    let staging = tempfile::Builder::new()
        .prefix(".pull.")
        .tempdir_in(charts_dir)
        .map_err(|e| state::io_error("create a temporary directory in", charts_dir, e))?;
    let dest = staging.path();
    let pulled = dest.join(archive.file_name().expect("archives have a name"));
    let out = tokio::process::Command::new(&helm.bin)
        .args([
            "pull",
            &c.chart,
            "--repo",
            &c.repo_url,
            "--version",
            &c.version,
            "--destination",
        ])
        .arg(dest)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::internal(format!("failed to run {}: {e}", helm.bin.display())))?;
    if !out.status.success() || !pulled.is_file() {
        return Err(Error::new(
            ErrorKind::ChartFetchFailed,
            format!(
                "failed to fetch the {} chart {} from {}: {}",
                c.chart,
                c.version,
                c.repo_url,
                why_helm_failed(&out, &archive)
            ),
        )
        .with_hint("check the network (HTTPS_PROXY is honoured), then run `pulsedev up` again"));
    }
    std::fs::rename(&pulled, &archive).map_err(|e| state::io_error("install", &archive, e))?;
    if c.sha256.is_empty() {
        let bytes = std::fs::read(&archive)
            .map_err(|e| Error::internal(format!("failed to read {}: {e}", archive.display())))?;
        let got = hex::encode(Sha256::digest(&bytes));
        ui.warn(&format!(
            "the {} chart {} has no pinned SHA-256; recorded {got} from this download \
             (pin it in manifests/platform/pins.toml)",
            c.chart, c.version
        ));
        state::write_private(
            &stack::recorded_digest(&archive),
            format!("{got}\n").as_bytes(),
        )?;
    }
    stack::verify_chart(&archive, c)?;
    Ok(true)
}

/// The cause of a failed `helm pull`, never empty: its stderr, else its stdout, else
/// what can be seen (its exit status, or the archive it did not write).
fn why_helm_failed(out: &std::process::Output, archive: &std::path::Path) -> String {
    for stream in [&out.stderr, &out.stdout] {
        let text = String::from_utf8_lossy(stream);
        let text = text.trim();
        if !text.is_empty() {
            return text.to_string();
        }
    }
    if out.status.success() {
        format!(
            "`helm pull` exited 0 but wrote no {}",
            archive.file_name().unwrap_or_default().to_string_lossy()
        )
    } else {
        format!("`helm pull` failed ({}) and printed nothing", out.status)
    }
}

pub(crate) fn build_event(lines: &crate::ui::TaskLines, e: images::Event) {
    use images::Event as E;
    match e {
        E::Started { service, image } => lines.update(
            &format!("  build {service}"),
            &format!("building {image}"),
            false,
        ),
        E::Step { service, step } => lines.update(&format!("  build {service}"), &step, false),
        E::Built { service, seconds } => lines.finish(
            &format!("  build {service}"),
            &format!("built ({seconds:.1}s)"),
        ),
        E::Failed { service, message } => {
            lines.finish(&format!("  build {service}"), &format!("FAILED: {message}"))
        }
        _ => {}
    }
}

/// Hosts of the Ingress objects applied, as https URLs on the configured port.
fn urls(shared: &Shared) -> Vec<String> {
    // No host ports published (`--no-host-ports`): nothing is reachable from here.
    let Some(port) = shared
        .cluster
        .get()
        .and_then(|c| c.ports.as_ref().map(|p| p.https))
    else {
        return Vec::new();
    };
    let suffix = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let mut hosts: Vec<String> = shared
        .manifests
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|m| m.kind() == "Ingress")
        .flat_map(|m| m.hosts())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
        .into_iter()
        .map(|h| format!("https://{h}{suffix}"))
        .collect()
}

/// Workloads whose generation differs from the previous `up`'s (kept in the cluster's
/// state dir), i.e. whose spec this run changed. Not the resourceVersion: status
/// updates bump it on every rollout step without a spec change.
fn rolled_out(shared: &Shared) -> Result<Vec<String>> {
    let path = shared.session.paths.dir.join("applied.json");
    let before: BTreeMap<String, String> = state::read_optional(&path)?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let applied = shared.applied.lock().expect("not poisoned");
    let mut now = BTreeMap::new();
    let mut changed = Vec::new();
    for a in &applied.applied {
        let key = format!(
            "{}/{}/{}",
            a.kind,
            a.namespace.as_deref().unwrap_or("-"),
            a.name
        );
        let rv = a.generation.map(|g| g.to_string()).unwrap_or_default();
        if matches!(
            a.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job"
        ) && before.get(&key) != Some(&rv)
        {
            changed.push(key.clone());
        }
        now.insert(key, rv);
    }
    if !now.is_empty() {
        let text = serde_json::to_string_pretty(&now).expect("maps serialize");
        state::write_private(&path, text.as_bytes())?;
    }
    Ok(changed)
}

fn summarize(shared: &Shared, run: &Run, ok: bool) -> Result<Summary> {
    let images = shared
        .images
        .get()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default();
    Ok(Summary {
        ok,
        name: shared.config.name.clone(),
        cluster: shared.cluster.get().cloned(),
        urls: urls(shared),
        steps: run.steps.clone(),
        images,
        rolled_out: if ok { rolled_out(shared)? } else { Vec::new() },
        ca_certificate: None,
        refs: shared.images.get().cloned().unwrap_or_default(),
    })
}

fn report(
    ctx: &Ctx,
    shared: &Shared,
    summary: &Summary,
    run: &Run,
    wall: Duration,
    result: Result<()>,
) -> Result<()> {
    if ctx.ui.json() {
        let mut doc = serde_json::to_value(summary).expect("summary serializes");
        if let Err(e) = &result {
            doc["error"] = crate::ui::error_json(e);
        }
        if shared.opts.summary_event {
            doc["event"] = "up".into();
            let line = serde_json::to_string(&crate::redact::scrub_json(&doc))
                .expect("JSON values serialize");
            ctx.ui.out(&format!("{line}\n"));
        } else {
            ctx.ui.out_json(&doc);
        }
        return result.map_err(|mut e| {
            e.emitted = true;
            e
        });
    }
    let mut out = String::new();
    let steps = run
        .steps
        .iter()
        .filter(|s| s.status != Status::NotRun)
        .count();
    match &result {
        Ok(()) => out.push_str(&format!(
            "PulseWatch is up on cluster {} ({} steps in {:.1}s)\n",
            shared.config.name,
            steps,
            wall.as_secs_f64()
        )),
        Err(_) => out.push_str(&format!(
            "pulsedev up stopped after {:.1}s; steps that ran:\n",
            wall.as_secs_f64()
        )),
    }
    for s in &run.steps {
        let word = match s.status {
            Status::Done => "done",
            Status::Skipped => "current",
            Status::Failed => "FAILED",
            Status::NotRun => "not run",
        };
        out.push_str(&format!(
            "  {:<18} {:<8} {:>6.1}s  {}\n",
            s.name,
            word,
            s.seconds,
            s.detail.as_deref().unwrap_or("")
        ));
    }
    // Steps that failed beside the one whose error ends the output: each keeps its own
    // reason (kind's output, a build error), not only the first failure.
    let main = result.as_ref().err().map(|e| (e.id(), e.message.as_str()));
    for s in &run.steps {
        let Some(e) = &s.error else { continue };
        if main == Some((e.id.as_str(), e.message.as_str())) || e.id == "interrupted" {
            continue;
        }
        let mut also = crate::error::Error::new(
            crate::error::ErrorKind::from_id(&e.id).unwrap_or(crate::error::ErrorKind::Internal),
            format!("{} failed: {}", s.name, e.message),
        )
        .with_details(e.details.clone());
        also.hint = e.hint.clone();
        out.push('\n');
        out.push_str(&crate::ui::render_error(&also, ctx.ui.mode.color_stdout));
    }
    if result.is_ok() {
        if !summary.urls.is_empty() {
            out.push('\n');
            for u in &summary.urls {
                out.push_str(&format!("  {u}\n"));
            }
        }
        if let Some(c) = &summary.cluster {
            out.push_str(&format!(
                "\nkubeconfig: {} (context {})\n  KUBECONFIG={} kubectl get pods -n {}\n",
                c.kubeconfig.display(),
                c.context,
                c.kubeconfig.display(),
                shared.namespace()
            ));
        }
        if summary.rolled_out.is_empty() {
            out.push_str("\nnothing was rolled out: everything was current\n");
        } else {
            out.push_str(&format!(
                "\nrolled out: {}\n",
                summary.rolled_out.join(", ")
            ));
        }
        out.push_str(
            "\nThe certificates come from a local CA: `pulsedev trust` exports it (use it with curl --cacert),\n\
             `sudo pulsedev trust --install` adds it to this machine's trust store.\n",
        );
    }
    ctx.ui.out(&out);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap()
    }

    #[test]
    fn a_failed_helm_pull_always_names_a_cause() {
        let archive = std::path::Path::new("/cache/cert-manager-v1.21.1.tgz");
        assert_eq!(
            why_helm_failed(&sh("echo 'no route' >&2; exit 1"), archive),
            "no route"
        );
        assert_eq!(
            why_helm_failed(&sh("echo 'on stdout'; exit 1"), archive),
            "on stdout"
        );
        assert_eq!(
            why_helm_failed(&sh("exit 3"), archive),
            "`helm pull` failed (exit status: 3) and printed nothing"
        );
        assert_eq!(
            why_helm_failed(&sh("true"), archive),
            "`helm pull` exited 0 but wrote no cert-manager-v1.21.1.tgz"
        );
    }
}
