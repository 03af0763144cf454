//! `Session`: a lease kept alive in the background, and the signal when it is lost.

mod common;

use std::time::Duration;

use coord::store::KeyRange;
use coord::{Error, Session};
use tokio::time::timeout;

/// A ceiling for what should take about a second: generous, because a loaded machine is slow;
/// a test waits for the event itself rather than timing it.
const WAIT: Duration = Duration::from_secs(30);
/// A TTL no test outlives: a key gone before it was revoked, not expired.
const LONG_TTL: Duration = Duration::from_secs(600);

on_both_backends!(cases:
    session_keeps_its_keys_past_the_ttl,
    revoking_the_lease_resolves_lost,
    close_revokes_the_lease_and_deletes_keys,
    dropping_the_session_revokes_in_the_background,
    a_close_dropped_midway_still_revokes,
    abandoned_session_keys_expire_after_ttl,
    sub_second_ttl_is_invalid_argument,
    sessions_renew_on_their_own_schedules_without_a_task_each,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    pub async fn session_keeps_its_keys_past_the_ttl(b: &Backend) {
        let s = b.store();
        let session = Session::new(s, Duration::from_secs(2)).await.unwrap();
        assert_eq!(session.ttl(), Duration::from_secs(2));
        s.put("/s/a", b"1".to_vec(), session.lease_id())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(session.is_alive());
        assert!(s.get("/s/a").await.unwrap().0.is_some());
    }

    pub async fn revoking_the_lease_resolves_lost(b: &Backend) {
        let s = b.store();
        let session = Session::new(s, Duration::from_secs(3)).await.unwrap();
        s.lease_revoke(session.lease_id()).await.unwrap();
        let lost = timeout(WAIT, session.lost())
            .await
            .expect("lost() resolves after a revoke");
        assert!(matches!(lost, Error::SessionLost { lease, .. } if lease == session.lease_id()));
        assert!(!session.is_alive());
        let refresh = session.refresh().await;
        assert!(
            matches!(refresh, Err(Error::SessionLost { .. })),
            "{refresh:?}"
        );
    }

    pub async fn close_revokes_the_lease_and_deletes_keys(b: &Backend) {
        let s = b.store();
        let session = Session::new(s, Duration::from_secs(10)).await.unwrap();
        s.put("/s/c", b"1".to_vec(), session.lease_id())
            .await
            .unwrap();
        session.close().await.unwrap();
        assert!(s.get("/s/c").await.unwrap().0.is_none());
        assert_eq!(s.lease_ttl(session.lease_id()).await.unwrap().ttl, -1);
    }

    pub async fn dropping_the_session_revokes_in_the_background(b: &Backend) {
        let s = b.store().clone();
        let session = Session::new(&s, LONG_TTL).await.unwrap();
        let lease = session.lease_id();
        s.put("/s/d", b"1".to_vec(), lease).await.unwrap();
        drop(session);
        eventually(WAIT, "key deleted after drop, long before its TTL", || {
            let s = s.clone();
            async move { s.get("/s/d").await.unwrap().0.is_none() }
        })
        .await;
    }

    pub async fn a_close_dropped_midway_still_revokes(b: &Backend) {
        let s = b.store().clone();
        let session = Session::new(&s, LONG_TTL).await.unwrap();
        s.put("/s/f", b"1".to_vec(), session.lease_id())
            .await
            .unwrap();
        // Poll `close` once (the revoke is then in flight on etcd; the embedded store finishes
        // it in that poll) and drop it, as a caller's timeout or a `select!` would.
        {
            let close = session.close();
            tokio::pin!(close);
            let _ = futures::poll!(&mut close);
        }
        drop(session);
        eventually(WAIT, "key deleted long before its TTL", || {
            let s = s.clone();
            async move { s.get("/s/f").await.unwrap().0.is_none() }
        })
        .await;
    }

    pub async fn abandoned_session_keys_expire_after_ttl(b: &Backend) {
        let s = b.store().clone();
        let session = Session::new(&s, Duration::from_secs(2)).await.unwrap();
        s.put("/s/e", b"1".to_vec(), session.lease_id())
            .await
            .unwrap();
        session.abandon();
        drop(session);
        assert!(s.get("/s/e").await.unwrap().0.is_some(), "not revoked");
        eventually(WAIT, "key expired with the lease", || {
            let s = s.clone();
            async move { s.get("/s/e").await.unwrap().0.is_none() }
        })
        .await;
    }

    pub async fn sessions_renew_on_their_own_schedules_without_a_task_each(b: &Backend) {
        let s = b.store();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let short = Session::new(s, Duration::from_secs(2)).await.unwrap();
        // A renewal now, so whatever renewals start on etcd (its keep-alive stream) runs.
        short.refresh().await.unwrap();
        let with_one = tasks();
        let mut long = Vec::new();
        for _ in 0..50 {
            long.push(Session::new(s, Duration::from_secs(9)).await.unwrap());
        }
        // The transport's own tasks come and go (CI once saw one more for a moment); a task
        // per session would stay while the sessions live, 50 more.
        let what = format!("51 sessions hold no more than the {with_one} tasks of one");
        eventually(Duration::from_secs(3), &what, || async {
            tasks() <= with_one
        })
        .await;
        // Past the short TTL twice over and past the long one's renewal interval: each is
        // renewed on its own schedule.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(short.is_alive());
        assert!(long.iter().all(Session::is_alive));
        // One lease lost is one session lost.
        s.lease_revoke(long[7].lease_id()).await.unwrap();
        timeout(WAIT, long[7].lost())
            .await
            .expect("the revoked one is lost");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(short.is_alive());
        let alive = long.iter().filter(|session| session.is_alive()).count();
        assert_eq!(alive, 49);
    }

    pub async fn sub_second_ttl_is_invalid_argument(b: &Backend) {
        let err = Session::new(b.store(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }
}

/// `etcdctl lease revoke` from outside coord is noticed by the session holding the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_revoke_resolves_lost() {
    let backend = common::Backend::etcd().await;
    let server = backend.server.as_ref().unwrap();
    let store = backend.store();
    let session = Session::new(store, Duration::from_secs(3)).await.unwrap();
    store
        .put("/s/etcdctl", b"1".to_vec(), session.lease_id())
        .await
        .unwrap();
    server
        .etcdctl(&["lease", "revoke", &format!("{:x}", session.lease_id())])
        .expect("etcdctl lease revoke");
    let lost = timeout(WAIT, session.lost())
        .await
        .expect("lost() resolves after etcdctl revokes the lease");
    assert!(matches!(lost, Error::SessionLost { .. }));
    let left = store
        .range(&KeyRange::prefix("/s/etcdctl"), Default::default())
        .await
        .unwrap();
    assert_eq!(left.count, 0);
}
