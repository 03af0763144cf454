//! `coordctl locks|ids|services|election|health`.

use std::io::{BufRead, Write};

use coord::config::ConfigCenter;
use coord::registry::ServiceEvent;
use coord::store::{KeyRange, RangeOptions};
use coord::Coord;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::error::{CliError, CliResult};
use crate::output::{seconds, time, Output};

/// `locks ls [PREFIX]`.
pub async fn locks_ls(coord: &Coord, out: Output, prefix: &str) -> CliResult {
    let locks = coord::inspect::locks(coord.store(), prefix).await?;
    if out.is_json() {
        let docs = locks.iter().map(lock_json).collect();
        out.json(&Value::Array(docs));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|lock| {
            let waiters: Vec<&str> = lock.waiters.iter().map(|w| w.key.as_str()).collect();
            vec![
                lock.name.clone(),
                lock.holder.key.clone(),
                lock.fencing_token().to_string(),
                seconds(lock.holder.ttl_left),
                if waiters.is_empty() {
                    "-".into()
                } else {
                    waiters.join(" ")
                },
            ]
        })
        .collect();
    out.table(&["LOCK", "HOLDER", "FENCING", "TTL", "WAITERS"], &rows);
    Ok(())
}

/// `locks release NAME --force [--yes]`: deletes the holder's key and revokes its lease
/// (`coord::force::break_lock`, recorded in the audit log as this connection's principal),
/// after asking on stderr unless `--yes`.
pub async fn locks_release(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    name: &str,
    force: bool,
    yes: bool,
) -> CliResult {
    if !force {
        return Err(CliError::Usage(format!(
            "releasing {name} revokes its holder's lease, and the holder may still be working: pass --force"
        )));
    }
    let lock = held_lock(coord, name).await?;
    if !yes {
        let question = format!(
            "revoke lease {:x} of {} (fencing token {})? [y/N] ",
            lock.holder.lease,
            lock.holder.key,
            lock.fencing_token()
        );
        if !confirm(question).await? {
            return Err(CliError::Refused("not confirmed; nothing changed".into()));
        }
        // The answer may come long after the listing: revoke only what the operator saw.
        let now = held_lock(coord, name).await?;
        if now.holder.key != lock.holder.key || now.fencing_token() != lock.fencing_token() {
            return Err(CliError::Conflict(format!(
                "{name} changed hands while waiting for the answer (now {}, fencing token {}); nothing revoked",
                now.holder.key,
                now.fencing_token()
            )));
        }
    }
    // Only if the holder seen still holds, with the same fencing token: else a conflict.
    coord::force::break_lock(coord.store(), config.identity(), &lock).await?;
    if out.is_json() {
        out.json(&json!({ "name": name, "revoked_lease": format!("{:x}", lock.holder.lease), "holder": lock.holder.key }));
    } else {
        out.note(&format!(
            "revoked lease {:x}: {} no longer holds {name}",
            lock.holder.lease, lock.holder.key
        ));
    }
    Ok(())
}

async fn held_lock(coord: &Coord, name: &str) -> CliResult<coord::inspect::LockInfo> {
    coord::inspect::locks(coord.store(), &format!("{name}/"))
        .await?
        .into_iter()
        .find(|lock| lock.name == name)
        .ok_or_else(|| CliError::NotFound(format!("lock {name} is not held")))
}

/// Asks `question` on stderr (stdout stays for the command's output) and reads one line of
/// stdin, a terminal or a pipe alike. Only `y` or `yes` (any case) is a yes; no answer at all
/// (stdin closed) is an error that says how to skip the question.
pub(crate) async fn confirm(question: String) -> CliResult<bool> {
    // Reading stdin blocks; on the runtime's only thread it would also stall the etcd
    // connection's keep-alives for as long as the operator thinks.
    let answer = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(question.as_bytes())?;
        stderr.flush()?;
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer)?;
        Ok((read > 0).then_some(answer))
    })
    .await
    .map_err(|e| CliError::Io {
        what: "asking for confirmation".into(),
        source: std::io::Error::other(e),
    })?
    .map_err(|source| CliError::Io {
        what: "asking for confirmation".into(),
        source,
    })?;
    let Some(answer) = answer else {
        // The question had no line end: end it, so the error starts a line of its own.
        eprintln!();
        return Err(CliError::Refused(
            "no answer on stdin; nothing changed (--yes skips the question)".into(),
        ));
    };
    let answer = answer.trim();
    Ok(answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes"))
}

/// `ids ls SERVICE`.
pub async fn ids_ls(coord: &Coord, out: Output, service: &str) -> CliResult {
    let ids = coord::inspect::ids(coord.store(), service).await?;
    if out.is_json() {
        let docs = ids
            .iter()
            .map(|i| json!({ "id": i.id, "key": i.key, "lease": format!("{:x}", i.lease), "ttl_left_secs": i.ttl_left.map(|d| d.as_secs()) }))
            .collect();
        out.json(&Value::Array(docs));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = ids
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.key.clone(),
                format!("{:x}", i.lease),
                seconds(i.ttl_left),
            ]
        })
        .collect();
    out.table(&["ID", "KEY", "LEASE", "TTL"], &rows);
    Ok(())
}

/// `ids release SERVICE ID --force [--yes]`: frees an ID a stuck holder keeps
/// (`coord::force::release_id`, recorded in the audit log), after asking on stderr unless
/// `--yes`; only if the lease seen still holds it.
pub async fn ids_release(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    service: &str,
    id: u32,
    force: bool,
    yes: bool,
) -> CliResult {
    if !force {
        return Err(CliError::Usage(format!(
            "releasing ID {id} of {service} takes it from its holder, which may still be using it: pass --force"
        )));
    }
    let held = held_id(coord, service, id).await?;
    if !yes {
        let question = format!(
            "release ID {id} of {service} held by lease {:x} ({})? [y/N] ",
            held.lease, held.key
        );
        if !confirm(question).await? {
            return Err(CliError::Refused("not confirmed; nothing changed".into()));
        }
        let now = held_id(coord, service, id).await?;
        if now.lease != held.lease {
            return Err(CliError::Conflict(format!(
                "ID {id} of {service} changed hands while waiting for the answer (now lease {:x}); nothing released",
                now.lease
            )));
        }
    }
    coord::force::release_id(coord.store(), config.identity(), service, &held).await?;
    if out.is_json() {
        out.json(&json!({ "service": service, "id": id, "key": held.key, "lease": format!("{:x}", held.lease), "released": true }));
    } else {
        out.note(&format!(
            "released ID {id} of {service}: lease {:x} no longer holds {}",
            held.lease, held.key
        ));
    }
    Ok(())
}

async fn held_id(coord: &Coord, service: &str, id: u32) -> CliResult<coord::inspect::IdInfo> {
    coord::inspect::ids(coord.store(), service)
        .await?
        .into_iter()
        .find(|info| info.id == id)
        .ok_or_else(|| CliError::NotFound(format!("ID {id} of {service} is not taken")))
}

/// One lock as `locks ls -o json` and the console show it.
pub(crate) fn lock_json(lock: &coord::inspect::LockInfo) -> Value {
    json!({
        "name": lock.name,
        "holder": lock.holder.key,
        "fencing_token": lock.fencing_token(),
        "lease": format!("{:x}", lock.holder.lease),
        "ttl_left_secs": lock.holder.ttl_left.map(|d| d.as_secs()),
        "waiters": lock.waiters.iter().map(|w| json!({
            "key": w.key,
            "lease": format!("{:x}", w.lease),
            "ttl_left_secs": w.ttl_left.map(|d| d.as_secs()),
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn info_json(info: &coord::ServiceInfo) -> Value {
    json!({
        "id": info.id,
        "name": info.name,
        "address": info.address,
        "version": info.version,
        "metadata": info.metadata,
        "started_at": info.started_at.map(time),
    })
}

/// `services ls [NAME]`.
pub async fn services_ls(coord: &Coord, out: Output, name: Option<&str>) -> CliResult {
    let Some(name) = name else {
        let response = coord
            .store()
            .range(
                &KeyRange::prefix("/services/"),
                RangeOptions::default().keys_only(),
            )
            .await?;
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for kv in &response.kvs {
            if let Some((service, _)) = kv
                .key
                .strip_prefix("/services/")
                .and_then(|rest| rest.split_once('/'))
            {
                *counts.entry(service.to_owned()).or_default() += 1;
            }
        }
        if out.is_json() {
            out.json(&json!(counts));
        } else {
            let rows: Vec<Vec<String>> = counts
                .iter()
                .map(|(name, n)| vec![name.clone(), n.to_string()])
                .collect();
            out.table(&["SERVICE", "INSTANCES"], &rows);
        }
        return Ok(());
    };
    let instances = coord.registry().discover(name).await?;
    if out.is_json() {
        out.json(&Value::Array(instances.iter().map(info_json).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let meta: Vec<String> = i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                i.id.clone(),
                i.address.clone(),
                if i.version.is_empty() {
                    "-".into()
                } else {
                    i.version.clone()
                },
                i.started_at.map_or_else(|| "-".into(), time),
                meta.join(","),
            ]
        })
        .collect();
    out.table(&["ID", "ADDRESS", "VERSION", "STARTED", "METADATA"], &rows);
    Ok(())
}

/// `services watch NAME`: one line per change until Ctrl-C.
pub async fn services_watch(coord: &Coord, out: Output, name: &str) -> CliResult {
    let mut watcher = coord.registry().watch(name).await?;
    if !out.is_json() {
        eprintln!("watching service {name} (Ctrl-C to stop)");
    }
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = watcher.next() => event,
        };
        let Some(event) = event else {
            return Ok(());
        };
        let kind = match &event {
            ServiceEvent::Registered(_) => "registered",
            ServiceEvent::Updated(_) => "updated",
            ServiceEvent::Unregistered(_) => "unregistered",
        };
        let info = event.info();
        if out.is_json() {
            out.json_line(&json!({ "type": kind, "instance": info_json(info) }));
        } else {
            out.line(&format!("{kind:<12}  {}  {}", info.id, info.address));
        }
    }
}

/// `election leader NAME`.
pub async fn leader(coord: &Coord, out: Output, name: &str) -> CliResult {
    let leader = coord
        .election(name)
        .leader()
        .await?
        .ok_or_else(|| CliError::NotFound(format!("election {name} has no leader")))?;
    let value = String::from_utf8_lossy(&leader.value).into_owned();
    if out.is_json() {
        out.json(&json!({ "name": name, "key": leader.key, "value": value, "revision": leader.revision, "lease": format!("{:x}", leader.lease) }));
    } else {
        out.table(
            &["ELECTION", "LEADER", "KEY", "REVISION", "LEASE"],
            &[vec![
                name.to_owned(),
                value,
                leader.key.clone(),
                leader.revision.to_string(),
                format!("{:x}", leader.lease),
            ]],
        );
    }
    Ok(())
}

/// `health`.
pub async fn health(coord: &Coord, out: Output) -> CliResult {
    let health = coord.health().await?;
    let endpoints = coord
        .client_config()
        .map(|c| c.endpoints.join(","))
        .unwrap_or_default();
    if out.is_json() {
        out.json(&json!({
            "endpoints": endpoints,
            "reachable": health.reachable,
            "version": health.version,
            "revision": health.revision,
            "latency_ms": health.latency.as_secs_f64() * 1000.0,
            "error": health.error,
        }));
    } else {
        out.table(
            &["ENDPOINTS", "REACHABLE", "VERSION", "REVISION", "LATENCY"],
            &[vec![
                endpoints.clone(),
                health.reachable.to_string(),
                health.version.clone(),
                health.revision.to_string(),
                format!("{:.1}ms", health.latency.as_secs_f64() * 1000.0),
            ]],
        );
    }
    match (health.reachable, health.error) {
        (true, _) => Ok(()),
        (false, reason) => Err(coord::Error::Unavailable {
            endpoints,
            reason: reason.unwrap_or_else(|| "no answer".into()),
        }
        .into()),
    }
}
