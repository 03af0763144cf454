//! `coordctl`: the operator CLI of coord. Parse, connect, dispatch, map errors to exit codes.

mod cli;
mod config_cmd;
mod connect;
mod console;
mod coordination;
mod error;
mod output;
mod progress;
mod releases;
mod schemas;
mod secrets;

use std::process::ExitCode;

use clap::Parser;
use coord::Coord;

use cli::{
    Cli, Command, ConfigCommand, ElectionCommand, IdsCommand, LocksCommand, SecretsCommand,
    ServicesCommand,
};
use error::CliResult;

/// Logs to stderr, filtered by `RUST_LOG`. Without it: warnings for a command, and the
/// console's requests and failures too (its error answers are generic on purpose; the
/// details are here, with the operator).
fn logging(cli: &Cli) {
    let default = match cli.command {
        Command::Console(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
use output::Output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("coordctl: cannot start the runtime: {e}");
            return ExitCode::from(error::ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coordctl: {e}");
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let out = Output::new(cli.output);
    let mut config = connect::client_config(&cli.connection)?;
    // Only what writes secrets holds the keys: a command that only reads shows a secret as
    // `<redacted>` whether it could open it or not, so it has no use for them.
    if !writes_secrets(&cli.command) {
        config.secret_keys = None;
    }
    let coord = connect::connect(config).await?;
    let result = dispatch(&coord, out, cli.command).await;
    // Closing releases nothing a command needs; a failure to close does not change the answer.
    let _ = coord.close().await;
    result
}

/// Whether `command` may write a secret (and so needs the key ring to seal it).
fn writes_secrets(command: &Command) -> bool {
    match command {
        Command::Config(command) => matches!(
            command,
            ConfigCommand::Set(_)
                | ConfigCommand::Delete { .. }
                | ConfigCommand::Release(_)
                | ConfigCommand::Rollback { .. }
                | ConfigCommand::Gray(_)
        ),
        Command::Secrets(command) => !matches!(command, SecretsCommand::Status { .. }),
        Command::Console(_) => true,
        _ => false,
    }
}

async fn dispatch(coord: &Coord, out: Output, command: Command) -> CliResult {
    match command {
        Command::Config(command) => match command {
            ConfigCommand::Get { key } => config_cmd::get(coord, out, &key).await,
            ConfigCommand::List { prefix } => config_cmd::list(coord, out, &prefix).await,
            ConfigCommand::Set(args) => config_cmd::set(coord, out, args).await,
            ConfigCommand::Delete {
                key,
                message,
                force,
            } => config_cmd::delete(coord, out, &key, message, force).await,
            ConfigCommand::Watch { prefix } => config_cmd::watch(coord, out, &prefix).await,
            ConfigCommand::Describe { prefix } => config_cmd::describe(coord, out, &prefix).await,
            ConfigCommand::History { prefix, limit } => {
                releases::history(coord, out, &prefix, limit).await
            }
            ConfigCommand::Diff { prefix, from, to } => {
                releases::diff(coord, out, &prefix, from, to).await
            }
            ConfigCommand::Release(args) => releases::release(coord, out, args).await,
            ConfigCommand::Rollback {
                prefix,
                seq,
                message,
                expect_latest,
            } => releases::rollback(coord, out, &prefix, seq, message, expect_latest).await,
            ConfigCommand::Rollout {
                prefix,
                wait,
                timeout,
            } => releases::rollout(coord, out, &prefix, wait, timeout).await,
            ConfigCommand::Gray(command) => releases::gray(coord, out, command).await,
        },
        Command::Locks(LocksCommand::Ls { prefix }) => {
            coordination::locks_ls(coord, out, &prefix).await
        }
        Command::Locks(LocksCommand::Release { name, force, yes }) => {
            coordination::locks_release(coord, out, &name, force, yes).await
        }
        Command::Ids(IdsCommand::Ls { service }) => {
            coordination::ids_ls(coord, out, &service).await
        }
        Command::Services(ServicesCommand::Ls { name }) => {
            coordination::services_ls(coord, out, name.as_deref()).await
        }
        Command::Services(ServicesCommand::Watch { name }) => {
            coordination::services_watch(coord, out, &name).await
        }
        Command::Election(ElectionCommand::Leader { name }) => {
            coordination::leader(coord, out, &name).await
        }
        Command::Secrets(SecretsCommand::Status { prefix }) => {
            secrets::status(coord, out, &prefix).await
        }
        Command::Secrets(SecretsCommand::Rotate { prefix, message }) => {
            secrets::seal(coord, out, &prefix, message, "rotate").await
        }
        Command::Secrets(SecretsCommand::Encrypt { prefix, message }) => {
            secrets::seal(coord, out, &prefix, message, "encrypt").await
        }
        Command::Health => coordination::health(coord, out).await,
        Command::Console(args) => console::serve(coord, args).await,
    }
}
