//! The `kdeploy` binary: parse arguments, run, map the result to an exit code.

use std::io::IsTerminal;
use std::sync::Arc;

use kdeploy::cli::{self, Env, Io};
use kdeploy::providers::Providers;

/// See the `mimalloc` entry in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // One process-wide TLS crypto provider: kube links rustls with ring, the AWS SDK with
    // aws-lc-rs; without an explicit choice the first TLS connection panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        let interrupt = Arc::new(tokio::sync::Notify::new());
        let notify = interrupt.clone();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                notify.notify_waiters();
                notify.notify_one();
            }
        });
        let env = Env {
            providers: Providers::builtin(),
            // Every variable the engine reads (KDEPLOY_VAR_*, KDEPLOY_STATE_KEY[_FILE], NO_COLOR):
            // one list, kdeploy::env, which a test checks against README's table.
            vars: kdeploy::env::engine_vars(std::env::vars()),
            cwd: std::env::current_dir().unwrap_or_else(|_| ".".into()),
            interrupt,
        };
        let stdin = std::io::stdin();
        let stdin_tty = stdin.is_terminal();
        let stdout_tty = std::io::stdout().is_terminal();
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        let mut input = stdin.lock();
        let mut io = Io { out: &mut out, err: &mut err, input: &mut input, stdin_tty, stdout_tty };
        cli::run(std::env::args().collect(), &mut io, &env).await
    });
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
