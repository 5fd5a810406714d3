//! `kdeploy version`, `completion` and `man`: what a user installs kdeploy with.

use super::*;

pub(super) fn version(ctx: &mut Ctx<'_, '_>, json: bool) -> i32 {
    let providers: Vec<&str> = ctx.env.providers.names().collect();
    let text = if json { format!("{}\n", dist::version_json(&providers)) } else { dist::version_text(&providers) };
    let _ = write!(ctx.io.out, "{text}");
    EXIT_OK
}

pub(super) fn completion(ctx: &mut Ctx<'_, '_>, shell: clap_complete::Shell) -> i32 {
    match dist::completion(&mut *ctx.io.out, shell) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            ctx.error("Cannot write the completion script", &e.to_string());
            EXIT_ERROR
        }
    }
}

pub(super) fn man(ctx: &mut Ctx<'_, '_>, out_dir: Option<&Path>) -> i32 {
    let result = match out_dir {
        None => dist::man_page(&mut *ctx.io.out),
        Some(dir) => {
            let dir = ctx.path(dir);
            dist::man_pages(&dir)
                .map(|()| {
                    let _ = writeln!(ctx.io.out, "Wrote kdeploy.1 and one page per command to {}", dir.display());
                })
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
        }
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            ctx.error("Cannot write the man pages", &e.to_string());
            EXIT_ERROR
        }
    }
}
