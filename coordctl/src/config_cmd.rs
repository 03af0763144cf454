//! `coordctl config get|list|set|delete|watch|describe`.

use coord::config::{ConfigEvent, PublishedKind};
use coord::store::{KeyRange, RangeOptions};
use coord::Coord;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cli::SetArgs;
use crate::error::{CliError, CliResult};
use crate::output::{cell, Output, REDACTED};
use crate::schemas;

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
pub async fn set(coord: &Coord, out: Output, args: SetArgs) -> CliResult {
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
    let secret = match &schema {
        Some((schema, relative)) => {
            if let Err(refused) = schema.check(relative, &value) {
                if !args.force {
                    return Err(CliError::Refused(format!(
                        "refused by the schema published for {} ({}): {refused}; --force writes it anyway",
                        schema.prefix, schema.type_name
                    )));
                }
                eprintln!("warning: --force: writing a value the schema refuses: {refused}");
            }
            schema.field(relative).is_some_and(|f| f.secret)
        }
        None => {
            eprintln!(
                "warning: no schema published for {} or a prefix above it; the value is not checked",
                args.key
            );
            false
        }
    };
    let (old, _) = coord.store().get(&args.key).await?;
    let old = old.map(|kv| schemas::decode(&kv.value));
    let shown = |v: &Value| {
        if secret {
            Value::String(REDACTED.to_owned())
        } else {
            v.clone()
        }
    };
    let old_shown = old.as_ref().map(shown).unwrap_or(Value::Null);
    let new_shown = shown(&value);
    if args.dry_run {
        if out.is_json() {
            out.json(
                &json!({ "key": args.key, "old": old_shown, "new": new_shown, "written": false }),
            );
        } else {
            out.line(&format!(
                "{}: {} -> {} (dry run: nothing written)",
                args.key,
                old.as_ref()
                    .map_or_else(|| "(absent)".to_owned(), |_| cell(&old_shown)),
                cell(&new_shown)
            ));
        }
        return Ok(());
    }
    let version = match args.expect_version {
        Some(expected) => {
            coord
                .config()
                .compare_and_set(&args.key, &value, expected)
                .await?
        }
        None => coord.config().set(&args.key, &value).await?,
    };
    if out.is_json() {
        out.json(&json!({ "key": args.key, "old": old_shown, "new": new_shown, "written": true, "version": version }));
    } else {
        out.note(&format!(
            "{}: {} -> {} (version {version})",
            args.key,
            old.as_ref()
                .map_or_else(|| "(absent)".to_owned(), |_| cell(&old_shown)),
            cell(&new_shown)
        ));
    }
    Ok(())
}

/// `config delete KEY`.
pub async fn delete(coord: &Coord, out: Output, key: &str) -> CliResult {
    if !coord.config().delete(key).await? {
        return Err(coord::Error::NotFound {
            key: key.to_owned(),
        }
        .into());
    }
    if out.is_json() {
        out.json(&json!({ "key": key, "deleted": true }));
    } else {
        out.note(&format!("deleted {key}"));
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
    if out.is_json() {
        let doc = serde_json::to_value(&schema).map_err(|e| {
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
            let default = if field.secret {
                REDACTED.to_owned()
            } else {
                field.default.as_ref().map_or_else(|| "-".to_owned(), cell)
            };
            vec![
                field.key.clone(),
                field.type_name.clone(),
                kind.to_owned(),
                if field.required { "yes" } else { "no" }.to_owned(),
                default,
                if field.secret { "yes" } else { "no" }.to_owned(),
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
