//! `rename_all`, `alias` and a field's `validate`: what the derive reads, checked through
//! `Source` alone, then round trips through `publish` and `Live` on both backends.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use coord::CoordConfig;
use coord::Error;
use coord::config::Source;
use serde_json::json;
use tracing_subscriber::util::SubscriberInitExt;

/// A key in each case: renamed, named by `key` (which wins), a nested struct renamed as a
/// whole whose own fields follow its own `rename_all`.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/renamed", rename_all = "SCREAMING-KEBAB-CASE")]
pub struct Renamed {
    pub timeout_secs: u64,
    #[coord(key = "rate_limit")]
    pub rate_limit: u32,
    #[coord(nested)]
    pub db_pool: Pool,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(rename_all = "camelCase")]
pub struct Pool {
    pub max_size: u32,
    #[coord(default = 5)]
    pub idle_timeout_secs: u32,
}

impl Renamed {
    fn sample() -> Renamed {
        Renamed {
            timeout_secs: 45,
            rate_limit: 100,
            db_pool: Pool {
                max_size: 8,
                idle_timeout_secs: 30,
            },
        }
    }
}

/// Fields moved to new keys: two aliases tried in order, an aliased field with a default, and
/// an alias inside a nested struct.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/moved")]
pub struct Moved {
    #[coord(alias = "timeout", alias = "deadline_secs")]
    pub timeout_secs: u64,
    #[coord(alias = "zone", default = "eu".to_string())]
    pub region: String,
    #[coord(nested)]
    pub inner: Inner,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
pub struct Inner {
    #[coord(alias = "old")]
    pub value: u32,
}

fn at_most_a_minute(secs: &u64) -> Result<(), String> {
    if *secs > 60 {
        return Err(format!("{secs} s is more than a minute"));
    }
    Ok(())
}

fn not_empty(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host is empty".into());
    }
    Ok(())
}

fn whole_struct(checked: &Checked) -> Result<(), String> {
    if checked.timeout_secs == 13 {
        return Err("13 is unlucky".into());
    }
    Ok(())
}

/// A field check on a required field, one on a defaulted field inside a nested struct, and
/// the struct's own check beside them.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/checked", validate = "whole_struct")]
pub struct Checked {
    #[coord(validate = "at_most_a_minute")]
    pub timeout_secs: u64,
    #[coord(nested)]
    pub db: CheckedDb,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
pub struct CheckedDb {
    #[coord(validate = "not_empty", default = "localhost".to_string())]
    pub host: String,
}

fn values(prefix: &str, pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(key, value)| (format!("{prefix}/{key}"), value.to_string().into_bytes()))
        .collect()
}

fn build<T: CoordConfig>(prefix: &str, pairs: &[(&str, serde_json::Value)]) -> coord::Result<T> {
    T::from_source(&Source::new(prefix, &values(prefix, pairs)))
}

fn keys<T: CoordConfig>(value: &T) -> Vec<String> {
    value
        .to_values()
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

fn assert_invalid_at(result: coord::Result<impl std::fmt::Debug>, want_key: &str, want: &str) {
    match result {
        Err(Error::Invalid { key, reason }) if key == want_key && reason.contains(want) => {}
        other => panic!("want Invalid at {want_key} ({want}), got {other:?}"),
    }
}

#[test]
fn rename_all_names_every_key_without_its_own_and_key_wins() {
    assert_eq!(
        keys(&Renamed::sample()),
        [
            "TIMEOUT-SECS",
            "rate_limit",
            "DB-POOL/maxSize",
            "DB-POOL/idleTimeoutSecs"
        ]
    );
    let fields: Vec<String> = Renamed::fields().into_iter().map(|f| f.key).collect();
    assert_eq!(fields, keys(&Renamed::sample()));
}

#[test]
fn rename_all_reads_the_renamed_keys_not_the_field_names() {
    let read = build::<Renamed>(
        "/config/renamed",
        &[
            ("TIMEOUT-SECS", json!(45)),
            ("rate_limit", json!(100)),
            ("DB-POOL/maxSize", json!(8)),
            ("DB-POOL/idleTimeoutSecs", json!(30)),
        ],
    );
    assert_eq!(read.unwrap(), Renamed::sample());

    let by_field_name = build::<Renamed>(
        "/config/renamed",
        &[
            ("timeout_secs", json!(45)),
            ("rate_limit", json!(100)),
            ("DB-POOL/maxSize", json!(8)),
        ],
    );
    assert_invalid_at(
        by_field_name,
        "/config/renamed/TIMEOUT-SECS",
        "required key is missing",
    );
}

#[test]
fn a_field_reads_its_key_first_then_its_aliases_in_order() {
    let prefix = "/config/moved";
    let only_second_alias = build::<Moved>(
        prefix,
        &[("deadline_secs", json!(3)), ("inner/old", json!(1))],
    )
    .unwrap();
    assert_eq!(only_second_alias.timeout_secs, 3);
    assert_eq!(only_second_alias.inner.value, 1);

    let both_aliases = build::<Moved>(
        prefix,
        &[
            ("deadline_secs", json!(3)),
            ("timeout", json!(2)),
            ("inner/old", json!(1)),
        ],
    )
    .unwrap();
    assert_eq!(both_aliases.timeout_secs, 2);

    let key_and_aliases = build::<Moved>(
        prefix,
        &[
            ("deadline_secs", json!(3)),
            ("timeout", json!(2)),
            ("timeout_secs", json!(1)),
            ("inner/old", json!(1)),
            ("inner/value", json!(7)),
        ],
    )
    .unwrap();
    assert_eq!(key_and_aliases.timeout_secs, 1);
    assert_eq!(key_and_aliases.inner.value, 7);
}

#[test]
fn an_aliased_field_takes_its_default_only_when_key_and_aliases_are_all_missing() {
    let prefix = "/config/moved";
    let base = [("timeout_secs", json!(1)), ("inner/value", json!(1))];
    assert_eq!(build::<Moved>(prefix, &base).unwrap().region, "eu");

    let mut with_alias = base.to_vec();
    with_alias.push(("zone", json!("us")));
    assert_eq!(build::<Moved>(prefix, &with_alias).unwrap().region, "us");
}

#[test]
fn a_required_field_missing_under_key_and_aliases_is_reported_by_its_key() {
    let missing = build::<Moved>("/config/moved", &[("inner/value", json!(1))]);

    assert_invalid_at(
        missing,
        "/config/moved/timeout_secs",
        "required key is missing",
    );
}

#[test]
fn a_bad_value_under_an_alias_is_a_decode_error_naming_the_alias() {
    let bad = build::<Moved>(
        "/config/moved",
        &[("timeout", json!("soon")), ("inner/value", json!(1))],
    );

    assert!(
        matches!(&bad, Err(Error::Decode { key, .. }) if key == "/config/moved/timeout"),
        "{bad:?}"
    );
}

#[test]
fn publish_values_hold_only_the_new_keys_and_fields_list_the_aliases() {
    let moved = Moved {
        timeout_secs: 1,
        region: "us".into(),
        inner: Inner { value: 2 },
    };
    assert_eq!(keys(&moved), ["timeout_secs", "region", "inner/value"]);

    let aliases: Vec<(String, Vec<String>)> = Moved::fields()
        .into_iter()
        .map(|f| (f.key, f.aliases))
        .collect();
    assert_eq!(
        aliases,
        [
            (
                "timeout_secs".into(),
                vec!["timeout".into(), "deadline_secs".into()]
            ),
            ("region".into(), vec!["zone".into()]),
            ("inner/value".into(), vec!["inner/old".into()]),
        ]
    );
}

#[test]
fn alias_keys_are_not_reported_as_unknown() {
    let prefix = "/config/moved";
    let stored = values(
        prefix,
        &[
            ("timeout", json!(1)),
            ("inner/old", json!(1)),
            ("stray", json!(1)),
        ],
    );
    let source = Source::new(prefix, &stored);

    assert_eq!(
        source.unknown_keys(&Moved::fields()),
        ["/config/moved/stray"]
    );
}

/// A `tracing` subscriber for this thread that writes into a buffer.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, impl Sized) {
    #[derive(Clone)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let buffer = Buffer(Arc::clone(&logs));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || buffer.clone())
        .with_ansi(false)
        .finish();
    (logs, subscriber.set_default())
}

#[test]
fn reading_an_alias_is_logged_once_per_alias_key() {
    let (logs, _guard) = capture_logs();
    // A prefix no other test reads, since "once" is per process.
    let prefix = "/config/logged-once";
    let stored = values(prefix, &[("timeout", json!(1)), ("inner/value", json!(1))]);
    for _ in 0..3 {
        Moved::from_source(&Source::new(prefix, &stored)).unwrap();
    }
    let elsewhere = "/config/logged-once-elsewhere";
    let stored = values(
        elsewhere,
        &[("timeout", json!(1)), ("inner/value", json!(1))],
    );
    Moved::from_source(&Source::new(elsewhere, &stored)).unwrap();

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("alias")).collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(lines[0].contains("WARN"), "{logs}");
    assert!(
        lines[0].contains("alias=/config/logged-once/timeout"),
        "{logs}"
    );
    assert!(
        lines[0].contains("key=/config/logged-once/timeout_secs"),
        "{logs}"
    );
    assert!(
        lines[1].contains("alias=/config/logged-once-elsewhere/timeout"),
        "{logs}"
    );
}

#[test]
fn a_field_validate_failure_is_invalid_naming_the_full_key() {
    let prefix = "/config/checked";
    assert_invalid_at(
        build::<Checked>(prefix, &[("timeout_secs", json!(61))]),
        "/config/checked/timeout_secs",
        "61 s is more than a minute",
    );
    assert_invalid_at(
        build::<Checked>(
            prefix,
            &[("timeout_secs", json!(6)), ("db/host", json!(""))],
        ),
        "/config/checked/db/host",
        "host is empty",
    );
    let ok = build::<Checked>(prefix, &[("timeout_secs", json!(60))]).unwrap();
    assert_eq!(ok.db.host, "localhost");
}

#[test]
fn a_field_validate_runs_beside_the_struct_validate() {
    let prefix = "/config/checked";
    assert_invalid_at(
        build::<Checked>(prefix, &[("timeout_secs", json!(13))]),
        "/config/checked",
        "13 is unlucky",
    );
}

/// Overridden by variables this file alone sets, always to the same values (the tests of both
/// backends run at once).
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/overridden")]
struct Overridden {
    #[coord(default = 30, env = "COORD_TEST_OVERRIDDEN_TIMEOUT")]
    timeout_secs: u64,
    /// Not JSON in the variable: read as the plain string.
    #[coord(env = "COORD_TEST_OVERRIDDEN_REGION")]
    region: String,
    #[coord(default = 1)]
    other: u64,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/badly_overridden")]
struct BadlyOverridden {
    #[coord(default = 30, env = "COORD_TEST_BAD_TIMEOUT")]
    timeout_secs: u64,
}

fn set_overrides() {
    std::env::set_var("COORD_TEST_OVERRIDDEN_TIMEOUT", "45");
    std::env::set_var("COORD_TEST_OVERRIDDEN_REGION", "eu-west");
    std::env::set_var("COORD_TEST_BAD_TIMEOUT", "soon");
}

#[test]
fn an_env_override_wins_over_the_stored_value_and_a_bad_one_names_the_variable() {
    set_overrides();
    let built = build::<Overridden>(
        "/config/overridden",
        &[("timeout_secs", json!(10)), ("region", json!("us-east"))],
    )
    .unwrap();
    assert_eq!((built.timeout_secs, built.region.as_str()), (45, "eu-west"));
    // A required field with nothing stored is satisfied by its variable.
    let built = build::<Overridden>("/config/overridden", &[]).unwrap();
    assert_eq!((built.timeout_secs, built.region.as_str()), (45, "eu-west"));
    assert_invalid_at(
        build::<BadlyOverridden>("/config/badly_overridden", &[]),
        "$COORD_TEST_BAD_TIMEOUT",
        "soon",
    );
}

on_both_backends!(cases:
    an_env_override_holds_through_bind_and_reload,
    rename_all_round_trips_through_publish_and_live,
    a_live_field_follows_its_alias_until_its_key_is_written,
    publish_writes_the_new_key_and_leaves_the_alias_alone,
    seed_defaults_leaves_a_field_stored_under_its_alias_alone,
    a_field_validate_guards_bind_reload_and_publish,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    async fn put(b: &Backend, key: &str, value: serde_json::Value) {
        b.coord.config().set(key, &value).await.unwrap();
    }

    async fn stored(b: &Backend, prefix: &str) -> BTreeMap<String, serde_json::Value> {
        let config = b.coord.config();
        let mut out = BTreeMap::new();
        for key in config.list(prefix).await.unwrap() {
            let value = config.get::<serde_json::Value>(&key).await.unwrap();
            out.insert(key, value);
        }
        out
    }

    pub async fn an_env_override_holds_through_bind_and_reload(b: &Backend) {
        set_overrides();
        put(b, "/config/overridden/timeout_secs", json!(10)).await;
        put(b, "/config/overridden/region", json!("us-east")).await;
        let live = b.coord.live::<Overridden>().await.unwrap();
        assert_eq!(
            (live.load().timeout_secs, live.load().region.as_str()),
            (45, "eu-west")
        );
        // A reload (another field moved) builds again: the overrides still win.
        put(b, "/config/overridden/other", json!(2)).await;
        eventually(WAIT, "the other field reloads", || async {
            live.load().other == 2
        })
        .await;
        assert_eq!(
            (live.load().timeout_secs, live.load().region.as_str()),
            (45, "eu-west")
        );
        // A bad override fails the bind, naming the variable.
        let error = b.coord.live::<BadlyOverridden>().await.unwrap_err();
        assert!(
            error.to_string().contains("$COORD_TEST_BAD_TIMEOUT"),
            "{error}"
        );
    }

    pub async fn rename_all_round_trips_through_publish_and_live(b: &Backend) {
        b.coord.config().publish(&Renamed::sample()).await.unwrap();

        assert_eq!(
            stored(b, "/config/renamed/").await,
            BTreeMap::from([
                (
                    "/config/renamed/DB-POOL/idleTimeoutSecs".to_string(),
                    json!(30)
                ),
                ("/config/renamed/DB-POOL/maxSize".to_string(), json!(8)),
                ("/config/renamed/TIMEOUT-SECS".to_string(), json!(45)),
                ("/config/renamed/rate_limit".to_string(), json!(100)),
            ])
        );
        let live = b.coord.live::<Renamed>().await.unwrap();
        assert_eq!(*live.load_full(), Renamed::sample());

        put(b, "/config/renamed/DB-POOL/maxSize", json!(9)).await;
        eventually(WAIT, "the renamed nested key reloads", || async {
            live.load().db_pool.max_size == 9
        })
        .await;
    }

    pub async fn a_live_field_follows_its_alias_until_its_key_is_written(b: &Backend) {
        put(b, "/config/moved/deadline_secs", json!(3)).await;
        put(b, "/config/moved/inner/old", json!(1)).await;
        let live = b.coord.live::<Moved>().await.unwrap();
        assert_eq!(live.load().timeout_secs, 3);
        assert_eq!(live.load().inner.value, 1);

        // The first alias appears: it comes before the second.
        put(b, "/config/moved/timeout", json!(2)).await;
        eventually(WAIT, "the first alias wins", || async {
            live.load().timeout_secs == 2
        })
        .await;
        // A change of the alias in use reloads the field, nested too.
        put(b, "/config/moved/timeout", json!(4)).await;
        put(b, "/config/moved/inner/old", json!(5)).await;
        eventually(WAIT, "alias changes reload", || async {
            live.load().timeout_secs == 4 && live.load().inner.value == 5
        })
        .await;
        // The key is written: it wins over every alias, and later alias changes do nothing.
        put(b, "/config/moved/timeout_secs", json!(9)).await;
        eventually(WAIT, "the key wins", || async {
            live.load().timeout_secs == 9
        })
        .await;
        put(b, "/config/moved/timeout", json!(6)).await;
        let revision = b
            .coord
            .config()
            .set("/config/moved/zone", &"us")
            .await
            .unwrap();
        eventually(WAIT, "the zone alias is read", || async {
            live.load().region == "us"
        })
        .await;
        assert!(live.revision() >= revision);
        assert_eq!(live.load().timeout_secs, 9);
        assert!(live.last_error().is_none());
    }

    pub async fn publish_writes_the_new_key_and_leaves_the_alias_alone(b: &Backend) {
        put(b, "/config/moved/timeout", json!(2)).await;
        put(b, "/config/moved/inner/old", json!(1)).await;
        let live = b.coord.live::<Moved>().await.unwrap();
        assert_eq!(live.load().timeout_secs, 2);

        let next = Moved {
            timeout_secs: 20,
            region: "us".into(),
            inner: Inner { value: 7 },
        };
        b.coord.config().publish(&next).await.unwrap();

        assert_eq!(
            stored(b, "/config/moved/").await,
            BTreeMap::from([
                ("/config/moved/inner/old".to_string(), json!(1)),
                ("/config/moved/inner/value".to_string(), json!(7)),
                ("/config/moved/region".to_string(), json!("us")),
                ("/config/moved/timeout".to_string(), json!(2)),
                ("/config/moved/timeout_secs".to_string(), json!(20)),
            ])
        );
        eventually(WAIT, "the published value is live", || async {
            *live.load_full() == next
        })
        .await;
    }

    pub async fn seed_defaults_leaves_a_field_stored_under_its_alias_alone(b: &Backend) {
        put(b, "/config/moved/zone", json!("us")).await;

        let written = b.coord.config().seed_defaults::<Moved>().await.unwrap();

        assert!(written.is_empty(), "{written:?}");
        put(b, "/config/moved/timeout_secs", json!(1)).await;
        put(b, "/config/moved/inner/value", json!(1)).await;
        let live = b.coord.live::<Moved>().await.unwrap();
        assert_eq!(live.load().region, "us");
    }

    pub async fn a_field_validate_guards_bind_reload_and_publish(b: &Backend) {
        put(b, "/config/checked/timeout_secs", json!(61)).await;
        assert_invalid_at(
            b.coord.live::<Checked>().await,
            "/config/checked/timeout_secs",
            "61 s is more than a minute",
        );

        put(b, "/config/checked/timeout_secs", json!(30)).await;
        let live = b.coord.live::<Checked>().await.unwrap();
        put(b, "/config/checked/db/host", json!("")).await;
        eventually(WAIT, "the reload is refused", || async {
            live.last_error().is_some()
        })
        .await;
        let error = live.last_error().unwrap();
        assert!(
            matches!(&*error, Error::Invalid { key, reason } if key == "/config/checked/db/host" && reason == "host is empty"),
            "{error:?}"
        );
        assert_eq!(live.load().db.host, "localhost");

        let before = stored(b, "/config/checked/").await;
        let refused = b
            .coord
            .config()
            .publish(&Checked {
                timeout_secs: 90,
                db: CheckedDb {
                    host: "db-2".into(),
                },
            })
            .await;
        assert_invalid_at(
            refused,
            "/config/checked/timeout_secs",
            "90 s is more than a minute",
        );
        assert_eq!(
            stored(b, "/config/checked/").await,
            before,
            "nothing written"
        );
    }
}
