//! The base images a service's Dockerfile pulls: its `FROM` lines, with the global
//! `ARG`s (and the service's build args) substituted, stage names and `scratch` left
//! out, and nothing after the `--target` stage. `doctor` checks they are here or
//! reachable; `fetch` pulls them before the first build.
//!
//! Owns: reading FROM lines. Must not pull or build (that is `fetch` and `build`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::config::Service;
use crate::error::{Error, ErrorKind, Result};

/// The images `service`'s Dockerfile starts from, in order, without duplicates. The
/// Dockerfile is found as the build finds it: `dockerfile` inside `context`.
pub fn base_images(service: &Service) -> Result<Vec<String>> {
    let path = service.context.join(&service.dockerfile);
    let text = read(&path)?;
    Ok(from_images(
        &text,
        &service.build_args,
        service.target.as_deref(),
    ))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::ImageBuildFailed,
            format!("failed to read the Dockerfile {}: {e}", path.display()),
        )
        .with_hint("check `context` and `dockerfile` of the service in pulsedev.toml")
    })
}

/// The instructions of a Dockerfile as (keyword, arguments): comment lines dropped,
/// lines ending in `\` joined with the next (the default escape character; BuildKit's
/// parser, moby/buildkit frontend/dockerfile/parser/parser.go, also skips comment
/// lines inside a continuation).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let whole = std::mem::take(&mut current);
                let mut parts = whole.trim().splitn(2, char::is_whitespace);
                let keyword = parts.next().unwrap_or_default().to_ascii_uppercase();
                let args = parts.next().unwrap_or_default().trim().to_string();
                if !keyword.is_empty() {
                    out.push((keyword, args));
                }
            }
        }
    }
    out
}

/// `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alt}` from `vars` (unset is
/// empty), the forms the Dockerfile reference lists for FROM
/// (https://docs.docker.com/reference/dockerfile/#environment-replacement).
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            let mut inner = String::new();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                inner.push(c);
            }
            let (name, op) = match inner.find(':') {
                Some(i) => (&inner[..i], Some(&inner[i + 1..])),
                None => (inner.as_str(), None),
            };
            let value = vars.get(name).filter(|v| !v.is_empty());
            match (op, value) {
                (Some(op), None) if op.starts_with('-') => out.push_str(&op[1..]),
                (Some(op), Some(_)) if op.starts_with('+') => out.push_str(&op[1..]),
                (Some(op), None) if op.starts_with('+') => {}
                (_, v) => out.push_str(v.map_or("", String::as_str)),
            }
        } else {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push_str(vars.get(&name).map_or("", String::as_str));
        }
    }
    out
}

/// The base images of a Dockerfile's text. An `ARG` before the first `FROM` is in
/// scope for FROM lines, its default replaced by a build arg of that name; a FROM
/// naming an earlier stage (stage names compare case-insensitively) and `scratch` pull
/// nothing; with a target, stages after it are not built by the classic builder
/// pulsedev uses (moby builder/dockerfile/builder.go stops at the target stage).
pub fn from_images(
    text: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Vec<String> {
    let mut globals: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: HashSet<String> = HashSet::new();
    let mut seen_from = false;
    let mut out: Vec<String> = Vec::new();
    for (keyword, args) in instructions(text) {
        match keyword.as_str() {
            "ARG" if !seen_from => {
                for decl in args.split_whitespace() {
                    let (name, default) = match decl.split_once('=') {
                        Some((n, d)) => (n, Some(d.trim_matches('"').to_string())),
                        None => (decl, None),
                    };
                    let value = build_args.get(name).cloned().or(default);
                    globals.insert(name.to_string(), value.unwrap_or_default());
                }
            }
            "FROM" => {
                if let Some(t) = target
                    && seen_from
                    && stages.contains(&t.to_ascii_lowercase())
                {
                    break;
                }
                seen_from = true;
                let words: Vec<&str> = args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let Some(image) = words.first() else { continue };
                let image = expand(image, &globals);
                let lower = image.to_ascii_lowercase();
                // Only stages named before this line count.
                let is_stage = stages.contains(&lower);
                if let [_, as_kw, name] = words[..]
                    && as_kw.eq_ignore_ascii_case("as")
                {
                    stages.insert(name.to_ascii_lowercase());
                }
                if lower == "scratch" || is_stage || image.is_empty() {
                    continue;
                }
                if !out.contains(&image) {
                    out.push(image);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// The built-in services, located as the build locates them (context + dockerfile).
    #[test]
    fn the_reference_apps_base_images() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = crate::config::Config::defaults(root);
        let api = base_images(&config.services["api"]).unwrap();
        assert_eq!(api.len(), 1, "{api:?}");
        assert!(
            api[0].starts_with("docker.io/library/node:22-alpine@sha256:"),
            "{api:?}"
        );
        for name in ["web", "migrations", "worker"] {
            let images = base_images(&config.services[name]).unwrap();
            assert_eq!(images.len(), 1, "{name}: {images:?}");
            assert!(
                images[0].contains("@sha256:"),
                "pinned by digest: {images:?}"
            );
        }
        let mut missing = config.services["api"].clone();
        missing.dockerfile = "nope/Dockerfile".into();
        let e = base_images(&missing).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ImageBuildFailed);
    }

    #[test]
    fn stages_scratch_args_and_targets() {
        let text = "# syntax=docker/dockerfile:1\n\
            ARG BASE=node:22\n\
            ARG TAG\n\
            FROM --platform=$BUILDPLATFORM ${BASE} AS Deps\n\
            RUN npm ci \\\n  # a comment inside\n  --omit=dev\n\
            FROM deps AS test\n\
            FROM scratch AS empty\n\
            from alpine:${TAG:-3.20} as runtime\n\
            FROM golang:1.24 AS later\n";
        assert_eq!(
            from_images(text, &none(), None),
            ["node:22", "alpine:3.20", "golang:1.24"]
        );
        let args = BTreeMap::from([
            ("BASE".to_string(), "mirror.local/node:22".to_string()),
            ("TAG".to_string(), "3.21".to_string()),
        ]);
        assert_eq!(
            from_images(text, &args, Some("runtime")),
            ["mirror.local/node:22", "alpine:3.21"]
        );
        // A stage may be named like the image it starts from.
        assert_eq!(
            from_images("FROM node AS node\nFROM node\n", &none(), None),
            ["node"]
        );
        // An ARG after the first FROM is a stage's, not in scope for FROM.
        assert_eq!(
            from_images("FROM a\nARG X=b\nFROM ${X}c\n", &none(), None),
            ["a", "c"]
        );
    }
}
