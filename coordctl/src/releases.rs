//! `coordctl config history|diff|release|rollback|rollout|gray`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use coord::config::{
    Change, ConfigCenter, KeyDiff, Release, ReleaseBuilder, ReleaseKind, Selector,
};
use coord::{Coord, InstanceHealth, InstanceStatus};
use serde_json::{json, Value};

use crate::cli::{GrayCommand, ReleaseArgs, SelectorArgs};
use crate::error::{CliError, CliResult};
use crate::output::{cell, time, Output};
use crate::progress::Spinner;
use crate::schemas::{self, Under};

/// Who a release made here is by: `$USER (coordctl)`, else `coordctl ({instance})`.
pub(crate) fn author(coord: &Coord) -> String {
    match std::env::var("USER") {
        Ok(user) if !user.is_empty() => format!("{user} (coordctl)"),
        _ => format!("coordctl ({})", coord.instance().name),
    }
}

pub(crate) fn kind_text(kind: &ReleaseKind) -> String {
    match kind {
        ReleaseKind::Release => "release".into(),
        ReleaseKind::Publish => "publish".into(),
        ReleaseKind::Rollback { to } => format!("rollback to {to}"),
        ReleaseKind::External => "external".into(),
        ReleaseKind::Unrecorded => "unrecorded (outside releases)".into(),
        ReleaseKind::Gray { selector } => format!("gray {}", selector_text(selector)),
        ReleaseKind::Promote { gray } => format!("promote {gray}"),
        ReleaseKind::Abort { gray } => format!("abort {gray}"),
        // "widen 12 → 50%": gray release 12 now reaches 50% (a rollout plan's next step).
        ReleaseKind::Widen { gray, selector } => {
            format!("widen {gray} → {}", coord::rollout::describe(selector))
        }
        _ => "other".into(),
    }
}

pub(crate) fn selector_text(selector: &Selector) -> String {
    let mut parts: Vec<String> = selector
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(p) = selector.percent {
        parts.push(format!("{p}%"));
    }
    parts.extend(selector.instances.iter().cloned());
    format!("[{}]", parts.join(" "))
}

/// A release as JSON, its values (and gray values) shown as `under` allows.
pub(crate) fn release_json(release: &Release, under: Under<'_>) -> Value {
    let mut doc = json!({
        "seq": release.seq,
        "revision": release.revision,
        "kind": kind_text(&release.kind),
        "author": release.author,
        "message": release.message,
        "time": time(release.time),
        "principal": release.principal,
        "proposal": release.proposal,
        "approved_by": release.approved_by,
        "values": under.values(&release.values),
        "changes": release
            .changes
            .iter()
            .map(|diff| {
                let (key, change, old, new) = diff_row(diff.clone(), under);
                json!({"key": key, "change": change, "old": old, "new": new})
            })
            .collect::<Vec<_>>(),
    });
    if !release.gray_values.is_empty() || !release.gray_removes.is_empty() {
        doc["gray_values"] = json!(under.values(&release.gray_values));
        doc["gray_removes"] = json!(release.gray_removes);
    }
    doc
}

/// One key of a library diff as (key, change, old, new), the values shown as `under` allows.
pub(crate) fn diff_row(diff: KeyDiff, under: Under<'_>) -> (String, &'static str, Value, Value) {
    let (change, old, new) = match diff.change {
        Change::Added { new } => ("added", Value::Null, new),
        Change::Changed { old, new } => ("changed", old, new),
        Change::Removed { old } => ("removed", old, Value::Null),
        // What it held before was compacted away before it was recorded.
        Change::Set { new } => ("set", Value::Null, new),
        _ => ("other", Value::Null, Value::Null),
    };
    let shown = |value: Value| {
        if value.is_null() {
            value
        } else {
            under.shown(&diff.key, value)
        }
    };
    let (old, new) = (shown(old), shown(new));
    (diff.key, change, old, new)
}

pub(crate) async fn print_release(
    coord: &Coord,
    out: Output,
    prefix: &str,
    release: &Release,
) -> CliResult {
    if out.is_json() {
        let schemas = schemas::all(coord).await?;
        out.json(&release_json(release, schemas.under(prefix)));
    } else {
        let approval = match (&release.proposal, &release.approved_by) {
            (Some(id), Some(by)) => format!(", proposal {id} approved by {by}"),
            _ => String::new(),
        };
        out.note(&format!(
            "{prefix}: release {} ({}) at revision {}{approval}",
            release.seq,
            kind_text(&release.kind),
            release.revision
        ));
    }
    Ok(())
}

/// Who a release was checked as: `ana`, and for an approved proposal `ana, approved by bo`;
/// `-` for a release made before access policies or outside releases.
fn principal_text(release: &Release) -> String {
    match (&release.principal, &release.approved_by) {
        (Some(principal), Some(by)) => format!("{principal}, approved by {by}"),
        (Some(principal), None) => principal.clone(),
        (None, _) => "-".into(),
    }
}

/// `config history PREFIX`.
pub async fn history(coord: &Coord, out: Output, prefix: &str, limit: usize) -> CliResult {
    let releases = coord.config().history(prefix, limit).await?;
    if out.is_json() {
        let schemas = schemas::all(coord).await?;
        let under = schemas.under(prefix);
        let docs = releases.iter().map(|r| release_json(r, under)).collect();
        out.json(&Value::Array(docs));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                kind_text(&r.kind),
                r.revision.to_string(),
                time(r.time),
                r.author.clone().unwrap_or_else(|| "-".into()),
                principal_text(r),
                r.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.table(
        &[
            "SEQ",
            "KIND",
            "REVISION",
            "TIME",
            "AUTHOR",
            "PRINCIPAL",
            "MESSAGE",
        ],
        &rows,
    );
    Ok(())
}

/// `config diff PREFIX A B`.
pub async fn diff(coord: &Coord, out: Output, prefix: &str, from: u64, to: u64) -> CliResult {
    let diffs = coord.config().diff(prefix, from, to).await?;
    let schemas = schemas::all(coord).await?;
    let under = schemas.under(prefix);
    if out.is_json() {
        out.json(&Value::Array(diff_json(diffs, under)));
    } else {
        print_diff(out, diffs, under);
    }
    Ok(())
}

/// A library diff as JSON: one `{key, change, old, new}` per key, values shown as `under`
/// allows.
pub(crate) fn diff_json(diffs: Vec<KeyDiff>, under: Under<'_>) -> Vec<Value> {
    diffs
        .into_iter()
        .map(|d| {
            let (key, change, old, new) = diff_row(d, under);
            json!({ "key": key, "change": change, "old": old, "new": new })
        })
        .collect()
}

/// A library diff as a table (KEY, CHANGE, OLD, NEW), values shown as `under` allows.
pub(crate) fn print_diff(out: Output, diffs: Vec<KeyDiff>, under: Under<'_>) {
    let rows: Vec<(String, &str, Value, Value)> =
        diffs.into_iter().map(|d| diff_row(d, under)).collect();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(key, change, old, new)| {
            let show = |v: &Value| {
                if v.is_null() && *change != "changed" {
                    "-".to_owned()
                } else {
                    cell(v)
                }
            };
            vec![key.clone(), change.to_string(), show(old), show(new)]
        })
        .collect();
    out.table(&["KEY", "CHANGE", "OLD", "NEW"], &table);
}

fn read_values(path: &Path) -> CliResult<BTreeMap<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a JSON object of relative key → value: {e}",
            path.display()
        ))
    })
}

pub(crate) async fn commit(
    coord: &Coord,
    out: Output,
    prefix: &str,
    builder: ReleaseBuilder,
    message: Option<String>,
    expect_latest: Option<u64>,
) -> CliResult {
    let mut builder = builder.author(author(coord));
    if let Some(message) = message {
        builder = builder.message(message);
    }
    if let Some(seq) = expect_latest {
        builder = builder.expect_latest(seq);
    }
    let release = builder.commit().await?;
    print_release(coord, out, prefix, &release).await
}

/// `config release PREFIX --file values.json`.
pub async fn release(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    args: ReleaseArgs,
) -> CliResult {
    let values = read_values(&args.file)?;
    let remove: BTreeSet<String> = args.remove.into_iter().collect();
    let builder = config.release_raw_with(&args.prefix, values, remove);
    commit(
        coord,
        out,
        &args.prefix,
        builder,
        args.message,
        args.expect_latest,
    )
    .await
}

/// `config rollback PREFIX SEQ`.
pub async fn rollback(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    prefix: &str,
    seq: u64,
    message: Option<String>,
    expect_latest: Option<u64>,
) -> CliResult {
    let builder = config.rollback(prefix, seq);
    commit(coord, out, prefix, builder, message, expect_latest).await
}

/// The selector the flags describe; `None` if they pick nothing.
pub(crate) fn selector(args: SelectorArgs) -> Option<Selector> {
    if args.is_empty() {
        return None;
    }
    let mut selector = Selector::default();
    for (k, v) in args.labels {
        selector = selector.label(k, v);
    }
    if let Some(p) = args.percent {
        selector = selector.percent(p);
    }
    for name in args.instances {
        selector = selector.instance(name);
    }
    Some(selector)
}

/// `config gray start|promote|abort`.
pub async fn gray(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    command: GrayCommand,
) -> CliResult {
    match command {
        GrayCommand::Start {
            prefix,
            file,
            to,
            message,
        } => {
            let selector = selector(to).ok_or_else(|| {
                CliError::Usage("a gray release needs --label, --percent or --instance".into())
            })?;
            let values = read_values(&file)?;
            let builder = config.release_raw(&prefix, values).to(selector);
            commit(coord, out, &prefix, builder, message, None).await
        }
        GrayCommand::Promote { prefix, seq } => {
            let builder = config.promote(&prefix, seq);
            commit(coord, out, &prefix, builder, None, None).await
        }
        GrayCommand::Abort { prefix, seq } => {
            let builder = config.abort(&prefix, seq);
            commit(coord, out, &prefix, builder, None, None).await
        }
    }
}

/// `config rollout PREFIX [--wait SEQ]`. With `--wait` and no instance on the prefix there
/// is nothing that runs the release: that is an error (exit 3) saying so, not a success for
/// zero instances.
pub async fn rollout(
    coord: &Coord,
    out: Output,
    prefix: &str,
    wait: Option<u64>,
    timeout: Duration,
) -> CliResult {
    let statuses = match wait {
        Some(seq) => {
            let _spinner = Spinner::start(
                out,
                format!("waiting for every instance on {prefix} to run release {seq}"),
            );
            coord.config().wait_rollout(prefix, seq, timeout).await?
        }
        None => coord.config().rollout(prefix).await?,
    };
    if statuses.is_empty() {
        if let Some(seq) = wait {
            return Err(CliError::NotFound(no_instances(prefix, Some(seq))));
        }
        if !out.is_json() {
            print_statuses(out, &statuses);
            out.note(&no_instances(prefix, None));
            return Ok(());
        }
    }
    print_statuses(out, &statuses);
    if let Some(seq) = wait {
        if !out.is_json() {
            out.note(&format!(
                "every instance on {prefix} runs release {seq} ({} instance(s))",
                statuses.len()
            ));
        }
    }
    Ok(())
}

/// What `rollout` says when no instance reports on `prefix`.
fn no_instances(prefix: &str, release: Option<u64>) -> String {
    let release = match release {
        Some(seq) => format!(", so none runs release {seq}"),
        None => String::new(),
    };
    format!(
        "no instances on {prefix}: no running service holds a Live of it{release} (an instance \
         appears here once a Coord binds the prefix)"
    )
}

fn print_statuses(out: Output, statuses: &[InstanceStatus]) {
    if out.is_json() {
        let docs = statuses
            .iter()
            .map(|s| {
                json!({
                    "instance": s.instance,
                    "labels": s.labels,
                    "release": s.release,
                    "gray": s.gray,
                    "revision": s.revision,
                    "health": s.health,
                    "error": s.error.as_ref().map(|e| json!({ "key": e.key, "message": e.message, "revision": e.revision })),
                })
            })
            .collect();
        out.json(&Value::Array(docs));
        return;
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                s.instance.clone(),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                s.release.map_or_else(|| "-".into(), |r| r.to_string()),
                s.gray.map_or_else(|| "-".into(), |g| g.to_string()),
                s.revision.to_string(),
                health_text(s.health.as_ref()),
                s.error.as_ref().map_or_else(
                    || "-".into(),
                    |e| match &e.key {
                        Some(key) => format!("{key}: {}", e.message),
                        None => e.message.clone(),
                    },
                ),
            ]
        })
        .collect();
    out.table(
        &[
            "INSTANCE", "LABELS", "RELEASE", "GRAY", "REVISION", "HEALTH", "ERROR",
        ],
        &rows,
    );
}

/// What an instance last said of its health: `healthy`, `degraded: why`, `-` if it never
/// said.
pub(crate) fn health_text(health: Option<&InstanceHealth>) -> String {
    match health {
        None => "-".into(),
        Some(InstanceHealth::Healthy) => "healthy".into(),
        Some(InstanceHealth::Degraded { reason }) => format!("degraded: {reason}"),
        Some(_) => "other".into(),
    }
}
