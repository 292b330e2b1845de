//! The `relink` command: the operator (`run`), its CRDs (`crd`), the local sandbox provider, the
//! demo, and the tools for people at a terminal (`status`, `check`, `refresh`, `reauth`,
//! `dashboard`). One file (or folder) per subcommand; `run` owns the typed operator
//! configuration that `demo` also builds.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod dashboard;
mod demo;
#[cfg(test)]
mod fixtures;
mod lease;
mod preflight;
mod reference;
mod run;
mod sandbox;
pub(crate) mod status;

/// relink keeps the OAuth token connections of social-media and email channels healthy.
#[derive(Parser)]
#[command(name = "relink", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the current kube context (or in-cluster config).
    Run(Box<run::OperatorConfig>),
    /// Print every CustomResourceDefinition as YAML (what `crds/` holds).
    Crd,
    /// Print the API reference as Markdown (what `docs/api.md` holds).
    #[command(hide = true)]
    ApiReference,
    /// Serve the sandbox OAuth provider used by tests and the demo.
    Sandbox(sandbox::SandboxArgs),
    /// A local tour: sandbox provider, operator and four channel connections in namespace relink-demo.
    Demo(demo::DemoArgs),
    /// One line per channel connection, or one in detail with NAME (exit 1 unless all Ready; also `kubectl relink status`).
    Status(status::StatusArgs),
    /// Ask for a check of one connection now and wait for the result (also `kubectl relink check`).
    Check(status::CheckArgs),
    /// Refresh one connection's token now, even far from expiry, and wait for the verdict (also `kubectl relink refresh`).
    Refresh(status::CheckArgs),
    /// Ask for a re-authorization link for one connection, even a healthy one, and print it (also `kubectl relink reauth`).
    Reauth(status::ReauthArgs),
    /// Serve a live page of every channel connection and group on 127.0.0.1, with your own
    /// kubeconfig and RBAC (also `kubectl relink dashboard`).
    Dashboard(dashboard::DashboardArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => crd(),
        Command::ApiReference => {
            print!("{}", reference::markdown());
            ExitCode::SUCCESS
        }
        Command::Run(config) => {
            one_malloc_arena();
            runtime_with(Some(config.worker_threads.into())).block_on(run::main(*config))
        }
        Command::Sandbox(args) => runtime().block_on(sandbox::main(args)),
        Command::Demo(args) => demo::main(args),
        Command::Status(args) => status::main(args),
        Command::Check(args) => status::check(args),
        Command::Reauth(args) => status::reauth(args),
        Command::Refresh(args) => status::refresh(args),
        Command::Dashboard(args) => dashboard::main(args),
    }
}

/// One malloc arena for the operator's threads, unless `MALLOC_ARENA_MAX` says otherwise. With
/// two worker threads glibc gave each busy thread an arena of its own whose peaks added up:
/// 5-7 MiB more at 1,000 connections, 12 MiB more with 100,000 Secrets listed
/// (docs/performance.md). The default is one worker thread now, but the blocking pool's threads
/// and a raised `--worker-threads` would still get arenas of their own. Each thread keeps its
/// own small cache in front of the arena, so its lock is seldom contended.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before the runtime starts any thread; it only sets a parameter of
        // the C allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// `relink crd`.
fn crd() -> ExitCode {
    match relink::api::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot render the CRDs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    runtime_with(None)
}

/// A runtime with `workers` threads for tasks (tokio's default: one per core), blocking work
/// on a pool of its own.
fn runtime_with(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_directives(level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The log filter for `--log-level`. Below `debug`, kube's per-reconcile span is off: relink's
/// own lines name the connection already, and the span cost every check the formatting of
/// its fields and a longer line.
fn default_directives(level: &str) -> String {
    match level {
        "debug" | "trace" => level.to_owned(),
        _ => format!("{level},kube_runtime::controller=warn"),
    }
}

/// Parses a duration flag (`10s`, `5m`, `24h`).
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    relink::api::parse_duration(s).map_err(|e| e.to_string())
}
