//! The kind cluster: create it once, reuse it, report drift, start stopped nodes,
//! wire the local registry into it, delete it, and keep its kubeconfig.
//!
//! Owns: pulsedev's record of the clusters it made (`<state>/<name>/`: `kubeconfig`,
//! `cluster.json`, `kind-config.yaml`, `journal.json`, all 0600), the ownership check
//! every cluster-changing command goes through (`guard`), and every call to kind.
//! Must not apply manifests (`kube`) nor run or push to the registry (`images`).
//!
//! Side effects sit behind seams passed in `Deps`: `process::Runner` (kind),
//! `nodes::Nodes` (Docker), `api::ClusterApi` (the API server).

pub mod api;
pub mod ci;
pub mod cmd;
pub mod journal;
pub mod kind;
pub mod kindconfig;
pub mod kubeconfig;
pub mod lock;
pub mod nodes;
pub mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use self::api::ClusterApi;
use self::journal::{Action, EntryStatus, Journal, Record, RunStatus};
use self::kind::{CreateFailure, Kind};
use self::kindconfig::HostPorts;
use self::lock::FileLock;
use self::nodes::Nodes;
use self::process::Runner;
use crate::error::{Error, ErrorKind, Result};
use crate::state::{self, Dirs};
use crate::ui::Ui;

/// The kube context kind gives a cluster.
pub fn context_name(name: &str) -> String {
    format!("kind-{name}")
}

/// The registry container `images` runs for a cluster.
pub fn registry_container(name: &str) -> String {
    crate::images::registry::container_name(name)
}

/// The files pulsedev keeps for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// `cluster.json`: the ownership record.
    pub record: PathBuf,
    /// The rendered kind config the cluster was made from (for drift diffs).
    pub rendered: PathBuf,
    /// Ports reserved for this cluster before it exists (CI mode).
    pub ports: PathBuf,
    pub journal: PathBuf,
    /// The local CA certificate `trust` exports (public).
    pub ca_cert: PathBuf,
    /// Outside `dir`, so `down` can remove `dir` while holding it.
    pub lock: PathBuf,
}

impl Paths {
    pub fn new(dirs: &Dirs, name: &str) -> Paths {
        let dir = dirs.cluster(name);
        Paths {
            kubeconfig: dir.join("kubeconfig"),
            record: dir.join("cluster.json"),
            rendered: dir.join("kind-config.yaml"),
            ports: dir.join("ports.json"),
            journal: dir.join(journal::FILE_NAME),
            ca_cert: dir.join("ca.crt"),
            lock: dirs.state.join(".locks").join(format!("{name}.lock")),
            dir,
        }
    }
}

/// `cluster.json`: pulsedev made this cluster, on this machine, from this definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub context: String,
    pub kubeconfig: PathBuf,
    pub config_hash: String,
    pub node_image: String,
    /// Host ports published on 127.0.0.1; none in CI's no-host-ports mode.
    pub ports: Option<HostPorts>,
    pub registry_port: u16,
    /// Unix seconds.
    pub created_at: u64,
    pub created_by: String,
    pub host: String,
}

/// Reads the ownership record of `name`, if pulsedev made such a cluster here.
pub fn read_record(paths: &Paths) -> Result<Option<ClusterRecord>> {
    match state::read_optional(&paths.record)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::internal(format!("{} is unreadable: {e}", paths.record.display())).with_hint(
                "run `pulsedev down` to remove the cluster and its state, then `pulsedev up`",
            )
        }),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Which host ports the cluster publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPlan {
    /// These ports (from flags, env, file or defaults); the registry port too.
    Fixed { ports: HostPorts, registry: u16 },
    /// CI: free ports chosen now (or the ones a reused cluster already has).
    Auto,
    /// CI: publish no HTTP/HTTPS ports; the registry still needs one.
    NoHostPorts { registry: Option<u16> },
}

/// When an existing cluster may be deleted and made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recreate {
    /// Drift is an error (`cluster-drift`) naming what differs.
    Never,
    /// The user agreed to recreate on drift (answered the prompt, or `--yes`).
    OnDrift,
    /// `reset`: recreate whether or not it drifted.
    Always,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub ports: PortPlan,
    pub recreate: Recreate,
    /// The kind config template text (see `template_for`).
    pub template: String,
    pub node_image: String,
    /// Passed to `kind create cluster --wait`; kind only warns when it runs out.
    pub kind_wait: Duration,
    /// How long pulsedev itself waits for every node to be Ready.
    pub ready_timeout: Duration,
    pub ready_poll: Duration,
    /// Start node containers that exist but are stopped (else report the fix).
    pub start_stopped: bool,
    /// A kind config that binds the API server or host ports beyond loopback is
    /// refused unless this is set (`--allow-external-binds`).
    pub allow_external_binds: bool,
}

impl Options {
    pub fn new(name: &str, ports: PortPlan) -> Options {
        Options {
            name: name.to_string(),
            ports,
            recreate: Recreate::Never,
            template: kindconfig::TEMPLATE.to_string(),
            node_image: kindconfig::NODE_IMAGE.to_string(),
            kind_wait: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(180),
            ready_poll: Duration::from_secs(1),
            start_stopped: true,
            allow_external_binds: false,
        }
    }
}

/// Names a copy of the pinned node image to use instead (a mirror for machines that
/// cannot reach Docker Hub; tests use a local stand-in). It must be the same image.
pub const NODE_IMAGE_ENV: &str = "PULSEDEV_NODE_IMAGE";

/// The node image: `kindconfig::NODE_IMAGE` unless `NODE_IMAGE_ENV` names a copy.
pub fn node_image(env: &dyn Fn(&str) -> Option<String>) -> String {
    env(NODE_IMAGE_ENV)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| kindconfig::NODE_IMAGE.to_string())
}

/// The template to render: `<root>/kind-config/dev.yaml` when the checkout has one
/// (so editing it shapes the cluster), else the compiled-in copy.
pub fn template_for(root: &Path) -> Result<String> {
    let p = root.join(kindconfig::TEMPLATE_PATH);
    Ok(state::read_optional(&p)?.unwrap_or_else(|| kindconfig::TEMPLATE.to_string()))
}

/// What `ensure` did, for `up`'s summary and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterInfo {
    pub name: String,
    pub context: String,
    pub kubeconfig: PathBuf,
    /// This run made the cluster.
    pub created: bool,
    /// An existing cluster was deleted first (drift with consent, or reset).
    pub recreated: bool,
    /// Picked up a cluster an interrupted run had finished creating.
    pub resumed: bool,
    /// Node containers that were stopped and were started.
    pub started_nodes: Vec<String>,
    pub ports: Option<HostPorts>,
    pub registry_port: u16,
    pub config_hash: String,
}

/// The side effects `ensure`, `undo`, `down` and `wire_registry` go through.
pub struct Deps<'a> {
    pub runner: &'a dyn Runner,
    pub nodes: &'a dyn Nodes,
    /// Makes an API client for (kubeconfig, context) once the cluster exists.
    pub api: &'a (dyn Fn(&Path, &str) -> Box<dyn ClusterApi> + Send + Sync),
    pub dirs: &'a Dirs,
    /// The kind binary (found on PATH or fetched by `tools`).
    pub kind: PathBuf,
    pub ui: &'a Ui,
    pub cancel: &'a CancellationToken,
}

impl Deps<'_> {
    fn kind(&self) -> Kind<'_> {
        Kind {
            runner: self.runner,
            bin: &self.kind,
        }
    }

    /// Removes a lock file a killed kind left next to pulsedev's kubeconfig. Called
    /// only under the cluster's own lock (`Session`): that kubeconfig is pulsedev's
    /// alone and no other kind runs on it now, so a lock there is stale.
    fn clear_stale_kind_lock(&self, paths: &Paths) -> Result<()> {
        let lock = kind::lock_file(&paths.kubeconfig);
        // kind makes a plain file; anything else is not its lock and is left alone.
        if std::fs::symlink_metadata(&lock).is_ok_and(|m| !m.is_dir()) {
            self.ui.info(&format!(
                "removing {}, left by a kind that was stopped while writing the kubeconfig",
                lock.display()
            ));
            state::remove_file(&lock)?;
        }
        Ok(())
    }

    /// `kind delete cluster`, after clearing a stale kind lock (see above).
    async fn delete_cluster(&self, name: &str, paths: &Paths) -> Result<()> {
        self.clear_stale_kind_lock(paths)?;
        self.kind().delete(name, &paths.kubeconfig).await
    }
}

/// One pulsedev run working on one cluster: holds the cluster's lock and this run's
/// journal. Create it first, pass it to `ensure`, end it with `finish`.
#[derive(Debug)]
pub struct Session {
    pub name: String,
    pub paths: Paths,
    pub journal: Journal,
    /// The journal an earlier run left, read before this run's replaced it.
    pub previous: Option<Record>,
    /// Said to the user once the run has a `Ui` (an unreadable journal set aside).
    pub warnings: Vec<String>,
    _lock: FileLock,
}

/// Takes the cluster's lock (failing at once when another pulsedev holds it) and
/// starts this run's journal.
pub fn begin(dirs: &Dirs, name: &str, command: &str) -> Result<Session> {
    let paths = Paths::new(dirs, name);
    let lock = match FileLock::try_exclusive(&paths.lock)? {
        Ok(l) => l,
        Err(pid) => {
            return Err(Error::new(
                ErrorKind::ClusterBusy,
                format!(
                    "another pulsedev{} is working on the cluster {name}",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                ),
            )
            .with_hint("wait for it to finish, or use another `--name`"));
        }
    };
    state::private_dir(&paths.dir)?;
    let (previous, warning) = journal::read(&paths.journal)?;
    let journal = Journal::begin(&paths.journal, command)?;
    Ok(Session {
        name: name.to_string(),
        paths,
        journal,
        previous,
        warnings: warning.into_iter().collect(),
        _lock: lock,
    })
}

impl Session {
    /// Records how the run ended (interrupted runs have already undone their work).
    pub fn finish<T>(&self, result: &Result<T>) {
        let status = match result {
            Ok(_) => RunStatus::Completed,
            Err(e) if e.kind == ErrorKind::Interrupted => RunStatus::Undone,
            Err(_) => RunStatus::Failed,
        };
        // The journal lives in the state dir; `down` may have removed it.
        if self.paths.dir.exists() {
            let _ = self.journal.finish(status);
        }
    }
}

/// Runs `fut` unless Ctrl-C comes first (`None`).
async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        r = fut => Some(r),
        _ = cancel.cancelled() => None,
    }
}

/// Creates or reuses the cluster `opts.name`. The cluster half of `pulsedev up`.
///
/// On Ctrl-C (`deps.cancel`) it undoes what this run created, records that in the
/// journal and returns `interrupted`.
pub async fn ensure(deps: &Deps<'_>, opts: &Options, session: &Session) -> Result<ClusterInfo> {
    let r = ensure_inner(deps, opts, session).await;
    match r {
        Err(e) if e.kind == ErrorKind::Interrupted || deps.cancel.is_cancelled() => {
            deps.ui.info("interrupted: undoing what this run created");
            undo(deps, session).await?;
            Err(Error::interrupted())
        }
        other => other,
    }
}

async fn ensure_inner(deps: &Deps<'_>, opts: &Options, s: &Session) -> Result<ClusterInfo> {
    for w in &s.warnings {
        deps.ui.warn(w);
    }
    let name = opts.name.as_str();
    let paths = &s.paths;
    let kind = deps.kind();
    let listed = unless_cancelled(deps.cancel, kind.clusters())
        .await
        .ok_or_else(Error::interrupted)??;
    let mut exists = listed.iter().any(|n| n == name);
    let mut record = read_record(paths)?;
    let mut resumed = false;

    // An earlier run that died mid-way: finish or clean up after it.
    if let Some(prev) = s
        .previous
        .as_ref()
        .filter(|p| matches!(p.status, RunStatus::Running | RunStatus::Failed))
    {
        let cluster_entry = prev
            .entries
            .iter()
            .find(|e| matches!(&e.action, Action::KindCluster { name: n } if n == name));
        match cluster_entry.map(|e| e.status) {
            Some(EntryStatus::Started) => {
                if exists {
                    deps.ui.info(&format!(
                        "removing the half-made cluster {name} an interrupted run (pid {}) left behind",
                        prev.pid
                    ));
                    deps.delete_cluster(name, paths).await?;
                    exists = false;
                }
                for (_, a) in prev.leftovers() {
                    if let Action::StateFile { path } = a {
                        state::remove_file(path)?;
                    }
                }
                record = None;
            }
            Some(EntryStatus::Done) if exists && record.is_none() => {
                deps.ui.info(&format!(
                    "resuming: the cluster {name} was created by an interrupted run (pid {})",
                    prev.pid
                ));
                resumed = true;
            }
            _ => {}
        }
    }

    let ports = plan_ports(deps.dirs, opts, record.as_ref(), paths, &s.journal).await?;
    let rendered = kindconfig::render(&kindconfig::Inputs {
        template: &opts.template,
        node_image: &opts.node_image,
        ports: ports.0,
    })?;
    let external = kindconfig::external_binds(&rendered.yaml);
    if !external.is_empty() {
        if !opts.allow_external_binds {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "the kind cluster definition ({}) makes the cluster reachable from the network: {}",
                    kindconfig::TEMPLATE_PATH,
                    external.join("; ")
                ),
            )
            .with_hint(
                "bind to \"127.0.0.1\" (set `listenAddress: \"127.0.0.1\"` on each extraPortMappings entry), or pass `--allow-external-binds` if you mean to expose it",
            ));
        }
        deps.ui.warn(&format!(
            "--allow-external-binds: the cluster is reachable from the network: {}",
            external.join("; ")
        ));
    }

    if resumed {
        write_record(paths, opts, &rendered, ports, None)?;
        record = read_record(paths)?;
    }

    let mut recreated = false;
    match (exists, record) {
        (true, None) => {
            return Err(Error::new(
                ErrorKind::NotAKindContext,
                format!("a kind cluster named {name} exists, but pulsedev did not make it on this machine"),
            )
            .with_hint(format!(
                "pulsedev only changes clusters it made: choose another name with `--name`, or delete that cluster yourself (`kind delete cluster --name {name}`) if it is yours"
            )));
        }
        (true, Some(rec)) => {
            let drift = rec.config_hash != rendered.hash;
            if drift && opts.recreate == Recreate::Never {
                return Err(drift_error(name, paths, &rec, &rendered));
            }
            if drift || opts.recreate == Recreate::Always {
                deps.ui.info(&format!(
                    "deleting the cluster {name} to make it again ({})",
                    if drift {
                        "its definition changed"
                    } else {
                        "reset"
                    }
                ));
                guard_record(&rec, paths)?;
                deps.delete_cluster(name, paths).await?;
                remove_state_files(paths)?;
                recreated = true;
            } else {
                guard_record(&rec, paths)?;
                let started = start_stopped(deps, opts).await?;
                wait_ready(deps, opts, paths).await?;
                // The registry port is not part of the cluster's definition: a newly
                // asked one takes effect (the registry wiring follows it) and is recorded.
                let registry_port = match opts.ports {
                    PortPlan::Fixed { registry, .. } => registry,
                    PortPlan::NoHostPorts { registry: Some(p) } => p,
                    _ => rec.registry_port,
                };
                if registry_port != rec.registry_port {
                    let updated = ClusterRecord {
                        registry_port,
                        ..rec.clone()
                    };
                    let text = serde_json::to_string_pretty(&updated).expect("record serializes");
                    state::write_private(&paths.record, format!("{text}\n").as_bytes())?;
                }
                return Ok(ClusterInfo {
                    name: name.to_string(),
                    context: context_name(name),
                    kubeconfig: paths.kubeconfig.clone(),
                    created: false,
                    recreated: false,
                    resumed,
                    started_nodes: started,
                    ports: rec.ports,
                    registry_port,
                    config_hash: rec.config_hash,
                });
            }
        }
        (false, Some(_)) => {
            deps.ui.info(&format!(
                "the cluster {name} pulsedev made is gone (deleted outside pulsedev?): making it again"
            ));
            remove_state_files(paths)?;
        }
        (false, None) => {}
    }

    create(deps, opts, s, &rendered, ports).await?;
    wait_ready(deps, opts, paths).await?;
    Ok(ClusterInfo {
        name: name.to_string(),
        context: context_name(name),
        kubeconfig: paths.kubeconfig.clone(),
        created: true,
        recreated,
        resumed: false,
        started_nodes: Vec::new(),
        ports: ports.0,
        registry_port: ports.1,
        config_hash: rendered.hash,
    })
}

/// Resolves the port plan to (host ports, registry port). Auto reuses the ports of an
/// existing cluster (so its hash matches); fresh picks happen under the machine-wide
/// lock and are reserved in `ports.json`, so parallel runs never pick the same.
async fn plan_ports(
    dirs: &Dirs,
    opts: &Options,
    record: Option<&ClusterRecord>,
    paths: &Paths,
    journal: &Journal,
) -> Result<(Option<HostPorts>, u16)> {
    let reserved_here = || -> Option<(Option<HostPorts>, u16)> {
        let text = std::fs::read_to_string(&paths.ports).ok()?;
        serde_json::from_str(&text).ok()
    };
    match opts.ports {
        PortPlan::Fixed { ports, registry } => Ok((Some(ports), registry)),
        PortPlan::NoHostPorts {
            registry: Some(registry),
        } => Ok((None, registry)),
        PortPlan::Auto | PortPlan::NoHostPorts { registry: None } => {
            let want_host = opts.ports == PortPlan::Auto;
            if let Some(rec) = record
                && rec.ports.is_some() == want_host
            {
                return Ok((rec.ports, rec.registry_port));
            }
            if let Some(r) = reserved_here()
                && r.0.is_some() == want_host
            {
                return Ok(r);
            }
            let _machine = FileLock::exclusive(&dirs.state.join(".lock")).await?;
            let avoid = reserved_ports(dirs);
            let p = ci::free_ports(3, &avoid)?;
            let chosen = (
                want_host.then_some(HostPorts {
                    http: p[0],
                    https: p[1],
                }),
                p[2],
            );
            let i = journal.started(Action::StateFile {
                path: paths.ports.clone(),
            })?;
            state::write_private(
                &paths.ports,
                serde_json::to_string(&chosen)
                    .expect("ports serialize")
                    .as_bytes(),
            )?;
            journal.done(i)?;
            Ok(chosen)
        }
    }
}

/// Every port recorded or reserved by any cluster's state on this machine.
fn reserved_ports(dirs: &Dirs) -> Vec<u16> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dirs.state) else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if let Ok(text) = std::fs::read_to_string(dir.join("ports.json"))
            && let Ok((h, r)) = serde_json::from_str::<(Option<HostPorts>, u16)>(&text)
        {
            out.push(r);
            out.extend(h.iter().flat_map(|h| [h.http, h.https]));
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("cluster.json"))
            && let Ok(rec) = serde_json::from_str::<ClusterRecord>(&text)
        {
            out.push(rec.registry_port);
            out.extend(rec.ports.iter().flat_map(|h| [h.http, h.https]));
        }
    }
    out
}

fn drift_error(
    name: &str,
    paths: &Paths,
    rec: &ClusterRecord,
    rendered: &kindconfig::Rendered,
) -> Error {
    let old = state::read_optional(&paths.rendered).ok().flatten();
    let mut details = match old {
        Some(old) => kindconfig::diff(&old, &rendered.yaml),
        None => Vec::new(),
    };
    if details.is_empty() {
        details.push(format!(
            "config hash {} (cluster) vs {} (now)",
            rec.config_hash, rendered.hash
        ));
    }
    Error::new(
        ErrorKind::ClusterDrift,
        format!("the cluster {name} was made from a different definition than the one pulsedev would use now"),
    )
    .with_details(details)
    .with_hint(format!(
        "run `pulsedev reset` to make it again with the new definition (its workloads and data are lost), or go back to the settings it was made with; `pulsedev down --name {name}` removes it"
    ))
    .with_data(serde_json::json!({
        "cluster_hash": rec.config_hash,
        "wanted_hash": rendered.hash,
    }))
}

fn write_record(
    paths: &Paths,
    opts: &Options,
    rendered: &kindconfig::Rendered,
    ports: (Option<HostPorts>, u16),
    journal: Option<&Journal>,
) -> Result<()> {
    let rec = ClusterRecord {
        name: opts.name.clone(),
        context: context_name(&opts.name),
        kubeconfig: paths.kubeconfig.clone(),
        config_hash: rendered.hash.clone(),
        node_image: opts.node_image.clone(),
        ports: ports.0,
        registry_port: ports.1,
        created_at: journal::now(),
        created_by: format!("pulsedev {}", env!("CARGO_PKG_VERSION")),
        host: hostname(),
    };
    for (path, bytes) in [
        (&paths.rendered, rendered.yaml.clone().into_bytes()),
        (
            &paths.record,
            format!(
                "{}\n",
                serde_json::to_string_pretty(&rec).expect("record serializes")
            )
            .into_bytes(),
        ),
    ] {
        let i = match journal {
            Some(j) => Some(j.started(Action::StateFile { path: path.clone() })?),
            None => None,
        };
        state::write_private(path, &bytes)?;
        if let (Some(j), Some(i)) = (journal, i) {
            j.done(i)?;
        }
    }
    Ok(())
}

fn remove_state_files(paths: &Paths) -> Result<()> {
    // applied.json (what `up` rolled out last) describes the old cluster's objects.
    let applied = paths.dir.join("applied.json");
    for p in [&paths.record, &paths.rendered, &paths.kubeconfig, &applied] {
        state::remove_file(p)?;
    }
    Ok(())
}

async fn create(
    deps: &Deps<'_>,
    opts: &Options,
    s: &Session,
    rendered: &kindconfig::Rendered,
    ports: (Option<HostPorts>, u16),
) -> Result<()> {
    let name = opts.name.as_str();
    let paths = &s.paths;
    let j = &s.journal;
    pull_node_image(deps, &opts.node_image).await?;
    // The kubeconfig exists, empty and 0600, before kind writes into it: kind keeps
    // the mode of an existing file, so the credentials are never world-readable.
    let i = j.started(Action::StateFile {
        path: paths.kubeconfig.clone(),
    })?;
    state::touch_private(&paths.kubeconfig)?;
    j.done(i)?;
    // The rendered config goes to a private temp file (removed when dropped).
    let config_file = tempfile::Builder::new()
        .prefix(".kind-config.")
        .suffix(".yaml")
        .tempfile_in(&paths.dir)
        .map_err(|e| state::io_error("create a temporary file in", &paths.dir, e))?;
    std::fs::write(config_file.path(), &rendered.yaml)
        .map_err(|e| state::io_error("write", config_file.path(), e))?;

    deps.clear_stale_kind_lock(paths)?;
    let kind = deps.kind();
    let cmd = kind.create_cmd(name, config_file.path(), &paths.kubeconfig, opts.kind_wait);
    deps.ui.info(&format!(
        "creating the kind cluster {name} (a minute or two the first time)"
    ));
    deps.ui.debug(&format!("running `{}`", cmd.line()));
    let i = j.started(Action::KindCluster {
        name: name.to_string(),
    })?;
    let spinner = deps
        .ui
        .spinner(&format!("creating the kind cluster {name}"));
    // kind's own timeout is --wait; this only catches a kind that hangs for good.
    let limit = opts.kind_wait + Duration::from_secs(600);
    let r = unless_cancelled(deps.cancel, deps.runner.run(&cmd, Some(limit))).await;
    if let Some(sp) = spinner {
        sp.finish_and_clear();
    }
    match r {
        None => return Err(Error::interrupted()),
        Some(Err(f)) => {
            let err = kind::create_error(name, &f);
            if kind::classify(&f) == CreateFailure::AlreadyExists {
                // Someone else's cluster appeared meanwhile: this run made nothing.
                j.undone(i)?;
                state::remove_file(&paths.kubeconfig)?;
            } else {
                // kind removes what it made on failure; make sure, and drop our files.
                undo(deps, s).await?;
            }
            return Err(err);
        }
        Some(Ok(out)) => {
            for line in out.stderr.lines().filter(|l| l.contains("WARNING")) {
                deps.ui.warn(line.trim_start_matches("WARNING: "));
            }
        }
    }
    j.done(i)?;
    // Whatever kind did to the file, the credentials stay private.
    std::fs::set_permissions(
        &paths.kubeconfig,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|e| state::io_error("restrict", &paths.kubeconfig, e))?;
    write_record(paths, opts, rendered, ports, Some(j))?;
    Ok(())
}

/// Pulls the node image through the engine before `kind create`, unless present.
/// kind would pull it itself (kind v0.32.0: pkg/cluster/internal/providers/docker/
/// images.go `ensureNodeImages`, `docker pull` with retries) inside the time limit
/// pulsedev puts on `kind create`, where a first run on a slow link could be killed
/// mid-pull with no progress shown. Here it has no limit but Ctrl-C, and says how far
/// it is: a spinner on a terminal, a line every 10 s otherwise.
pub async fn pull_node_image(deps: &Deps<'_>, image: &str) -> Result<()> {
    let started = tokio::time::Instant::now();
    let spinner = deps
        .ui
        .spinner(&format!("pulling the kind node image {image}"));
    let last_line = std::sync::Mutex::new(None::<tokio::time::Instant>);
    let announced = std::sync::atomic::AtomicBool::new(false);
    let report = |p: &nodes::PullProgress| {
        if !announced.swap(true, std::sync::atomic::Ordering::Relaxed) {
            deps.ui.info(&format!(
                "pulling the kind node image {image} (once per machine)"
            ));
        }
        if p.layers == 0 {
            return;
        }
        match &spinner {
            Some(sp) => sp.set_message(format!("pulling the kind node image: {p}")),
            None => {
                let mut last = last_line.lock().expect("not poisoned");
                let now = tokio::time::Instant::now();
                if last.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                    *last = Some(now);
                    deps.ui.info(&format!("pulling the kind node image: {p}"));
                }
            }
        }
    };
    let r = unless_cancelled(deps.cancel, deps.nodes.ensure_image(image, &report)).await;
    if let Some(sp) = spinner {
        sp.finish_and_clear();
    }
    match r {
        None => Err(Error::interrupted()),
        Some(Err(e)) => Err(e),
        Some(Ok(false)) => Ok(()),
        Some(Ok(true)) => {
            deps.ui.info(&format!(
                "pulled the kind node image {image} in {:.0}s",
                started.elapsed().as_secs_f64()
            ));
            Ok(())
        }
    }
}

/// Undoes, newest first, what this run's journal says it created: deletes the kind
/// cluster it made and removes the state files it wrote. Entries recorded by other
/// steps (`Action::Other`) are left to them.
pub async fn undo(deps: &Deps<'_>, s: &Session) -> Result<()> {
    let rec = s.journal.snapshot();
    for (i, action) in rec.leftovers() {
        match action {
            Action::KindCluster { name } => {
                deps.ui.info(&format!(
                    "deleting the kind cluster {name} this run created"
                ));
                deps.delete_cluster(name, &s.paths).await?;
                s.journal.undone(i)?;
            }
            Action::StateFile { path } => {
                state::remove_file(path)?;
                s.journal.undone(i)?;
            }
            Action::Other { .. } => {}
        }
    }
    Ok(())
}

/// Starts the cluster's stopped node containers (or says how to).
async fn start_stopped(deps: &Deps<'_>, opts: &Options) -> Result<Vec<String>> {
    let nodes = deps.nodes.list(&opts.name).await?;
    let stopped: Vec<_> = nodes.iter().filter(|n| !n.running()).collect();
    if stopped.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = stopped.iter().map(|n| n.name.clone()).collect();
    if !opts.start_stopped {
        return Err(Error::new(
            ErrorKind::ClusterCreateFailed,
            format!(
                "the node container(s) of the cluster {} are stopped: {}",
                opts.name,
                names.join(", ")
            ),
        )
        .with_hint(format!(
            "start them with `docker start {}`",
            names.join(" ")
        )));
    }
    deps.ui.info(&format!(
        "starting the stopped node container(s) {} (Docker or the machine restarted?)",
        names.join(", ")
    ));
    for n in &stopped {
        unless_cancelled(deps.cancel, deps.nodes.start(&n.name))
            .await
            .ok_or_else(Error::interrupted)??;
    }
    Ok(names)
}

/// Waits until every node reports Ready: kind's `--wait` only warns on timeout.
async fn wait_ready(deps: &Deps<'_>, opts: &Options, paths: &Paths) -> Result<()> {
    let api = (deps.api)(&paths.kubeconfig, &context_name(&opts.name));
    let deadline = tokio::time::Instant::now() + opts.ready_timeout;
    let spinner = deps
        .ui
        .spinner("waiting for the cluster's nodes to be Ready");
    let result = loop {
        let last = match unless_cancelled(deps.cancel, api.nodes()).await {
            None => break Err(Error::interrupted()),
            Some(Ok(st)) if st.all_ready() => break Ok(()),
            Some(Ok(st)) if st.ready.is_empty() && st.not_ready.is_empty() => {
                "the API server lists no nodes yet".to_string()
            }
            Some(Ok(st)) => st
                .not_ready
                .iter()
                .map(|(n, why)| format!("{n}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
            Some(Err(e)) => e.message.clone(),
        };
        if tokio::time::Instant::now() >= deadline {
            break Err(Error::new(
                ErrorKind::ClusterCreateFailed,
                format!(
                    "the nodes of the cluster {} were not Ready within {}s",
                    opts.name,
                    opts.ready_timeout.as_secs()
                ),
            )
            .with_details(vec![last])
            .with_hint(format!(
                "look at `docker logs {}-control-plane`; `pulsedev reset` makes the cluster again",
                opts.name
            )));
        }
        if unless_cancelled(deps.cancel, tokio::time::sleep(opts.ready_poll))
            .await
            .is_none()
        {
            break Err(Error::interrupted());
        }
    };
    if let Some(sp) = spinner {
        sp.finish_and_clear();
    }
    result
}

/// Where commands that change a cluster may send requests: pulsedev's kubeconfig and
/// the context it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub name: String,
    pub kubeconfig: PathBuf,
    pub context: String,
}

impl From<&ClusterInfo> for Target {
    /// `ensure` has just checked ownership: its result is a valid target.
    fn from(info: &ClusterInfo) -> Target {
        Target {
            name: info.name.clone(),
            kubeconfig: info.kubeconfig.clone(),
            context: info.context.clone(),
        }
    }
}

/// The check every cluster-changing command makes first (`not-a-kind-context`):
/// pulsedev made a cluster of this name on this machine (its record exists), and its
/// kubeconfig's current context is `kind-<name>` on a loopback API server. It is
/// impossible to point this at someone's production context.
pub fn guard(dirs: &Dirs, name: &str) -> Result<Target> {
    let paths = Paths::new(dirs, name);
    let Some(rec) = read_record(&paths)? else {
        // "No cluster" reads the same in every command (status, trust, kubeconfig):
        // one id, one exit code, one hint.
        return Err(Error::new(
            ErrorKind::NotReady,
            format!("pulsedev has no cluster `{name}` on this machine"),
        )
        .with_details(vec![format!("no record at {}", paths.record.display())])
        .with_hint("run `pulsedev up` to create it, or pass the `--name` it was made with"));
    };
    guard_record(&rec, &paths)?;
    Ok(Target {
        name: name.to_string(),
        kubeconfig: paths.kubeconfig,
        context: rec.context,
    })
}

fn guard_record(rec: &ClusterRecord, paths: &Paths) -> Result<()> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::NotAKindContext,
            format!(
                "refusing to change the cluster {}: {why}",
                rec.name
            ),
        )
        .with_hint(format!(
            "pulsedev only changes kind clusters it made, through its own kubeconfig {}; run `pulsedev down --name {}` and `pulsedev up` to start clean",
            paths.kubeconfig.display(),
            rec.name
        ))
    };
    let want = context_name(&rec.name);
    if rec.context != want
        || rec.name
            != paths
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
    {
        return Err(refuse(format!(
            "its record names the context {}",
            rec.context
        )));
    }
    let kc = kube::config::Kubeconfig::read_from(&paths.kubeconfig)
        .map_err(|e| refuse(format!("its kubeconfig is unreadable: {e}")))?;
    let current = kc.current_context.clone().unwrap_or_default();
    if current != want {
        return Err(refuse(format!(
            "the current context of {} is {current:?}, not {want:?}",
            paths.kubeconfig.display()
        )));
    }
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == want)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let server = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    if !is_loopback_server(&server) {
        return Err(refuse(format!(
            "the context {want} points at {server:?}, not at a kind API server on 127.0.0.1"
        )));
    }
    Ok(())
}

/// `https://127.0.0.1:<port>` and friends: a kind API server on this machine.
pub fn is_loopback_server(server: &str) -> bool {
    let Some(rest) = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

/// What `down` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    pub name: String,
    pub cluster_deleted: bool,
    pub registry_removed: bool,
    pub state_removed: bool,
}

/// Deletes the cluster pulsedev made under `name`, its registry container and its
/// state. Nothing there is fine (running it twice is fine); a kind cluster of that
/// name that pulsedev did not make is refused (`not-a-kind-context`).
pub async fn down(deps: &Deps<'_>, name: &str) -> Result<DownReport> {
    let s = begin(deps.dirs, name, "pulsedev down")?;
    for w in &s.warnings {
        deps.ui.warn(w);
    }
    let paths = &s.paths;
    // `down` must always be able to remove what pulsedev made: an unreadable record
    // still shows pulsedev made the cluster (only pulsedev writes it, after a create).
    let (record, unreadable_record) = match read_record(paths) {
        Ok(r) => (r, false),
        Err(e) => {
            deps.ui.warn(&format!(
                "{}; going on: it still shows pulsedev made the cluster {name}",
                e.message
            ));
            (None, true)
        }
    };
    let made_by_us =
        record.is_some() || unreadable_record || journal_made_cluster(s.previous.as_ref(), name);
    let listed = deps.kind().clusters().await?;
    let exists = listed.iter().any(|n| n == name);
    if exists && !made_by_us {
        state::remove_file(&paths.journal)?;
        let _ = std::fs::remove_dir(&paths.dir);
        return Err(Error::new(
            ErrorKind::NotAKindContext,
            format!("refusing to delete the kind cluster {name}: pulsedev did not make it on this machine"),
        )
        .with_hint(format!("if it is yours, delete it with `kind delete cluster --name {name}`")));
    }
    let mut report = DownReport {
        name: name.to_string(),
        ..DownReport::default()
    };
    if exists {
        deps.ui.info(&format!("deleting the kind cluster {name}"));
        if let Err(e) = deps.delete_cluster(name, paths).await {
            // kind deletes the nodes even when it fails to update the kubeconfig
            // afterwards (kind v0.32.0: pkg/cluster/internal/delete/delete.go): when
            // the cluster is gone, finish removing the rest.
            if deps.kind().clusters().await?.iter().any(|n| n == name) {
                return Err(e);
            }
            deps.ui.warn(&format!(
                "kind reported an error but the cluster {name} is gone: {}",
                e.message
            ));
        }
        report.cluster_deleted = true;
    }
    // Also under the name older releases gave it (over 63 characters for long names).
    for container in crate::images::registry::container_names(name) {
        report.registry_removed |= deps.nodes.remove(&container).await?;
    }
    // A state dir holding only this run's fresh journal was not really there.
    let had_state = record.is_some()
        || unreadable_record
        || std::fs::read_dir(&paths.dir)
            .map(|d| d.flatten().any(|e| e.path() != paths.journal))
            .unwrap_or(false)
        || s.previous.is_some();
    state::remove_dir(&paths.dir)?;
    report.state_removed = had_state;
    Ok(report)
}

/// Whether an earlier run's journal says it made (and did not undo) the kind cluster.
fn journal_made_cluster(previous: Option<&journal::Record>, name: &str) -> bool {
    previous.is_some_and(|p| {
        p.entries.iter().any(|e| {
            e.status != EntryStatus::Undone
                && matches!(&e.action, Action::KindCluster { name: n } if n == name)
        })
    })
}

/// Whether pulsedev's records say a kind cluster `name` may exist because pulsedev made
/// it (its record, or an earlier run's journal). Only then does `down` need kind: after
/// an `up` that failed before creating anything there is no cluster to delete, and no
/// reason to download kind (which may be impossible offline).
pub fn may_have_made_cluster(dirs: &Dirs, name: &str) -> Result<bool> {
    let paths = Paths::new(dirs, name);
    // An unreadable record or journal may well describe a cluster: `down` then takes
    // the path that can delete it (and sets the unreadable file aside there).
    let record = read_record(&paths).map_or(true, |r| r.is_some());
    // A look only: nothing is set aside here (that happens under the lock).
    let journal = match state::read_optional(&paths.journal) {
        Ok(None) => false,
        Ok(Some(text)) => serde_json::from_str::<journal::Record>(&text)
            .map_or(true, |j| journal_made_cluster(Some(&j), name)),
        Err(_) => true,
    };
    Ok(record || journal)
}

/// `down` when no kind cluster was made: under the cluster's lock (a running `up` keeps
/// it), removes the state dir. Returns whether there was state to remove.
pub fn forget(dirs: &Dirs, name: &str) -> Result<bool> {
    let s = begin(dirs, name, "pulsedev down")?;
    if read_record(&s.paths)?.is_some() || journal_made_cluster(s.previous.as_ref(), name) {
        // An `up` made the cluster between the caller's look and this lock.
        return Err(Error::new(
            ErrorKind::ClusterCreateFailed,
            format!("the cluster {name} was made while `down` was starting"),
        )
        .with_hint("run `pulsedev down` again"));
    }
    state::remove_dir(&s.paths.dir)?;
    Ok(true)
}

/// Where the registry is, as `wire_registry` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// The registry container's name (`registry_container(name)`).
    pub container: String,
    /// The port the registry listens on inside its container (5000 for distribution).
    pub container_port: u16,
    /// The host port pushes go to: images are named `localhost:<host_port>/…`.
    pub host_port: u16,
}

/// What `wire_registry` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wiring {
    pub nodes: Vec<String>,
    pub connected: bool,
    pub hosts_path: String,
}

/// The containerd hosts file that sends pulls of `localhost:<host_port>/…` from the
/// node to the registry container over the cluster network.
pub fn hosts_toml(reg: &RegistryRef) -> (String, String) {
    let path = format!(
        "/etc/containerd/certs.d/localhost:{}/hosts.toml",
        reg.host_port
    );
    let body = format!(
        "# Written by pulsedev: pulls of localhost:{hp}/… go to the registry container.\n\
         [host.\"http://{c}:{cp}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        hp = reg.host_port,
        c = reg.container,
        cp = reg.container_port
    );
    (path, body)
}

/// The KEP-1755 ConfigMap `kube-public/local-registry-hosting` (data only).
pub fn local_registry_hosting(reg: &RegistryRef) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "localRegistryHosting.v1".to_string(),
        format!(
            "host: \"localhost:{}\"\nhelp: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n",
            reg.host_port
        ),
    )])
}

/// Wires a running registry container into the cluster: on every node the containerd
/// hosts file, the registry joined to the cluster's Docker network (`kind` unless
/// KIND_EXPERIMENTAL_DOCKER_NETWORK says otherwise), and the KEP-1755 ConfigMap.
/// Each part is idempotent, so `up` may call it every time.
pub async fn wire_registry(
    deps: &Deps<'_>,
    target: &Target,
    network: &str,
    reg: &RegistryRef,
) -> Result<Wiring> {
    let nodes = nodes::internal(deps.nodes.list(&target.name).await?);
    if nodes.is_empty() {
        return Err(Error::new(
            ErrorKind::ClusterCreateFailed,
            format!(
                "the cluster {} has no node containers on this Docker engine",
                target.name
            ),
        )
        .with_hint("run `pulsedev reset` to make it again"));
    }
    let (path, body) = hosts_toml(reg);
    for n in &nodes {
        deps.nodes.write_file(&n.name, &path, &body).await?;
    }
    let connected = deps.nodes.connect(network, &reg.container).await?;
    let api = (deps.api)(&target.kubeconfig, &target.context);
    api.apply_config_map(
        "kube-public",
        "local-registry-hosting",
        local_registry_hosting(reg),
    )
    .await?;
    Ok(Wiring {
        nodes: nodes.into_iter().map(|n| n.name).collect(),
        connected,
        hosts_path: path,
    })
}

/// The real side effects, wired once: the kind process runner, the Docker engine
/// (resolved like the docker CLI) and kube clients from pulsedev's kubeconfigs.
pub struct Live {
    pub runner: process::ProcessRunner,
    pub nodes: nodes::DockerNodes,
    pub dirs: Dirs,
    pub kind: PathBuf,
}

fn kube_api(kubeconfig: &Path, context: &str) -> Box<dyn ClusterApi> {
    Box::new(api::KubeApi {
        kubeconfig: kubeconfig.to_path_buf(),
        context: context.to_string(),
    })
}

impl Live {
    /// Names of the cluster's Kubernetes node containers (for archive delivery): kind's
    /// load balancer runs no containerd.
    pub async fn nodes_of(&self, cluster: &str) -> Result<Vec<String>> {
        Ok(nodes::internal(self.nodes.list(cluster).await?)
            .into_iter()
            .map(|n| n.name)
            .collect())
    }

    /// Connects to the Docker engine (within `timeout`) and keeps the kind binary.
    pub async fn connect(dirs: Dirs, kind: PathBuf, timeout: Duration) -> Result<Live> {
        let endpoint =
            crate::docker::resolve(&|k| std::env::var(k).ok(), dirs::home_dir().as_deref())?;
        let engine = crate::docker::connect(&endpoint, timeout).await?;
        Ok(Live {
            runner: process::ProcessRunner,
            nodes: nodes::DockerNodes {
                docker: engine.docker,
                host: endpoint.host,
            },
            dirs,
            kind,
        })
    }

    pub fn deps<'a>(&'a self, ui: &'a Ui, cancel: &'a CancellationToken) -> Deps<'a> {
        Deps {
            runner: &self.runner,
            nodes: &self.nodes,
            api: &kube_api,
            dirs: &self.dirs,
            kind: self.kind.clone(),
            ui,
            cancel,
        }
    }
}

/// The Docker network kind puts nodes on.
pub fn kind_network(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("KIND_EXPERIMENTAL_DOCKER_NETWORK")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "kind".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_servers() {
        for ok in [
            "https://127.0.0.1:6443",
            "https://localhost:34567",
            "https://[::1]:6443",
            "http://127.0.0.1:8080/",
        ] {
            assert!(is_loopback_server(ok), "{ok}");
        }
        for bad in [
            "https://prod.example.com:6443",
            "https://127.0.0.1.evil.com:443",
            "https://10.0.0.1:6443",
            "127.0.0.1:6443",
            "",
        ] {
            assert!(!is_loopback_server(bad), "{bad}");
        }
    }

    #[test]
    fn registry_wiring_texts() {
        let reg = RegistryRef {
            container: "pulsedev-dev-registry".into(),
            container_port: 5000,
            host_port: 5001,
        };
        let (path, body) = hosts_toml(&reg);
        assert_eq!(path, "/etc/containerd/certs.d/localhost:5001/hosts.toml");
        assert!(
            body.contains("[host.\"http://pulsedev-dev-registry:5000\"]"),
            "{body}"
        );
        let cm = local_registry_hosting(&reg);
        assert!(cm["localRegistryHosting.v1"].starts_with("host: \"localhost:5001\"\n"));
    }
}
