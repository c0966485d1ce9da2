//! Jobs that must run again: a Job that ended Failed stays Failed, so applying it again
//! changes nothing. Before re-applying, such a Job is deleted (with its pods).
//!
//! Owns: deleting a Failed Job and waiting until it is gone. Must not touch Jobs that
//! are running or complete.

use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, DeleteParams, PropagationPolicy};
use k8s_openapi::api::batch::v1::Job;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

fn failed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True")
        })
}

/// Deletes Job `ns/name` when it exists and has Failed, and waits (up to `timeout`)
/// until the API server no longer has it. Returns whether it deleted one.
pub async fn delete_if_failed(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    poll: Duration,
    cancel: &CancellationToken,
) -> Result<bool> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let err = |what: &str, e: ::kube::Error| {
        Error::new(
            ErrorKind::ApplyFailed,
            format!("failed to {what} Job {ns}/{name}: {e}"),
        )
        .with_hint("check the cluster with `pulsedev status`")
    };
    let Some(job) = api.get_opt(name).await.map_err(|e| err("read", e))? else {
        return Ok(false);
    };
    if !failed(&job) {
        return Ok(false);
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(::kube::Error::Api(s)) if s.code == 404 => return Ok(true),
        Err(e) => return Err(err("delete", e)),
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if api
            .get_opt(name)
            .await
            .map_err(|e| err("read", e))?
            .is_none()
        {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::ApplyFailed,
                format!(
                    "the failed Job {ns}/{name} was deleted but is still there after {}s",
                    timeout.as_secs()
                ),
            )
            .with_hint("look for a finalizer on it (`kubectl get job -o yaml`), then run again"));
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = cancel.cancelled() => return Err(Error::interrupted()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{Exchange, Scenario, not_found};
    use serde_json::json;

    fn job(condition: Option<&str>) -> serde_json::Value {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrations-abc", "namespace": "pulsewatch-dev"},
            "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}},
            "status": {}});
        if let Some(c) = condition {
            j["status"]["conditions"] = json!([{"type": c, "status": "True"}]);
        }
        j
    }

    const PATH: &str = "/apis/batch/v1/namespaces/pulsewatch-dev/jobs/migrations-abc";

    #[tokio::test(start_paused = true)]
    async fn a_failed_job_is_deleted_and_awaited() {
        let (client, server) = Scenario::new()
            .then(Exchange::get(PATH).ok(job(Some("Failed"))))
            .then(
                Exchange::delete(PATH)
                    .check(|seen| assert_eq!(seen.body["propagationPolicy"], "Background"))
                    .ok(job(Some("Failed"))),
            )
            .then(Exchange::get(PATH).ok(job(Some("Failed"))))
            .then(Exchange::get(PATH).reply(404, not_found("jobs.batch", "migrations-abc")))
            .start();
        let deleted = delete_if_failed(
            &client,
            "pulsewatch-dev",
            "migrations-abc",
            Duration::from_secs(30),
            Duration::from_secs(1),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(deleted);
        server.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn complete_running_and_absent_jobs_are_left_alone() {
        let (client, server) = Scenario::new()
            .then(Exchange::get(PATH).ok(job(Some("Complete"))))
            .then(Exchange::get(PATH).ok(job(None)))
            .then(Exchange::get(PATH).reply(404, not_found("jobs.batch", "migrations-abc")))
            .start();
        for _ in 0..3 {
            let deleted = delete_if_failed(
                &client,
                "pulsewatch-dev",
                "migrations-abc",
                Duration::from_secs(30),
                Duration::from_secs(1),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
            assert!(!deleted);
        }
        server.finish().await;
    }
}
