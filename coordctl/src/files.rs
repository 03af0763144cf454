//! Files that hold secrets (console tokens, etcd passwords): refused when other users may
//! open them.

use std::path::Path;

use crate::error::{CliError, CliResult};

/// The text of `path`, a file only its owner may open: one the group or others may read or
/// write is refused (anyone with a shell on the machine could read its secrets or, writing
/// it, add their own), naming the file and `chmod 600`.
pub fn read_private(path: &Path) -> CliResult<String> {
    check_private(path)?;
    std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    })
}

/// Refuses a file that the group or others may open.
#[cfg(unix)]
pub fn check_private(path: &Path) -> CliResult {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| CliError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CliError::Usage(format!(
            "{path} is open to other users (mode {:04o}): run `chmod 600 {path}` and start again",
            mode & 0o7777,
            path = path.display(),
        )));
    }
    Ok(())
}

/// Refuses nothing where file modes do not say who may open a file.
#[cfg(not(unix))]
pub fn check_private(_: &Path) -> CliResult {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_file_the_group_or_others_can_open_is_refused_naming_chmod_600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        std::fs::write(&path, "ana = \"pw\"\n").unwrap();
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let refused = read_private(&path).unwrap_err().to_string();
            assert!(refused.contains("chmod 600"), "{refused}");
            assert!(refused.contains(&path.display().to_string()), "{refused}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&path).unwrap(), "ana = \"pw\"\n");
    }
}
