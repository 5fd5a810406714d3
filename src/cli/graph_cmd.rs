//! `kdeploy graph`: the dependency graph as text or DOT.

use super::*;

pub(super) fn graph(ctx: &mut Ctx<'_, '_>, format: GraphFormat, vars: &args::VarArgs) -> i32 {
    let loaded = match ctx.load(vars, &VarSource::Inputs, true) {
        Ok(l) => l,
        Err(e) => {
            ctx.diags(&e.sources, &e.diags);
            return EXIT_ERROR;
        }
    };
    let text = match format {
        GraphFormat::Dot => crate::graph::render::dot(&loaded.graph),
        GraphFormat::Text => crate::graph::render::text(&loaded.graph),
    };
    let _ = write!(ctx.io.out, "{text}");
    EXIT_OK
}
