//! CI mode: a cluster name unique to the job, and host ports nobody else on this
//! machine holds or has reserved, so parallel jobs on one runner do not collide.

use std::net::TcpListener;

use sha2::{Digest, Sha256};

use crate::config::check_name;
use crate::error::{Error, Result};

/// The id a CI system gives the running job, when it is one pulsedev knows (besides
/// GitHub Actions, which `default_name` reads in more detail).
pub fn job_id(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    [
        "CI_JOB_ID",              // GitLab
        "BUILDKITE_JOB_ID",       // Buildkite
        "CIRCLE_WORKFLOW_JOB_ID", // CircleCI
        "SYSTEM_JOBID",           // Azure Pipelines
        "BUILD_TAG",              // Jenkins
    ]
    .iter()
    .find_map(|k| {
        env(k)
            .filter(|v| !v.trim().is_empty())
            .map(|v| format!("{k}={v}"))
    })
}

/// Whether `default_name` gives the same name to every pulsedev command of a job.
pub fn stable_name(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("GITHUB_RUN_ID").is_some_and(|v| !v.trim().is_empty()) || job_id(env).is_some()
}

/// `ci-<run id>-<attempt>[-<job hash>]` on GitHub Actions, `ci-<12 hex of the job id>`
/// on GitLab, Buildkite, CircleCI, Azure and Jenkins (stable for every step of a job, so
/// a later `pulsedev down` finds the cluster), else `ci-<pid>-<random>`.
/// At most 50 characters, valid per `config::check_name`.
pub fn default_name(env: &dyn Fn(&str) -> Option<String>, pid: u32, random: u32) -> String {
    let clean = |s: String| -> String {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .trim_matches('-')
            .to_string()
    };
    let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let name = match nonempty("GITHUB_RUN_ID") {
        Some(run) => {
            let attempt = nonempty("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
            let mut name = format!("ci-{}-{}", clean(run), clean(attempt));
            // Jobs of one run (a matrix, several runners on one machine) share the
            // run id; the job and runner names tell them apart.
            let job = [nonempty("GITHUB_JOB"), nonempty("RUNNER_NAME")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            if !job.is_empty() {
                let h = hex::encode(&Sha256::digest(job.as_bytes())[..3]);
                name = format!("{name}-{h}");
            }
            name
        }
        None => match job_id(env) {
            // Other CI systems: their job id, hashed short, is stable across the job.
            Some(id) => format!("ci-{}", &hex::encode(Sha256::digest(id.as_bytes()))[..12]),
            None => format!("ci-{pid}-{:06x}", random & 0xff_ffff),
        },
    };
    let mut name: String = name.chars().take(50).collect();
    while name.ends_with('-') {
        name.pop();
    }
    debug_assert!(check_name(&name).is_ok(), "{name}");
    name
}

/// `n` distinct free TCP ports on 127.0.0.1, none in `avoid`. Each is bound (so it
/// is free now) and held until all are chosen, then released.
pub fn free_ports(n: usize, avoid: &[u16]) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        if tries > 200 {
            return Err(Error::internal("failed to find free ports on 127.0.0.1"));
        }
        let l = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::internal(format!("failed to bind 127.0.0.1:0: {e}")))?;
        let port = l
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?
            .port();
        held.push(l);
        if !avoid.contains(&port) && !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_ci_systems_get_a_stable_name() {
        let gitlab = |k: &str| (k == "CI_JOB_ID").then(|| "4242".to_string());
        let a = default_name(&gitlab, 1, 1);
        let b = default_name(&gitlab, 2, 2);
        assert_eq!(a, b);
        assert!(a.starts_with("ci-") && a.len() == 15, "{a}");
        assert!(stable_name(&gitlab));
        let unknown = |_: &str| None;
        assert!(!stable_name(&unknown));
        assert_ne!(default_name(&unknown, 1, 1), default_name(&unknown, 1, 2));
    }
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn github_names_are_stable_per_job_and_distinct_across_jobs() {
        let a = env(&[
            ("GITHUB_RUN_ID", "9876543210"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "e2e"),
            ("RUNNER_NAME", "runner-1"),
        ]);
        let n = default_name(&a, 1, 2);
        assert!(n.starts_with("ci-9876543210-2-"), "{n}");
        assert_eq!(n, default_name(&a, 99, 98), "pid and random do not matter");
        let b = env(&[
            ("GITHUB_RUN_ID", "9876543210"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "e2e"),
            ("RUNNER_NAME", "runner-2"),
        ]);
        assert_ne!(n, default_name(&b, 1, 2));
        assert_eq!(
            default_name(&env(&[("GITHUB_RUN_ID", "17")]), 1, 2),
            "ci-17-1"
        );
    }

    #[test]
    fn elsewhere_pid_and_random_and_always_valid() {
        assert_eq!(default_name(&env(&[]), 4242, 0xabcdef), "ci-4242-abcdef");
        let long = env(&[("GITHUB_RUN_ID", &"9".repeat(80)), ("GITHUB_JOB", "x")]);
        let n = default_name(&long, 1, 1);
        assert!(n.len() <= 50 && check_name(&n).is_ok(), "{n}");
        let odd = env(&[("GITHUB_RUN_ID", "A_B"), ("GITHUB_RUN_ATTEMPT", "--")]);
        let n = default_name(&odd, 1, 1);
        assert!(check_name(&n).is_ok(), "{n}");
    }

    #[test]
    fn free_ports_are_distinct_and_avoid_reserved_ones() {
        let first = free_ports(3, &[]).unwrap();
        let second = free_ports(3, &first).unwrap();
        assert_eq!(first.len(), 3);
        assert!(second.iter().all(|p| !first.contains(p)));
    }
}
