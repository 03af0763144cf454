//! `coordctl config get|list|set|delete|watch|describe`.

use std::collections::{BTreeMap, BTreeSet};

use coord::config::{ConfigCenter, ConfigEvent, PublishedKind, Release, ReleaseBuilder, REDACTED};
use coord::store::{KeyRange, RangeOptions};
use coord::Coord;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cli::SetArgs;
use crate::error::{CliError, CliResult};
use crate::output::{cell, Output};
use crate::{releases, schemas};

/// `config get KEY`.
pub async fn get(coord: &Coord, out: Output, key: &str) -> CliResult {
    let (kv, _) = coord.store().get(key).await?;
    let kv = kv.ok_or_else(|| coord::Error::NotFound {
        key: key.to_owned(),
    })?;
    let schemas = schemas::all(coord).await?;
    let value = schemas.shown(key, schemas::decode(&kv.value));
    if out.is_json() {
        out.json(&json!({ "key": key, "value": value, "version": kv.mod_revision }));
    } else {
        out.line(&cell(&value));
    }
    Ok(())
}

/// `config list PREFIX`.
pub async fn list(coord: &Coord, out: Output, prefix: &str) -> CliResult {
    let response = coord
        .store()
        .range(&KeyRange::prefix(prefix), RangeOptions::default())
        .await?;
    let schemas = schemas::all(coord).await?;
    let entries: Vec<(String, Value, i64)> = response
        .kvs
        .into_iter()
        .map(|kv| {
            let value = schemas.shown(&kv.key, schemas::decode(&kv.value));
            (kv.key, value, kv.mod_revision)
        })
        .collect();
    if out.is_json() {
        let docs: Vec<Value> = entries
            .iter()
            .map(|(key, value, version)| json!({ "key": key, "value": value, "version": version }))
            .collect();
        out.json(&Value::Array(docs));
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|(key, value, version)| vec![key.clone(), version.to_string(), cell(value)])
            .collect();
        out.table(&["KEY", "VERSION", "VALUE"], &rows);
    }
    Ok(())
}

/// `config set KEY VALUE`: checked against the published schema of the nearest prefix above
/// the key that has one.
///
/// Under a schema a value it accepts is a release of that one key (attributed, in history,
/// guarded like any release), so an operator's change can be rolled back like a deploy's. A
/// value forced past the schema, or a key no schema covers, is a plain write: history shows
/// it as an unattributed change.
pub async fn set(coord: &Coord, config: &ConfigCenter, out: Output, args: SetArgs) -> CliResult {
    let value: Value = if args.string {
        Value::String(args.value.clone())
    } else {
        serde_json::from_str(&args.value).map_err(|e| {
            CliError::Usage(format!(
                "VALUE `{}` is not JSON ({e}); quote a string as '\"text\"' or pass --string",
                args.value
            ))
        })?
    };
    let schema = schemas::for_key(coord, &args.key).await?;
    let release_under = match &schema {
        Some((schema, relative)) => {
            let accepted = match schema.check(relative, &value) {
                Ok(()) => true,
                Err(refused) if args.force => {
                    eprintln!("warning: --force: writing a value the schema refuses: {refused}");
                    false
                }
                Err(refused) => {
                    return Err(CliError::Refused(format!(
                        "refused by the schema published for {} ({}): {refused}; --force writes it anyway",
                        schema.prefix, schema.type_name
                    )))
                }
            };
            accepted.then(|| (schema.prefix.clone(), relative.clone()))
        }
        None => {
            eprintln!(
                "warning: no schema published for {} or a prefix above it; the value is not checked",
                args.key
            );
            None
        }
    };
    let (old, _) = coord.store().get(&args.key).await?;
    let old_sealed = old
        .as_ref()
        .is_some_and(|kv| coord::keyring::is_sealed(&kv.value));
    let secret = old_sealed
        || schema
            .as_ref()
            .is_some_and(|(schema, relative)| schema.is_secret(relative));
    // A plain `set` writes what it is given: a secret goes through a release, which seals it.
    if secret && release_under.is_none() {
        return Err(CliError::Refused(format!(
            "{} is a secret: it is written only by a release under its published schema, which \
             seals it (a value the schema refuses is not written, even with --force)",
            args.key
        )));
    }
    let old = old.map(|kv| schemas::decode(&kv.value));
    let schemas = schemas::all(coord).await?;
    let old_shown = old
        .clone()
        .map_or(Value::Null, |v| schemas.shown(&args.key, v));
    let new_shown = schemas.shown(&args.key, value.clone());
    let change = format!(
        "{}: {} -> {}",
        args.key,
        old.as_ref()
            .map_or_else(|| "(absent)".to_owned(), |_| cell(&old_shown)),
        cell(&new_shown)
    );
    if args.dry_run {
        if out.is_json() {
            out.json(
                &json!({ "key": args.key, "old": old_shown, "new": new_shown, "written": false }),
            );
        } else {
            out.line(&format!("{change} (dry run: nothing written)"));
        }
        return Ok(());
    }
    let (version, release) = match release_under {
        Some((prefix, relative)) => {
            let values = BTreeMap::from([(relative.clone(), value)]);
            let builder = config.release_raw(&prefix, values);
            let release =
                release_one_key(coord, builder, &relative, args.expect_version, args.message)
                    .await?;
            (release.revision, Some((prefix, release.seq)))
        }
        None => {
            if args.message.is_some() {
                eprintln!("warning: --message is kept only for a release (a key under a published schema)");
            }
            let version = match args.expect_version {
                Some(expected) => config.compare_and_set(&args.key, &value, expected).await?,
                None => config.set(&args.key, &value).await?,
            };
            (version, None)
        }
    };
    if out.is_json() {
        let (prefix, seq) = release.unzip();
        out.json(&json!({
            "key": args.key, "old": old_shown, "new": new_shown, "written": true,
            "version": version, "prefix": prefix, "release": seq,
        }));
    } else {
        match release {
            Some((prefix, seq)) => out.note(&format!(
                "{change} (version {version}, {prefix} release {seq})"
            )),
            None => out.note(&format!("{change} (version {version})")),
        }
    }
    Ok(())
}

/// Commits a release of one key made by `set` or `delete`: attributed, with `message` or
/// a default naming the key, guarded by the key's expected version if given.
async fn release_one_key(
    coord: &Coord,
    builder: ReleaseBuilder,
    relative: &str,
    expect_version: Option<i64>,
    message: Option<String>,
) -> CliResult<Release> {
    let mut builder = builder
        .author(releases::author(coord))
        .message(message.unwrap_or_else(|| format!("coordctl: {relative}")));
    if let Some(expected) = expect_version {
        builder = builder.expect_version(relative, expected);
    }
    Ok(builder.commit().await?)
}

/// `config delete KEY`: under a published schema, a release that removes the key; a key the
/// schema requires only with `--force`.
pub async fn delete(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    key: &str,
    message: Option<String>,
    force: bool,
) -> CliResult {
    let not_found = || coord::Error::NotFound {
        key: key.to_owned(),
    };
    let release = match schemas::for_key(coord, key).await? {
        Some((schema, relative)) => {
            let (kv, _) = coord.store().get(key).await?;
            let kv = kv.ok_or_else(not_found)?;
            if schema.field(&relative).is_some_and(|f| f.required) {
                if !force {
                    return Err(CliError::Refused(format!(
                        "{key} is required by the schema published for {} ({}): without it every \
                         instance keeps its last good value and reports the error; --force deletes it anyway",
                        schema.prefix, schema.type_name
                    )));
                }
                eprintln!("warning: --force: deleting a key the schema requires");
            }
            let builder = config.release_raw_with(
                &schema.prefix,
                BTreeMap::new(),
                BTreeSet::from([relative.clone()]),
            );
            // Guarded by the version read: a key re-written meanwhile is a conflict, not lost.
            let release =
                release_one_key(coord, builder, &relative, Some(kv.mod_revision), message).await?;
            Some((schema.prefix, release.seq))
        }
        None => {
            if !config.delete(key).await? {
                return Err(not_found().into());
            }
            None
        }
    };
    if out.is_json() {
        let (prefix, seq) = release.unzip();
        out.json(&json!({ "key": key, "deleted": true, "prefix": prefix, "release": seq }));
    } else {
        match release {
            Some((prefix, seq)) => out.note(&format!("deleted {key} ({prefix} release {seq})")),
            None => out.note(&format!("deleted {key}")),
        }
    }
    Ok(())
}

/// `config watch PREFIX`: one line per change until Ctrl-C.
pub async fn watch(coord: &Coord, out: Output, prefix: &str) -> CliResult {
    let schemas = schemas::all(coord).await?;
    let mut watcher = coord.config().watch_prefix::<Value>(prefix).await?;
    if !out.is_json() {
        eprintln!("watching {prefix} (Ctrl-C to stop)");
    }
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = watcher.next() => event,
        };
        let Some(event) = event else {
            return Ok(());
        };
        match event {
            Ok(ConfigEvent::Put {
                key,
                value,
                revision,
            }) => {
                let value = schemas.shown(&key, value);
                if out.is_json() {
                    out.json_line(
                        &json!({ "type": "put", "key": key, "value": value, "revision": revision }),
                    );
                } else {
                    out.line(&format!("{revision}  PUT     {key}  {}", cell(&value)));
                }
            }
            Ok(ConfigEvent::Delete { key, revision }) => {
                if out.is_json() {
                    out.json_line(&json!({ "type": "delete", "key": key, "revision": revision }));
                } else {
                    out.line(&format!("{revision}  DELETE  {key}"));
                }
            }
            Err(coord::Error::Closed) => return Ok(()),
            // A sealed value (this command holds no key ring): written, and never shown.
            Err(coord::Error::Secret { key, .. }) => {
                if out.is_json() {
                    out.json_line(&json!({ "type": "put", "key": key, "value": REDACTED }));
                } else {
                    out.line(&format!("-  PUT     {key}  {REDACTED}"));
                }
            }
            Err(e) => {
                if out.is_json() {
                    out.json_line(&json!({ "type": "error", "error": e.to_string() }));
                } else {
                    eprintln!("warning: {e}");
                }
            }
        }
    }
}

/// `config describe PREFIX`.
pub async fn describe(coord: &Coord, out: Output, prefix: &str) -> CliResult {
    let schema = coord
        .config()
        .schema(prefix)
        .await?
        .ok_or_else(|| CliError::NotFound(format!("no schema published for {prefix}")))?;
    let schemas = schemas::all(coord).await?;
    if out.is_json() {
        // The library leaves a secret field's default out; a default of a map of secrets is
        // a value too.
        let mut shown = schema.clone();
        for field in &mut shown.fields {
            if field.default.is_some() && schemas.holds_secret(&schema, field) {
                field.default = Some(Value::String(REDACTED.to_owned()));
            }
        }
        let doc = serde_json::to_value(&shown).map_err(|e| {
            CliError::Refused(format!("cannot show the schema of {prefix} as JSON: {e}"))
        })?;
        out.json(&doc);
        return Ok(());
    }
    out.line(&format!("{} at {}", schema.type_name, schema.prefix));
    let rows: Vec<Vec<String>> = schema
        .fields
        .iter()
        .map(|field| {
            let kind = match &field.kind {
                PublishedKind::Map { .. } => "map",
                PublishedKind::NestedMap { .. } => "nested map",
                _ => "value",
            };
            let secret = schemas.holds_secret(&schema, field);
            let default = match &field.default {
                Some(_) if secret => REDACTED.to_owned(),
                Some(default) => cell(default),
                None => "-".to_owned(),
            };
            vec![
                field.key.clone(),
                field.type_name.clone(),
                kind.to_owned(),
                if field.required { "yes" } else { "no" }.to_owned(),
                default,
                if secret { "yes" } else { "no" }.to_owned(),
                field.doc.clone(),
            ]
        })
        .collect();
    out.table(
        &[
            "KEY", "TYPE", "KIND", "REQUIRED", "DEFAULT", "SECRET", "DOC",
        ],
        &rows,
    );
    Ok(())
}
