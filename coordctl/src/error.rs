//! What can go wrong in a command, and its exit code.

use std::process::ExitCode;

/// A command's failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the coord library.
    #[error("{0}")]
    Coord(#[from] coord::Error),
    /// The arguments are wrong in a way clap cannot tell.
    #[error("{0}")]
    Usage(String),
    /// Something asked for is not there.
    #[error("{0}")]
    NotFound(String),
    /// A change refused (schema, confirmation declined…).
    #[error("{0}")]
    Refused(String),
    /// What the command was about changed meanwhile (a lock changed hands during the question).
    #[error("{0}")]
    Conflict(String),
    /// Not allowed: the access policy says no (`auth check` of a denied action).
    #[error("{0}")]
    Denied(String),
    /// A rollout plan a gate aborted (every instance is back on the base values).
    #[error("{0}")]
    Aborted(String),
    /// A rollout plan someone cancelled while this command followed it.
    #[error("{0}")]
    Cancelled(String),
    /// Stopped by Ctrl-C before what it waited for happened.
    #[error("{0}")]
    Interrupted(String),
    /// Reading a file or the terminal.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Exit code: any other error.
pub const ERROR: u8 = 1;
/// Exit code: bad flags or arguments (clap uses it too).
pub const USAGE: u8 = 2;
/// Exit code: not found.
pub const NOT_FOUND: u8 = 3;
/// Exit code: conflict.
pub const CONFLICT: u8 = 4;
/// Exit code: a write's answer was lost, so it may or may not have been applied.
pub const OUTCOME_UNKNOWN: u8 = 5;
/// Exit code: refused by the access policy (no grant, review required, a proposal one may
/// not approve) or by etcd's permissions.
pub const DENIED: u8 = 6;

impl CliError {
    /// The stable exit code of this failure (see `coordctl --help`).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Coord(coord::Error::NotFound { .. }) | CliError::NotFound(_) => NOT_FOUND,
            CliError::Coord(
                coord::Error::Conflict { .. }
                | coord::Error::GrayConflict { .. }
                | coord::Error::LockHeld { .. }
                | coord::Error::AlreadyRegistered { .. },
            )
            | CliError::Conflict(_)
            | CliError::Cancelled(_) => CONFLICT,
            CliError::Coord(coord::Error::InvalidArgument { .. }) | CliError::Usage(_) => USAGE,
            CliError::Coord(coord::Error::OutcomeUnknown { .. }) => OUTCOME_UNKNOWN,
            // A stale proposal is a conflict (the prefix moved since); the other refusals of
            // a proposal (one's own, no longer open) are the policy's four eyes.
            CliError::Coord(coord::Error::Proposal { changed, .. }) if !changed.is_empty() => {
                CONFLICT
            }
            CliError::Coord(
                coord::Error::PermissionDenied { .. }
                | coord::Error::ReviewRequired { .. }
                | coord::Error::Proposal { .. },
            )
            | CliError::Denied(_) => DENIED,
            CliError::Coord(_)
            | CliError::Refused(_)
            | CliError::Aborted(_)
            | CliError::Interrupted(_)
            | CliError::Io { .. } => ERROR,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_and_conflict_have_their_own_codes() {
        let missing = CliError::Coord(coord::Error::NotFound { key: "/k".into() });
        assert_eq!(missing.exit_code(), ExitCode::from(NOT_FOUND));
        let conflict = CliError::Coord(coord::Error::Conflict {
            key: "/k".into(),
            expected: 1,
            current: 2,
        });
        assert_eq!(conflict.exit_code(), ExitCode::from(CONFLICT));
        assert_eq!(
            CliError::Conflict("moved".into()).exit_code(),
            ExitCode::from(CONFLICT)
        );
        assert_eq!(
            CliError::Refused("no".into()).exit_code(),
            ExitCode::from(ERROR)
        );
    }

    #[test]
    fn refusals_of_the_access_policy_have_their_own_code_and_a_stale_proposal_is_a_conflict() {
        let denied = [
            coord::Error::PermissionDenied {
                key: "/config/pay".into(),
                reason: "policy: denied".into(),
            },
            coord::Error::ReviewRequired {
                prefix: "/config/pay".into(),
                rule: "/config".into(),
            },
            coord::Error::Proposal {
                prefix: "/config/pay".into(),
                id: "0a1b2c3d".into(),
                reason: "`ana` proposed it and cannot approve it".into(),
                changed: Vec::new(),
            },
        ];
        for e in denied {
            assert_eq!(CliError::Coord(e).exit_code(), ExitCode::from(DENIED));
        }
        assert_eq!(
            CliError::Denied("no".into()).exit_code(),
            ExitCode::from(DENIED)
        );
        let stale = CliError::Coord(coord::Error::Proposal {
            prefix: "/config/pay".into(),
            id: "0a1b2c3d".into(),
            reason: "the prefix changed since it was proposed: propose again".into(),
            changed: vec!["latest release 3 (the proposal is based on 2)".into()],
        });
        assert_eq!(stale.exit_code(), ExitCode::from(CONFLICT));
    }

    #[test]
    fn an_aborted_plan_is_an_error_and_a_cancelled_one_a_conflict() {
        assert_eq!(
            CliError::Aborted("a gate failed".into()).exit_code(),
            ExitCode::from(ERROR)
        );
        assert_eq!(
            CliError::Cancelled("cancelled by ana".into()).exit_code(),
            ExitCode::from(CONFLICT)
        );
    }

    #[test]
    fn a_write_of_unknown_outcome_has_its_own_code_and_unreachable_does_not() {
        let unreachable = coord::Error::Unavailable {
            endpoints: "http://127.0.0.1:2379".into(),
            reason: "connection refused".into(),
        };
        let lost = CliError::Coord(coord::Error::OutcomeUnknown {
            operation: "put /k".into(),
            key: "/k".into(),
            source: Box::new(unreachable),
        });
        assert_eq!(lost.exit_code(), ExitCode::from(OUTCOME_UNKNOWN));
        let unreachable = CliError::Coord(coord::Error::Unavailable {
            endpoints: "http://127.0.0.1:2379".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(unreachable.exit_code(), ExitCode::from(ERROR));
    }
}
