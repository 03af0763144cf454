//! `coordctl`: the operator CLI of coord. Parse, connect, dispatch, map errors to exit codes.

mod audit_cmd;
mod auth_cmd;
mod cli;
mod config_cmd;
mod connect;
mod console;
mod coordination;
mod error;
mod files;
mod output;
mod plans;
mod progress;
mod proposals;
mod releases;
mod schemas;
mod secrets;

use std::process::ExitCode;

use clap::Parser;
use coord::config::ConfigCenter;
use coord::Coord;

use cli::{
    AuditCommand, AuthCommand, Cli, Command, ConfigCommand, ElectionCommand, IdsCommand,
    LocksCommand, PlanCommand, SecretsCommand, ServicesCommand,
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
    let result = match acting_as(&coord, cli.connection.principal.as_deref()) {
        Ok(center) => dispatch(&coord, &center, out, cli.command).await,
        Err(e) => Err(e),
    };
    // Closing releases nothing a command needs; a failure to close does not change the answer.
    let _ = coord.close().await;
    result
}

/// The config center every write goes through: the connection's own principal (its etcd
/// user, or anonymous), or the one `--as` claims on a connection without etcd auth.
fn acting_as(coord: &Coord, claim: Option<&str>) -> CliResult<ConfigCenter> {
    match claim {
        Some(name) => Ok(coord.config().as_principal(name)?),
        None => Ok(coord.config().clone()),
    }
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
                | ConfigCommand::Propose(_)
                | ConfigCommand::Approve { .. }
                // A plan's driver releases its values.
                | ConfigCommand::Plan(PlanCommand::Start { .. } | PlanCommand::Drive { .. })
        ),
        Command::Secrets(command) => !matches!(command, SecretsCommand::Status { .. }),
        Command::Console(_) => true,
        _ => false,
    }
}

async fn dispatch(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    command: Command,
) -> CliResult {
    match command {
        Command::Config(command) => match command {
            ConfigCommand::Get { key } => config_cmd::get(coord, out, &key).await,
            ConfigCommand::List { prefix } => config_cmd::list(coord, out, &prefix).await,
            ConfigCommand::Set(args) => config_cmd::set(coord, config, out, args).await,
            ConfigCommand::Delete {
                key,
                message,
                force,
            } => config_cmd::delete(coord, config, out, &key, message, force).await,
            ConfigCommand::Watch { prefix } => config_cmd::watch(coord, out, &prefix).await,
            ConfigCommand::Describe { prefix } => config_cmd::describe(coord, out, &prefix).await,
            ConfigCommand::History { prefix, limit } => {
                releases::history(coord, out, &prefix, limit).await
            }
            ConfigCommand::Diff { prefix, from, to } => {
                releases::diff(coord, out, &prefix, from, to).await
            }
            ConfigCommand::Release(args) => releases::release(coord, config, out, args).await,
            ConfigCommand::Rollback {
                prefix,
                seq,
                message,
                expect_latest,
            } => releases::rollback(coord, config, out, &prefix, seq, message, expect_latest).await,
            ConfigCommand::Rollout {
                prefix,
                wait,
                timeout,
            } => releases::rollout(coord, out, &prefix, wait, timeout).await,
            ConfigCommand::Gray(command) => releases::gray(coord, config, out, command).await,
            ConfigCommand::Plan(command) => match command {
                PlanCommand::Start { file, no_drive } => {
                    plans::start(coord, config, out, &file, no_drive).await
                }
                PlanCommand::Drive { prefix } => plans::drive(coord, config, out, &prefix).await,
                PlanCommand::Status { prefix, watch } => {
                    plans::status(coord, out, &prefix, watch).await
                }
                PlanCommand::Pause { prefix } => plans::pause(coord, config, out, &prefix).await,
                PlanCommand::Resume { prefix } => plans::resume(coord, config, out, &prefix).await,
                PlanCommand::Cancel { prefix, yes } => {
                    plans::cancel(coord, config, out, &prefix, yes).await
                }
            },
            ConfigCommand::Propose(args) => proposals::propose(coord, config, out, args).await,
            ConfigCommand::Proposals { prefix, id } => {
                proposals::proposals(coord, config, out, &prefix, id.as_deref()).await
            }
            ConfigCommand::Approve {
                prefix,
                id,
                revision,
            } => proposals::approve(coord, config, out, &prefix, &id, revision).await,
            ConfigCommand::Reject { prefix, id, reason } => {
                proposals::reject(coord, config, out, &prefix, &id, &reason).await
            }
        },
        Command::Locks(LocksCommand::Ls { prefix }) => {
            coordination::locks_ls(coord, out, &prefix).await
        }
        Command::Locks(LocksCommand::Release { name, force, yes }) => {
            coordination::locks_release(coord, config, out, &name, force, yes).await
        }
        Command::Ids(IdsCommand::Ls { service }) => {
            coordination::ids_ls(coord, out, &service).await
        }
        Command::Ids(IdsCommand::Release {
            service,
            id,
            force,
            yes,
        }) => coordination::ids_release(coord, config, out, &service, id, force, yes).await,
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
            secrets::seal(coord, config, out, &prefix, message, "rotate").await
        }
        Command::Secrets(SecretsCommand::Encrypt { prefix, message }) => {
            secrets::seal(coord, config, out, &prefix, message, "encrypt").await
        }
        Command::Auth(AuthCommand::Apply {
            file,
            passwords,
            dry_run,
            yes,
        }) => auth_cmd::apply(coord, out, &file, passwords.as_deref(), dry_run, yes).await,
        Command::Auth(AuthCommand::Check {
            principal,
            action,
            prefix,
        }) => auth_cmd::check(coord, out, &principal, &action, &prefix).await,
        Command::Auth(AuthCommand::Show) => auth_cmd::show(coord, out).await,
        Command::Audit(AuditCommand::Ls {
            prefix,
            since,
            principal,
            limit,
        }) => audit_cmd::ls(coord, out, prefix, since, principal, limit).await,
        Command::Audit(AuditCommand::Trim { older_than, keep }) => {
            audit_cmd::trim(coord, config, out, older_than, keep).await
        }
        Command::Health => coordination::health(coord, out).await,
        Command::Console(args) => console::serve(coord, config, args).await,
    }
}
