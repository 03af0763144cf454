//! `coordctl secrets …`: which key each secret of a prefix is sealed under, and the release
//! that seals them all under the newest key (see `coord::keyring`). No plaintext is printed:
//! `status` reads only key ids, and the release is shown as every release is, secrets
//! redacted.

use serde_json::json;

use coord::config::ConfigCenter;
use coord::Coord;

use crate::error::{CliError, CliResult};
use crate::output::Output;
use crate::releases::commit;

/// `secrets status PREFIX`.
pub async fn status(coord: &Coord, out: Output, prefix: &str) -> CliResult {
    let secrets = coord.config().stored_secrets(prefix).await?;
    let old_records = coord.config().plain_secrets_in_history(prefix).await?;
    if out.is_json() {
        let rows: Vec<_> = secrets
            .iter()
            .map(|s| json!({ "key": s.key, "key_id": s.key_id, "sealed": s.key_id.is_some() }))
            .collect();
        out.json(&json!({
            "prefix": prefix, "secrets": rows, "plain_in_releases": old_records,
        }));
        return Ok(());
    }
    warn_of_old_records(&out, prefix, &old_records);
    if secrets.is_empty() {
        out.note(&format!("no secret is stored under {prefix}"));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            vec![
                s.key.clone(),
                s.key_id.clone().unwrap_or_else(|| "plain".to_owned()),
            ]
        })
        .collect();
    out.table(&["KEY", "SEALED UNDER"], &rows);
    let plain = secrets.iter().filter(|s| s.key_id.is_none()).count();
    if plain > 0 {
        out.note(&format!(
            "{plain} secret(s) stored plain: `coordctl --secret-keys FILE secrets encrypt {prefix}` seals them"
        ));
    }
    Ok(())
}

/// `secrets rotate|encrypt PREFIX`: one release sealing every secret of the prefix under the
/// newest key (`verb` names the command in what is printed).
pub async fn seal(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    prefix: &str,
    message: Option<String>,
    verb: &str,
) -> CliResult {
    let builder = match config.seal_secrets(prefix).await {
        Ok(builder) => builder,
        Err(coord::Error::InvalidArgument { field, .. }) if field == "secret_keys" => {
            return Err(CliError::Usage(format!(
                "secrets {verb} needs the keys to seal with: --secret-keys FILE or COORD_SECRET_KEYS_FILE"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(builder) = builder else {
        if out.is_json() {
            out.json(&json!({ "prefix": prefix, "written": false }));
        } else {
            out.line(&format!(
                "every secret under {prefix} is sealed under the newest key: nothing to do"
            ));
        }
        return Ok(());
    };
    let message = message.or_else(|| Some(format!("secrets {verb}: seal under the newest key")));
    commit(coord, out, prefix, builder, message, None).await?;
    let old_records = coord.config().plain_secrets_in_history(prefix).await?;
    warn_of_old_records(&out, prefix, &old_records);
    Ok(())
}

/// Says which release records still hold a secret plain, and what sealing does not undo.
fn warn_of_old_records(out: &Output, prefix: &str, seqs: &[u64]) {
    if seqs.is_empty() {
        return;
    }
    out.note(&format!(
        "{} release record(s) of {prefix} made before its secrets were sealed hold them plain \
         (releases {seqs:?}), as etcd's older revisions do until compacted: anyone who can read \
         etcd or a backup of it can read those values. Change the secrets themselves (new \
         passwords, new tokens) after sealing, and compact etcd's history.",
        seqs.len()
    ));
}
