//! `pulsedev logs [SERVICE…] [-f] [--since D]`: the merged, prefixed view of `dev`
//! outside the loop.
//!
//! Owns: the command's flow. Reading logs is `kube::logs`; printing is `view`.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::Ctx;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::kube;
use crate::stack;
use crate::up::STACK;

use super::view::View;

/// `--since`: a Go-style duration as kubectl takes it (`30s`, `5m`, `1h30m`).
pub fn parse_since(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: give e.g. 30s, 5m, 1h or 1h30m");
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[derive(Debug, Clone)]
pub struct LogsOptions {
    pub services: Vec<String>,
    pub follow: bool,
    pub since: Option<Duration>,
}

/// Runs `logs` against the existing cluster of `config`.
pub async fn run(ctx: &Ctx, config: Config, opts: LogsOptions) -> Result<()> {
    // The names a user can give: the configured services (chart names).
    crate::images::select(&config, &opts.services)?;
    let dirs = crate::state::Dirs::from_process()?;
    crate::cluster::guard(&dirs, &config.name)?;
    let paths = crate::cluster::Paths::new(&dirs, &config.name);
    let client = ctx
        .interruptible(kube::connect(
            &paths.kubeconfig,
            &kube::context_name(&config.name),
        ))
        .await??;
    let ns = stack::namespace(config.env);
    // The dev credentials, so a service that logs one shows it redacted.
    kube::secrets::remember_stack(&client, &ns, "monitoring", Duration::from_secs(10)).await;
    let names: Vec<String> = if opts.services.is_empty() {
        config.services.keys().cloned().collect()
    } else {
        opts.services.clone()
    };
    let view = Arc::new(View::new(&ctx.ui, &names));
    let options = kube::logs::LogOptions {
        namespace: ns,
        stack: STACK.to_string(),
        services: opts.services.clone(),
        follow: opts.follow,
        since: opts.since,
        poll: Duration::from_secs(1),
    };
    if !opts.follow {
        let lines = ctx
            .interruptible(kube::logs::read(&client, &options))
            .await??;
        for l in &lines {
            view.log(l);
        }
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = ctx.cancel.clone();
    let follower = tokio::spawn(kube::logs::follow(client, options, tx, stop));
    while let Some(line) = rx.recv().await {
        view.log(&line);
    }
    match follower.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(Error::new(
            ErrorKind::Internal,
            format!("the log follower failed: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_go_durations() {
        assert_eq!(parse_since("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_since("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "10", "5x", "m", "0s", "99999999999999999999h"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
