//! `kdeploy drift`: what changed outside kdeploy, for a scheduled check.

use super::*;

pub(super) async fn drift_cmd(ctx: &mut Ctx<'_, '_>, d: args::DriftArgs) -> i32 {
    let format = if d.json { args::DriftFormat::Json } else { d.format };
    let loaded = match ctx.load(&d.vars, &VarSource::Inputs, true) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    ctx.backend.partition.clone_from(&d.partition);
    let Some(mut store) = ctx.store(&loaded) else { return EXIT_ERROR };
    // Read-only: no lock, so a running apply is never blocked by the cron.
    let state = match store.read() {
        Ok(Some(s)) => match &d.partition {
            Some(p) => crate::partition::restrict(&s, p),
            None => s,
        },
        Ok(None) => State::new(VERSION),
        Err(e) => {
            ctx.state_error(&e);
            return EXIT_ERROR;
        }
    };
    let refreshed = match crate::plan::planner::refresh(&state, &ctx.env.providers, &[]).await {
        Ok(r) => r,
        Err(diags) => {
            ctx.diags(&loaded.sources, &diags);
            return EXIT_ERROR;
        }
    };
    let ignore_changes = |address: &crate::addr::Address| -> Vec<String> {
        loaded.expanded.decl(&loaded.stack, address).map(|d| d.lifecycle.ignore_changes.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default()
    };
    let clusters: std::collections::BTreeMap<crate::addr::Address, crate::addr::Address> =
        state.resources.iter().filter_map(|r| Some((r.address.clone(), r.attributes.get("cluster")?.as_str()?.parse().ok()?))).collect();
    let report = crate::drift::report_by_cluster(
        &refreshed.drift,
        state.resources.len(),
        &ignore_changes,
        &loaded.stack.stack.drift_ignore,
        &refreshed.health,
        &clusters,
    );
    let text = match format {
        args::DriftFormat::Human => crate::drift::human(&report, ctx.style),
        args::DriftFormat::Json => format!("{}\n", serde_json::to_string_pretty(&crate::drift::to_json(&report)).unwrap_or_default()),
        args::DriftFormat::Markdown => crate::drift::markdown(&report),
    };
    let _ = write!(ctx.io.out, "{text}");
    if let (Some(url), true) = (&d.notify, report.drifted())
        && let Err(e) = crate::drift::notify(url, &report, d.notify_timeout).await
    {
        let _ = writeln!(ctx.io.err, "warning: could not send the drift report to the webhook: {e}");
    }
    if d.detailed_exitcode && report.drifted() { EXIT_CHANGES } else { EXIT_OK }
}
