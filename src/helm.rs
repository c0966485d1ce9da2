//! Chart rendering through the `helm` binary (`helm template`), and fetching pinned
//! third-party charts into pulsedev's cache (`helm pull`).
//!
//! Owns: helm invocations and their errors. Must not apply anything to a cluster: the
//! rendered text goes to the `kube` engine (or to stdout for `render`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone)]
pub struct Helm {
    pub bin: PathBuf,
}

/// One `helm template` call.
#[derive(Debug, Clone)]
pub struct Template<'a> {
    pub release: &'a str,
    pub chart: &'a Path,
    pub namespace: &'a str,
    pub values: Vec<PathBuf>,
    /// `--set-string key=value` pairs (image references; never secrets).
    pub set_string: Vec<(String, String)>,
    /// `--version` for a chart from a repository archive.
    pub version: Option<&'a str>,
    /// `--include-crds`: the CRDs a chart keeps in its `crds/` folder (helm install
    /// applies them; `helm template` leaves them out unless asked).
    pub include_crds: bool,
    /// `--skip-schema-validation` (Helm 3.16+): for charts whose values.schema.json
    /// refers to schemas on the web, which helm would download on every render.
    pub skip_schema_validation: bool,
}

impl Helm {
    pub fn args(t: &Template) -> Vec<String> {
        let mut a = vec![
            "template".to_string(),
            t.release.to_string(),
            t.chart.display().to_string(),
            "--namespace".into(),
            t.namespace.to_string(),
        ];
        if let Some(v) = t.version {
            a.push("--version".into());
            a.push(v.to_string());
        }
        if t.include_crds {
            a.push("--include-crds".into());
        }
        if t.skip_schema_validation {
            a.push("--skip-schema-validation".into());
        }
        for f in &t.values {
            a.push("-f".into());
            a.push(f.display().to_string());
        }
        for (k, v) in &t.set_string {
            a.push("--set-string".into());
            a.push(format!("{k}={v}"));
        }
        a
    }

    /// Renders a chart; the output is helm's multi-document YAML with `# Source:` lines.
    pub async fn template(&self, t: &Template<'_>) -> Result<String> {
        let args = Helm::args(t);
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::new(&self.bin)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| render_failed(t, "helm did not finish within 120s".into()))?
        .map_err(|e| render_failed(t, format!("failed to run {}: {e}", self.bin.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(render_failed(t, stderr));
        }
        String::from_utf8(out.stdout)
            .map_err(|_| render_failed(t, "helm printed invalid UTF-8".into()))
    }
}

fn render_failed(t: &Template, why: String) -> Error {
    Error::new(
        ErrorKind::RenderFailed,
        format!(
            "failed to render chart {} (release {}): {why}",
            t.chart.display(),
            t.release
        ),
    )
    .with_hint(format!(
        "check the chart and values with `helm lint {} {}`",
        t.chart.display(),
        t.values
            .iter()
            .map(|v| format!("-f {}", v.display()))
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_arguments() {
        let t = Template {
            release: "api",
            chart: Path::new("/r/manifests/charts/api"),
            namespace: "pulsewatch-dev",
            values: vec![PathBuf::from("/r/manifests/envs/dev/values.yaml")],
            set_string: vec![("api.image.tag".into(), "3f2a9c1b7d0e".into())],
            version: None,
            include_crds: false,
            skip_schema_validation: false,
        };
        assert_eq!(
            Helm::args(&t).join(" "),
            "template api /r/manifests/charts/api --namespace pulsewatch-dev \
             -f /r/manifests/envs/dev/values.yaml --set-string api.image.tag=3f2a9c1b7d0e"
        );
    }
}
