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
            | CliError::Conflict(_) => CONFLICT,
            CliError::Coord(coord::Error::InvalidArgument { .. }) | CliError::Usage(_) => USAGE,
            CliError::Coord(coord::Error::OutcomeUnknown { .. }) => OUTCOME_UNKNOWN,
            CliError::Coord(_) | CliError::Refused(_) | CliError::Io { .. } => ERROR,
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
