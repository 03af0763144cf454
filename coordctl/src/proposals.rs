//! `coordctl config propose|proposals|approve|reject`: review before release.
//!
//! A proposal is a release stored for review instead of committed (see
//! `coord::config::ReleaseBuilder::propose`); another principal holding `approve` on the
//! prefix approves it, which commits it exactly as proposed, or rejects it. Every value shown
//! passes through [`crate::schemas`] as a release's do: secrets show as `<redacted>`.

use std::collections::{BTreeMap, BTreeSet};

use coord::config::{ConfigCenter, Proposal, ProposalState};
use coord::Coord;
use serde_json::{json, Value};

use crate::cli::ProposeArgs;
use crate::error::{CliError, CliResult};
use crate::output::{time, Output};
use crate::releases::{self, diff_json, kind_text, print_diff, print_release, release_json};
use crate::schemas::{self, Under};

/// True for a Rust type the page and this command take as text: `String`, `str`, and those
/// wrapped (`Option<String>`, `Secret<String>`, `alloc::string::String`).
fn is_string_type(type_name: &str) -> bool {
    let compact: String = type_name.chars().filter(|c| !c.is_whitespace()).collect();
    let last = compact
        .trim_end_matches('>')
        .rsplit(['<', ':'])
        .next()
        .unwrap_or_default();
    last == "String" || last == "str"
}

/// The value `text` stands for: as typed for a key the schema types as a string, else JSON,
/// else the text as a string (for the schema to refuse with the type it expects).
fn value_of(text: &str, type_name: Option<&str>) -> Value {
    if type_name.is_some_and(is_string_type) {
        return Value::String(text.to_owned());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `ana`, or `ana (via console)` for a proposal a delegate made for its principal.
fn proposer_text(proposal: &Proposal) -> String {
    match &proposal.via {
        Some(via) => format!("{} (via {via})", proposal.proposer),
        None => proposal.proposer.clone(),
    }
}

/// The state's name, and who decided it and how, as JSON fields.
fn state_fields(state: &ProposalState) -> (&'static str, Value) {
    match state {
        ProposalState::Open => ("open", json!({})),
        ProposalState::Approved { by, seq } => {
            ("approved", json!({ "decided_by": by, "release": seq }))
        }
        ProposalState::Rejected { by, reason } => {
            ("rejected", json!({ "decided_by": by, "reason": reason }))
        }
        ProposalState::Expired => ("expired", json!({})),
        _ => ("other", json!({})),
    }
}

/// The state as one table cell.
fn state_text(state: &ProposalState) -> String {
    match state {
        ProposalState::Open => "open".into(),
        ProposalState::Approved { by, seq } => format!("approved by {by} (release {seq})"),
        ProposalState::Rejected { by, reason } => format!("rejected by {by}: {reason}"),
        ProposalState::Expired => "expired".into(),
        _ => "other".into(),
    }
}

/// A proposal as JSON, values shown as `under` allows (the console answers the same).
pub(crate) fn proposal_json(proposal: &Proposal, under: Under<'_>) -> Value {
    let (state, decided) = state_fields(&proposal.state);
    let mut doc = json!({
        "id": proposal.id,
        "prefix": proposal.prefix,
        "base": proposal.base,
        "kind": kind_text(&proposal.kind),
        "proposer": proposal.proposer,
        "via": proposal.via,
        "message": proposal.message,
        "created": time(proposal.created),
        "expires": time(proposal.expires),
        "state": state,
        "changes": diff_json(proposal.changes.clone(), under),
        "gray_values": under.values(&proposal.gray_values),
        "revision": proposal.revision,
    });
    if let (Some(doc), Value::Object(decided)) = (doc.as_object_mut(), decided) {
        doc.extend(decided);
    }
    doc
}

/// One proposal for people: what it is, then what it changes.
fn print_proposal(out: Output, proposal: &Proposal, under: Under<'_>) {
    let message = proposal.message.clone().unwrap_or_else(|| "-".into());
    let rows = vec![
        vec!["state".into(), state_text(&proposal.state)],
        vec!["kind".into(), kind_text(&proposal.kind)],
        vec!["proposer".into(), proposer_text(proposal)],
        vec!["message".into(), message],
        vec!["based on".into(), format!("release {}", proposal.base)],
        vec!["created".into(), time(proposal.created)],
        vec!["expires".into(), time(proposal.expires)],
        vec![
            "revision".into(),
            format!(
                "{} (approve what you see: coordctl config approve {} {} --revision {})",
                proposal.revision, proposal.prefix, proposal.id, proposal.revision
            ),
        ],
    ];
    out.table(
        &[
            "PROPOSAL",
            &format!("{} of {}", proposal.id, proposal.prefix),
        ],
        &rows,
    );
    out.line("");
    if proposal.gray_values.is_empty() {
        print_diff(out, proposal.changes.clone(), under);
    } else {
        let rows: Vec<Vec<String>> = under
            .values(&proposal.gray_values)
            .iter()
            .map(|(key, value)| vec![key.clone(), crate::output::cell(value)])
            .collect();
        out.table(&["KEY", "GRAY VALUE"], &rows);
    }
}

/// `config propose PREFIX KEY=VALUE… [--remove KEY] [-m M] [--label/--percent/--instance]`.
pub async fn propose(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    args: ProposeArgs,
) -> CliResult {
    if args.values.is_empty() && args.remove.is_empty() {
        return Err(CliError::Usage(
            "nothing to propose: give KEY=VALUE pairs or --remove KEY".into(),
        ));
    }
    let schema = config.schema(&args.prefix).await?;
    let values: BTreeMap<String, Value> = args
        .values
        .iter()
        .map(|(key, text)| {
            let type_name = schema.as_ref().and_then(|s| s.type_of(key));
            (key.clone(), value_of(text, type_name))
        })
        .collect();
    let remove: BTreeSet<String> = args.remove.into_iter().collect();
    let mut builder = config
        .release_raw_with(&args.prefix, values, remove)
        .author(releases::author(coord));
    if let Some(message) = args.message {
        builder = builder.message(message);
    }
    if let Some(selector) = releases::selector(args.to) {
        builder = builder.to(selector);
    }
    let proposal = builder.propose().await?;
    let schemas = schemas::all(coord).await?;
    let under = schemas.under(&proposal.prefix);
    if out.is_json() {
        out.json(&proposal_json(&proposal, under));
        return Ok(());
    }
    out.note(&format!(
        "proposed {} on {} (based on release {}, open until {}): another principal approves \
         it with `coordctl config approve {} {}`",
        proposal.id,
        proposal.prefix,
        proposal.base,
        time(proposal.expires),
        proposal.prefix,
        proposal.id
    ));
    print_diff(out, proposal.changes.clone(), under);
    Ok(())
}

/// `config proposals PREFIX [ID]`.
pub async fn proposals(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    prefix: &str,
    id: Option<&str>,
) -> CliResult {
    let schemas = schemas::all(coord).await?;
    if let Some(id) = id {
        let proposal = config.proposal(prefix, id).await?;
        let under = schemas.under(&proposal.prefix);
        if out.is_json() {
            out.json(&proposal_json(&proposal, under));
        } else {
            print_proposal(out, &proposal, under);
        }
        return Ok(());
    }
    let proposals = config.proposals(prefix).await?;
    let under = schemas.under(prefix);
    if out.is_json() {
        let docs = proposals.iter().map(|p| proposal_json(p, under)).collect();
        out.json(&Value::Array(docs));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = proposals
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                state_text(&p.state),
                proposer_text(p),
                p.message.clone().unwrap_or_default(),
                time(p.created),
                time(p.expires),
            ]
        })
        .collect();
    out.table(
        &["ID", "STATE", "PROPOSER", "MESSAGE", "CREATED", "EXPIRES"],
        &rows,
    );
    Ok(())
}

/// `config approve PREFIX ID`: the proposal becomes a release.
pub async fn approve(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    prefix: &str,
    id: &str,
    revision: Option<i64>,
) -> CliResult {
    let release = match revision {
        Some(seen) => {
            let mut reviewed = config.proposal(prefix, id).await?;
            reviewed.revision = seen;
            config.approve_reviewed(&reviewed).await?
        }
        None => config.approve(prefix, id).await?,
    };
    if out.is_json() {
        let schemas = schemas::all(coord).await?;
        out.json(&release_json(&release, schemas.under(prefix)));
        return Ok(());
    }
    print_release(coord, out, prefix, &release).await?;
    let schemas = schemas::all(coord).await?;
    print_diff(out, release.changes.clone(), schemas.under(prefix));
    Ok(())
}

/// `config reject PREFIX ID --reason R`.
pub async fn reject(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    prefix: &str,
    id: &str,
    reason: &str,
) -> CliResult {
    if reason.trim().is_empty() {
        return Err(CliError::Usage(
            "--reason says why: the proposer reads it".into(),
        ));
    }
    let proposal = config.reject(prefix, id, reason).await?;
    if out.is_json() {
        let schemas = schemas::all(coord).await?;
        out.json(&proposal_json(&proposal, schemas.under(&proposal.prefix)));
    } else {
        out.note(&format!(
            "proposal {} of {}: {}",
            proposal.id,
            proposal.prefix,
            state_text(&proposal.state)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_typed_key_takes_the_text_as_typed_and_others_take_json() {
        for string in [
            "String",
            "alloc::string::String",
            "Option<String>",
            "coord::Secret<String>",
            "Option < String >",
        ] {
            assert_eq!(value_of("123", Some(string)), json!("123"), "{string}");
        }
        assert_eq!(value_of("45", Some("u64")), json!(45));
        assert_eq!(value_of("true", None), json!(true));
        assert_eq!(value_of("\"quoted\"", None), json!("quoted"));
        assert_eq!(
            value_of("stripe", Some("u64")),
            json!("stripe"),
            "not JSON: the schema refuses it with the type it expects"
        );
        assert!(!is_string_type("Vec<u8>"));
        assert!(!is_string_type("Strings"));
    }
}
