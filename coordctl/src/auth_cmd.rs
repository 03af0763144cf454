//! `coordctl auth apply|check|show`: the access policy (see `coord::access`).
//!
//! `apply` is a plan, then the plan applied: etcd's users, roles and permissions and the
//! stored policy become what the file says, and applying the same file again finds nothing
//! to change. Passwords (only for principals etcd has no user for yet) come from a file
//! only its owner can open, and are never printed, not even in a parse error.

use std::collections::BTreeMap;
use std::path::Path;

use coord::access::{Action, Policy, PolicyPlan, POLICY_KEY};
use coord::Coord;
use serde_json::json;

use crate::coordination::confirm;
use crate::error::{CliError, CliResult};
use crate::files::read_private;
use crate::output::Output;

/// Reads a policy file and checks it as the library does.
fn read_policy(path: &Path) -> CliResult<Policy> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    Policy::parse_toml(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// Reads a passwords file: TOML, one `name = "password"` a line, mode 0600. A line that does
/// not parse is named by its number only: the parser's message would quote it, password and
/// all.
fn read_passwords(path: &Path) -> CliResult<BTreeMap<String, String>> {
    let text = read_private(path)?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let at = line.map_or_else(String::new, |n| format!(" (line {n})"));
        CliError::Usage(format!(
            "{} is not a passwords file{at}: one `name = \"password\"` per line, each \
             password a quoted string",
            path.display()
        ))
    })
}

/// The plan as `-o json` shows it.
fn plan_json(plan: &PolicyPlan, applied: bool, revision: Option<i64>) -> serde_json::Value {
    json!({
        "changes": plan.lines(),
        "enforced_by_etcd": plan.enforced_by_etcd,
        "applied": applied,
        "revision": revision,
    })
}

/// `auth apply FILE [--passwords FILE] [--dry-run] [--yes]`.
pub async fn apply(
    coord: &Coord,
    out: Output,
    file: &Path,
    passwords: Option<&Path>,
    dry_run: bool,
    yes: bool,
) -> CliResult {
    let policy = read_policy(file)?;
    let passwords = match passwords {
        Some(path) => read_passwords(path)?,
        None => BTreeMap::new(),
    };
    let access = coord.access();
    let plan = access.plan(&policy, &passwords).await?;
    if plan.is_empty() {
        let revision = plan.current.as_ref().map(|(_, rev)| *rev);
        if out.is_json() {
            out.json(&plan_json(&plan, false, revision));
        } else {
            out.line(&format!(
                "no changes: etcd and {POLICY_KEY} already hold {}",
                file.display()
            ));
        }
        return Ok(());
    }
    if !out.is_json() {
        for line in plan.lines() {
            out.line(&line);
        }
        if !plan.enforced_by_etcd {
            out.line("(the embedded store has no users or roles: only the stored policy changes)");
        }
    }
    if dry_run {
        if out.is_json() {
            out.json(&plan_json(&plan, false, None));
        } else {
            out.line("dry run: nothing applied");
        }
        return Ok(());
    }
    if !plan.rbac.missing_passwords.is_empty() {
        return Err(CliError::Usage(format!(
            "etcd has no user for {}: give their passwords with --passwords FILE \
             (`name = \"password\"` per line, chmod 600); nothing applied",
            plan.rbac.missing_passwords.join(", ")
        )));
    }
    if !yes {
        let question = format!("apply these {} change(s)? [y/N] ", plan.lines().len());
        if !confirm(question).await? {
            return Err(CliError::Refused("not confirmed; nothing changed".into()));
        }
    }
    let revision = access.apply(&plan).await?;
    if out.is_json() {
        out.json(&plan_json(&plan, true, Some(revision)));
    } else {
        out.note(&format!(
            "applied {} change(s); {POLICY_KEY} is at revision {revision}",
            plan.lines().len()
        ));
    }
    Ok(())
}

/// `auth check PRINCIPAL ACTION PREFIX`: the decision on stdout; denied is exit 6.
pub async fn check(
    coord: &Coord,
    out: Output,
    principal: &str,
    action: &str,
    prefix: &str,
) -> CliResult {
    let action: Action = action.parse()?;
    let decision = coord.access().check(principal, action, prefix).await?;
    if out.is_json() {
        let doc = serde_json::to_value(&decision)
            .map_err(|e| CliError::Refused(format!("cannot show the decision as JSON: {e}")))?;
        out.json(&doc);
    } else {
        out.line(&decision.to_string());
    }
    if decision.allowed {
        Ok(())
    } else {
        Err(CliError::Denied(format!(
            "denied: {principal} may not {action} {prefix}"
        )))
    }
}

/// `auth show`: the stored policy as TOML (as `auth apply` takes it).
pub async fn show(coord: &Coord, out: Output) -> CliResult {
    let Some((policy, revision)) = coord.access().policy().await? else {
        return Err(CliError::NotFound(format!(
            "no access policy is stored at {POLICY_KEY} (everything is allowed): \
             `coordctl auth apply FILE` stores one"
        )));
    };
    if out.is_json() {
        let doc = serde_json::to_value(&policy)
            .map_err(|e| CliError::Refused(format!("cannot show the policy as JSON: {e}")))?;
        out.json(&json!({ "revision": revision, "policy": doc }));
        return Ok(());
    }
    let text = toml::to_string(&policy)
        .map_err(|e| CliError::Refused(format!("cannot show the policy as TOML: {e}")))?;
    out.line(&format!("# {POLICY_KEY} at revision {revision}"));
    out.line(text.trim_end());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn private(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let path = dir.path().join("passwords.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn a_passwords_file_is_read_and_a_bad_line_is_named_without_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = private(&dir, "ana = \"pw-ana-1\"\n\"bo.b@x\" = \"pw-bo-2\"\n");
        let passwords = read_passwords(&path).unwrap();
        assert_eq!(passwords["ana"], "pw-ana-1");
        assert_eq!(passwords["bo.b@x"], "pw-bo-2");

        let path = private(&dir, "ana = \"pw-ana-1\"\nbo = hunter2-unquoted\n");
        let refused = read_passwords(&path).unwrap_err().to_string();
        assert!(refused.contains("line 2"), "{refused}");
        assert!(!refused.contains("hunter2"), "{refused}");
    }

    #[test]
    fn a_passwords_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = private(&dir, "ana = \"pw-ana-1\"\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = read_passwords(&path).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
    }

    #[test]
    fn the_policy_shown_as_toml_reads_back_as_the_same_policy() {
        let policy = Policy::parse_toml(
            r#"
            [principals.ana]
            roles = ["editor"]
            [principals.console]
            roles = ["editor"]
            delegate = true
            [roles.editor]
            grants = [{ prefix = "/config/checkout", actions = ["propose", "read"] }]
            [review."/config/checkout"]
            expire_after = "3d"
            "#,
        )
        .unwrap();
        let shown = toml::to_string(&policy).unwrap();
        assert_eq!(Policy::parse_toml(&shown).unwrap(), policy, "{shown}");
    }
}
