//! The service registry: registration and its lease, discovery from the store and from the
//! watch cache, the `ServiceEvent` stream, and the balanced gRPC channel against real tonic
//! servers on loopback.

mod common;

use common::health::TestServer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coord::registry::{ServiceEvent, ServiceFilter, ServiceInfo, ServiceWatcher};
use coord::store::{KeyRange, RangeOptions};
use coord::{Coord, Error};
use futures::StreamExt;
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Short, so expiry tests stay short; etcd's minimum TTL.
const TTL: Duration = Duration::from_secs(2);
/// A ceiling for what should happen within a TTL or so: generous, because a loaded machine
/// is slow, and a test waits for the event itself rather than timing it.
const WAIT: Duration = Duration::from_secs(30);

on_both_backends!(cases:
    two_instances_register_discover_returns_both_and_watch_yields_registered_for_each,
    abandoned_instance_disappears_after_its_ttl_with_unregistered,
    deregistered_instance_disappears_at_once,
    dropped_registration_deregisters_in_the_background,
    revoked_lease_registers_again_with_a_new_lease,
    health_reports_the_registration_lease,
    discover_is_served_from_the_cache_once_the_name_is_watched,
    discover_from_the_cache_shares_instances_instead_of_copying_them,
    watcher_that_falls_far_behind_gets_the_differences_once,
    watch_reports_updates_and_unregistrations_once_each,
    bad_service_info_is_invalid_argument,
    channel_reaches_both_instances_then_only_the_other_after_one_deregisters,
    filtered_channel_reaches_only_matching_instances,
    second_live_registration_of_an_instance_is_refused_naming_the_holder,
    unregistered_live_instance_comes_back_on_the_same_lease,
    registration_overwritten_by_another_lease_ends_without_fighting,
    deregister_after_close_is_closed,
    registration_that_lost_its_lease_does_not_take_back_an_instance_registered_elsewhere,
    registrations_of_one_service_share_one_watch_and_each_is_still_repaired,
);

/// The most a test waits for an event that should come at once.
const CEILING: Duration = Duration::from_secs(30);

/// Follows a watcher, checking that it never reports a state twice: `Registered` only for an
/// unknown id, `Updated`/`Unregistered` only for a known one.
struct Follower {
    watcher: ServiceWatcher,
    state: BTreeMap<String, ServiceInfo>,
}

impl Follower {
    fn new(watcher: ServiceWatcher) -> Self {
        Follower {
            watcher,
            state: BTreeMap::new(),
        }
    }

    async fn next(&mut self) -> ServiceEvent {
        let event = timeout(WAIT, self.watcher.next())
            .await
            .expect("an event in time")
            .expect("the stream does not end");
        match &event {
            ServiceEvent::Registered(info) => {
                let before = self.state.insert(info.id.clone(), info.clone());
                assert!(before.is_none(), "Registered twice: {event:?}");
            }
            ServiceEvent::Updated(info) => {
                let before = self.state.insert(info.id.clone(), info.clone());
                assert!(
                    before.is_some_and(|b| b != *info),
                    "Updated without a change: {event:?}"
                );
            }
            ServiceEvent::Unregistered(info) => {
                let before = self.state.remove(&info.id);
                assert!(before.is_some(), "Unregistered an unknown id: {event:?}");
            }
        }
        event
    }

    /// Reads events until `wanted` matches one; returns it.
    async fn until(&mut self, what: &str, wanted: impl Fn(&ServiceEvent) -> bool) -> ServiceEvent {
        loop {
            let event = self.next().await;
            if wanted(&event) {
                return event;
            }
            eprintln!("while waiting for {what}: {event:?}");
        }
    }

    fn ids(&self) -> Vec<String> {
        self.state.keys().cloned().collect()
    }
}

fn ids<'a>(infos: impl IntoIterator<Item = &'a ServiceInfo>) -> Vec<&'a str> {
    infos.into_iter().map(|i| i.id.as_str()).collect()
}

/// Waits until `coord` has seen its store go (`Suspended`, or `Lost` if a lease went too).
async fn until_disconnected(coord: &Coord) {
    let mut state = coord.state();
    timeout(WAIT, state.wait_for(|state| !state.is_connected()))
        .await
        .unwrap_or_else(|_| panic!("still {:?} after {WAIT:?}", *coord.state().borrow()))
        .expect("state sender alive");
}

/// One health check through `channel`; panics if it fails or is never answered.
async fn call(channel: &Channel) {
    let mut client = HealthClient::new(channel.clone());
    timeout(
        WAIT,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("the call is answered")
    .expect("the call succeeds");
}

mod cases {
    use super::*;

    /// Instance `id` of `api` registered on a 60 s lease: a new lease within a test can only
    /// come from a re-registration, never from an expiry.
    async fn long_lived(registry: &coord::Registry, id: &str) -> coord::Registration {
        registry
            .register(
                ServiceInfo::new("api", id, "127.0.0.1:7001"),
                Duration::from_secs(60),
            )
            .await
            .unwrap()
    }
    use crate::common::{Backend, eventually};

    pub async fn two_instances_register_discover_returns_both_and_watch_yields_registered_for_each(
        b: &Backend,
    ) {
        let registry = b.coord.registry();
        let _a = registry
            .register(ServiceInfo::new("api", "a", "127.0.0.1:7001"), TTL)
            .await
            .unwrap();
        let _b = registry
            .register(
                ServiceInfo::new("api", "b", "127.0.0.1:7002").with_version("2"),
                TTL,
            )
            .await
            .unwrap();

        let found = registry.discover("api").await.unwrap();
        assert_eq!(ids(&found), ["a", "b"]);
        assert_eq!(found[1].address, "127.0.0.1:7002");
        assert_eq!(found[1].version, "2");
        assert!(found.iter().all(|i| i.started_at.is_some()));
        assert!(registry.discover("other").await.unwrap().is_empty());

        let mut watch = Follower::new(registry.watch("api").await.unwrap());
        let first = watch.next().await;
        let second = watch.next().await;
        assert!(
            matches!(first, ServiceEvent::Registered(ref i) if i.id == "a"),
            "{first:?}"
        );
        assert!(
            matches!(second, ServiceEvent::Registered(ref i) if i.id == "b"),
            "{second:?}"
        );

        // One registered later is reported too, once.
        let _c = registry
            .register(ServiceInfo::new("api", "c", "127.0.0.1:7003"), TTL)
            .await
            .unwrap();
        let third = watch.next().await;
        assert!(
            matches!(third, ServiceEvent::Registered(ref i) if i.id == "c"),
            "{third:?}"
        );
        assert_eq!(watch.ids(), ["a", "b", "c"]);
    }

    pub async fn abandoned_instance_disappears_after_its_ttl_with_unregistered(b: &Backend) {
        let registry = b.coord.registry();
        let registration = registry
            .register(ServiceInfo::new("api", "crashed", "127.0.0.1:7001"), TTL)
            .await
            .unwrap();
        let key = registration.key().to_string();
        let mut watch = Follower::new(registry.watch("api").await.unwrap());
        assert!(matches!(watch.next().await, ServiceEvent::Registered(_)));

        registration.abandon();
        assert!(
            b.store().get(&key).await.unwrap().0.is_some(),
            "a crashed instance stays until its TTL runs out"
        );
        let gone = watch.next().await;
        assert!(
            matches!(gone, ServiceEvent::Unregistered(ref i) if i.id == "crashed"),
            "{gone:?}"
        );
        assert!(b.store().get(&key).await.unwrap().0.is_none());
        assert!(registry.discover("api").await.unwrap().is_empty());
    }

    pub async fn deregistered_instance_disappears_at_once(b: &Backend) {
        let registry = b.coord.registry();
        // A long TTL: if the key went, it was not by expiry.
        let registration = long_lived(&registry, "leaving").await;
        let key = registration.key().to_string();
        let mut watch = Follower::new(registry.watch("api").await.unwrap());
        assert!(matches!(watch.next().await, ServiceEvent::Registered(_)));

        registration.deregister().await.unwrap();
        assert!(
            b.store().get(&key).await.unwrap().0.is_none(),
            "gone at once"
        );
        let gone = watch.next().await;
        assert!(
            matches!(gone, ServiceEvent::Unregistered(ref i) if i.id == "leaving"),
            "{gone:?}"
        );
    }

    pub async fn dropped_registration_deregisters_in_the_background(b: &Backend) {
        let registry = b.coord.registry();
        let registration = registry
            .register(
                ServiceInfo::new("api", "dropped", "127.0.0.1:7001"),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        let key = registration.key().to_string();
        drop(registration);
        let store = b.store().clone();
        eventually(
            WAIT,
            "the dropped registration's key is gone long before its 600 s TTL",
            || {
                let store = store.clone();
                let key = key.clone();
                async move { store.get(&key).await.unwrap().0.is_none() }
            },
        )
        .await;
    }

    pub async fn revoked_lease_registers_again_with_a_new_lease(b: &Backend) {
        let registry = b.coord.registry();
        let registration = registry
            .register(ServiceInfo::new("api", "revoked", "127.0.0.1:7001"), TTL)
            .await
            .unwrap();
        let key = registration.key().to_string();
        let old = registration.lease_id();
        let (kv, _) = b.store().get(&key).await.unwrap();
        assert_eq!(kv.unwrap().lease, old);

        match &b.server {
            Some(server) => {
                let out = server
                    .etcdctl(&["lease", "revoke", &format!("{old:x}")])
                    .unwrap();
                assert!(out.contains("revoked"), "{out}");
            }
            None => b.store().lease_revoke(old).await.unwrap(),
        }

        let store = b.store().clone();
        eventually(WAIT, "back in the store with a new lease", || {
            let store = store.clone();
            let key = key.clone();
            async move {
                let (kv, _) = store.get(&key).await.unwrap();
                kv.is_some_and(|kv| kv.lease != old && kv.lease != 0)
            }
        })
        .await;
        let (kv, _) = b.store().get(&key).await.unwrap();
        let kv = kv.unwrap();
        assert_eq!(
            kv.lease,
            registration.lease_id(),
            "the handle knows its new lease"
        );
        assert!(registration.is_alive());
        let stored: ServiceInfo = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(
            &stored,
            registration.info(),
            "the same info, started_at kept"
        );
        if let Some(server) = &b.server {
            let ttl = server
                .etcdctl(&["lease", "timetolive", &format!("{:x}", kv.lease), "--keys"])
                .unwrap();
            assert!(
                ttl.contains(&key),
                "etcd has the key on the new lease: {ttl}"
            );
        }
    }

    pub async fn health_reports_the_registration_lease(b: &Backend) {
        let registry = b.coord.registry();
        let registration = registry
            .register(ServiceInfo::new("api", "healthy", "127.0.0.1:7001"), TTL)
            .await
            .unwrap();
        let health = b.coord.health().await.unwrap();
        assert!(health.is_healthy(), "{health:?}");
        let entry = health
            .sessions
            .iter()
            .find(|s| s.kind == "registration")
            .expect("the registration is listed");
        assert_eq!(entry.name, "api/healthy");
        assert_eq!(entry.lease, registration.lease_id());
        assert!(entry.alive);

        // After registering again, it reports the new lease (and only that one).
        let old = registration.lease_id();
        b.store().lease_revoke(old).await.unwrap();
        let coord = b.coord.clone();
        eventually(WAIT, "health shows the new lease", || {
            let coord = coord.clone();
            async move {
                let sessions = coord.health().await.unwrap().sessions;
                let registrations: Vec<_> = sessions
                    .iter()
                    .filter(|s| s.kind == "registration")
                    .collect();
                registrations.len() == 1 && registrations[0].lease != old && registrations[0].alive
            }
        })
        .await;

        registration.deregister().await.unwrap();
        eventually(WAIT, "a deregistered instance leaves health", || {
            let coord = coord.clone();
            async move { coord.health().await.unwrap().sessions.is_empty() }
        })
        .await;
    }

    pub async fn discover_is_served_from_the_cache_once_the_name_is_watched(b: &Backend) {
        let registry = b.coord.registry();
        // A TTL long enough that no renewal lands inside the counted windows.
        let ttl = Duration::from_secs(60);
        let _a = registry
            .register(ServiceInfo::new("api", "a", "127.0.0.1:7001"), ttl)
            .await
            .unwrap();
        let stats = b.store().stats();

        let before = stats.round_trips();
        assert_eq!(ids(&registry.discover("api").await.unwrap()), ["a"]);
        assert_eq!(stats.round_trips(), before + 1, "not watched: one range");

        // The registration watches its own key.
        let watches = stats.open_watches();
        let cache = registry.cache("api").await.unwrap();
        // The cache's task opens its store watch (one round trip) in the background.
        let store = b.store().clone();
        eventually(WAIT, "the cache's watch is open", || {
            let store = store.clone();
            async move { store.stats().open_watches() == watches + 1 }
        })
        .await;
        let before = stats.round_trips();
        for _ in 0..10 {
            assert_eq!(ids(&registry.discover("api").await.unwrap()), ["a"]);
        }
        assert_eq!(stats.round_trips(), before, "watched: no round trip");

        let b_reg = registry
            .register(ServiceInfo::new("api", "b", "127.0.0.1:7002"), ttl)
            .await
            .unwrap();
        let put_revision = b.store().get(b_reg.key()).await.unwrap().1;
        cache.wait_for_revision(put_revision).await.unwrap();
        assert_eq!(ids(&registry.discover("api").await.unwrap()), ["a", "b"]);
        assert_eq!(ids(&cache.instances()), ["a", "b"]);

        drop(cache);
        let before = stats.round_trips();
        assert_eq!(ids(&registry.discover("api").await.unwrap()), ["a", "b"]);
        assert_eq!(
            stats.round_trips(),
            before + 1,
            "no longer watched: a range again"
        );
    }

    pub async fn discover_from_the_cache_shares_instances_instead_of_copying_them(b: &Backend) {
        let registry = b.coord.registry();
        let ttl = Duration::from_secs(60);
        let _a = registry
            .register(ServiceInfo::new("api", "a", "127.0.0.1:7001"), ttl)
            .await
            .unwrap();
        let cache = registry.cache("api").await.unwrap();

        let first = registry.discover("api").await.unwrap();
        let second = registry.discover("api").await.unwrap();
        assert_eq!(ids(&first), ["a"]);
        assert!(
            Arc::ptr_eq(&first.as_slice()[0], &second.as_slice()[0]),
            "no change in between: the same instance, not a copy"
        );
        assert!(Arc::ptr_eq(
            &first.as_slice()[0],
            &cache.instances().as_slice()[0]
        ));

        let b_reg = registry
            .register(ServiceInfo::new("api", "b", "127.0.0.1:7002"), ttl)
            .await
            .unwrap();
        let put_revision = b.store().get(b_reg.key()).await.unwrap().1;
        cache.wait_for_revision(put_revision).await.unwrap();
        let third = registry.discover("api").await.unwrap();
        assert_eq!(ids(&third), ["a", "b"]);
        assert_eq!(third[1].address, "127.0.0.1:7002");
        assert!(
            Arc::ptr_eq(&first.as_slice()[0], &third.as_slice()[0]),
            "a change to another instance leaves this one shared"
        );
        // A view never changes after it is returned.
        assert_eq!(ids(&first), ["a"]);
    }

    pub async fn watcher_that_falls_far_behind_gets_the_differences_once(b: &Backend) {
        let registry = b.coord.registry();
        let store = b.store().clone();
        let write = |info: ServiceInfo| {
            let store = store.clone();
            async move {
                let value = serde_json::to_vec(&info).unwrap();
                store.put(&info.key(), value, 0).await.unwrap().revision
            }
        };
        write(ServiceInfo::new("api", "a", "127.0.0.1:7001").with_version("0")).await;
        write(ServiceInfo::new("api", "c", "127.0.0.1:7003")).await;
        let mut watch = Follower::new(registry.watch("api").await.unwrap());
        watch.next().await;
        watch.next().await;
        assert_eq!(watch.ids(), ["a", "c"]);

        // More revisions than a watcher may fall behind (256) while it is not polled.
        for version in 1..=300 {
            let info =
                ServiceInfo::new("api", "a", "127.0.0.1:7001").with_version(version.to_string());
            write(info).await;
        }
        let b_info = ServiceInfo::new("api", "b", "127.0.0.1:7002");
        write(b_info.clone()).await;
        let c_key = ServiceInfo::new("api", "c", "h:1").key();
        let last = store.delete(&KeyRange::key(c_key)).await.unwrap().revision;
        let cache = registry.cache("api").await.unwrap();
        cache.wait_for_revision(last).await.unwrap();

        // The net changes, each once, in id order then the removals; not 302 events.
        let a_info = ServiceInfo::new("api", "a", "127.0.0.1:7001").with_version("300");
        assert_eq!(watch.next().await, ServiceEvent::Updated(a_info));
        assert_eq!(watch.next().await, ServiceEvent::Registered(b_info));
        assert!(matches!(watch.next().await, ServiceEvent::Unregistered(ref i) if i.id == "c"));
        assert_eq!(watch.ids(), ["a", "b"]);
        assert_eq!(watch.watcher.revision(), last);
        assert_eq!(ids(&watch.watcher.instances()), ["a", "b"]);
        // Then it follows changes again.
        let revision = write(ServiceInfo::new("api", "d", "127.0.0.1:7004")).await;
        assert!(matches!(watch.next().await, ServiceEvent::Registered(ref i) if i.id == "d"));
        assert_eq!(watch.watcher.revision(), revision);
    }

    pub async fn watch_reports_updates_and_unregistrations_once_each(b: &Backend) {
        let registry = b.coord.registry();
        let registration = registry
            .register(ServiceInfo::new("api", "a", "127.0.0.1:7001"), TTL)
            .await
            .unwrap();
        let mut watch = Follower::new(registry.watch("api").await.unwrap());
        assert!(matches!(watch.next().await, ServiceEvent::Registered(_)));

        // Someone moves the instance (same key, same lease, new address).
        let mut moved = registration.info().clone();
        moved.address = "127.0.0.1:7009".into();
        let value = serde_json::to_vec(&moved).unwrap();
        b.store()
            .put(registration.key(), value.clone(), registration.lease_id())
            .await
            .unwrap();
        let updated = watch.next().await;
        assert_eq!(updated, ServiceEvent::Updated(moved.clone()));
        // The same value again changes no state: nothing is reported for it.
        b.store()
            .put(registration.key(), value, registration.lease_id())
            .await
            .unwrap();

        // Clearing out an instance known to be dead before its lease runs out (a live one
        // would put its key back).
        registration.abandon();
        assert!(registry.unregister("api", "a").await.unwrap());
        assert!(
            !registry.unregister("api", "a").await.unwrap(),
            "already gone"
        );
        let gone = watch.next().await;
        assert_eq!(gone, ServiceEvent::Unregistered(moved));
        assert!(registry.discover("api").await.unwrap().is_empty());
    }

    pub async fn bad_service_info_is_invalid_argument(b: &Backend) {
        let registry = b.coord.registry();
        let cases = [
            (ServiceInfo::new("", "1", "127.0.0.1:1"), "name"),
            (ServiceInfo::new("a/b", "1", "127.0.0.1:1"), "name"),
            (ServiceInfo::new("api", "", "127.0.0.1:1"), "id"),
            (ServiceInfo::new("api", "x/y", "127.0.0.1:1"), "id"),
            (ServiceInfo::new("api", "1", "127.0.0.1"), "address"),
            (ServiceInfo::new("api", "1", "127.0.0.1:99999"), "address"),
            (
                ServiceInfo::new("api", "1", "http://127.0.0.1:80"),
                "address",
            ),
            (ServiceInfo::new("api", "1", ""), "address"),
        ];
        for (info, field) in cases {
            match registry.register(info.clone(), TTL).await {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field, "{info:?}"),
                other => panic!("{info:?}: expected InvalidArgument({field}), got {other:?}"),
            }
        }
        let ok = ServiceInfo::new("api", "1", "127.0.0.1:1");
        assert!(matches!(
            registry.register(ok, Duration::from_millis(500)).await,
            Err(Error::InvalidArgument { ref field, .. }) if field == "ttl"
        ));
        assert!(matches!(
            registry.discover("a/b").await,
            Err(Error::InvalidArgument { ref field, .. }) if field == "name"
        ));
        assert!(matches!(
            registry.unregister("api", "").await,
            Err(Error::InvalidArgument { ref field, .. }) if field == "id"
        ));
        let stored = b
            .store()
            .range(&KeyRange::prefix("/services/"), RangeOptions::default())
            .await
            .unwrap();
        assert!(stored.kvs.is_empty(), "nothing was written");
    }

    pub async fn channel_reaches_both_instances_then_only_the_other_after_one_deregisters(
        b: &Backend,
    ) {
        let server_a = TestServer::start().await;
        let server_b = TestServer::start().await;
        let registry = b.coord.registry();
        let _a = registry
            .register(ServiceInfo::new("greeter", "a", server_a.address()), TTL)
            .await
            .unwrap();
        let reg_b = registry
            .register(ServiceInfo::new("greeter", "b", server_b.address()), TTL)
            .await
            .unwrap();

        let channel = registry.channel("greeter").await.unwrap();
        for _ in 0..100 {
            call(&channel).await;
        }
        let (a, b_calls) = (server_a.calls(), server_b.calls());
        assert_eq!(a + b_calls, 100);
        assert!(a > 0 && b_calls > 0, "both reached: a {a}, b {b_calls}");

        let mut watch = Follower::new(registry.watch("greeter").await.unwrap());
        watch.next().await;
        watch.next().await;
        reg_b.deregister().await.unwrap();
        watch
            .until(
                "b's unregistration",
                |e| matches!(e, ServiceEvent::Unregistered(i) if i.id == "b"),
            )
            .await;

        // b's server still answers, so a call routed there would succeed and be counted.
        for _ in 0..100 {
            call(&channel).await;
        }
        assert_eq!(server_b.calls(), b_calls, "no call reached b after it left");
        assert_eq!(server_a.calls(), a + 100);

        // And when b comes back, it gets calls again.
        let _b_again = registry
            .register(ServiceInfo::new("greeter", "b", server_b.address()), TTL)
            .await
            .unwrap();
        watch
            .until(
                "b's registration",
                |e| matches!(e, ServiceEvent::Registered(i) if i.id == "b"),
            )
            .await;
        for _ in 0..100 {
            call(&channel).await;
        }
        assert!(server_b.calls() > b_calls, "b is balanced over again");
    }

    pub async fn filtered_channel_reaches_only_matching_instances(b: &Backend) {
        let old = TestServer::start().await;
        let new = TestServer::start().await;
        let registry = b.coord.registry();
        let _old = registry
            .register(
                ServiceInfo::new("greeter", "old", old.address())
                    .with_version("1")
                    .with_metadata("region", "eu"),
                TTL,
            )
            .await
            .unwrap();
        let _new = registry
            .register(
                ServiceInfo::new("greeter", "new", new.address())
                    .with_version("2")
                    .with_metadata("region", "eu"),
                TTL,
            )
            .await
            .unwrap();
        let channel = registry
            .channel_with(
                "greeter",
                ServiceFilter::default()
                    .version("2")
                    .metadata("region", "eu"),
            )
            .await
            .unwrap();
        for _ in 0..20 {
            call(&channel).await;
        }
        assert_eq!(new.calls(), 20);
        assert_eq!(old.calls(), 0);
    }

    pub async fn second_live_registration_of_an_instance_is_refused_naming_the_holder(b: &Backend) {
        let registry = b.coord.registry();
        let info = ServiceInfo::new("api", "twin", "127.0.0.1:7001");
        let first = registry.register(info.clone(), TTL).await.unwrap();
        let key = first.key().to_string();

        let again = registry
            .register(info.with_metadata("attempt", "2"), TTL)
            .await;
        match &again {
            Err(error @ Error::AlreadyRegistered { key: k, lease }) => {
                assert_eq!(k, &key);
                assert_eq!(*lease, first.lease_id(), "names the holder");
                let message = error.to_string();
                assert!(message.contains(&key), "{message}");
                assert!(
                    message.contains(&format!("{:x}", first.lease_id())),
                    "the holder's lease in hex: {message}"
                );
            }
            other => panic!("expected AlreadyRegistered, got {other:?}"),
        }

        // The first registration is untouched and still owns the instance.
        assert!(first.is_alive());
        let (kv, _) = b.store().get(&key).await.unwrap();
        let kv = kv.unwrap();
        assert_eq!(kv.lease, first.lease_id());
        let stored: ServiceInfo = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(&stored, first.info(), "the refused attempt wrote nothing");
        first.deregister().await.unwrap();
        assert!(b.store().get(&key).await.unwrap().0.is_none());
    }

    pub async fn registrations_of_one_service_share_one_watch_and_each_is_still_repaired(
        b: &Backend,
    ) {
        let registry = b.coord.registry();
        let watches = || b.store().stats().open_watches();
        // Counts every watch ever opened, so one opened and closed again is not missed.
        let opened = || b.store().stats().watches_opened();
        assert_eq!(watches(), 0);
        let opened_before = opened();
        let mut held = Vec::new();
        for i in 0..20 {
            held.push(long_lived(&registry, &format!("many-{i}")).await);
        }
        let other = registry
            .register(
                ServiceInfo::new("other", "o-1", "127.0.0.1:7002"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        // One watch per service name keeps every registration of it, not one per instance
        // (each opened by a task of its own, so maybe just after the registration returned).
        eventually(CEILING, "a watch per service name", || async {
            watches() == 2
        })
        .await;
        assert_eq!(
            opened() - opened_before,
            2,
            "one per service name, not one per instance"
        );

        // Each is still told of its own key: two deleted at once both come back, on their
        // own leases, and the others are left as they were.
        let (first, last) = (&held[0], &held[19]);
        assert!(registry.unregister("api", "many-0").await.unwrap());
        assert!(registry.unregister("api", "many-19").await.unwrap());
        for registration in [first, last] {
            let key = registration.key().to_owned();
            eventually(CEILING, "the deleted instance is back", || async {
                b.store().get(&key).await.unwrap().0.map(|kv| kv.lease)
                    == Some(registration.lease_id())
            })
            .await;
        }
        let instances = registry.discover("api").await.unwrap();
        assert_eq!(instances.len(), 20);
        // The keepers have run (two of them repaired their keys), and through the shared watch.
        assert_eq!(
            (watches(), opened() - opened_before),
            (2, 2),
            "no watch of its own for any registration"
        );

        // The watch goes with the last registration of its name.
        drop(held);
        eventually(CEILING, "the api watch closed", || async { watches() == 1 }).await;
        other.deregister().await.unwrap();
        eventually(CEILING, "no watch left", || async { watches() == 0 }).await;
    }

    pub async fn unregistered_live_instance_comes_back_on_the_same_lease(b: &Backend) {
        let registry = b.coord.registry();
        // A long TTL: a new lease could only come from a re-registration, not an expiry.
        let registration = long_lived(&registry, "stubborn").await;
        let key = registration.key().to_string();
        let lease = registration.lease_id();
        let mut watch = Follower::new(registry.watch("api").await.unwrap());
        assert!(matches!(watch.next().await, ServiceEvent::Registered(_)));

        // Re-putting on the registration's own lease is allowed, and what it restores.
        let mut moved = registration.info().clone();
        moved.address = "127.0.0.1:7009".into();
        b.store()
            .put(&key, serde_json::to_vec(&moved).unwrap(), lease)
            .await
            .unwrap();
        assert_eq!(watch.next().await, ServiceEvent::Updated(moved.clone()));

        // An operator removes the live instance: it goes, and comes back.
        assert!(registry.unregister("api", "stubborn").await.unwrap());
        assert_eq!(
            watch.next().await,
            ServiceEvent::Unregistered(moved.clone())
        );
        let back = timeout(CEILING, watch.next())
            .await
            .expect("the instance is back within 30 s");
        assert_eq!(back, ServiceEvent::Registered(moved));
        let (kv, _) = b.store().get(&key).await.unwrap();
        assert_eq!(kv.unwrap().lease, lease, "on the same lease");
        assert_eq!(registration.lease_id(), lease);
        assert!(registration.is_alive());
        registration.deregister().await.unwrap();
        assert!(b.store().get(&key).await.unwrap().0.is_none());
    }

    pub async fn registration_overwritten_by_another_lease_ends_without_fighting(b: &Backend) {
        let registry = b.coord.registry();
        let registration = long_lived(&registry, "contested").await;
        let key = registration.key().to_string();
        let mine = registration.lease_id();

        // Another process registers the same instance over it (as after a partition).
        let other = b.store().lease_grant(60).await.unwrap().id;
        let theirs =
            serde_json::to_vec(&ServiceInfo::new("api", "contested", "127.0.0.1:8001")).unwrap();
        b.store().put(&key, theirs.clone(), other).await.unwrap();

        let lost = timeout(CEILING, registration.lost())
            .await
            .expect("the registration learns it was replaced within 30 s");
        match &lost {
            Error::SessionLost { lease, reason } => {
                assert_eq!(*lease, mine);
                assert!(
                    reason.contains(&format!("{other:x}")),
                    "names the new holder: {reason}"
                );
            }
            other => panic!("expected SessionLost, got {other:?}"),
        }
        assert!(!registration.is_alive());
        let store = b.store().clone();
        eventually(
            CEILING,
            "the replaced registration's lease is revoked",
            || {
                let store = store.clone();
                async move { store.lease_ttl(mine).await.unwrap().ttl == -1 }
            },
        )
        .await;

        match registration.deregister().await {
            Err(Error::SessionLost { reason, .. }) => {
                assert!(reason.contains("before deregister"), "{reason}");
                assert!(reason.contains(&format!("{other:x}")), "{reason}");
            }
            other => panic!("expected SessionLost, got {other:?}"),
        }
        // It never fought: the key is still the other holder's, unchanged.
        let (kv, _) = b.store().get(&key).await.unwrap();
        let kv = kv.unwrap();
        assert_eq!(kv.lease, other);
        assert_eq!(kv.value, theirs);
        assert_eq!(
            kv.version, 2,
            "written by the registration, then by the other, only"
        );
    }

    pub async fn registration_that_lost_its_lease_does_not_take_back_an_instance_registered_elsewhere(
        b: &Backend,
    ) {
        let registry = b.coord.registry();
        let registration = registry
            .register(ServiceInfo::new("api", "moved", "127.0.0.1:7001"), TTL)
            .await
            .unwrap();
        let key = registration.key().to_string();
        let mine = registration.lease_id();

        // Its lease goes (as after a partition longer than the TTL) and, meanwhile, another
        // process registers the same instance.
        b.store().lease_revoke(mine).await.unwrap();
        let other = b.store().lease_grant(60).await.unwrap().id;
        let theirs =
            serde_json::to_vec(&ServiceInfo::new("api", "moved", "127.0.0.1:8001")).unwrap();
        b.store().put(&key, theirs.clone(), other).await.unwrap();

        // Whether it tried to register again first or not, it ends and leaves the key alone.
        let lost = timeout(CEILING, registration.lost())
            .await
            .expect("the registration learns it was replaced within 30 s");
        assert!(
            matches!(&lost, Error::SessionLost { reason, .. } if reason.contains(&format!("{other:x}"))),
            "{lost:?}"
        );
        assert!(!registration.is_alive());
        let (kv, _) = b.store().get(&key).await.unwrap();
        let kv = kv.unwrap();
        assert_eq!(kv.lease, other, "the other process keeps the instance");
        assert_eq!(kv.value, theirs);
        assert!(matches!(
            registration.deregister().await,
            Err(Error::SessionLost { .. })
        ));
        assert_eq!(b.store().get(&key).await.unwrap().0.unwrap().lease, other);
    }

    pub async fn deregister_after_close_is_closed(b: &Backend) {
        let registration = b
            .coord
            .registry()
            .register(ServiceInfo::new("api", "closing", "127.0.0.1:7001"), TTL)
            .await
            .unwrap();
        b.coord.close().await.unwrap();
        assert!(!registration.is_alive());
        assert!(matches!(
            timeout(CEILING, registration.lost()).await,
            Ok(Error::SessionLost { .. })
        ));
        assert!(matches!(
            registration.deregister().await,
            Err(Error::Closed)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_goes_on_across_an_etcd_restart_and_the_registration_stays() {
    let mut backend = common::Backend::etcd().await;
    let registry = backend.coord.registry();
    let registration = registry
        .register(ServiceInfo::new("api", "a", "127.0.0.1:7001"), TTL)
        .await
        .unwrap();
    let mut watch = Follower::new(registry.watch("api").await.unwrap());
    assert!(matches!(watch.next().await, ServiceEvent::Registered(ref i) if i.id == "a"));

    let server = backend.server.as_mut().unwrap();
    server.kill().await.unwrap();
    // The outage is seen (the watch and keep-alive streams broke) before etcd comes back.
    until_disconnected(&backend.coord).await;
    server.restart().await.unwrap();

    // A write after the restart (retried while the client reconnects) reaches the same stream.
    let deadline = tokio::time::Instant::now() + WAIT;
    let b = loop {
        match registry
            .register(ServiceInfo::new("api", "b", "127.0.0.1:7002"), TTL)
            .await
        {
            Ok(b) => break b,
            // A failed register revokes its lease, so a register that did land is gone.
            Err(e)
                if (e.is_transient() || e.is_outcome_unknown())
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("register after restart (retried for {WAIT:?}): {e}"),
        }
    };
    // `Follower` fails the test on a duplicate; a lost lease during the outage may show as
    // Unregistered then Registered for `a`, which is a real state change, not a duplicate.
    watch
        .until(
            "b's registration",
            |e| matches!(e, ServiceEvent::Registered(i) if i.id == "b"),
        )
        .await;

    // The registration is still there afterwards, kept alive past several TTLs. Only time
    // shows a lease outliving its TTL: nothing signals that an expiry did not happen.
    tokio::time::sleep(TTL * 2).await;
    let store = backend.coord.store().clone();
    let key = registration.key().to_string();
    common::eventually(WAIT, "a is registered in etcd", || {
        let store = store.clone();
        let key = key.clone();
        async move { store.get(&key).await.is_ok_and(|(kv, _)| kv.is_some()) }
    })
    .await;
    let found = registry.discover("api").await.unwrap();
    assert_eq!(ids(&found), ["a", "b"]);
    assert_eq!(watch.ids(), ["a", "b"], "the stream's state matches etcd");
    let health = backend.coord.health().await.unwrap();
    assert!(health.is_healthy(), "{health:?}");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_state_is_right_after_an_etcd_restart_and_compaction() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("coord=info")
        .with_test_writer()
        .try_init();
    let mut backend = common::Backend::etcd().await;
    let store = backend.coord.store().clone();
    let put = |info: ServiceInfo| {
        let store = store.clone();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let value = serde_json::to_vec(&info).unwrap();
                match store.put(&info.key(), value, 0).await {
                    Ok(put) => return put.revision,
                    // The same value again: a put that did land changes nothing that matters.
                    Err(e)
                        if (e.is_transient() || e.is_outcome_unknown())
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("put {} (retried for {WAIT:?}): {e}", info.key()),
                }
            }
        }
    };
    let info = |id: &str| ServiceInfo::new("api", id, "127.0.0.1:7001");
    for id in ["a", "b", "c"] {
        put(info(id)).await;
    }
    let registry = backend.coord.registry();
    let mut watch = Follower::new(registry.watch("api").await.unwrap());
    for _ in 0..3 {
        assert!(matches!(watch.next().await, ServiceEvent::Registered(_)));
    }

    let server = backend.server.as_mut().unwrap();
    server.kill().await.unwrap();
    // The watch retries with jittered backoff (0.1 s doubling, ±20%): its fifth attempt is by
    // 3.72 s, its sixth not before 5.04 s. Down for 3.8 s, the changes below usually land and
    // are compacted away before it reconnects, so it has to relist; either way its state must
    // end right, with each change reported once. (The partition test below makes the relist
    // certain.)
    tokio::time::sleep(Duration::from_millis(3800)).await;
    server.restart().await.unwrap();
    put(info("b").with_version("2")).await;
    store
        .delete(&KeyRange::key("/services/api/c"))
        .await
        .unwrap();
    let last = put(info("d")).await;
    store.compact(last).await.unwrap();

    let mut seen = Vec::new();
    while watch.ids() != ["a", "b", "d"] || watch.state["b"].version != "2" {
        seen.push(watch.next().await);
    }
    assert_eq!(
        seen.len(),
        3,
        "exactly the three changes, each once: {seen:?}"
    );
    assert_eq!(
        ids(&registry.discover("api").await.unwrap()),
        ["a", "b", "d"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_comes_back_after_an_outage_longer_than_its_ttl() {
    let mut backend = common::Backend::etcd().await;
    let registry = backend.coord.registry();
    let registration = registry
        .register(ServiceInfo::new("api", "a", "127.0.0.1:7001"), TTL)
        .await
        .unwrap();
    let old = registration.lease_id();
    let key = registration.key().to_string();

    let server = backend.server.as_mut().unwrap();
    server.kill().await.unwrap();
    // Past the TTL the session cannot renew in time and counts its lease as lost.
    common::eventually(WAIT, "the lease is known lost", || async {
        !registration.is_alive()
    })
    .await;
    server.restart().await.unwrap();

    let store = backend.coord.store().clone();
    common::eventually(WAIT, "registered again on a new lease", || {
        let store = store.clone();
        let key = key.clone();
        async move {
            store
                .get(&key)
                .await
                .is_ok_and(|(kv, _)| kv.is_some_and(|kv| kv.lease != old))
        }
    })
    .await;
    // The key moves to the new lease a moment before the handle swaps in its new session.
    common::eventually(WAIT, "the handle holds the new lease", || async {
        registration.is_alive() && registration.lease_id() != old
    })
    .await;
    // Whatever became of the old lease (etcd may have kept it across the restart, and then
    // expires it a TTL later), the key stays on the new one: checked once it is gone.
    common::eventually(WAIT, "the old lease is gone", || {
        let store = store.clone();
        async move {
            store
                .lease_ttl(old)
                .await
                .is_ok_and(|lease| lease.ttl == -1)
        }
    })
    .await;
    let (kv, _) = store.get(&key).await.unwrap();
    assert_eq!(kv.expect("still registered").lease, registration.lease_id());
}

/// The watcher is cut off from etcd (a TCP proxy drops its connections) while instances
/// change and the history it would resume from is compacted: it cannot resume, so it relists,
/// and reports exactly the differences, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_relists_after_compaction_while_partitioned() {
    let backend = common::Backend::etcd().await;
    let server = backend.server.as_ref().unwrap();
    let proxy = common::proxy::Proxy::start(&server.endpoint()).await;
    // No periodic relist to fall back on: the relist seen must be the watch's own.
    let config = server
        .client_config()
        .with_endpoints([proxy.endpoint()])
        .with_sync_interval(common::NO_RESYNC);
    let behind = Coord::connect(config).await.unwrap();
    let store = backend.store();
    let put = |info: ServiceInfo| async move {
        let value = serde_json::to_vec(&info).unwrap();
        store.put(&info.key(), value, 0).await.unwrap().revision
    };
    let info = |id: &str| ServiceInfo::new("api", id, "127.0.0.1:7001");
    for id in ["a", "b", "c"] {
        put(info(id)).await;
    }
    let registry = behind.registry();
    let mut watch = Follower::new(registry.watch("api").await.unwrap());
    for _ in 0..3 {
        assert!(matches!(watch.next().await, ServiceEvent::Registered(_)));
    }

    proxy.cut();
    put(info("b").with_version("2")).await;
    store
        .delete(&KeyRange::key("/services/api/c"))
        .await
        .unwrap();
    put(info("c").with_version("3")).await;
    store
        .delete(&KeyRange::key("/services/api/c"))
        .await
        .unwrap();
    let last = put(info("d")).await;
    store.compact(last).await.unwrap();
    // The cut is seen (the watcher's stream broke) before the proxy lets it back.
    until_disconnected(&behind).await;
    proxy.restore();

    // c came and went twice while cut off: the relist reports only that it is gone.
    let mut seen = Vec::new();
    while watch.ids() != ["a", "b", "d"] || watch.state["b"].version != "2" {
        seen.push(watch.next().await);
    }
    assert_eq!(
        seen.len(),
        3,
        "b updated, c gone, d new; each once: {seen:?}"
    );
    assert_eq!(
        ids(&registry.discover("api").await.unwrap()),
        ["a", "b", "d"]
    );
}
