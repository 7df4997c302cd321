//! The `iap-proxy` binary: parse, build, run; print what failed and exit with its status
//! (the README's table: 0 clean, 1 failed while running, 64 settings or credentials).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use iap_proxy::config::{Cli, Command, EXIT_FAILURE, EXIT_USAGE, Env, Settings, TokenSettings};
use iap_proxy::{Drain, StartError, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let env = Env::from_process();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("iap-proxy: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match cli.command {
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "iap-proxy",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Some(Command::Token(args)) => {
            let settings = match TokenSettings::load(&args, &env) {
                Ok(s) => s,
                Err(errors) => return usage(errors),
            };
            telemetry::init(
                iap_proxy::config::LogFormat::Text,
                Some(env.get("RUST_LOG").unwrap_or("warn")),
            );
            match runtime.block_on(print_token(settings, env)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => failed(&err),
            }
        }
        Some(Command::Check(args)) => {
            let settings = match Settings::load(&args.proxy, &env) {
                Ok(s) => s,
                Err(errors) => return usage(errors),
            };
            telemetry::init(
                settings.process.log_format,
                Some(env.get("RUST_LOG").unwrap_or("warn")),
            );
            // Every route is checked; the exit code is 0 only when all of them pass.
            let mut code = 0;
            for route in &settings.routes {
                let report =
                    runtime.block_on(iap_proxy::check::check(route, &settings.process, &env));
                print!("{report}");
                code = code.max(report.exit_code());
            }
            ExitCode::from(code)
        }
        None => {
            let settings = match Settings::load(&cli.proxy, &env) {
                Ok(s) => s,
                Err(errors) => return usage(errors),
            };
            telemetry::init(settings.process.log_format, env.get("RUST_LOG"));
            match runtime.block_on(serve(settings, env)) {
                Ok(Drain::Clean) => ExitCode::SUCCESS,
                Ok(Drain::TimedOut) => ExitCode::from(EXIT_FAILURE),
                Err(err) => failed(&err),
            }
        }
    }
}

fn usage(errors: impl std::fmt::Display) -> ExitCode {
    eprintln!("iap-proxy: {errors}");
    ExitCode::from(EXIT_USAGE)
}

/// Each message already names its cause once; printing the source chain would repeat it.
fn failed(err: &StartError) -> ExitCode {
    eprintln!("iap-proxy: {err}");
    ExitCode::from(err.exit_code())
}

async fn print_token(settings: TokenSettings, env: Env) -> Result<(), StartError> {
    let token = iap_proxy::fetch_token(&settings, &env).await?;
    println!("{}", token.expose());
    Ok(())
}

async fn serve(settings: Settings, env: Env) -> Result<Drain, StartError> {
    // Installed before anything binds: a SIGTERM that arrives just after the "listening"
    // line must start the drain, not kill the process with the default action.
    let shutdown = shutdown_signal();
    // Likewise SIGHUP, whose default action would kill the process.
    let reload = reload_signals();
    let listeners = iap_proxy::Listeners::bind(&settings).await?;
    let drain = iap_proxy::serve_with_reload(listeners, settings, env, shutdown, reload).await?;
    Ok(drain)
}

/// Installs the SIGHUP handler now; the stream yields once per SIGHUP, which makes the
/// proxy read its credentials, CA and client secret files again, as nginx and HAProxy do.
fn reload_signals() -> impl futures_util::Stream<Item = ()> + Unpin + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(err) => {
            tracing::error!(error = %err, "cannot install the SIGHUP handler; files are still reloaded when they change (--reload-interval)");
            None
        }
    };
    Box::pin(futures_util::stream::unfold(hangup, |hangup| async move {
        let mut hangup = hangup?;
        hangup.recv().await?;
        Some(((), Some(hangup)))
    }))
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on the first of them.
/// A second one exits at once (exit code 1: whatever was still open is cut), for the person
/// who pressed Ctrl-C twice and the supervisor that means it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the proxy with SIGKILL");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutdown requested; a second signal exits at once"
        );
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::warn!(
                signal = name,
                "second signal: exiting now, cutting what is still open"
            );
            std::process::exit(1);
        });
    }
}
