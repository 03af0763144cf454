use super::*;

/// Fast retries: the tests wait out real backoffs.
fn quick() -> WatchConfig {
    WatchConfig::default()
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(5))
}

/// Takes the steps that open the store watch after a list, as a `next` would before it
/// waits for a batch.
async fn open_stream(watch: &mut ResilientWatch) {
    while let State::Connecting { .. } = watch.state {
        assert!(watch.step().await.is_none(), "{watch:?}");
    }
    assert!(matches!(watch.state, State::Watching { .. }), "{watch:?}");
}

/// Replaces the watch's open stream by one that fails with `error` (or just ends): what a
/// dropped connection looks like.
async fn break_stream(watch: &mut ResilientWatch, error: Option<Error>) {
    open_stream(watch).await;
    let broken = futures::stream::iter(error.map(Err));
    watch.state = State::Watching {
        stream: Box::pin(broken),
    };
}

fn unavailable() -> Error {
    Error::Unavailable {
        endpoints: String::new(),
        reason: "connection reset".into(),
    }
}

async fn next(watch: &mut ResilientWatch) -> Result<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch yields")
}

/// The next item that is not progress.
async fn next_change(watch: &mut ResilientWatch) -> WatchEvent {
    loop {
        match next(watch).await {
            Ok(WatchEvent::Progress { .. }) => {}
            item => return item.expect("a change"),
        }
    }
}

fn keys(events: &[Event]) -> Vec<(EventKind, &str)> {
    events
        .iter()
        .map(|event| (event.kind, event.kv.key.as_str()))
        .collect()
}

async fn put(store: &Store, key: &str, value: &str) -> i64 {
    store
        .put(key, value.as_bytes().to_vec(), 0)
        .await
        .unwrap()
        .revision
}

#[tokio::test]
async fn a_backoff_of_duration_max_does_not_overflow() {
    let config = WatchConfig::default()
        .initial_backoff(Duration::MAX)
        .max_backoff(Duration::MAX);
    let mut watch = ResilientWatch::with_config(Store::in_memory(), KeyRange::key("/k"), config);
    for _ in 0..3 {
        let error = watch.retry(Error::Backend {
            key: "/k".into(),
            reason: "test".into(),
        });
        assert!(matches!(error, Error::Backend { .. }));
        assert!(
            matches!(watch.state, State::Backoff { until, .. } if until > Instant::now()),
            "{watch:?}"
        );
    }
}

#[tokio::test]
async fn a_broken_stream_resumes_after_the_last_delivered_revision() {
    let store = Store::in_memory();
    put(&store, "/r/a", "1").await;
    let mut watch = ResilientWatch::with_config(store.clone(), KeyRange::prefix("/r/"), quick());
    assert!(
        matches!(next(&mut watch).await, Ok(WatchEvent::Init { ref kvs, .. }) if kvs.len() == 1)
    );
    let seen = put(&store, "/r/b", "1").await;
    assert_eq!(next_change(&mut watch).await.revision(), seen);

    break_stream(&mut watch, Some(unavailable())).await;
    // Written while the connection is down: the resumed watch replays them from history.
    let c = put(&store, "/r/c", "1").await;
    let d = put(&store, "/r/d", "1").await;
    assert!(matches!(
        next(&mut watch).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(
        matches!(&watch.state, State::Backoff { then, .. }
            if matches!(**then, State::Connecting { from } if from == seen + 1)),
        "{watch:?}"
    );
    for (revision, key) in [(c, "/r/c"), (d, "/r/d")] {
        match next_change(&mut watch).await {
            WatchEvent::Events {
                revision: at,
                events,
            } => {
                assert_eq!(at, revision);
                assert_eq!(keys(&events), [(EventKind::Put, key)]);
            }
            other => panic!("expected the events of {key}, got {other:?}"),
        }
    }
    assert!(matches!(watch.state, State::Watching { .. }));
    assert_eq!(watch.revision(), d);
}

#[tokio::test]
async fn a_stream_that_ends_is_a_break_and_is_resumed() {
    let store = Store::in_memory();
    let mut watch = ResilientWatch::with_config(store.clone(), KeyRange::prefix("/e/"), quick());
    next(&mut watch).await.unwrap();
    break_stream(&mut watch, None).await;
    let a = put(&store, "/e/a", "1").await;
    assert!(matches!(
        next(&mut watch).await,
        Err(Error::Unavailable { .. })
    ));
    assert_eq!(next_change(&mut watch).await.revision(), a);
}

#[tokio::test]
async fn a_compacted_history_relists_and_yields_the_differences() {
    let store = Store::in_memory();
    for key in ["/c/keep", "/c/change", "/c/remove"] {
        put(&store, key, "0").await;
    }
    let mut watch = ResilientWatch::with_config(store.clone(), KeyRange::prefix("/c/"), quick());
    next(&mut watch).await.unwrap();
    break_stream(&mut watch, Some(unavailable())).await;
    put(&store, "/c/change", "1").await;
    store.delete(&KeyRange::key("/c/remove")).await.unwrap();
    put(&store, "/c/new", "1").await;
    let last = put(&store, "/c/change", "2").await;
    store.compact(last).await.unwrap();

    assert!(next(&mut watch).await.is_err(), "the break is reported");
    match next_change(&mut watch).await {
        WatchEvent::Resync { revision, events } => {
            assert_eq!(revision, last);
            assert_eq!(
                keys(&events),
                [
                    (EventKind::Put, "/c/change"),
                    (EventKind::Put, "/c/new"),
                    (EventKind::Delete, "/c/remove"),
                ]
            );
            assert_eq!(events[0].kv.value, b"2");
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    // It watches on from just after the relist.
    let after = put(&store, "/c/after", "1").await;
    assert!(matches!(watch.state, State::Connecting { from } if from == last + 1));
    assert_eq!(next_change(&mut watch).await.revision(), after);
}

#[tokio::test]
async fn a_failed_list_waits_out_a_backoff_and_lists_again() {
    // An empty single key is refused on every call: the list fails each time.
    let mut watch = ResilientWatch::with_config(Store::in_memory(), KeyRange::key(""), quick());
    for _ in 0..2 {
        assert!(matches!(
            next(&mut watch).await,
            Err(Error::InvalidArgument { .. })
        ));
        assert!(
            matches!(&watch.state, State::Backoff { then, .. }
                if matches!(**then, State::Listing { open: None })),
            "{watch:?}"
        );
    }
    assert_eq!(
        watch.failures, 2,
        "the backoff grows while it keeps failing"
    );
}

#[tokio::test]
async fn a_cancelled_backoff_keeps_its_deadline() {
    let store = Store::in_memory();
    let config = WatchConfig::default()
        .initial_backoff(Duration::from_millis(300))
        .max_backoff(Duration::from_millis(300));
    let mut watch = ResilientWatch::with_config(store.clone(), KeyRange::prefix("/b/"), config);
    next(&mut watch).await.unwrap();
    break_stream(&mut watch, Some(unavailable())).await;
    assert!(next(&mut watch).await.is_err());
    let State::Backoff { until, .. } = watch.state else {
        panic!("{watch:?}")
    };
    let cancelled = tokio::time::timeout(Duration::from_millis(10), watch.next()).await;
    assert!(cancelled.is_err(), "still waiting");
    assert!(matches!(watch.state, State::Backoff { until: kept, .. } if kept == until));
    let a = put(&store, "/b/a", "1").await;
    assert_eq!(next_change(&mut watch).await.revision(), a);
    assert!(Instant::now() >= until);
}

#[tokio::test]
async fn resync_keeps_the_open_stream_and_skips_what_the_list_covered() {
    let store = Store::in_memory();
    let mut watch = ResilientWatch::new(store.clone(), KeyRange::prefix("/s/"));
    next(&mut watch).await.unwrap();
    open_stream(&mut watch).await;
    let opened = store.stats().watches_opened();
    let a = put(&store, "/s/a", "1").await;
    watch.resync();
    match next(&mut watch).await.unwrap() {
        WatchEvent::Resync { revision, events } => {
            assert_eq!(revision, a);
            assert_eq!(keys(&events), [(EventKind::Put, "/s/a")]);
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    let b = put(&store, "/s/b", "1").await;
    // The batch of `a`, still in the stream, is skipped: the resync told it.
    match next_change(&mut watch).await {
        WatchEvent::Events { revision, events } => {
            assert_eq!(revision, b);
            assert_eq!(keys(&events), [(EventKind::Put, "/s/b")]);
        }
        other => panic!("expected the events of b, got {other:?}"),
    }
    assert_eq!(store.stats().watches_opened(), opened, "no second watch");
}

#[tokio::test]
async fn a_watch_started_after_a_revision_yields_only_later_changes() {
    let store = Store::in_memory();
    let a = put(&store, "/f/a", "1").await;
    let b = put(&store, "/f/b", "1").await;
    let mut watch = ResilientWatch::with_config(store.clone(), KeyRange::prefix("/f/"), quick())
        .starting_after(a);
    assert_eq!(watch.revision(), a);
    match next_change(&mut watch).await {
        WatchEvent::Events { revision, events } => {
            assert_eq!(revision, b);
            assert_eq!(keys(&events), [(EventKind::Put, "/f/b")]);
        }
        other => panic!("expected the events of b, got {other:?}"),
    }
    // Nothing was listed: after a compaction the relist is the whole range.
    break_stream(&mut watch, Some(unavailable())).await;
    store.delete(&KeyRange::key("/f/a")).await.unwrap();
    let c = put(&store, "/f/c", "1").await;
    store.compact(c).await.unwrap();
    assert!(next(&mut watch).await.is_err());
    match next_change(&mut watch).await {
        WatchEvent::Init { revision, kvs } => {
            assert_eq!(revision, c);
            let listed: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(listed, ["/f/b", "/f/c"]);
        }
        other => panic!("expected the whole range, got {other:?}"),
    }
}

#[tokio::test]
async fn from_now_relists_keys_only_and_whole_after_a_break_before_any_change() {
    let store = Store::in_memory();
    put(&store, "/n/old", "1").await;
    let config = quick().keys_only().relist(Relist::Whole);
    let mut watch = ResilientWatch::from_now(store.clone(), KeyRange::prefix("/n/"), config)
        .await
        .unwrap();
    assert!(
        matches!(watch.state, State::Watching { .. }),
        "open on return"
    );
    // Written after `from_now` returned, before the first `next`: delivered.
    let a = put(&store, "/n/a", "1").await;
    match next_change(&mut watch).await {
        WatchEvent::Events { revision, events } => {
            assert_eq!(revision, a);
            assert_eq!(events[0].kv.value, b"1", "events carry values");
        }
        other => panic!("expected the events of a, got {other:?}"),
    }

    let mut fresh = ResilientWatch::from_now(store.clone(), KeyRange::prefix("/n/"), config)
        .await
        .unwrap();
    // Broken before it delivered a revision: nothing to resume from, so it relists.
    break_stream(&mut fresh, Some(unavailable())).await;
    assert!(next(&mut fresh).await.is_err());
    let listed = next_change(&mut fresh).await;
    let WatchEvent::Init { revision, kvs } = listed else {
        panic!("expected the whole range, got {listed:?}")
    };
    assert_eq!(revision, a);
    assert_eq!(kvs.len(), 2);
    assert!(kvs.iter().all(|kv| kv.value.is_empty()), "keys only");
    assert!(fresh.known.is_none(), "a whole relist remembers no keys");

    // And every later relist is whole too.
    fresh.resync();
    assert!(matches!(
        next(&mut fresh).await,
        Ok(WatchEvent::Init { .. })
    ));
}

#[tokio::test]
async fn a_closed_store_ends_every_call_with_closed() {
    let store = Store::in_memory();
    let mut watch = ResilientWatch::with_config(store.clone(), KeyRange::prefix("/x/"), quick());
    next(&mut watch).await.unwrap();
    break_stream(&mut watch, Some(unavailable())).await;
    assert!(next(&mut watch).await.is_err());
    store.close();
    for _ in 0..2 {
        assert!(matches!(next(&mut watch).await, Err(Error::Closed)));
    }
    assert!(matches!(watch.state, State::Closed));
}
