//! Who may change what, on a real etcd with auth on: the policy applied as etcd's RBAC,
//! review before release, and an audit log that holds exactly what was done.
//!
//! The principals: `ana` may propose on `/config/checkout`; `bo` may release and approve
//! there; `cy` may approve there too; `/config/checkout` requires review. Each connects as
//! its own etcd user, so a claim is worth nothing: etcd itself enforces the grants.

use std::collections::BTreeMap;

use coord::access::audit::{list, AuditAction, AuditQuery, Outcome};
use coord::access::{Action, Policy};
use coord::config::ProposalState;
use coord::testing::{EtcdServer, ROOT_USER};
use coord::{Coord, Error};

const PREFIX: &str = "/config/checkout";

const POLICY: &str = r#"
[principals.ana]
roles = ["editor"]
[principals.bo]
roles = ["owner"]
[principals.cy]
roles = ["owner"]

[roles.editor]
grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
[roles.owner]
grants = [{ prefix = "/config/checkout", actions = ["release", "approve"] }]

[review."/config/checkout"]
"#;

fn passwords() -> BTreeMap<String, String> {
    ["ana", "bo", "cy"]
        .into_iter()
        .map(|user| (user.to_owned(), format!("{user}-pw")))
        .collect()
}

struct World {
    server: EtcdServer,
    root: Coord,
}

impl World {
    async fn start() -> World {
        let server = EtcdServer::builder()
            .auth(true)
            .start()
            .await
            .expect("start etcd with auth (the error says how to install etcd)");
        let root = Coord::connect(server.client_config()).await.unwrap();
        let access = root.access();
        let plan = access
            .plan(&Policy::parse_toml(POLICY).unwrap(), &passwords())
            .await
            .unwrap();
        assert!(!plan.is_empty());
        access.apply(&plan).await.unwrap();
        World { server, root }
    }

    async fn connect(&self, user: &str) -> Coord {
        let config = self
            .server
            .client_config()
            .with_user(user, format!("{user}-pw"));
        Coord::connect(config).await.unwrap()
    }

    async fn audit(&self) -> Vec<(String, AuditAction, Outcome)> {
        list(self.root.store(), &AuditQuery::default().prefix(PREFIX))
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.principal, r.action, r.outcome))
            .collect()
    }
}

#[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
struct Checkout {
    limit: i64,
}

fn limit(n: i64) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("limit".to_owned(), n.into())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposer_cannot_release_by_any_path_and_an_approval_commits_with_both_recorded() {
    let world = World::start().await;
    let ana = world.connect("ana").await;
    let bo = world.connect("bo").await;

    // Through the library: the policy refuses it before anything is sent.
    let err = ana
        .config()
        .release_raw(PREFIX, limit(1))
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    assert!(
        err.to_string().contains("editor"),
        "the reason names the role: {err}"
    );
    // Through etcd itself, as a client that ignores the policy would.
    let raw = ana
        .store()
        .put(&format!("{PREFIX}/limit"), b"1".to_vec(), 0)
        .await
        .unwrap_err();
    assert!(matches!(raw, Error::PermissionDenied { .. }), "{raw}");
    // Through etcdctl with ana's password.
    let etcdctl = world
        .server
        .etcdctl_command(&["--user=ana:ana-pw", "put", "/config/checkout/limit", "1"])
        .unwrap()
        .output()
        .unwrap();
    assert!(!etcdctl.status.success());
    assert!(
        String::from_utf8_lossy(&etcdctl.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&etcdctl.stderr)
    );
    // And bo, who may release, is held to review on this prefix.
    let review = bo
        .config()
        .release_raw(PREFIX, limit(1))
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(review, Error::ReviewRequired { .. }), "{review}");

    let proposal = ana
        .config()
        .release_raw(PREFIX, limit(7))
        .message("more headroom")
        .propose()
        .await
        .unwrap();
    assert_eq!(proposal.proposer, "ana");
    assert_eq!(proposal.state, ProposalState::Open);
    assert!(ana
        .config()
        .get::<i64>(&format!("{PREFIX}/limit"))
        .await
        .is_err());

    let release = bo.config().approve(PREFIX, &proposal.id).await.unwrap();
    assert_eq!(release.principal.as_deref(), Some("ana"));
    assert_eq!(release.approved_by.as_deref(), Some("bo"));
    assert_eq!(release.proposal.as_deref(), Some(proposal.id.as_str()));
    assert_eq!(
        bo.config()
            .get::<i64>(&format!("{PREFIX}/limit"))
            .await
            .unwrap(),
        7
    );
    let history = world.root.config().history(PREFIX, 10).await.unwrap();
    assert_eq!(history[0].approved_by.as_deref(), Some("bo"));
    assert_eq!(history[0].message.as_deref(), Some("more headroom"));
    let stored = bo.config().proposal(PREFIX, &proposal.id).await.unwrap();
    assert!(
        matches!(&stored.state, ProposalState::Approved { by, seq } if by == "bo" && *seq == release.seq),
        "{:?}",
        stored.state
    );

    assert_eq!(
        world.audit().await,
        vec![
            ("ana".into(), AuditAction::Release, Outcome::Refused),
            ("bo".into(), AuditAction::Release, Outcome::Refused),
            ("ana".into(), AuditAction::Propose, Outcome::Done),
            ("bo".into(), AuditAction::Approve, Outcome::Done),
        ],
        "each operation once, the refused ones marked (the raw put is etcd's to refuse, not coord's to record)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_a_stale_proposal_and_a_decided_one_are_refused_and_audited() {
    let world = World::start().await;
    let ana = world.connect("ana").await;
    let bo = world.connect("bo").await;
    let cy = world.connect("cy").await;

    let own = bo
        .config()
        .release_raw(PREFIX, limit(2))
        .propose()
        .await
        .unwrap();
    let err = bo.config().approve(PREFIX, &own.id).await.unwrap_err();
    assert!(matches!(err, Error::Proposal { .. }), "{err}");
    assert!(err.to_string().contains("cannot approve"), "{err}");

    let first = ana
        .config()
        .release_raw(PREFIX, limit(3))
        .propose()
        .await
        .unwrap();
    let second = ana
        .config()
        .release_raw(PREFIX, limit(4))
        .propose()
        .await
        .unwrap();
    cy.config().approve(PREFIX, &first.id).await.unwrap();
    let stale = cy.config().approve(PREFIX, &second.id).await.unwrap_err();
    match &stale {
        Error::Proposal { changed, .. } => {
            assert!(
                changed.iter().any(|c| c.starts_with("limit")),
                "{changed:?}"
            );
        }
        other => panic!("expected a stale proposal, got {other}"),
    }
    let again = bo.config().approve(PREFIX, &first.id).await.unwrap_err();
    assert!(again.to_string().contains("already approved"), "{again}");
    assert_eq!(
        cy.config()
            .get::<i64>(&format!("{PREFIX}/limit"))
            .await
            .unwrap(),
        3,
        "only the approved proposal was released"
    );

    let rejected = cy
        .config()
        .reject(PREFIX, &own.id, "not now")
        .await
        .unwrap();
    assert!(matches!(rejected.state, ProposalState::Rejected { ref by, .. } if by == "cy"));

    assert_eq!(
        world.audit().await,
        vec![
            ("bo".into(), AuditAction::Propose, Outcome::Done),
            ("bo".into(), AuditAction::Approve, Outcome::Refused),
            ("ana".into(), AuditAction::Propose, Outcome::Done),
            ("ana".into(), AuditAction::Propose, Outcome::Done),
            ("cy".into(), AuditAction::Approve, Outcome::Done),
            ("cy".into(), AuditAction::Approve, Outcome::Refused),
            ("bo".into(), AuditAction::Approve, Outcome::Refused),
            ("cy".into(), AuditAction::Reject, Outcome::Done),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_policy_twice_is_a_no_op_and_a_removed_grant_takes_effect_on_the_next_request()
{
    let world = World::start().await;
    let access = world.root.access();
    let policy = Policy::parse_toml(POLICY).unwrap();
    let again = access.plan(&policy, &BTreeMap::new()).await.unwrap();
    assert!(again.is_empty(), "{:#?}", again.lines());
    let before = world.root.store().auth_state().await.unwrap();
    access.apply(&again).await.unwrap();
    assert_eq!(world.root.store().auth_state().await.unwrap(), before);
    assert!(
        before.users[ROOT_USER].contains("root"),
        "root is left alone"
    );

    let bo = world.connect("bo").await;
    let ana = world.connect("ana").await;
    let proposal = ana
        .config()
        .release_raw(PREFIX, limit(5))
        .propose()
        .await
        .unwrap();

    // bo is down to `propose`: the next approval is refused by the library, and bo can no
    // longer write the prefix's values through etcd either.
    let smaller = Policy::parse_toml(&POLICY.replace(
        r#"actions = ["release", "approve"]"#,
        r#"actions = ["propose"]"#,
    ))
    .unwrap();
    let plan = access.plan(&smaller, &BTreeMap::new()).await.unwrap();
    assert!(
        plan.lines()
            .contains(&"+ role coord:owner: read /config/checkout/*".to_owned()),
        "readwrite becomes read: {:#?}",
        plan.lines()
    );
    access.apply(&plan).await.unwrap();
    let err = bo.config().approve(PREFIX, &proposal.id).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    let raw = bo
        .store()
        .put(&format!("{PREFIX}/limit"), b"1".to_vec(), 0)
        .await
        .unwrap_err();
    assert!(matches!(raw, Error::PermissionDenied { .. }), "{raw}");
    assert!(access
        .plan(&smaller, &BTreeMap::new())
        .await
        .unwrap()
        .is_empty());

    let decision = access.check("bo", Action::Approve, PREFIX).await.unwrap();
    assert!(!decision.allowed, "{decision}");
    let records = list(world.root.store(), &AuditQuery::default())
        .await
        .unwrap();
    let policy_changes = records
        .iter()
        .filter(|r| r.action == AuditAction::PolicyChange && r.outcome == Outcome::Done)
        .count();
    assert_eq!(
        policy_changes, 2,
        "the first apply and the change; not the no-op"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_grants_reads_nothing_and_a_live_reader_with_read_works() {
    let world = World::start().await;
    let policy = Policy::parse_toml(&format!(
        "{POLICY}\n[principals.svc]\nroles = [\"reader\"]\n[principals.eve]\n\
         [roles.reader]\ngrants = [{{ prefix = \"/config/checkout\", actions = [\"read\"] }}]\n"
    ))
    .unwrap();
    let mut pw = passwords();
    pw.insert("svc".into(), "svc-pw".into());
    pw.insert("eve".into(), "eve-pw".into());
    let access = world.root.access();
    access
        .apply(&access.plan(&policy, &pw).await.unwrap())
        .await
        .unwrap();
    world
        .root
        .config()
        .set(&format!("{PREFIX}/limit"), &9)
        .await
        .unwrap();

    let svc = world.connect("svc").await;
    let live = svc.live_at::<Checkout>(PREFIX).await.unwrap();
    assert_eq!(live.load().limit, 9);
    let mut changes = live.subscribe();
    world
        .root
        .config()
        .set(&format!("{PREFIX}/limit"), &10)
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
        .await
        .expect("the reader sees the change")
        .unwrap();
    assert_eq!(live.load().limit, 10);
    assert!(live.last_error().is_none());
    // It reports what it runs, under its own grant on the prefix's status keys.
    let reported = async {
        loop {
            let statuses = world.root.config().rollout(PREFIX).await.unwrap();
            if statuses.iter().any(|s| s.revision >= live.revision()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), reported)
        .await
        .expect("the reader's status is written");
    assert!(matches!(
        svc.config()
            .set(&format!("{PREFIX}/limit"), &1)
            .await
            .unwrap_err(),
        Error::PermissionDenied { .. }
    ));

    let eve = world.connect("eve").await;
    assert!(matches!(
        eve.config()
            .get::<i64>(&format!("{PREFIX}/limit"))
            .await
            .unwrap_err(),
        Error::PermissionDenied { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_cannot_be_rewritten_after_review_forged_or_decided_by_its_proposer() {
    let world = World::start().await;
    let ana = world.connect("ana").await;
    let bo = world.connect("bo").await;
    let proposal = ana
        .config()
        .release_raw(PREFIX, limit(7))
        .propose()
        .await
        .unwrap();
    let key = format!("/coord/proposals/ana{PREFIX}//{}", proposal.id);
    let (stored, _) = world.root.store().get(&key).await.unwrap();
    let stored = String::from_utf8(stored.expect("in ana's folder").value).unwrap();
    // bo reviews it...
    let reviewed = bo.config().proposal(PREFIX, &proposal.id).await.unwrap();
    assert_eq!(reviewed.stored_by, "ana");

    // ...then ana swaps the value in her own folder (etcd lets her: it is hers).
    ana.store()
        .put(&key, stored.replace("\"7\"", "\"999\"").into_bytes(), 0)
        .await
        .unwrap();
    for err in [
        bo.config().approve_reviewed(&reviewed).await.unwrap_err(),
        bo.config().approve(PREFIX, &proposal.id).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Proposal { .. }), "{err}");
        assert!(err.to_string().contains("rewritten"), "{err}");
    }
    assert!(
        bo.config()
            .get::<i64>(&format!("{PREFIX}/limit"))
            .await
            .is_err(),
        "nothing was released"
    );

    // ana cannot decide her own proposal behind the library's back...
    let decision = ana
        .store()
        .put(
            &format!("/coord/decisions{PREFIX}//{}", proposal.id),
            b"{}".to_vec(),
            0,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(decision, Error::PermissionDenied { .. }),
        "{decision}"
    );
    // ...nor can bo store a proposal in ana's folder, or one in his own that names ana.
    let into_anas = bo
        .store()
        .put(
            &format!("/coord/proposals/ana{PREFIX}//forged"),
            stored.clone().into_bytes(),
            0,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(into_anas, Error::PermissionDenied { .. }),
        "{into_anas}"
    );
    let forged_id = "f0f0f0f0";
    bo.store()
        .put(
            &format!("/coord/proposals/bo{PREFIX}//{forged_id}"),
            stored.replace(&proposal.id, forged_id).into_bytes(),
            0,
        )
        .await
        .unwrap();
    let forged = bo.config().approve(PREFIX, forged_id).await.unwrap_err();
    assert!(
        matches!(forged, Error::NotFound { .. }),
        "a proposal in the wrong folder is no proposal: {forged}"
    );
    assert!(bo
        .config()
        .proposals(PREFIX)
        .await
        .unwrap()
        .iter()
        .all(|p| p.id != forged_id));
}
