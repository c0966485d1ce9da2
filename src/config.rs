//! `pulsedev.toml`: the format, the built-in defaults, validation that reports every
//! problem at once (file, line, key), and the precedence flags > env > file > defaults.
//!
//! Owns: turning text and environment into a `Config`. Must not touch Docker, the
//! cluster or the network; the only I/O is reading the config file.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml_edit::{Item, TableLike, Value};

use crate::error::{Error, ErrorKind, Result};

pub const FILE_NAME: &str = "pulsedev.toml";
pub const FORMAT_VERSION: i64 = 1;
pub const DEFAULT_NAME: &str = "pulsedev";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Dev,
    Staging,
    Prod,
}

impl Env {
    pub const ALL: [Env; 3] = [Env::Dev, Env::Staging, Env::Prod];

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Dev => "dev",
            Env::Staging => "staging",
            Env::Prod => "prod",
        }
    }

    pub fn parse(s: &str) -> Option<Env> {
        Env::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// How built images reach the cluster's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Push to a local registry wired into the cluster: only missing layers move.
    Registry,
    /// Stream `docker save` output into each node's containerd.
    Archive,
}

impl LoadMode {
    pub fn parse(s: &str) -> Option<LoadMode> {
        match s {
            "registry" => Some(LoadMode::Registry),
            "archive" => Some(LoadMode::Archive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub registry: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Images {
    pub load: LoadMode,
    /// Concurrent builds; 0 means the number of CPUs.
    pub parallel: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Build context directory, resolved against the config's root.
    pub context: PathBuf,
    /// Dockerfile path relative to the context.
    pub dockerfile: PathBuf,
    /// Helm chart directory, resolved against the config's root.
    pub chart: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub name: String,
    pub env: Env,
    pub ports: Ports,
    pub images: Images,
    pub services: BTreeMap<String, Service>,
    /// Install the monitoring stack (metrics, logs, traces) with the dev stack.
    pub observability: bool,
    /// The file the settings came from, if any.
    pub file: Option<PathBuf>,
    /// Directory relative paths are resolved against (the file's directory, else cwd).
    pub root: PathBuf,
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub env: Option<String>,
    pub http_port: Option<u16>,
    pub https_port: Option<u16>,
    pub registry_port: Option<u16>,
}

impl Config {
    /// The built-in defaults: the reference PulseWatch app of this repository.
    pub fn defaults(root: &Path) -> Config {
        let service = |dir: &str, dockerfile: &str, chart: &str| Service {
            context: root.join(dir),
            dockerfile: PathBuf::from(dockerfile),
            chart: Some(root.join(chart)),
            build_args: BTreeMap::new(),
            target: None,
        };
        // api and worker share the context app/ (and the package app/shared); each one's
        // Dockerfile.dockerignore narrows it to what its image holds.
        let services = BTreeMap::from([
            (
                "api".to_string(),
                service("app", "api/Dockerfile", "manifests/charts/api"),
            ),
            (
                "worker".to_string(),
                service("app", "worker/Dockerfile", "manifests/charts/worker"),
            ),
            (
                "web".to_string(),
                service("app/web", "Dockerfile", "manifests/charts/web"),
            ),
            (
                "migrations".to_string(),
                service(
                    "app/migrations",
                    "Dockerfile",
                    "manifests/charts/migrations",
                ),
            ),
        ]);
        Config {
            name: DEFAULT_NAME.to_string(),
            env: Env::Dev,
            ports: Ports {
                http: 80,
                https: 443,
                registry: 5001,
            },
            images: Images {
                load: LoadMode::Registry,
                parallel: 0,
            },
            services,
            observability: false,
            file: None,
            root: root.to_path_buf(),
        }
    }

    /// Loads the configuration with precedence flags > env > file > defaults.
    ///
    /// `explicit` is `--config`; without it `<cwd>/pulsedev.toml` is read when present.
    /// `env` looks up environment variables (a parameter so tests can drive it).
    pub fn load(
        explicit: Option<&Path>,
        cwd: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config> {
        let path = match explicit {
            Some(p) => Some(cwd.join(p)),
            None => Some(cwd.join(FILE_NAME)).filter(|p| p.is_file()),
        };
        let mut config = match &path {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::new(
                        ErrorKind::ConfigInvalid,
                        format!("failed to read {}: {e}", path.display()),
                    )
                    .with_hint("pass an existing file with `--config FILE`, or omit it to use the built-in defaults")
                })?;
                let text = utf8(bytes, path)?;
                let root = path.parent().unwrap_or(cwd).to_path_buf();
                let mut config = parse(&text, path, &root)?;
                config.file = Some(path.clone());
                config
            }
            None => Config::defaults(cwd),
        };
        config.apply_env(env)?;
        config.apply_overrides(overrides)?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(name) = env("PULSEDEV_NAME") {
            match check_name(&name) {
                Ok(()) => self.name = name,
                Err(m) => problems.push(format!("environment variable PULSEDEV_NAME: {m}")),
            }
        }
        if let Some(e) = env("PULSEDEV_ENV") {
            match Env::parse(&e) {
                Some(e) => self.env = e,
                None => problems.push(format!(
                    "environment variable PULSEDEV_ENV: expected one of dev, staging, prod, found {e:?}"
                )),
            }
        }
        for (var, slot) in [
            ("PULSEDEV_HTTP_PORT", &mut self.ports.http),
            ("PULSEDEV_HTTPS_PORT", &mut self.ports.https),
            ("PULSEDEV_REGISTRY_PORT", &mut self.ports.registry),
        ] {
            if let Some(v) = env(var) {
                match v.parse::<u16>() {
                    Ok(p) if p > 0 => *slot = p,
                    _ => problems.push(format!(
                        "environment variable {var}: expected a port number 1-65535, found {v:?}"
                    )),
                }
            }
        }
        check_ports(&self.ports, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(invalid(problems))
        }
    }

    /// Command-line values. A bad one is a usage error (exit 2): the fix is on the
    /// command line, not in a file (README, "Exit codes").
    fn apply_overrides(&mut self, o: &Overrides) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(name) = &o.name {
            match check_name(name) {
                Ok(()) => self.name = name.clone(),
                Err(m) => problems.push(format!("--name: {m}")),
            }
        }
        if let Some(e) = &o.env {
            match Env::parse(e) {
                Some(e) => self.env = e,
                None => problems.push(format!(
                    "--env: expected one of dev, staging, prod, found {e:?}"
                )),
            }
        }
        let before = self.ports;
        // clap already refused 0 and anything above 65535.
        for (given, slot) in [
            (o.http_port, &mut self.ports.http),
            (o.https_port, &mut self.ports.https),
            (o.registry_port, &mut self.ports.registry),
        ] {
            if let Some(p) = given {
                *slot = p;
            }
        }
        let mut clashes = Vec::new();
        check_ports(&self.ports, &mut clashes);
        if !clashes.is_empty() {
            // The flags made the clash: say which values they brought.
            let mut was_fine = Vec::new();
            check_ports(&before, &mut was_fine);
            if was_fine.is_empty() {
                problems.extend(clashes.into_iter().map(|c| format!("port flags: {c}")));
            } else {
                return Err(invalid(clashes));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let first = problems.remove(0);
        Err(Error::new(ErrorKind::Usage, first)
            .with_details(problems)
            .with_hint("fix the value on the command line; `pulsedev --help` lists the flags"))
    }

    /// Checks that what the services point at exists: the build context and its
    /// Dockerfile (`build`), the chart (`chart`). Every problem at once, as
    /// `config-invalid`, before any work starts.
    pub fn check_services(&self, build: bool, chart: bool) -> Result<()> {
        let origin = self
            .file
            .as_ref()
            .map_or("the built-in defaults".to_string(), |f| {
                f.display().to_string()
            });
        let mut problems = Vec::new();
        for (name, svc) in &self.services {
            if build && !svc.context.is_dir() {
                problems.push(format!(
                    "services.{name}.context: {} is not a directory",
                    svc.context.display()
                ));
            } else if build && !svc.context.join(&svc.dockerfile).is_file() {
                problems.push(format!(
                    "services.{name}.dockerfile: {} is not a file",
                    svc.context.join(&svc.dockerfile).display()
                ));
            }
            if chart
                && let Some(c) = &svc.chart
                && !c.join("Chart.yaml").is_file()
            {
                problems.push(format!(
                    "services.{name}.chart: {} holds no Chart.yaml",
                    c.display()
                ));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(invalid(problems).with_hint(format!(
            "paths are relative to the directory of {origin}; run pulsedev from the PulseWatch repository, or fix the paths in pulsedev.toml"
        )))
    }

    /// Concurrent builds to run.
    pub fn build_parallelism(&self) -> usize {
        match self.images.parallel {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

fn invalid(problems: Vec<String>) -> Error {
    let n = problems.len();
    Error::new(
        ErrorKind::ConfigInvalid,
        format!(
            "configuration is invalid ({n} problem{})",
            if n == 1 { "" } else { "s" }
        ),
    )
    .with_details(problems)
    .with_hint("fix the listed keys; `pulsedev --help` and README.md describe every setting")
}

fn check_ports(ports: &Ports, problems: &mut Vec<String>) {
    let named = [
        ("http", ports.http),
        ("https", ports.https),
        ("registry", ports.registry),
    ];
    for (i, (a, pa)) in named.iter().enumerate() {
        for (b, pb) in &named[i + 1..] {
            if pa == pb {
                problems.push(format!(
                    "ports.{a} and ports.{b} are both {pa}: each needs its own port"
                ));
            }
        }
    }
}

/// A user's value quoted in a message: at most 60 characters of it, so a pasted file or
/// a runaway variable does not flood the terminal (or a CI log).
pub fn shown_value(v: &str) -> String {
    const MAX: usize = 60;
    let n = v.chars().count();
    if n <= MAX {
        format!("{v:?}")
    } else {
        let head: String = v.chars().take(MAX).collect();
        format!("{head:?}… ({n} characters)")
    }
}

/// A kind cluster name becomes part of container and context names.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid cluster name: use 1-50 lowercase letters, digits and '-', not starting or ending with '-'",
            shown_value(name)
        ))
    }
}

/// Collects problems with their position while walking a parsed document.
struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    /// ((line, column), text): sorted by position before they are reported.
    problems: Vec<((usize, usize), String)>,
}

impl Checker<'_> {
    fn at(&mut self, span: Option<Range<usize>>, key: &str, message: impl std::fmt::Display) {
        let (line, col) = span.map_or((1, 1), |s| line_col(self.text, s.start));
        self.problems.push((
            (line, col),
            format!("{}:{line}:{col}: {key}: {message}", self.file.display()),
        ));
    }

    /// Reports keys of `table` not in `known`, with a suggestion when one is close.
    fn unknown_keys(&mut self, table: &dyn TableLike, prefix: &str, known: &[&str]) {
        for (key, _) in table.iter() {
            if known.contains(&key) {
                continue;
            }
            let span = table.get_key_value(key).and_then(|(k, _)| k.span());
            let full = join(prefix, key);
            let msg = match did_you_mean(key, known) {
                Some(s) => format!("unknown key (did you mean `{}`?)", join(prefix, s)),
                None => format!("unknown key (expected one of: {})", known.join(", ")),
            };
            self.at(span, &full, msg);
        }
    }

    fn string(&mut self, item: &Item, key: &str) -> Option<String> {
        match item.as_value() {
            Some(Value::String(s)) => Some(s.value().clone()),
            _ => {
                self.at(
                    item.span(),
                    key,
                    format!("expected a string, found {}", kind_of(item)),
                );
                None
            }
        }
    }

    fn integer(&mut self, item: &Item, key: &str, range: Range<i64>) -> Option<i64> {
        match item.as_value() {
            Some(Value::Integer(i)) if range.contains(i.value()) => Some(*i.value()),
            Some(Value::Integer(i)) => {
                self.at(
                    item.span(),
                    key,
                    format!(
                        "{} is out of range (expected {}-{})",
                        i.value(),
                        range.start,
                        range.end - 1
                    ),
                );
                None
            }
            _ => {
                self.at(
                    item.span(),
                    key,
                    format!("expected an integer, found {}", kind_of(item)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, item: &Item, key: &str) -> Option<bool> {
        match item.as_value() {
            Some(Value::Boolean(b)) => Some(*b.value()),
            _ => {
                self.at(
                    item.span(),
                    key,
                    format!("expected true or false, found {}", kind_of(item)),
                );
                None
            }
        }
    }

    fn table<'i>(&mut self, item: &'i Item, key: &str) -> Option<&'i dyn TableLike> {
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                self.at(
                    item.span(),
                    key,
                    format!("expected a table, found {}", kind_of(item)),
                );
                None
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind_of(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "a table",
        },
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The closest known key, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(input, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "env",
    "observability",
    "ports",
    "images",
    "services",
];
const PORT_KEYS: &[&str] = &["http", "https", "registry"];
const IMAGE_KEYS: &[&str] = &["load", "parallel"];
const SERVICE_KEYS: &[&str] = &["context", "dockerfile", "chart", "build_args", "target"];

/// Parses and validates the text of a config file; every problem is reported at once.
pub fn parse(text: &str, file: &Path, root: &Path) -> Result<Config> {
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(_) => return Err(invalid(syntax_errors(text, file))),
    };
    let mut c = Checker {
        text,
        file,
        problems: Vec::new(),
    };
    let mut config = Config::defaults(root);
    let top = doc.as_table();
    c.unknown_keys(top, "", TOP_KEYS);

    if let Some(item) = top.get("version")
        && let Some(v) = c.integer(item, "version", 0..i64::MAX)
        && v != FORMAT_VERSION
    {
        c.at(
            item.span(),
            "version",
            format!(
                "unsupported format version {v} (this pulsedev reads version {FORMAT_VERSION})"
            ),
        );
    }
    if let Some(item) = top.get("name")
        && let Some(name) = c.string(item, "name")
    {
        match check_name(&name) {
            Ok(()) => config.name = name,
            Err(m) => c.at(item.span(), "name", m),
        }
    }
    if let Some(item) = top.get("env")
        && let Some(env) = c.string(item, "env")
    {
        match Env::parse(&env) {
            Some(e) => config.env = e,
            None => c.at(
                item.span(),
                "env",
                format!("expected one of dev, staging, prod, found {env:?}"),
            ),
        }
    }
    if let Some(item) = top.get("observability")
        && let Some(on) = c.boolean(item, "observability")
    {
        config.observability = on;
    }
    if let Some(item) = top.get("ports")
        && let Some(t) = c.table(item, "ports")
    {
        c.unknown_keys(t, "ports", PORT_KEYS);
        for (key, slot) in [
            ("http", &mut config.ports.http),
            ("https", &mut config.ports.https),
            ("registry", &mut config.ports.registry),
        ] {
            if let Some(item) = t.get(key)
                && let Some(p) = c.integer(item, &format!("ports.{key}"), 1..65536)
            {
                *slot = p as u16;
            }
        }
        let mut dup = Vec::new();
        check_ports(&config.ports, &mut dup);
        for m in dup {
            c.at(item.span(), "ports", m);
        }
    }
    if let Some(item) = top.get("images")
        && let Some(t) = c.table(item, "images")
    {
        c.unknown_keys(t, "images", IMAGE_KEYS);
        if let Some(item) = t.get("load")
            && let Some(load) = c.string(item, "images.load")
        {
            match LoadMode::parse(&load) {
                Some(m) => config.images.load = m,
                None => c.at(
                    item.span(),
                    "images.load",
                    format!("expected \"registry\" or \"archive\", found {load:?}"),
                ),
            }
        }
        if let Some(item) = t.get("parallel")
            && let Some(n) = c.integer(item, "images.parallel", 0..257)
        {
            config.images.parallel = n as usize;
        }
    }
    if let Some(item) = top.get("services")
        && let Some(t) = c.table(item, "services")
    {
        // A [services] table replaces the defaults: the file describes the whole set.
        config.services.clear();
        for (name, item) in t.iter() {
            let key = format!("services.{name}");
            if let Err(m) = check_name(name) {
                let span = t.get_key_value(name).and_then(|(k, _)| k.span());
                c.at(span, &key, m.replace("cluster name", "service name"));
                continue;
            }
            if let Some(service) = parse_service(&mut c, item, &key, root) {
                config.services.insert(name.to_string(), service);
            }
        }
    }

    if c.problems.is_empty() {
        Ok(config)
    } else {
        // Top to bottom, like the file (the walk goes key by key, not line by line).
        c.problems.sort_by_key(|(position, _)| *position);
        Err(invalid(c.problems.into_iter().map(|(_, p)| p).collect()))
    }
}

/// The file's text; TOML is UTF-8 only (toml.io, "Spec"), so anything else is named
/// with the position of its first bad byte and how to convert it.
fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let (line, col) = line_col(&String::from_utf8_lossy(&bytes[..at]), at);
        let bad = bytes[at];
        invalid(vec![format!(
            "{}:{line}:{col}: not UTF-8 (byte 0x{bad:02x}); TOML files must be UTF-8",
            path.display()
        )])
        .with_hint(format!(
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {0} > {0}.utf8` and move it over {0})",
            path.display()
        ))
    })
}

/// Every syntax error of `text`, not just the first: the TOML parser stops at the first
/// one, so the line it names is blanked (keeping every other line where it was) and the
/// text parsed again, until it parses or an error repeats. At most 20.
fn syntax_errors(text: &str, file: &Path) -> Vec<String> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut found = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while found.len() < 20 {
        let attempt = lines.join("\n");
        let Err(e) = toml_edit::Document::parse(attempt.as_str()) else {
            break;
        };
        let (line, col) = e.span().map_or((1, 1), |s| line_col(&attempt, s.start));
        if !seen.insert(line) {
            break;
        }
        let message = e.message().trim().replace('\n', " ");
        found.push((
            (line, col),
            format!("{}:{line}:{col}: {message}", file.display()),
        ));
        match lines.get_mut(line - 1) {
            // Blank it; a line that is already blank cannot be the cause, so stop.
            Some(l) if !l.trim().is_empty() => l.clear(),
            _ => break,
        }
    }
    // The parser does not always report the earliest error first.
    found.sort_by_key(|(position, _)| *position);
    found.into_iter().map(|(_, p)| p).collect()
}

fn parse_service(c: &mut Checker, item: &Item, key: &str, root: &Path) -> Option<Service> {
    let t = c.table(item, key)?;
    c.unknown_keys(t, key, SERVICE_KEYS);
    let context = match t.get("context") {
        Some(item) => c.string(item, &format!("{key}.context")),
        None => {
            c.at(item.span(), key, "missing required key `context`");
            None
        }
    };
    let dockerfile = t.get("dockerfile").and_then(|i| {
        let k = format!("{key}.dockerfile");
        let df = c.string(i, &k)?;
        // The engine reads the Dockerfile from the context it is sent (and BuildKit
        // looks for its `<Dockerfile>.dockerignore` next to it): a path inside it.
        let cleaned = crate::images::dockerignore::clean(&df);
        if df.trim().is_empty()
            || cleaned == "."
            || cleaned == ".."
            || cleaned.starts_with("../")
            || cleaned.starts_with('/')
        {
            c.at(
                i.span(),
                &k,
                format!(
                    "{df:?} is not a file path inside the build context (give it relative to `{key}.context`, e.g. \"api/Dockerfile\")"
                ),
            );
            return None;
        }
        Some(df)
    });
    let chart = t
        .get("chart")
        .and_then(|i| c.string(i, &format!("{key}.chart")));
    let target = t
        .get("target")
        .and_then(|i| c.string(i, &format!("{key}.target")));
    let mut build_args = BTreeMap::new();
    if let Some(item) = t.get("build_args")
        && let Some(args) = c.table(item, &format!("{key}.build_args"))
    {
        for (arg, value) in args.iter() {
            if let Some(v) = c.string(value, &format!("{key}.build_args.{arg}")) {
                build_args.insert(arg.to_string(), v);
            }
        }
    }
    Some(Service {
        context: root.join(context?),
        dockerfile: PathBuf::from(dockerfile.unwrap_or_else(|| "Dockerfile".into())),
        chart: chart.map(|c| root.join(c)),
        build_args,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("pulsedev.toml"), Path::new("/repo")).unwrap()
    }

    fn problems(text: &str) -> Vec<String> {
        let err = parse(text, Path::new("pulsedev.toml"), Path::new("/repo")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ConfigInvalid);
        err.details.clone()
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(parse_ok(""), Config::defaults(Path::new("/repo")));
    }

    #[test]
    fn a_full_file_is_read() {
        let c = parse_ok(
            r#"
version = 1
name = "ci-42"
env = "staging"
observability = true
[ports]
http = 8080
https = 8443
registry = 5555
[images]
load = "archive"
parallel = 3
[services.api]
context = "svc/api"
dockerfile = "build/Dockerfile"
chart = "charts/api"
target = "runtime"
build_args = { NODE_ENV = "production" }
"#,
        );
        assert_eq!(c.name, "ci-42");
        assert_eq!(c.env, Env::Staging);
        assert!(c.observability);
        assert_eq!(
            c.ports,
            Ports {
                http: 8080,
                https: 8443,
                registry: 5555
            }
        );
        assert_eq!(c.images.load, LoadMode::Archive);
        assert_eq!(c.build_parallelism(), 3);
        assert_eq!(c.services.len(), 1);
        let api = &c.services["api"];
        assert_eq!(api.context, Path::new("/repo/svc/api"));
        assert_eq!(api.dockerfile, Path::new("build/Dockerfile"));
        assert_eq!(api.chart.as_deref(), Some(Path::new("/repo/charts/api")));
        assert_eq!(api.target.as_deref(), Some("runtime"));
        assert_eq!(api.build_args["NODE_ENV"], "production");
    }

    #[test]
    fn every_problem_is_reported_with_line_and_key() {
        let p = problems(
            "name = \"Bad_Name\"\n[ports]\nhtps = 8443\nhttp = 70000\n[images]\nload = \"rsync\"\n",
        );
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p[0].starts_with("pulsedev.toml:1:8: name: \"Bad_Name\" is not a valid cluster name"),
            "{}",
            p[0]
        );
        assert_eq!(
            p[1],
            "pulsedev.toml:3:1: ports.htps: unknown key (did you mean `ports.https`?)"
        );
        assert_eq!(
            p[2],
            "pulsedev.toml:4:8: ports.http: 70000 is out of range (expected 1-65535)"
        );
        assert_eq!(
            p[3],
            "pulsedev.toml:6:8: images.load: expected \"registry\" or \"archive\", found \"rsync\""
        );
    }

    #[test]
    fn unknown_key_without_a_close_match_lists_the_known_ones() {
        let p = problems("colour = true\n");
        assert_eq!(
            p,
            vec![
                "pulsedev.toml:1:1: colour: unknown key (expected one of: version, name, env, observability, ports, images, services)"
            ]
        );
    }

    #[test]
    fn wrong_types_and_missing_context() {
        let p = problems("env = 3\n[services.api]\ndockerfile = 1\nbuild_args = { A = 2 }\n");
        assert_eq!(p.len(), 4, "{p:#?}");
        assert_eq!(
            p[0],
            "pulsedev.toml:1:7: env: expected a string, found an integer"
        );
        assert!(
            p[1].contains("services.api: missing required key `context`"),
            "{}",
            p[1]
        );
        assert_eq!(
            p[2],
            "pulsedev.toml:3:14: services.api.dockerfile: expected a string, found an integer"
        );
        assert_eq!(
            p[3],
            "pulsedev.toml:4:20: services.api.build_args.A: expected a string, found an integer"
        );
    }

    /// A service's context and Dockerfile are two keys: the Dockerfile is relative to
    /// the context and must stay inside it (the engine reads it from there).
    #[test]
    fn a_dockerfile_outside_its_context_is_refused_naming_the_key() {
        let c = parse_ok("[services.api]\ncontext = \"app\"\ndockerfile = \"api/Dockerfile\"\n");
        let api = &c.services["api"];
        assert_eq!(api.context, Path::new("/repo/app"));
        assert_eq!(api.dockerfile, Path::new("api/Dockerfile"));
        for bad in [
            "../api/Dockerfile",
            "/repo/app/api/Dockerfile",
            "api/../../Dockerfile",
            "",
            ".",
        ] {
            let p = problems(&format!(
                "[services.api]\ncontext = \"app\"\ndockerfile = {bad:?}\n"
            ));
            assert_eq!(p.len(), 1, "{bad}: {p:#?}");
            assert!(
                p[0].starts_with("pulsedev.toml:3:14: services.api.dockerfile: ")
                    && p[0].contains("is not a file path inside the build context"),
                "{bad}: {}",
                p[0]
            );
        }
    }

    #[test]
    fn observability_is_a_boolean() {
        let p = problems("observability = \"yes\"\n");
        assert_eq!(
            p,
            vec!["pulsedev.toml:1:17: observability: expected true or false, found a string"]
        );
        assert!(!parse_ok("").observability);
    }

    #[test]
    fn unsupported_version_and_duplicate_ports() {
        let p = problems("version = 2\n[ports]\nhttp = 8080\nhttps = 8080\n");
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].contains("version: unsupported format version 2"));
        assert!(p[1].contains("ports.http and ports.https are both 8080"));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let p = problems("name = \"x\"\nports = [\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("pulsedev.toml:"), "{}", p[0]);
    }

    #[test]
    fn every_syntax_error_is_reported_in_line_order() {
        let p = problems(
            "name = \"x\"\nenv = dev\n[ports]\nhttp = 80\nhttps == 443\n[images\nload = \"archive\"\n",
        );
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].starts_with("pulsedev.toml:2:"), "{}", p[0]);
        assert!(p[1].starts_with("pulsedev.toml:5:"), "{}", p[1]);
        assert!(p[2].starts_with("pulsedev.toml:6:"), "{}", p[2]);
    }

    #[test]
    fn problems_are_listed_top_to_bottom() {
        // The walk visits `ports` before `services` and `version` first, whatever the
        // file's order: the report still follows the file.
        let p = problems("[services.api]\ncontext = 1\n[ports]\nhttp = \"x\"\n[x]\nversion = 2\n");
        let lines: Vec<usize> = p
            .iter()
            .map(|l| l.split(':').nth(1).unwrap().parse().unwrap())
            .collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "{p:#?}");
        assert!(p.len() >= 3, "{p:#?}");
    }

    #[test]
    fn a_file_that_is_not_utf8_names_the_byte_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"name = \"caf\xe9\"\n").unwrap();
        let err = Config::load(None, dir.path(), &|_| None, &Overrides::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ConfigInvalid);
        assert!(
            err.details[0]
                .ends_with("pulsedev.toml:1:12: not UTF-8 (byte 0xe9); TOML files must be UTF-8"),
            "{:?}",
            err.details
        );
        assert!(
            err.hint.as_deref().unwrap().contains("iconv"),
            "{:?}",
            err.hint
        );
    }

    #[test]
    fn bad_command_line_values_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let load = |o: Overrides| Config::load(None, dir.path(), &|_| None, &o).unwrap_err();
        let e = load(Overrides {
            name: Some("Bad_Name".into()),
            ..Default::default()
        });
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(
            e.message.starts_with("--name: \"Bad_Name\" is not a valid"),
            "{}",
            e.message
        );
        let e = load(Overrides {
            http_port: Some(8443),
            https_port: Some(8443),
            ..Default::default()
        });
        assert_eq!(e.kind, ErrorKind::Usage, "{e:?}");
        assert!(e.message.contains("are both 8443"), "{}", e.message);
        // The same clash from the file stays a configuration problem.
        std::fs::write(
            dir.path().join(FILE_NAME),
            "[ports]\nhttp = 8443\nhttps = 8443\n",
        )
        .unwrap();
        let e = Config::load(None, dir.path(), &|_| None, &Overrides::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConfigInvalid);
    }

    #[test]
    fn a_huge_value_is_not_echoed_in_full() {
        let name = "x".repeat(5_000_000);
        let m = check_name(&name).unwrap_err();
        assert!(m.len() < 300, "{} bytes", m.len());
        assert!(m.contains("(5000000 characters)"), "{m}");
    }

    #[test]
    fn precedence_is_flags_then_env_then_file_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "name = \"from-file\"\n[ports]\nhttp = 8000\nhttps = 8443\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "PULSEDEV_NAME" => Some("from-env".to_string()),
            "PULSEDEV_HTTPS_PORT" => Some("9443".to_string()),
            _ => None,
        };
        let none = Overrides::default();
        let c = Config::load(None, dir.path(), &env, &none).unwrap();
        assert_eq!(c.name, "from-env");
        assert_eq!(c.ports.http, 8000, "file beats defaults");
        assert_eq!(c.ports.https, 9443, "env beats file");
        assert_eq!(c.ports.registry, 5001, "defaults fill the rest");
        assert_eq!(
            c.file.as_deref(),
            Some(dir.path().join(FILE_NAME).as_path())
        );

        let flags = Overrides {
            name: Some("from-flag".into()),
            https_port: Some(10443),
            ..Overrides::default()
        };
        let c = Config::load(None, dir.path(), &env, &flags).unwrap();
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.ports.https, 10443);
    }

    #[test]
    fn no_file_means_defaults_and_a_missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(None, dir.path(), &|_| None, &Overrides::default()).unwrap();
        assert_eq!(c, Config::defaults(dir.path()));
        let err = Config::load(
            Some(Path::new("nope.toml")),
            dir.path(),
            &|_| None,
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ConfigInvalid);
        assert!(err.message.contains("nope.toml"));
    }

    #[test]
    fn bad_env_values_are_config_errors() {
        let env = |k: &str| match k {
            "PULSEDEV_HTTP_PORT" => Some("eighty".to_string()),
            "PULSEDEV_ENV" => Some("qa".to_string()),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(None, dir.path(), &env, &Overrides::default()).unwrap_err();
        assert_eq!(err.details.len(), 2, "{:#?}", err.details);
        assert!(err.details[0].contains("PULSEDEV_ENV"));
        assert!(err.details[1].contains("PULSEDEV_HTTP_PORT"));
    }

    #[test]
    fn service_paths_are_checked_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::defaults(dir.path());
        let e = c.check_services(true, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConfigInvalid);
        // 4 services: a missing context and a missing chart each.
        assert_eq!(e.details.len(), 8, "{:#?}", e.details);
        assert!(e.details[0].starts_with("services.api.context: "));
        assert!(c.check_services(false, false).is_ok());
        // A context that exists without the Dockerfile: the key that is wrong is named.
        std::fs::create_dir_all(dir.path().join("app/api")).unwrap();
        let e = c.check_services(true, false).unwrap_err();
        assert!(
            e.details[0].starts_with("services.api.dockerfile: ")
                && e.details[0].ends_with("app/api/Dockerfile is not a file"),
            "{:#?}",
            e.details
        );
        let repo = Config::defaults(Path::new(env!("CARGO_MANIFEST_DIR")));
        repo.check_services(true, true).unwrap();
    }

    #[test]
    fn cluster_names() {
        for ok in ["pulsedev", "ci-1234-1", "a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Caps", "under_score", &"x".repeat(51)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("htps", PORT_KEYS), Some("https"));
        assert_eq!(did_you_mean("servces", TOP_KEYS), Some("services"));
        assert_eq!(did_you_mean("zzz", TOP_KEYS), None);
    }
}
