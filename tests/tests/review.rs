//! Review before release, delegates, forced actions and the events stream, on the embedded
//! store: the policy's library half (etcd's RBAC half is in `access.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use coord::access::audit::{list, AuditAction, AuditQuery, Outcome};
use coord::access::Policy;
use coord::config::{ProposalState, ReleaseEvent, ReleaseKind, Selector};
use coord::{Coord, Error, Instance};
use futures::StreamExt;

const PREFIX: &str = "/config/checkout";

const POLICY: &str = r#"
[principals.ana]
roles = ["editor"]
[principals.bo]
roles = ["owner"]
[principals.console]
roles = ["owner"]
delegate = true
[principals.ops]
roles = ["admin"]

[roles.editor]
grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
[roles.owner]
grants = [{ prefix = "/config/checkout", actions = ["release", "approve"] }]
[roles.admin]
grants = [{ prefix = "/", actions = ["admin"] }]
"#;

async fn with_policy(text: &str) -> Coord {
    let coord = Coord::in_memory();
    let access = coord.access();
    let plan = access
        .plan(&Policy::parse_toml(text).unwrap(), &BTreeMap::new())
        .await
        .unwrap();
    assert!(!plan.enforced_by_etcd, "the embedded store has no RBAC");
    access.apply(&plan).await.unwrap();
    coord
}

fn limit(n: i64) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("limit".to_owned(), n.into())])
}

async fn audit(coord: &Coord) -> Vec<(String, Option<String>, AuditAction, Outcome)> {
    list(coord.store(), &AuditQuery::default().prefix(PREFIX))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.principal, r.via, r.action, r.outcome))
        .collect()
}

#[tokio::test]
async fn an_approved_gray_proposal_reaches_only_its_selected_instances() {
    let coord = with_policy(POLICY).await;
    let ana = coord.config().as_principal("ana").unwrap();
    let bo = coord.config().as_principal("bo").unwrap();
    bo.release_raw(PREFIX, limit(1)).commit().await.unwrap();

    let proposal = ana
        .release_raw(PREFIX, limit(2))
        .to(Selector::default().instance("canary-1"))
        .propose()
        .await
        .unwrap();
    assert!(matches!(proposal.kind, ReleaseKind::Gray { .. }));
    let release = bo.approve(PREFIX, &proposal.id).await.unwrap();
    assert!(matches!(release.kind, ReleaseKind::Gray { .. }));

    #[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
    struct Checkout {
        limit: i64,
    }
    let canary = Coord::from_store_as(coord.store(), Instance::new("canary-1")).unwrap();
    let other = Coord::from_store_as(coord.store(), Instance::new("web-1")).unwrap();
    assert_eq!(
        canary
            .live_at::<Checkout>(PREFIX)
            .await
            .unwrap()
            .load()
            .limit,
        2
    );
    assert_eq!(
        other
            .live_at::<Checkout>(PREFIX)
            .await
            .unwrap()
            .load()
            .limit,
        1
    );
}

#[tokio::test]
async fn an_expired_proposal_cannot_be_approved() {
    let coord = with_policy(&format!(
        "{POLICY}\n[review.\"/config/checkout\"]\nexpire_after = \"50ms\"\n"
    ))
    .await;
    let ana = coord.config().as_principal("ana").unwrap();
    let bo = coord.config().as_principal("bo").unwrap();
    let proposal = ana.release_raw(PREFIX, limit(2)).propose().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        bo.proposal(PREFIX, &proposal.id).await.unwrap().state,
        ProposalState::Expired
    );
    let err = bo.approve(PREFIX, &proposal.id).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(bo.get::<i64>(&format!("{PREFIX}/limit")).await.is_err());
}

#[tokio::test]
async fn a_delegate_acts_for_a_principal_with_its_grants_and_is_recorded_as_via() {
    let coord = with_policy(POLICY).await;
    let console = coord.config().as_principal("console").unwrap();
    // The console acting for ana has ana's grants: it may propose, not release.
    let as_ana = console.on_behalf_of("ana").unwrap();
    let err = as_ana
        .release_raw(PREFIX, limit(1))
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    let proposal = as_ana
        .release_raw(PREFIX, limit(1))
        .propose()
        .await
        .unwrap();
    assert_eq!(proposal.proposer, "ana");
    assert_eq!(proposal.via.as_deref(), Some("console"));
    // ana is no delegate: acting for bo through ana gets nothing.
    let ana = coord.config().as_principal("ana").unwrap();
    let err = ana
        .on_behalf_of("bo")
        .unwrap()
        .approve(PREFIX, &proposal.id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no delegate"), "{err}");
    console
        .on_behalf_of("bo")
        .unwrap()
        .approve(PREFIX, &proposal.id)
        .await
        .unwrap();

    assert_eq!(
        audit(&coord).await,
        vec![
            (
                "ana".into(),
                Some("console".into()),
                AuditAction::Release,
                Outcome::Refused
            ),
            (
                "ana".into(),
                Some("console".into()),
                AuditAction::Propose,
                Outcome::Done
            ),
            (
                "bo".into(),
                Some("ana".into()),
                AuditAction::Approve,
                Outcome::Refused
            ),
            (
                "bo".into(),
                Some("console".into()),
                AuditAction::Approve,
                Outcome::Done
            ),
        ]
    );
}

#[tokio::test]
async fn a_grant_removed_after_a_release_refuses_the_next_one_though_the_state_is_remembered() {
    let coord = with_policy(POLICY).await;
    let bo = coord.config().as_principal("bo").unwrap();
    let first = bo.release_raw(PREFIX, limit(1)).commit().await.unwrap();
    // Another process narrows bo to `propose`.
    let ops = Coord::from_store(coord.store());
    let access = ops.access();
    let smaller = Policy::parse_toml(&POLICY.replace(
        r#"actions = ["release", "approve"]"#,
        r#"actions = ["propose"]"#,
    ))
    .unwrap();
    access
        .apply(&access.plan(&smaller, &BTreeMap::new()).await.unwrap())
        .await
        .unwrap();
    let err = bo.release_raw(PREFIX, limit(2)).commit().await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    let history = bo.history(PREFIX, 10).await.unwrap();
    assert_eq!(history[0].seq, first.seq, "nothing was released");
}

#[tokio::test]
async fn publishing_a_schema_takes_admin_and_is_audited() {
    #[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
    #[coord(prefix = "/config/checkout")]
    struct Checkout {
        #[coord(default = 1)]
        limit: i64,
    }
    let coord = with_policy(POLICY).await;
    let bo = coord.config().as_principal("bo").unwrap();
    let ops = coord.config().as_principal("ops").unwrap();
    let err = bo.publish_schema::<Checkout>().await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    ops.publish_schema::<Checkout>().await.unwrap();
    assert_eq!(
        audit(&coord).await,
        vec![
            (
                "bo".into(),
                None,
                AuditAction::SchemaPublish,
                Outcome::Refused
            ),
            (
                "ops".into(),
                None,
                AuditAction::SchemaPublish,
                Outcome::Done
            ),
        ]
    );
}

#[tokio::test]
async fn breaking_a_lock_and_releasing_an_id_are_audited_and_only_take_what_was_seen() {
    let coord = Coord::in_memory();
    let ops = coord.config().as_principal("ops").unwrap();
    let holder = Coord::from_store(coord.store());
    let guard = holder
        .locks()
        .acquire("/locks/report", Duration::from_secs(10))
        .await
        .unwrap();
    let lock = coord::inspect::locks(coord.store(), "/locks/")
        .await
        .unwrap()
        .remove(0);
    coord::force::break_lock(coord.store(), ops.identity(), &lock)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("the holder is told");
    let again = coord::force::break_lock(coord.store(), ops.identity(), &lock)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Conflict { .. }), "{again}");

    let ids = holder.ids("api", 4).await.unwrap();
    let id = ids.acquire().await.unwrap();
    let info = coord::inspect::ids(coord.store(), "api")
        .await
        .unwrap()
        .remove(0);
    coord::force::release_id(coord.store(), ops.identity(), "api", &info)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), id.lost())
        .await
        .expect("the ID holder is told");

    let records = list(coord.store(), &AuditQuery::default()).await.unwrap();
    let seen: Vec<(AuditAction, Outcome, &str)> = records
        .iter()
        .map(|r| (r.action, r.outcome, r.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (AuditAction::LockBreak, Outcome::Done, "/locks/report"),
            (AuditAction::LockBreak, Outcome::Refused, "/locks/report"),
            (
                AuditAction::IdRelease,
                Outcome::Done,
                format!("api/{}", info.id).as_str()
            ),
        ]
    );
}

#[tokio::test]
async fn the_events_stream_tells_proposals_approvals_rejections_and_releases_in_order() {
    let coord = with_policy(POLICY).await;
    let ana = coord.config().as_principal("ana").unwrap();
    let bo = coord.config().as_principal("bo").unwrap();
    let mut events = coord.config().events(PREFIX).await.unwrap();

    let first = ana.release_raw(PREFIX, limit(1)).propose().await.unwrap();
    let second = ana.release_raw(PREFIX, limit(2)).propose().await.unwrap();
    bo.approve(PREFIX, &first.id).await.unwrap();
    bo.reject(PREFIX, &second.id, "one at a time")
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event")
            .expect("the stream goes on")
            .unwrap();
        seen.push(match event {
            ReleaseEvent::Proposed(p) => format!("proposed {}", p.id),
            ReleaseEvent::Approved(p) => format!("approved {}", p.id),
            ReleaseEvent::Rejected(p) => format!("rejected {}", p.id),
            ReleaseEvent::Released(r) => {
                format!("released {} from {}", r.seq, r.proposal.unwrap_or_default())
            }
            other => format!("{other:?}"),
        });
    }
    // Ordered within each kind; across kinds, by the revision each event carries.
    let of = |kinds: &[&str]| -> Vec<&String> {
        seen.iter()
            .filter(|e| kinds.iter().any(|k| e.starts_with(k)))
            .collect()
    };
    assert_eq!(
        of(&["proposed"]),
        vec![
            &format!("proposed {}", first.id),
            &format!("proposed {}", second.id)
        ]
    );
    assert_eq!(
        of(&["approved", "rejected"]),
        vec![
            &format!("approved {}", first.id),
            &format!("rejected {}", second.id)
        ]
    );
    assert!(
        seen.contains(&format!("released 1 from {}", first.id)),
        "{seen:?}"
    );
}
