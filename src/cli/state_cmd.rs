//! `kdeploy state ...` and `force-unlock`: the state store without evaluating the stack.

use super::*;

pub(super) fn read_state(ctx: &mut Ctx<'_, '_>) -> Result<Option<State>, i32> {
    let mut store = state_store(ctx)?;
    store.read().map_err(|e| {
        ctx.state_error(&e);
        EXIT_ERROR
    })
}

/// The state store without evaluating the stack (a backend block, or the default path).
pub(super) fn state_store(ctx: &mut Ctx<'_, '_>) -> Result<Box<dyn StateStore>, i32> {
    let mut sources = SourceMap::new();
    let (stack, diags) = crate::config::load::load_stack(&ctx.dir, &mut sources);
    if stack.modules.is_empty() || (diags.has_errors() && stack.stack.backend.is_some()) {
        // Without stack files the default location still works.
        return engine::open_store("local", &ctx.backend.overrides.iter().cloned().collect(), &ctx.dir, &ctx.backend.env).map_err(|d| {
            ctx.diags(&SourceMap::new(), &d.into());
            EXIT_ERROR
        });
    }
    // A partitioned stack's partitions are its clusters: evaluate it to know them (required
    // variables without a value are unknown, as in validate).
    if stack.stack.partition.is_some()
        && let Ok(loaded) = ctx.load(&args::VarArgs::default(), &VarSource::Inputs, true)
    {
        return ctx.store(&loaded).ok_or(EXIT_ERROR);
    }
    let loaded_like = Loaded {
        dir: ctx.dir.clone(),
        stack,
        sources,
        root_vars: BTreeMap::new(),
        expanded: Default::default(),
        graph: Default::default(),
        diags: Diagnostics::new(),
    };
    ctx.store(&loaded_like).ok_or(EXIT_ERROR)
}

pub(super) fn state_cmd(ctx: &mut Ctx<'_, '_>, cmd: StateCommand) -> i32 {
    match cmd {
        StateCommand::List { addresses, partition } => {
            let mut state = match read_state(ctx) {
                Ok(s) => s.unwrap_or_else(|| State::new(VERSION)),
                Err(c) => return c,
            };
            if let Some(name) = &partition {
                let known: std::collections::BTreeSet<String> = state.resources.iter().map(kdeploy_state::resource_partition).collect();
                if !known.contains(name) {
                    let list = if known.is_empty() { "none".to_string() } else { known.into_iter().collect::<Vec<_>>().join(", ") };
                    ctx.error(
                        "No such partition in state",
                        &format!("The state records no component in partition {name:?} (partitions with components: {list})."),
                    );
                    return EXIT_ERROR;
                }
                state = crate::partition::restrict(&state, name);
            }
            let matchers: Vec<_> = addresses.iter().map(|a| kdeploy_state::address_matcher(a)).collect();
            for r in &state.resources {
                if matchers.is_empty() || matchers.iter().any(|m| m(&r.address)) {
                    let _ = writeln!(ctx.io.out, "{}", r.address);
                }
            }
            EXIT_OK
        }
        StateCommand::Show { address } => {
            let state = match read_state(ctx) {
                Ok(s) => s.unwrap_or_else(|| State::new(VERSION)),
                Err(c) => return c,
            };
            match address.parse().ok().and_then(|a| state.resource(&a)) {
                Some(r) => {
                    let _ = write!(ctx.io.out, "{}", state_resource_text(r));
                    EXIT_OK
                }
                None => {
                    ctx.error("No such component in state", &format!("The state has no component at {address}. `kdeploy state list` shows what it has."));
                    EXIT_ERROR
                }
            }
        }
        StateCommand::Rm { addresses, lock_timeout } => edit_state(ctx, "state rm", lock_timeout, |state, out| {
            let mut removed = 0;
            for a in &addresses {
                let gone = state.remove_matching(a);
                if gone.is_empty() {
                    let at = if a.is_empty() { "\"\" (an empty address)" } else { a.as_str() };
                    return Err(format!("the state has nothing at {at}; `kdeploy state list` shows what it has"));
                }
                for r in gone {
                    let _ = writeln!(out, "Removed {}", r.address);
                    removed += 1;
                }
            }
            let _ = writeln!(out, "Successfully removed {removed} component(s) from state. The live objects were not touched.");
            Ok(())
        }),
        StateCommand::Pull => state_pull(ctx),
        StateCommand::Push { file, force, lock_timeout } => state_push(ctx, &file, force, lock_timeout),
        StateCommand::Mv { source, destination, lock_timeout } => edit_state(ctx, "state mv", lock_timeout, |state, out| {
            let moved = state.mv_checked(&source, &destination, &same_kind).map_err(|e| e.to_string())?;
            for (old, new) in &moved {
                let _ = writeln!(out, "Moved {old} to {new}");
            }
            let _ = writeln!(out, "Successfully moved {} component(s). The live objects were not touched.", moved.len());
            Ok(())
        }),
    }
}

pub(super) fn edit_state(
    ctx: &mut Ctx<'_, '_>,
    op: &str,
    timeout: std::time::Duration,
    f: impl FnOnce(&mut State, &mut dyn Write) -> Result<(), String>,
) -> i32 {
    let store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let (mut store, mut state) = match ctx.lock(store, op, timeout) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut buf = Vec::new();
    let result = f(&mut state, &mut buf);
    let code = match result {
        Ok(()) => match state.bump_serial().and_then(|_| store.write(&state)) {
            Ok(()) => {
                let _ = ctx.io.out.write_all(&buf);
                EXIT_OK
            }
            Err(e @ StateError::SerialExhausted { .. }) => {
                // Not a failure of the store: say which state it is about.
                ctx.error("State error", &format!("{}: {e}", store.describe()));
                EXIT_ERROR
            }
            Err(e) => {
                ctx.state_error(&e);
                EXIT_ERROR
            }
        },
        Err(e) => {
            ctx.error(&format!("Cannot {op}"), &e);
            EXIT_ERROR
        }
    };
    ctx.release(store);
    code
}

pub(super) fn state_pull(ctx: &mut Ctx<'_, '_>) -> i32 {
    let mut store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match store.read_stored() {
        Ok(Some(state)) => {
            let _ = ctx.io.out.write_all(&kdeploy_state::encode(&state));
            EXIT_OK
        }
        Ok(None) => {
            let _ = writeln!(ctx.io.err, "No state in {}.", store.describe());
            EXIT_OK
        }
        Err(e) => {
            ctx.state_error(&e);
            EXIT_ERROR
        }
    }
}

pub(super) fn state_push(ctx: &mut Ctx<'_, '_>, file: &Path, force: bool, timeout: std::time::Duration) -> i32 {
    let path = ctx.path(file);
    let pushed = match crate::files::read(&path, crate::files::PLAN_LIMIT)
        .map_err(|e| e.0)
        .and_then(|b| kdeploy_state::decode(&b, &path.display().to_string()).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            ctx.error("Cannot read the state to push", &format!("{}: {e}", path.display()));
            return EXIT_ERROR;
        }
    };
    let store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut store = match ctx.lock_only(store, "state push", timeout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = kdeploy_state::push(&mut *store, pushed, force);
    let location = store.describe();
    ctx.release(store);
    match result {
        Ok(serial) => {
            let _ = writeln!(ctx.io.out, "Pushed {} to {location} (serial {serial}).", file.display());
            EXIT_OK
        }
        Err(e) => {
            ctx.error("Cannot push state", &e.to_string());
            EXIT_ERROR
        }
    }
}

pub(super) fn force_unlock(ctx: &mut Ctx<'_, '_>, id: &str, even_if_running: bool) -> i32 {
    let mut store = match state_store(ctx) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let result = if even_if_running {
        let _ = writeln!(
            ctx.io.err,
            "warning: breaking the lock of a run that may still be running; it will refuse its next state write and keep its changes in errored.kdstate"
        );
        store.force_unlock_running(id)
    } else {
        store.force_unlock(id)
    };
    match result {
        Ok(()) => {
            let _ = writeln!(
                ctx.io.out,
                "kdeploy state has been successfully unlocked!\n\nThe state has been unlocked, and kdeploy commands should now be able to obtain a new lock on the remote state."
            );
            EXIT_OK
        }
        Err(e) => {
            ctx.state_error(&e);
            EXIT_ERROR
        }
    }
}

/// A component keeps its kind when it moves: `database.meta` cannot become `broker.meta`, which
/// the next plan would read as a broker holding a database's attributes.
fn same_kind(r: &kdeploy_state::ResourceState, to: &crate::addr::Address) -> Result<(), StateError> {
    if to.kind != r.kind {
        return Err(StateError::InvalidAddress {
            address: to.to_string(),
            reason: format!("{} is a {}, and a {} address cannot hold it; move it to a {} address (e.g. {}.NAME)", r.address, r.kind, to.kind, r.kind, r.kind),
        });
    }
    Ok(())
}
