//! Config releases on both backends: every release is recorded with its change in one
//! transaction, history shows changes made elsewhere, rollback restores exact bytes, and a
//! concurrent release and rollback never both apply.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use coord::config::{Change, KeyDiff, ReleaseKind, Selector};
use coord::{CoordConfig, Error, Secret};
use serde_json::json;

on_both_backends!(cases:
    every_release_is_in_history_with_message_author_and_revision,
    a_refused_release_leaves_no_record,
    trimming_keeps_the_newest_releases,
    a_change_made_outside_releases_shows_unrecorded_and_the_next_release_records_it,
    history_and_diff_write_nothing,
    secrets_of_maps_and_nested_map_entries_are_redacted_in_releases_history_and_diff,
    coords_own_prefix_is_refused_by_every_entry_point_and_nothing_is_written,
    concurrent_releases_of_one_prefix_all_commit_and_history_stays_exact,
    rollback_restores_exact_bytes_and_removes_keys_added_later,
    a_concurrent_release_and_rollback_never_both_apply,
    diff_lists_each_key_and_hides_secrets,
    release_raw_sets_and_removes_only_the_keys_it_names,
    expect_version_guards_its_key_and_lets_the_others_move,
    a_gray_release_changes_the_prefix_only_when_promoted,
    a_release_costs_one_round_trip_unless_the_prefix_moved,
    a_removal_outside_releases_is_recorded_with_its_value_and_rolled_back,
    outside_writes_between_remembered_releases_are_found_with_their_values,
    values_compacted_away_before_they_were_recorded_refuse_a_rollback,
    a_rollback_larger_than_one_transaction_is_refused_and_writes_nothing,
    records_of_the_first_format_still_read_diff_and_roll_back,
);

fn positive(checkout: &Checkout) -> Result<(), String> {
    if checkout.timeout_secs == 0 {
        return Err("timeout_secs must be positive".into());
    }
    Ok(())
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/releases", validate = "positive")]
struct Checkout {
    timeout_secs: u64,
    #[coord(default)]
    region: String,
    #[coord(secret, default)]
    api_key: Secret<String>,
}

fn checkout(timeout_secs: u64) -> Checkout {
    Checkout {
        timeout_secs,
        region: "eu".into(),
        api_key: Secret::new("k-1".into()),
    }
}

const P: &str = "/config/releases";

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Account {
    user: String,
    #[coord(secret)]
    password: Secret<String>,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/vault")]
struct Vault {
    #[coord(secret)]
    api_key: Secret<String>,
    #[coord(map)]
    tokens: coord::config::Map<Secret<String>>,
    #[coord(map, nested)]
    accounts: BTreeMap<String, Account>,
}

const V: &str = "/config/vault";

mod cases {
    use super::*;
    use crate::common::Backend;

    /// The raw bytes of a key, or `None`.
    async fn raw(b: &Backend, key: &str) -> Option<Vec<u8>> {
        let response = b
            .store()
            .range(
                &coord::store::KeyRange::key(format!("{P}/{key}")),
                Default::default(),
            )
            .await
            .unwrap();
        response.kvs.first().map(|kv| kv.value.clone())
    }

    /// Writes outside releases: etcdctl on etcd, the store seam on the embedded backend.
    fn outside_put(b: &Backend, key: &str, value: &str) -> futures::future::BoxFuture<'static, ()> {
        let key = format!("{P}/{key}");
        match &b.server {
            Some(server) => {
                let out = server.etcdctl(&["put", &key, value]).expect("etcdctl put");
                assert!(out.contains("OK"), "{out}");
                Box::pin(async {})
            }
            None => {
                let store = b.store().clone();
                let value = value.as_bytes().to_vec();
                Box::pin(async move {
                    store.put(&key, value, 0).await.unwrap();
                })
            }
        }
    }

    pub async fn every_release_is_in_history_with_message_author_and_revision(b: &Backend) {
        let config = b.coord.config();
        let first = config
            .release(&checkout(30))
            .message("launch")
            .author("ana")
            .commit()
            .await
            .unwrap();
        let second = config
            .release(&checkout(5))
            .message("faster")
            .author("bo")
            .commit()
            .await
            .unwrap();
        let published = config.publish(&checkout(6)).await.unwrap();

        let history = config.history(P, 10).await.unwrap();
        let seqs: Vec<u64> = history.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 2, 1], "newest first");
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(history[2].message.as_deref(), Some("launch"));
        assert_eq!(history[2].author.as_deref(), Some("ana"));
        assert_eq!(history[2].kind, ReleaseKind::Release);
        assert_eq!(history[1].message.as_deref(), Some("faster"));
        assert_eq!(history[0].kind, ReleaseKind::Publish);
        assert_eq!(history[0].message, None);
        assert_eq!(history[0].revision, published);
        assert_eq!(history[1].revision, second.revision);
        // The record's revision is the one the values were written at.
        let (value, revision) = config
            .get_with_version::<u64>(&format!("{P}/timeout_secs"))
            .await
            .unwrap();
        assert_eq!((value, revision), (6, published));
        // A release shows what it changed, key by key: the second changed one key.
        assert_eq!(
            history[1].values,
            BTreeMap::from([("timeout_secs".to_owned(), json!(5))])
        );
        assert_eq!(history[1].changes.len(), 1);
        assert_eq!(history[1].changes[0].key, "timeout_secs");
        assert_eq!(
            history[1].changes[0].change,
            Change::Changed {
                old: json!(30),
                new: json!(5)
            }
        );
        assert_eq!(history[2].values["api_key"], json!("<redacted>"));
        assert_eq!(history[2].values["region"], json!("eu"));
    }

    pub async fn a_refused_release_leaves_no_record(b: &Backend) {
        let config = b.coord.config();
        let refused = config.release(&checkout(0)).message("bad").commit().await;
        assert!(matches!(refused, Err(Error::Invalid { .. })), "{refused:?}");
        assert!(config.history(P, 10).await.unwrap().is_empty());
        assert!(raw(b, "timeout_secs").await.is_none(), "nothing written");

        config.release(&checkout(1)).commit().await.unwrap();
        let stale = config.release(&checkout(2)).expect_latest(0).commit().await;
        assert!(
            matches!(&stale, Err(Error::Conflict { key, expected: 0, current: 1 }) if key == P),
            "{stale:?}"
        );
        let history = config.history(P, 10).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"1");
    }

    pub async fn trimming_keeps_the_newest_releases(b: &Backend) {
        let config = b.coord.config().with_release_history(3);
        for timeout in 1..=5 {
            config.release(&checkout(timeout)).commit().await.unwrap();
        }
        let seqs: Vec<u64> = config
            .history(P, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [5, 4, 3]);
        let stored = b
            .store()
            .range(
                &coord::store::KeyRange::prefix(format!("/coord/releases{P}//")),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(stored.kvs.len(), 4, "three records and the head");
        let gone = config.rollback(P, 1).commit().await;
        assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
    }

    pub async fn a_change_made_outside_releases_shows_unrecorded_and_the_next_release_records_it(
        b: &Backend,
    ) {
        let config = b.coord.config();
        config
            .release(&checkout(30))
            .message("launch")
            .commit()
            .await
            .unwrap();
        outside_put(b, "timeout_secs", "45").await;

        let history = config.history(P, 10).await.unwrap();
        assert_eq!(history.len(), 2);
        let unrecorded = &history[0];
        assert_eq!(unrecorded.kind, ReleaseKind::Unrecorded);
        assert_eq!(unrecorded.seq, 2, "numbered as the next release records it");
        assert_eq!(unrecorded.author, None);
        assert_eq!(
            unrecorded.values,
            BTreeMap::from([("timeout_secs".to_owned(), json!(45))]),
            "only what changed"
        );
        assert_eq!(
            unrecorded.changes[0].change,
            Change::Changed {
                old: json!(30),
                new: json!(45)
            },
            "with the value it replaced"
        );
        let (_, revision) = config
            .get_with_version::<u64>(&format!("{P}/timeout_secs"))
            .await
            .unwrap();
        assert_eq!(unrecorded.revision, revision, "dated by the change it saw");
        let not_yet = config.rollback(P, 2).commit().await;
        assert!(
            matches!(not_yet, Err(Error::NotFound { .. })),
            "an unrecorded change is no rollback target: {not_yet:?}"
        );

        // A release that finds the change records it first, with everything changed since.
        outside_put(b, "region", "\"us\"").await;
        assert_eq!(
            config.history(P, 10).await.unwrap().len(),
            2,
            "still one entry"
        );
        config
            .release(&checkout(7))
            .message("next")
            .commit()
            .await
            .unwrap();
        let history = config.history(P, 10).await.unwrap();
        let kinds: Vec<&ReleaseKind> = history.iter().map(|r| &r.kind).collect();
        assert_eq!(
            kinds,
            [
                &ReleaseKind::Release,
                &ReleaseKind::External,
                &ReleaseKind::Release
            ]
        );
        assert_eq!(history[1].seq, 2);
        assert_eq!(history[1].values["timeout_secs"], json!(45));
        assert_eq!(history[1].values["region"], json!("us"));
        assert_eq!(history[1].author, None);
    }

    pub async fn history_and_diff_write_nothing(b: &Backend) {
        let config = b.coord.config();
        config.release(&checkout(30)).commit().await.unwrap();
        config.release(&checkout(31)).commit().await.unwrap();
        outside_put(b, "timeout_secs", "45").await;
        let records = || async {
            b.store()
                .range(
                    &coord::store::KeyRange::prefix(format!("/coord/releases{P}//")),
                    Default::default(),
                )
                .await
                .unwrap()
                .kvs
        };
        let before = b.store().status().await.unwrap().revision;
        let stored = records().await;
        for _ in 0..3 {
            let history = config.history(P, 10).await.unwrap();
            assert_eq!(history[0].kind, ReleaseKind::Unrecorded);
            config.diff(P, 1, 2).await.unwrap();
            // The unrecorded entry is a diff end too: the values as they are now.
            let unrecorded = config.diff(P, 2, 3).await.unwrap();
            assert_eq!(
                pairs(&unrecorded),
                [(
                    "timeout_secs",
                    &Change::Changed {
                        old: json!(31),
                        new: json!(45)
                    }
                )]
            );
            config.rollout(P).await.unwrap();
        }
        assert_eq!(
            b.store().status().await.unwrap().revision,
            before,
            "a read wrote to the store"
        );
        assert_eq!(records().await, stored);
    }

    pub async fn secrets_of_maps_and_nested_map_entries_are_redacted_in_releases_history_and_diff(
        b: &Backend,
    ) {
        let config = b.coord.config();
        let canaries = ["canary-api-key", "canary-token", "canary-password"];
        let vault = |n: u32| Vault {
            api_key: Secret::new(format!("{}-{n}", canaries[0])),
            tokens: [(
                "acme".to_owned(),
                Secret::new(format!("{}-{n}", canaries[1])),
            )]
            .into_iter()
            .collect(),
            accounts: BTreeMap::from([(
                "main".to_owned(),
                Account {
                    user: format!("user-{n}"),
                    password: Secret::new(format!("{}-{n}", canaries[2])),
                },
            )]),
        };
        let shown = |what: &dyn std::fmt::Debug| {
            let text = format!("{what:?}");
            for canary in canaries {
                assert!(!text.contains(canary), "{canary} shown: {text}");
            }
            text
        };
        // A typed release's answer.
        let first = config.release(&vault(1)).commit().await.unwrap();
        let text = shown(&first);
        assert!(text.contains("user-1"), "plain values still show: {text}");
        assert_eq!(first.values["tokens/acme"], json!("<redacted>"));
        assert_eq!(first.values["accounts/main/password"], json!("<redacted>"));
        let second = config.release(&vault(2)).commit().await.unwrap();
        shown(&second);
        // A raw release under the published schema, and a rollback.
        config.publish_schema::<Vault>().await.unwrap();
        let raw = config
            .release_raw(
                V,
                BTreeMap::from([("tokens/new".to_owned(), json!("canary-token-raw"))]),
            )
            .commit()
            .await
            .unwrap();
        shown(&raw);
        assert_eq!(raw.values["tokens/new"], json!("<redacted>"));
        shown(&config.rollback(V, first.seq).commit().await.unwrap());
        // A change made outside releases: unrecorded, then recorded as external.
        for (key, value) in [
            ("tokens/outside", "\"canary-token-outside\""),
            ("accounts/side/password", "\"canary-password-outside\""),
            ("accounts/side/user", "\"side\""),
        ] {
            b.store()
                .put(&format!("{V}/{key}"), value.as_bytes().to_vec(), 0)
                .await
                .unwrap();
        }
        let history = config.history(V, 10).await.unwrap();
        assert_eq!(history[0].kind, ReleaseKind::Unrecorded);
        shown(&history);
        config.release(&vault(3)).commit().await.unwrap();
        let history = config.history(V, 10).await.unwrap();
        assert!(
            history.iter().any(|r| r.kind == ReleaseKind::External),
            "{history:#?}"
        );
        let text = shown(&history);
        assert!(
            text.contains("tokens/outside"),
            "the external entry lists it: {text}"
        );
        for pair in history.windows(2) {
            shown(&config.diff(V, pair[1].seq, pair[0].seq).await.unwrap());
        }
        let diff = config.diff(V, first.seq, second.seq).await.unwrap();
        assert!(
            diff.iter().any(|d| d.key == "accounts/main/password"),
            "a changed secret is listed: {diff:?}"
        );
    }

    pub async fn rollback_restores_exact_bytes_and_removes_keys_added_later(b: &Backend) {
        let config = b.coord.config();
        // Bytes no serializer would write: only an exact copy restores them.
        outside_put(b, "timeout_secs", "  30 ").await;
        outside_put(b, "region", "{ \"name\" : \"eu\" }").await;
        let history = config.history(P, 10).await.unwrap();
        let original = history[0].seq;
        config
            .release(&checkout(5))
            .message("change")
            .commit()
            .await
            .unwrap();
        outside_put(b, "added-later", "1").await;
        config
            .release_raw(P, BTreeMap::from([("also-added".to_owned(), json!(true))]))
            .commit()
            .await
            .unwrap();

        let rollback = config
            .rollback(P, original)
            .author("ops")
            .commit()
            .await
            .unwrap();
        assert_eq!(rollback.kind, ReleaseKind::Rollback { to: original });
        assert_eq!(
            rollback.message.as_deref(),
            Some(format!("rollback to {original}").as_str())
        );
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"  30 ");
        assert_eq!(raw(b, "region").await.unwrap(), b"{ \"name\" : \"eu\" }");
        assert!(
            raw(b, "api_key").await.is_none(),
            "added by a later release"
        );
        assert!(raw(b, "added-later").await.is_none());
        assert!(raw(b, "also-added").await.is_none());
        let latest = &config.history(P, 1).await.unwrap()[0];
        assert_eq!(latest.seq, rollback.seq, "no drift after a rollback");
    }

    pub async fn a_concurrent_release_and_rollback_never_both_apply(b: &Backend) {
        let config = b.coord.config();
        let base = config.release(&checkout(1)).commit().await.unwrap().seq;
        for round in 0..10u64 {
            let latest = config.history(P, 1).await.unwrap()[0].seq;
            let release = config
                .release(&checkout(100 + round))
                .expect_latest(latest)
                .commit();
            let rollback = config.rollback(P, base).expect_latest(latest).commit();
            let (release, rollback) = tokio::join!(release, rollback);
            let (winner, loser) = match (&release, &rollback) {
                (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
                other => panic!("round {round}: exactly one must apply: {other:?}"),
            };
            assert!(matches!(loser, Error::Conflict { .. }), "{loser:?}");
            assert_eq!(winner.seq, latest + 1);
            let expected = if release.is_ok() { 100 + round } else { 1 };
            let timeout: u64 =
                serde_json::from_slice(&raw(b, "timeout_secs").await.unwrap()).unwrap();
            assert_eq!(
                timeout, expected,
                "round {round}: the winner's values, whole"
            );
            let history = config.history(P, 1).await.unwrap();
            assert_eq!(history[0].seq, winner.seq, "no half-applied release");
        }
    }

    fn pairs(diff: &[KeyDiff]) -> Vec<(&str, &Change)> {
        diff.iter().map(|d| (&d.key[..], &d.change)).collect()
    }

    pub async fn diff_lists_each_key_and_hides_secrets(b: &Backend) {
        let config = b.coord.config();
        let a = config.release(&checkout(30)).commit().await.unwrap().seq;
        let mut next = checkout(45);
        next.api_key = Secret::new("k-2".into());
        let c = config.release(&next).commit().await.unwrap().seq;
        config
            .release_raw_with(
                P,
                BTreeMap::from([("extra".to_owned(), json!({"on": true}))]),
                BTreeSet::from(["region".to_owned()]),
            )
            .commit()
            .await
            .unwrap();
        let d = c + 1;

        let diff = config.diff(P, a, c).await.unwrap();
        let redacted = json!("<redacted>");
        assert_eq!(
            pairs(&diff),
            [
                (
                    "api_key",
                    &Change::Changed {
                        old: redacted.clone(),
                        new: redacted
                    }
                ),
                (
                    "timeout_secs",
                    &Change::Changed {
                        old: json!(30),
                        new: json!(45)
                    }
                ),
            ]
        );
        let diff = config.diff(P, c, d).await.unwrap();
        assert_eq!(
            pairs(&diff),
            [
                (
                    "extra",
                    &Change::Added {
                        new: json!({"on": true})
                    }
                ),
                ("region", &Change::Removed { old: json!("eu") }),
            ]
        );
        let gone = config.diff(P, a, 99).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
    }

    pub async fn release_raw_sets_and_removes_only_the_keys_it_names(b: &Backend) {
        let config = b.coord.config();
        config.release(&checkout(30)).commit().await.unwrap();
        config
            .release_raw_with(
                P,
                BTreeMap::from([("timeout_secs".to_owned(), json!(9))]),
                BTreeSet::from(["region".to_owned(), "never-there".to_owned()]),
            )
            .message("raw")
            .commit()
            .await
            .unwrap();
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"9");
        assert!(raw(b, "region").await.is_none());
        assert!(raw(b, "api_key").await.is_some(), "not named: left alone");
        let history = config.history(P, 2).await.unwrap();
        assert_eq!(
            history[0].values,
            BTreeMap::from([("timeout_secs".to_owned(), json!(9))])
        );
        let removed: Vec<(&str, &Change)> = history[0]
            .changes
            .iter()
            .filter(|diff| matches!(diff.change, Change::Removed { .. }))
            .map(|diff| (diff.key.as_str(), &diff.change))
            .collect();
        assert_eq!(
            removed,
            [("region", &Change::Removed { old: json!("eu") })],
            "a key never there is no change"
        );
        assert_eq!(
            history[1].values["api_key"],
            json!("<redacted>"),
            "still secret"
        );

        let bad = config
            .release_raw(P, BTreeMap::from([("/absolute".to_owned(), json!(1))]))
            .commit()
            .await;
        assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");
    }

    /// The mod revision of a key under `P` (0: absent).
    async fn version(b: &Backend, key: &str) -> i64 {
        let (kv, _) = b.store().get(&format!("{P}/{key}")).await.unwrap();
        kv.map_or(0, |kv| kv.mod_revision)
    }

    pub async fn expect_version_guards_its_key_and_lets_the_others_move(b: &Backend) {
        let config = b.coord.config();
        config.release(&checkout(30)).commit().await.unwrap();
        let seen = version(b, "timeout_secs").await;
        let one = |value| BTreeMap::from([("timeout_secs".to_owned(), json!(value))]);

        // Another key moved since the view was taken: the release goes in.
        outside_put(b, "region", "\"us\"").await;
        let done = config
            .release_raw(P, one(40))
            .expect_version("timeout_secs", seen)
            .commit()
            .await
            .unwrap();
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"40");
        assert_eq!(version(b, "timeout_secs").await, done.revision);

        // The key itself moved: refused with both versions, nothing written, no record.
        outside_put(b, "timeout_secs", "50").await;
        let moved = version(b, "timeout_secs").await;
        let latest = config.history(P, 1).await.unwrap()[0].seq;
        let late = config
            .release_raw(P, one(60))
            .expect_version("timeout_secs", done.revision)
            .commit()
            .await;
        match late {
            Err(Error::Conflict {
                key,
                expected,
                current,
            }) => {
                assert_eq!(key, format!("{P}/timeout_secs"));
                assert_eq!((expected, current), (done.revision, moved));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"50");
        assert_eq!(config.history(P, 1).await.unwrap()[0].seq, latest);

        // 0 means "must not exist": the first such release creates the key, a second is refused.
        let new_key = || BTreeMap::from([("new_key".to_owned(), json!(1))]);
        config
            .release_raw(P, new_key())
            .expect_version("new_key", 0)
            .commit()
            .await
            .unwrap();
        let again = config
            .release_raw(P, new_key())
            .expect_version("new_key", 0)
            .commit()
            .await;
        assert!(
            matches!(again, Err(Error::Conflict { expected: 0, .. })),
            "{again:?}"
        );
    }

    pub async fn a_gray_release_changes_the_prefix_only_when_promoted(b: &Backend) {
        let config = b.coord.config();
        config.release(&checkout(30)).commit().await.unwrap();
        let canary = Selector::default().label("zone", "eu-1");
        let gray = config
            .release(&checkout(5))
            .to(canary.clone())
            .message("try 5 s")
            .commit()
            .await
            .unwrap();
        assert_eq!(
            gray.kind,
            ReleaseKind::Gray {
                selector: canary.clone()
            }
        );
        assert_eq!(
            raw(b, "timeout_secs").await.unwrap(),
            b"30",
            "the prefix is untouched"
        );
        assert!(
            gray.values.is_empty() && gray.changes.is_empty(),
            "a gray release changes no key of the prefix: {gray:?}"
        );
        assert_eq!(gray.gray_values["timeout_secs"], json!(5));

        let second = config.release(&checkout(6)).to(canary).commit().await;
        assert!(
            matches!(second, Err(Error::GrayConflict { in_progress, .. }) if in_progress == gray.seq),
            "{second:?}"
        );
        // An ordinary release meanwhile is fine, and nothing counts as drift.
        config.release(&checkout(31)).commit().await.unwrap();
        let wrong = config.promote(P, gray.seq + 1).commit().await;
        assert!(
            matches!(wrong, Err(Error::GrayConflict { in_progress, .. }) if in_progress == gray.seq),
            "{wrong:?}"
        );

        let promoted = config.promote(P, gray.seq).commit().await.unwrap();
        assert_eq!(promoted.kind, ReleaseKind::Promote { gray: gray.seq });
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"5");
        let again = config.promote(P, gray.seq).commit().await;
        assert!(matches!(again, Err(Error::NotFound { .. })), "{again:?}");

        let next = config
            .release(&checkout(7))
            .to(Selector::default().percent(50))
            .commit()
            .await
            .unwrap();
        let aborted = config.abort(P, next.seq).commit().await.unwrap();
        assert_eq!(aborted.kind, ReleaseKind::Abort { gray: next.seq });
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"5");
        let kinds: Vec<&'static str> = config
            .history(P, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| match r.kind {
                ReleaseKind::Release => "release",
                ReleaseKind::Gray { .. } => "gray",
                ReleaseKind::Promote { .. } => "promote",
                ReleaseKind::Abort { .. } => "abort",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["abort", "gray", "promote", "release", "gray", "release"]
        );
    }

    /// A key deleted outside releases: the next release records the removal with the value
    /// it had (read at the revision the records were checked at), and a rollback restores it.
    pub async fn a_removal_outside_releases_is_recorded_with_its_value_and_rolled_back(
        b: &Backend,
    ) {
        let config = b.coord.config();
        let first = config.release(&checkout(30)).commit().await.unwrap();
        b.store()
            .delete(&coord::store::KeyRange::key(format!("{P}/region")))
            .await
            .unwrap();
        let unrecorded = &config.history(P, 1).await.unwrap()[0];
        assert_eq!(unrecorded.kind, ReleaseKind::Unrecorded);
        assert_eq!(
            pairs(&unrecorded.changes),
            [("region", &Change::Removed { old: json!("eu") })]
        );
        // A release touching another key: the center's watch saw the removal (recorded
        // first) or, if its event was still on the way, the next read finds it.
        config
            .release_raw(P, BTreeMap::from([("timeout_secs".to_owned(), json!(31))]))
            .commit()
            .await
            .unwrap();
        let outside = |history: &[coord::config::Release]| {
            let found: Vec<coord::config::Release> = history
                .iter()
                .filter(|r| matches!(r.kind, ReleaseKind::External | ReleaseKind::Unrecorded))
                .cloned()
                .collect();
            assert_eq!(found.len(), 1, "{history:#?}");
            assert_eq!(
                pairs(&found[0].changes),
                [("region", &Change::Removed { old: json!("eu") })]
            );
            found[0].kind.clone()
        };
        outside(&config.history(P, 10).await.unwrap());
        config.rollback(P, first.seq).commit().await.unwrap();
        assert_eq!(raw(b, "region").await.unwrap(), b"\"eu\"");
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"30");
        let kind = outside(&config.history(P, 10).await.unwrap());
        assert_eq!(kind, ReleaseKind::External, "recorded by now");
    }

    /// Releases from a center's remembered state do not read the prefix: a write outside
    /// releases to a key they do not touch is found by the center's watch on the prefix
    /// (then recorded before the next release) or, if its event had not arrived yet, by the
    /// next read. Either way it is in history once, with the value it replaced, and a
    /// rollback undoes it.
    pub async fn outside_writes_between_remembered_releases_are_found_with_their_values(
        b: &Backend,
    ) {
        let config = b.coord.config();
        let first = config.release(&checkout(1)).commit().await.unwrap();
        outside_put(b, "extra", "1").await;
        outside_put(b, "region", "\"us\"").await;
        for timeout in 2..=4 {
            config
                .release_raw(
                    P,
                    BTreeMap::from([("timeout_secs".to_owned(), json!(timeout))]),
                )
                .commit()
                .await
                .unwrap();
        }
        let history = config.history(P, 10).await.unwrap();
        let outside: Vec<&coord::config::Release> = history
            .iter()
            .filter(|r| matches!(r.kind, ReleaseKind::External | ReleaseKind::Unrecorded))
            .collect();
        assert_eq!(outside.len(), 1, "found once: {history:#?}");
        assert_eq!(
            pairs(&outside[0].changes),
            [
                ("extra", &Change::Added { new: json!(1) }),
                (
                    "region",
                    &Change::Changed {
                        old: json!("eu"),
                        new: json!("us")
                    }
                ),
            ],
            "the outside writes, not the releases' own"
        );
        let seqs: Vec<u64> = history.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [5, 4, 3, 2, 1]);
        config.rollback(P, first.seq).commit().await.unwrap();
        assert!(raw(b, "extra").await.is_none());
        assert_eq!(raw(b, "region").await.unwrap(), b"\"eu\"");
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b"1");
        let history = config.history(P, 10).await.unwrap();
        assert_eq!(history[0].kind, ReleaseKind::Rollback { to: first.seq });
        let external = history
            .iter()
            .filter(|r| r.kind == ReleaseKind::External)
            .count();
        assert_eq!(external, 1, "{history:#?}");
    }

    /// When etcd compacted away what a key held before an outside write was recorded, the
    /// record says the earlier value is unknown (and counts removals it cannot name); a
    /// rollback over it is refused with nothing written, one after it still works.
    pub async fn values_compacted_away_before_they_were_recorded_refuse_a_rollback(b: &Backend) {
        let config = b.coord.config();
        // A key from before the first release: no record holds its value.
        outside_put(b, "legacy", "1").await;
        let first = config.release(&checkout(30)).commit().await.unwrap();
        outside_put(b, "legacy", "2").await;
        b.store()
            .delete(&coord::store::KeyRange::key(format!("{P}/region")))
            .await
            .unwrap();
        let now = b.store().status().await.unwrap().revision;
        b.store().compact(now).await.unwrap();
        // The release writes the key changed outside, so it reads the prefix and records
        // the change first.
        let next = config
            .release_raw(P, BTreeMap::from([("legacy".to_owned(), json!(3))]))
            .commit()
            .await
            .unwrap();
        let history = config.history(P, 10).await.unwrap();
        let external = &history[1];
        assert_eq!(external.kind, ReleaseKind::External);
        assert_eq!(
            pairs(&external.changes),
            [("legacy", &Change::Set { new: json!(2) })],
            "the value it replaced is unknown, not guessed; the removal is counted"
        );
        let before = b.store().status().await.unwrap().revision;
        let refused = config.rollback(P, first.seq).commit().await;
        let Err(Error::InvalidArgument { field, reason }) = refused else {
            panic!("a rollback over unknown values: {refused:?}");
        };
        assert_eq!(field, P);
        assert!(reason.contains("compacted"), "{reason}");
        assert_eq!(
            b.store().status().await.unwrap().revision,
            before,
            "nothing written"
        );
        // A rollback to a release after the unknown change restores exactly.
        config
            .release_raw(P, BTreeMap::from([("legacy".to_owned(), json!(4))]))
            .commit()
            .await
            .unwrap();
        config.rollback(P, next.seq).commit().await.unwrap();
        assert_eq!(raw(b, "legacy").await.unwrap(), b"3");
    }

    /// A rollback that would restore more keys than one transaction holds (etcd's
    /// `--max-txn-ops`, 128) is refused, naming the limit, with nothing written.
    pub async fn a_rollback_larger_than_one_transaction_is_refused_and_writes_nothing(b: &Backend) {
        let config = b.coord.config();
        let base = config
            .release_raw(P, BTreeMap::from([("base".to_owned(), json!(0))]))
            .commit()
            .await
            .unwrap();
        for batch in 0..2 {
            let keys = (0..70)
                .map(|i| (format!("k{batch}-{i:02}"), json!(i)))
                .collect();
            config.release_raw(P, keys).commit().await.unwrap();
        }
        let before = b.store().status().await.unwrap().revision;
        let refused = config.rollback(P, base.seq).commit().await;
        let Err(Error::InvalidArgument { field, reason }) = refused else {
            panic!("a rollback of 140 keys: {refused:?}");
        };
        assert_eq!(field, P);
        for part in ["140 keys", "128 operations", "nothing was written"] {
            assert!(reason.contains(part), "{part} missing: {reason}");
        }
        assert_eq!(b.store().status().await.unwrap().revision, before);
        assert_eq!(config.history(P, 10).await.unwrap().len(), 3);
        // The release before the last is one transaction away.
        config.rollback(P, base.seq + 1).commit().await.unwrap();
        assert!(raw(b, "k1-00").await.is_none());
        assert!(raw(b, "k0-00").await.is_some());
    }

    /// Records written by the first format (every key of the prefix in each record and in
    /// the head) still show in history with their changes, diff against new ones, and a
    /// rollback to one restores its exact bytes; the next release writes the new format.
    pub async fn records_of_the_first_format_still_read_diff_and_roll_back(b: &Backend) {
        let config = b.coord.config();
        let old = |seq: u64, values: serde_json::Value| {
            json!({"seq": seq, "kind": "release", "author": "old-coord", "time_ms": 1_000 * seq,
                   "values": values, "secrets": ["api_key"]})
        };
        let one = old(1, json!({"timeout_secs": " 30", "api_key": "\"k-1\""}));
        let two = old(
            2,
            json!({"timeout_secs": "45", "api_key": "\"k-1\"", "region": "\"us\""}),
        );
        let records = format!("/coord/releases{P}//");
        let mut ops = vec![
            coord::store::TxnOp::put(format!("{P}/timeout_secs"), b"45".to_vec()),
            coord::store::TxnOp::put(format!("{P}/api_key"), b"\"k-1\"".to_vec()),
            coord::store::TxnOp::put(format!("{P}/region"), b"\"us\"".to_vec()),
        ];
        for (seq, record) in [(1, &one), (2, &two)] {
            ops.push(coord::store::TxnOp::put(
                format!("{records}{seq:020}"),
                serde_json::to_vec(record).unwrap(),
            ));
        }
        ops.push(coord::store::TxnOp::put(
            format!("{records}head"),
            serde_json::to_vec(&two).unwrap(),
        ));
        b.store()
            .txn(coord::store::Txn::new().and_then(ops))
            .await
            .unwrap();

        let history = config.history(P, 10).await.unwrap();
        assert_eq!(history.len(), 2, "no drift: the prefix is as the head says");
        assert_eq!(
            pairs(&history[0].changes),
            [
                ("region", &Change::Added { new: json!("us") }),
                (
                    "timeout_secs",
                    &Change::Changed {
                        old: json!(30),
                        new: json!(45)
                    }
                ),
            ]
        );
        assert_eq!(history[1].values["api_key"], json!("<redacted>"));
        let three = config
            .release_raw(P, BTreeMap::from([("timeout_secs".to_owned(), json!(60))]))
            .commit()
            .await
            .unwrap();
        let head = b
            .store()
            .range(
                &coord::store::KeyRange::key(format!("{records}head")),
                Default::default(),
            )
            .await
            .unwrap();
        let head: serde_json::Value = serde_json::from_slice(&head.kvs[0].value).unwrap();
        assert_eq!(head["format"], json!(2), "{head}");
        assert!(head.get("values").is_none(), "{head}");
        let diff = config.diff(P, 1, three.seq).await.unwrap();
        assert_eq!(
            pairs(&diff),
            [
                ("region", &Change::Added { new: json!("us") }),
                (
                    "timeout_secs",
                    &Change::Changed {
                        old: json!(30),
                        new: json!(60)
                    }
                ),
            ]
        );
        config.rollback(P, 1).commit().await.unwrap();
        assert_eq!(raw(b, "timeout_secs").await.unwrap(), b" 30", "exact bytes");
        assert!(raw(b, "region").await.is_none());
        assert_eq!(raw(b, "api_key").await.unwrap(), b"\"k-1\"");
    }

    /// The config center remembers the state its last release left: the next release needs
    /// no read while nobody else wrote the prefix.
    pub async fn a_release_costs_one_round_trip_unless_the_prefix_moved(b: &Backend) {
        let config = b.coord.config();
        let stats = b.store().stats();
        config.release(&checkout(1)).commit().await.unwrap();
        let before = stats.round_trips();
        config.release(&checkout(2)).commit().await.unwrap();
        assert_eq!(
            stats.round_trips() - before,
            1,
            "nothing moved: one transaction"
        );

        outside_put(b, "timeout_secs", "40").await;
        let before = stats.round_trips();
        let release = config.release(&checkout(3)).commit().await.unwrap();
        let trips = stats.round_trips() - before;
        // The center's watch on the prefix usually has the outside write by now, and the
        // release reads at once: the prefix (one page), the records since the last read
        // (which tell the outside write from releases), then the release. If the event is
        // still on its way, the remembered release is refused first.
        assert!(
            (3..=4).contains(&trips),
            "{trips} round trips: at most one refused transaction, then a read and the release"
        );
        let kinds: Vec<ReleaseKind> = config
            .history(P, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(kinds, [ReleaseKind::Release, ReleaseKind::External]);
        assert_eq!(release.values["timeout_secs"], json!(3));
    }

    pub async fn coords_own_prefix_is_refused_by_every_entry_point_and_nothing_is_written(
        b: &Backend,
    ) {
        let config = b.coord.config();
        config.release(&checkout(30)).commit().await.unwrap();
        let before = b.store().status().await.unwrap().revision;
        let values = || BTreeMap::from([("limit".to_owned(), json!(99_999))]);
        let refused = |what: &str, result: Result<(), Error>| match result {
            Err(Error::InvalidArgument { reason, .. }) => {
                assert!(reason.contains("reserved"), "{what}: {reason}")
            }
            other => panic!("{what} under /coord was not refused: {other:?}"),
        };
        for prefix in ["/coord", "/coord/", "/coord/gray/config", "/coord/releases"] {
            refused(
                "release_raw",
                config
                    .release_raw(prefix, values())
                    .commit()
                    .await
                    .map(drop),
            );
            refused(
                "release_at",
                config
                    .release_at(prefix, &checkout(1))
                    .commit()
                    .await
                    .map(drop),
            );
            refused(
                "gray release",
                config
                    .release_raw(prefix, values())
                    .to(Selector::default().instance("a"))
                    .commit()
                    .await
                    .map(drop),
            );
            refused(
                "rollback",
                config.rollback(prefix, 1).commit().await.map(drop),
            );
            refused(
                "promote",
                config.promote(prefix, 1).commit().await.map(drop),
            );
            refused("abort", config.abort(prefix, 1).commit().await.map(drop));
            refused("history", config.history(prefix, 10).await.map(drop));
            refused("diff", config.diff(prefix, 1, 2).await.map(drop));
            refused("rollout", config.rollout(prefix).await.map(drop));
            refused(
                "wait_rollout",
                config
                    .wait_rollout(prefix, 1, std::time::Duration::from_secs(1))
                    .await
                    .map(drop),
            );
            refused(
                "publish_schema_at",
                config.publish_schema_at::<Checkout>(prefix).await.map(drop),
            );
            refused("schema", config.schema(prefix).await.map(drop));
        }
        let key = format!("/coord/gray{P}");
        refused("set", config.set(&key, &json!({})).await.map(drop));
        refused("delete", config.delete(&key).await.map(drop));
        refused(
            "compare_and_set",
            config.compare_and_set(&key, &1, 0).await.map(drop),
        );
        refused(
            "a batch delete",
            config.batch().delete(&key).commit().await.map(drop),
        );
        refused(
            "a batch guard",
            config
                .batch()
                .expect_version(&key, 0)
                .set("/config/elsewhere", &1)
                .unwrap()
                .commit()
                .await
                .map(drop),
        );
        assert_eq!(
            b.store().status().await.unwrap().revision,
            before,
            "a refused call wrote"
        );
        // Reading coord's keys harms nothing and stays open.
        assert!(config.list("/coord/releases").await.unwrap().len() >= 2);
        assert_eq!(config.history(P, 10).await.unwrap().len(), 1);
    }

    pub async fn concurrent_releases_of_one_prefix_all_commit_and_history_stays_exact(b: &Backend) {
        const WRITERS: usize = 4;
        const RELEASES: usize = 10;
        let mut coords = Vec::new();
        for _ in 0..WRITERS {
            coords.push(match &b.server {
                Some(server) => coord::Coord::connect(server.client_config()).await.unwrap(),
                None => coord::Coord::from_store(b.store()),
            });
        }
        let writers = coords.iter().enumerate().map(|(w, coord)| {
            let config = coord.config();
            async move {
                for r in 0..RELEASES {
                    config
                        .release_raw(P, BTreeMap::from([(format!("w{w}"), json!(r))]))
                        .message(format!("w{w} r{r}"))
                        .commit()
                        .await
                        .unwrap_or_else(|e| panic!("writer {w} release {r}: {e}"));
                }
            }
        });
        futures::future::join_all(writers).await;

        let history = b.coord.config().history(P, 1000).await.unwrap();
        assert_eq!(
            history.len(),
            WRITERS * RELEASES,
            "every release recorded once"
        );
        let seqs: Vec<u64> = history.iter().rev().map(|r| r.seq).collect();
        let expected: Vec<u64> = (1..=(WRITERS * RELEASES) as u64).collect();
        assert_eq!(seqs, expected, "unique and gap-free");
        assert!(
            history.iter().all(|r| r.kind == ReleaseKind::Release),
            "no external entry: nothing was written outside releases"
        );
        for w in 0..WRITERS {
            // Each writer's releases are in its own order, and its last value stands.
            let mine: Vec<&str> = history
                .iter()
                .rev()
                .filter_map(|r| r.message.as_deref())
                .filter(|m| m.starts_with(&format!("w{w} ")))
                .collect();
            let in_order: Vec<String> = (0..RELEASES).map(|r| format!("w{w} r{r}")).collect();
            assert_eq!(mine, in_order);
            let last: usize = b.coord.config().get(&format!("{P}/w{w}")).await.unwrap();
            assert_eq!(last, RELEASES - 1);
        }
        for coord in coords {
            coord.close().await.unwrap();
        }
    }
}

/// A release too large for one transaction names the prefix, what it changes and etcd's
/// limit (never coord's own keys) and writes nothing; a history larger than one answer reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_errors_name_the_prefix_its_size_and_the_limit() {
    let b = common::Backend::etcd().await;
    let config = b.coord.config().with_release_history(50);
    let prefix = "/config/big";
    let value = |round: usize| json!(format!("{round}{}", "x".repeat(100_000)));
    // 22 releases changing 4 keys of 100 KB: each writes 400 KB and a record of 800 KB
    // (before and after), under etcd's 1.5 MiB; their records, 17.6 MB, are over what one
    // answer decodes (16 MiB), so history reads them page by page.
    for round in 0..22 {
        let keys: BTreeMap<String, serde_json::Value> =
            (0..4).map(|i| (format!("k{i}"), value(round))).collect();
        config.release_raw(prefix, keys).commit().await.unwrap();
    }
    let history = config.history(prefix, 100).await.unwrap();
    assert_eq!(history.len(), 22);
    assert_eq!(history[0].changes.len(), 4);

    // 8 new keys of 100 KB: 800 KB of values and a record of 800 KB, over the limit.
    let more: BTreeMap<String, serde_json::Value> =
        (4..12).map(|i| (format!("k{i}"), value(0))).collect();
    let refused = config.release_raw(prefix, more).commit().await;
    let Err(Error::InvalidArgument { field, reason }) = refused else {
        panic!(
            "a 1.6 MB release was not refused: {:?}",
            refused.map(|release| release.seq)
        );
    };
    assert_eq!(field, prefix, "{reason}");
    for part in [
        "`/config/big`",
        "8 keys",
        "1572864 bytes",
        "1.5 MiB",
        "nothing was written",
    ] {
        assert!(reason.contains(part), "{part} missing: {reason}");
    }
    assert!(!reason.contains("/coord"), "an internal key: {reason}");
    assert_eq!(config.history(prefix, 100).await.unwrap().len(), 22);
    let k4 = config.get::<String>(&format!("{prefix}/k4")).await;
    assert!(matches!(k4, Err(Error::NotFound { .. })), "{k4:?}");
}
