//! `kdeploy init`: opens the configured backend; with -migrate-state copies the previous backend's state into it.

use super::*;

/// `kdeploy init`: opens the configured backend (checking its settings and that it answers);
/// with -migrate-state, copies the previous backend's state into it, both locked meanwhile.
pub(super) fn init_cmd(ctx: &mut Ctx<'_, '_>, migrate: bool, from: &[String], force: bool, timeout: std::time::Duration) -> i32 {
    let mut to = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if !migrate {
        if !from.is_empty() {
            ctx.error("Invalid options", "-from-backend-config needs -migrate-state");
            return EXIT_ERROR;
        }
        return match to.read_stored() {
            Ok(state) => {
                let what = match state {
                    Some(s) => format!("it holds serial {} of lineage {}", s.serial, s.lineage),
                    None => "it holds no state yet".to_string(),
                };
                let _ = writeln!(ctx.io.out, "The state backend is ready: {} ({what}).", to.describe());
                EXIT_OK
            }
            Err(e) => {
                ctx.state_error(&e);
                EXIT_ERROR
            }
        };
    }
    let mut from_config: BTreeMap<String, String> = match parse_pairs(from) {
        Ok(p) => p.into_iter().collect(),
        Err(bad) => {
            ctx.error("Invalid -from-backend-config", &format!("{bad:?}: use -from-backend-config KEY=VALUE"));
            return EXIT_ERROR;
        }
    };
    let kind = from_config.remove("type").unwrap_or_else(|| "local".to_string());
    let source = match engine::open_store(&kind, &from_config, &ctx.dir, &ctx.backend.env) {
        Ok(s) => s,
        Err(d) => {
            ctx.diags(&SourceMap::new(), &d.into());
            return EXIT_ERROR;
        }
    };
    if source.describe() == to.describe() {
        ctx.error("Nothing to migrate", &format!("the previous and the configured backend are the same ({}).", to.describe()));
        return EXIT_ERROR;
    }
    let mut source = match ctx.lock_only(source, "init -migrate-state", timeout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut to = match ctx.lock_only(to, "init -migrate-state", timeout) {
        Ok(s) => s,
        Err(code) => {
            ctx.release(source);
            return code;
        }
    };
    let result = match source.read_stored() {
        Ok(None) => Ok(None),
        Ok(Some(state)) => kdeploy_state::push(&mut *to, state, force).map(Some).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (from_location, to_location) = (source.describe(), to.describe());
    ctx.release(to);
    ctx.release(source);
    match result {
        Ok(Some(serial)) => {
            let _ = writeln!(
                ctx.io.out,
                "Migrated the state from {from_location} to {to_location} (serial {serial}).\nThe old state was left in place; delete it once you have checked the new backend (`kdeploy state list`)."
            );
            EXIT_OK
        }
        Ok(None) => {
            let _ = writeln!(ctx.io.out, "There is no state in {from_location} to migrate; {to_location} is ready.");
            EXIT_OK
        }
        Err(e) => {
            ctx.error("Cannot migrate state", &e);
            EXIT_ERROR
        }
    }
}
