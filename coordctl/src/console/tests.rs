//! Handler tests: every route through the router, on the embedded store.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use coord::{Coord, CoordConfig, Instance, ServiceInfo};
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::auth::{TokenLine, CSRF_HEADER, TOKEN_HEADER};
use super::{router, Access, Console, StreamLimits};

const PREFIX: &str = "/config/checkout";
const TOKEN: &str = "ana-token-0123456789";
const READ_TOKEN: &str = "viewer-token-0123456789";
/// The name the off-loopback consoles of these tests answer to.
const INTERNAL: &str = "console.internal";

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    /// Seconds before a payment attempt is abandoned.
    #[coord(default = 30)]
    timeout_secs: u64,
    /// The payment provider's key.
    #[coord(secret, default)]
    api_key: coord::Secret<String>,
}

struct Env {
    coord: Coord,
    app: Router,
    csrf: String,
    /// The `Host` a request carries unless it names its own.
    host: &'static str,
}

/// A console on an embedded store with Checkout's schema published and released once (by
/// "setup", "launch"), writable with `TOKEN` (named ana).
async fn env() -> Env {
    env_with(|| Access::with_tokens(vec![("ana".into(), TOKEN.into())], true)).await
}

async fn env_with(access: impl FnOnce() -> Access) -> Env {
    env_with_limits(access, StreamLimits::default()).await
}

/// A console beyond loopback, as `--listen 0.0.0.0:… --allowed-host console.internal
/// --read-token-file … --token-file …` builds it: ana writes, viewer reads.
async fn off_loopback() -> Env {
    let mut env = env_with(|| {
        Access::with_tokens(vec![("ana".into(), TOKEN.into())], false)
            .with_readers(vec![("viewer".into(), READ_TOKEN.into())])
            .with_allowed_hosts([INTERNAL])
    })
    .await;
    env.host = "console.internal:8080";
    env
}

async fn env_with_limits(access: impl FnOnce() -> Access, limits: StreamLimits) -> Env {
    env_acting_as(access, limits, None).await
}

/// A console whose writes act through `delegate` (a principal claimed as `--as` does), or
/// through the connection's own principal (the embedded store's `anonymous`).
async fn env_acting_as(
    access: impl FnOnce() -> Access,
    limits: StreamLimits,
    delegate: Option<&str>,
) -> Env {
    let coord = Coord::in_memory();
    coord.config().publish_schema::<Checkout>().await.unwrap();
    coord
        .config()
        .release(&Checkout {
            timeout_secs: 30,
            api_key: coord::Secret::new("sk-live-123".to_owned()),
        })
        .author("setup")
        .message("launch")
        .commit()
        .await
        .unwrap();
    let access = access();
    let csrf = access.csrf().to_owned();
    let delegate = match delegate {
        Some(name) => coord.config().as_principal(name).unwrap(),
        None => coord.config().clone(),
    };
    let app = router(Console::acting_as(coord.clone(), delegate, access, limits));
    Env {
        coord,
        app,
        csrf,
        host: "127.0.0.1:8080",
    }
}

impl Env {
    /// The raw answer to `request`, sent with this env's `Host` unless it names one.
    async fn respond(&self, mut request: Request<Body>) -> axum::response::Response {
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, self.host.parse().unwrap());
        }
        self.app.clone().oneshot(request).await.unwrap()
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.respond(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn get_ok(&self, uri: &str) -> Value {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }

    /// A POST as the page sends it: the CSRF token and the write token.
    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.post_with(uri, body, Some(&self.csrf.clone()), Some(TOKEN), None)
            .await
    }

    async fn post_with(
        &self,
        uri: &str,
        body: Value,
        csrf: Option<&str>,
        token: Option<&str>,
        origin: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = csrf {
            request = request.header(CSRF_HEADER, csrf);
        }
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        self.call(request.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn timeout(&self) -> u64 {
        self.coord
            .config()
            .get::<u64>("/config/checkout/timeout_secs")
            .await
            .unwrap()
    }

    async fn releases(&self) -> usize {
        self.coord
            .config()
            .history(PREFIX, 100)
            .await
            .unwrap()
            .len()
    }
}

fn release_body(timeout: Value, expect_latest: u64) -> Value {
    json!({
        "prefix": PREFIX,
        "values": { "timeout_secs": timeout },
        "message": "slower provider",
        "expect_latest": expect_latest,
    })
}

#[tokio::test]
async fn page_carries_this_servers_csrf_token_and_a_strict_content_policy() {
    let env = env().await;
    let response = env
        .respond(Request::get("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let page = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        page.contains(&format!("content=\"{}\"", env.csrf)),
        "{page}"
    );
    assert!(
        page.contains("name=\"writable\" content=\"true\""),
        "{page}"
    );

    let read_only = env_with(|| Access::read_only(true)).await;
    let (_, page) = read_only.get("/").await;
    assert!(page
        .as_str()
        .unwrap()
        .contains("name=\"writable\" content=\"false\""));
}

#[tokio::test]
async fn script_and_style_are_served_with_their_types() {
    let env = env().await;
    for (uri, kind, needle) in [
        ("/assets/app.js", "text/javascript", "X-CSRF-Token"),
        ("/assets/app.css", "text/css", ".field-error"),
    ] {
        let response = env
            .respond(Request::get(uri).body(Body::empty()).unwrap())
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains(needle), "{uri}");
    }
}

#[tokio::test]
async fn prefixes_lists_every_prefix_with_a_published_schema() {
    let env = env().await;
    env.coord
        .config()
        .publish_schema_at::<Checkout>("/config/other")
        .await
        .unwrap();
    let prefixes = env.get_ok("/api/prefixes").await;
    assert_eq!(
        prefixes,
        json!([
            { "prefix": "/config/checkout", "type_name": "Checkout", "fields": 2 },
            { "prefix": "/config/other", "type_name": "Checkout", "fields": 2 },
        ])
    );
}

#[tokio::test]
async fn config_shows_each_field_with_value_type_default_doc_and_source_and_redacts_secrets() {
    let env = env().await;
    let (status, body) = env.get("/api/config?prefix=/config/checkout").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.to_string().contains("sk-live-123"),
        "a secret left the server: {body}"
    );
    assert_eq!(body["latest_seq"], 1);
    assert_eq!(body["type_name"], "Checkout");
    let timeout = &body["fields"][0];
    assert_eq!(timeout["key"], "timeout_secs");
    assert_eq!(timeout["value"], 30);
    assert_eq!(timeout["type_name"], "u64");
    assert_eq!(timeout["default"], 30);
    assert_eq!(timeout["source"], "etcd");
    assert_eq!(
        timeout["doc"],
        "Seconds before a payment attempt is abandoned."
    );
    let key = &body["fields"][1];
    assert_eq!(key["key"], "api_key");
    assert_eq!(key["value"], "<redacted>");
    assert_eq!(key["secret"], true);

    let (status, body) = env.get("/api/config?prefix=/config/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("no schema"),
        "{body}"
    );
}

#[tokio::test]
async fn history_lists_releases_newest_first_with_authors_and_per_key_diffs() {
    let env = env().await;
    let (status, _) = env.post("/api/release", release_body(json!(45), 1)).await;
    assert_eq!(status, StatusCode::OK);
    let history = env.get_ok("/api/history?prefix=/config/checkout").await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["seq"], 2);
    assert_eq!(history[0]["author"], "ana (console)");
    assert_eq!(history[0]["message"], "slower provider");
    assert_eq!(
        history[0]["changes"],
        json!([{ "key": "timeout_secs", "change": "changed", "old": 30, "new": 45 }])
    );
    assert_eq!(history[1]["author"], "setup");
    // The first release adds every key; a secret's value never shows.
    let first = history[1]["changes"].to_string();
    assert!(first.contains("\"added\""), "{first}");
    assert!(!first.contains("sk-live-123"), "{first}");
}

async fn wait_for_status(env: &Env, instance: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rollout = env.get_ok("/api/rollout?prefix=/config/checkout").await;
        if let Some(found) = rollout
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["instance"] == instance)
        {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no status of {instance}: {rollout}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rollout_lists_each_live_instance_with_its_release() {
    let env = env().await;
    let api = Coord::from_store_as(
        env.coord.store(),
        Instance::new("api-1").label("zone", "eu-1"),
    )
    .unwrap();
    let _live = api.live::<Checkout>().await.unwrap();
    let status = wait_for_status(&env, "api-1").await;
    assert_eq!(status["labels"], json!({ "zone": "eu-1" }));
    assert_eq!(status["release"], 1);
    assert_eq!(status["error"], Value::Null);
}

/// The next `event: NAME` of an SSE body, with its data; panics after 5 s.
async fn next_event(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buffer: &mut String,
) -> (String, String) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if !name.is_empty() {
                return (name, data);
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn rollout_events_send_the_rollout_then_each_change() {
    let env = env().await;
    let response = env
        .respond(
            Request::get("/api/rollout/events?prefix=/config/checkout")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.into_body().into_data_stream();
    let mut buffer = String::new();
    let (name, data) = next_event(&mut body, &mut buffer).await;
    assert_eq!((name.as_str(), data.as_str()), ("rollout", "[]"));

    // An instance appears: the rollout is sent again with it.
    let api = Coord::from_store_as(env.coord.store(), Instance::new("api-1")).unwrap();
    let _live = api.live::<Checkout>().await.unwrap();
    let (name, data) = next_event(&mut body, &mut buffer).await;
    assert_eq!(name, "rollout");
    assert!(data.contains("\"api-1\""), "{data}");

    // A value changes: the page is told to reload.
    env.coord
        .config()
        .set("/config/checkout/timeout_secs", &50)
        .await
        .unwrap();
    let mut names = Vec::new();
    while !names.iter().any(|n| n == "config") {
        names.push(next_event(&mut body, &mut buffer).await.0);
    }
}

#[tokio::test]
async fn locks_ids_and_services_are_listed_read_only() {
    let env = env().await;
    let _lock = env
        .coord
        .locks()
        .acquire("/locks/jobs", Duration::from_secs(10))
        .await
        .unwrap();
    let ids = env.coord.ids("worker", 8).await.unwrap();
    let id = ids.acquire().await.unwrap();
    let _registration = env
        .coord
        .registry()
        .register(
            ServiceInfo::new("api", "api-1", "10.0.0.1:80").with_version("1.2"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let locks = env.get_ok("/api/locks").await;
    assert_eq!(locks[0]["name"], "/locks/jobs", "{locks}");
    assert!(locks[0]["fencing_token"].as_i64().unwrap() > 0);
    assert_eq!(locks[0]["waiters"], json!([]));

    assert_eq!(
        env.get_ok("/api/ids").await,
        json!([{ "name": "worker", "count": 1 }])
    );
    let taken = env.get_ok("/api/ids?service=worker").await;
    assert_eq!(taken[0]["id"], id.id());

    assert_eq!(
        env.get_ok("/api/services").await,
        json!([{ "name": "api", "count": 1 }])
    );
    let instances = env.get_ok("/api/services?name=api").await;
    assert_eq!(instances[0]["address"], "10.0.0.1:80");
    assert_eq!(instances[0]["version"], "1.2");
}

#[tokio::test]
async fn a_release_writes_the_change_attributed_to_the_tokens_holder() {
    let env = env().await;
    let (status, body) = env.post("/api/release", release_body(json!(45), 1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seq"], 2);
    assert_eq!(body["author"], "ana (console)");
    assert_eq!(env.timeout().await, 45);
}

#[tokio::test]
async fn a_secret_edited_on_a_console_with_keys_is_stored_sealed_and_never_answered() {
    let env = env().await;
    env.coord.set_key_ring(
        coord::keyring::KeyRing::parse("k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap(),
    );
    let body = json!({
        "prefix": PREFIX,
        "values": { "api_key": "sk-canary-edited" },
        "message": "new provider key",
        "expect_latest": 1,
    });
    let (status, answer) = env.post("/api/release", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(!answer.to_string().contains("sk-canary"), "{answer}");
    let (stored, _) = env
        .coord
        .store()
        .get(&format!("{PREFIX}/api_key"))
        .await
        .unwrap();
    let stored = stored.unwrap().value;
    assert_eq!(coord::keyring::key_id_of(&stored).as_deref(), Some("k1"));
    assert!(!String::from_utf8_lossy(&stored).contains("sk-canary"));
    // The page's reads show it redacted, and the history holds no plaintext either.
    let config = env.get_ok(&format!("/api/config?prefix={PREFIX}")).await;
    let history = env.get_ok(&format!("/api/history?prefix={PREFIX}")).await;
    for shown in [config, history] {
        assert!(!shown.to_string().contains("sk-canary"), "{shown}");
    }
    let live = env.coord.live::<Checkout>().await.unwrap();
    assert_eq!(live.load().api_key.expose(), "sk-canary-edited");
}

#[tokio::test]
async fn a_release_after_a_change_outside_releases_expects_the_latest_recorded_release() {
    let env = env().await;
    env.coord
        .config()
        .set(&format!("{PREFIX}/timeout_secs"), &40)
        .await
        .unwrap();
    let page = env.get_ok(&format!("/api/config?prefix={PREFIX}")).await;
    assert_eq!(
        page["latest_seq"], 1,
        "the unrecorded change is no release: {page}"
    );
    let (status, body) = env.post("/api/release", release_body(json!(45), 1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["seq"], 3,
        "the change outside releases is recorded as 2 first"
    );
    assert_eq!(env.timeout().await, 45);
}

#[tokio::test]
async fn a_read_only_console_refuses_every_write() {
    let env = env_with(|| Access::read_only(true)).await;
    for (uri, body) in [
        ("/api/release", release_body(json!(45), 1)),
        (
            "/api/rollback",
            json!({ "prefix": PREFIX, "seq": 1, "message": "m" }),
        ),
        (
            "/api/gray/start",
            json!({ "prefix": PREFIX, "values": { "timeout_secs": 45 }, "selector": { "instances": ["a"] }, "message": "m" }),
        ),
        (
            "/api/gray/promote",
            json!({ "prefix": PREFIX, "seq": 1, "message": "m" }),
        ),
        (
            "/api/gray/abort",
            json!({ "prefix": PREFIX, "seq": 1, "message": "m" }),
        ),
        ("/api/plan/pause", json!({ "prefix": PREFIX })),
        ("/api/plan/resume", json!({ "prefix": PREFIX })),
        ("/api/plan/cancel", json!({ "prefix": PREFIX })),
    ] {
        let (status, answer) = env.post(uri, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {answer}");
        assert_eq!(answer["code"], "read_only", "{uri}");
    }
    assert_eq!(env.timeout().await, 30);
    assert_eq!(env.releases().await, 1);
}

#[tokio::test]
async fn a_write_without_the_token_or_with_a_wrong_one_is_refused_and_writes_nothing() {
    let env = env().await;
    let csrf = env.csrf.clone();
    for token in [None, Some("not-the-token-0123456789")] {
        let (status, body) = env
            .post_with(
                "/api/release",
                release_body(json!(45), 1),
                Some(&csrf),
                token,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
    }
    assert_eq!(env.timeout().await, 30);
    assert_eq!(env.releases().await, 1);
}

#[tokio::test]
async fn a_write_with_a_bad_or_missing_csrf_token_is_refused_and_writes_nothing() {
    let env = env().await;
    let other_server = Access::read_only(true).csrf().to_owned();
    for csrf in [None, Some(""), Some(other_server.as_str())] {
        for uri in [
            "/api/release",
            "/api/rollback",
            "/api/gray/start",
            "/api/gray/promote",
            "/api/gray/abort",
        ] {
            let (status, body) = env
                .post_with(uri, release_body(json!(45), 1), csrf, Some(TOKEN), None)
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri} {csrf:?}: {body}");
            assert!(body["error"].as_str().unwrap().contains("CSRF"), "{body}");
        }
    }
    assert_eq!(env.timeout().await, 30);
    assert_eq!(env.releases().await, 1);
}

#[tokio::test]
async fn a_write_from_another_origin_is_refused_and_one_from_the_console_passes() {
    let env = env().await;
    let csrf = env.csrf.clone();
    let (status, _) = env
        .post_with(
            "/api/release",
            release_body(json!(45), 1),
            Some(&csrf),
            Some(TOKEN),
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(env.timeout().await, 30);
    let (status, body) = env
        .post_with(
            "/api/release",
            release_body(json!(45), 1),
            Some(&csrf),
            Some(TOKEN),
            Some("http://127.0.0.1:8080"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(env.timeout().await, 45);
}

fn get_from(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(Body::empty())
        .unwrap()
}

fn get_with_token(uri: &str, token: &str) -> Request<Body> {
    Request::get(uri)
        .header(TOKEN_HEADER, token)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_request_naming_a_foreign_host_is_refused_on_loopback() {
    let env = env().await;
    let (status, body) = env
        .call(get_from("/api/prefixes", "rebound.example:8080"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--allowed-host"),
        "{body}"
    );
    let (status, _) = env.call(get_from("/", "rebound.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the page too");
    let (status, _) = env.call(get_from("/api/prefixes", "localhost:8080")).await;
    assert_eq!(status, StatusCode::OK);
    // Without a Host a request names nothing this console answers to.
    let response = env
        .app
        .clone()
        .oneshot(Request::get("/api/prefixes").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_request_naming_a_foreign_host_is_refused_off_loopback_even_a_loopback_name() {
    let env = off_loopback().await;
    for host in ["rebound.example:8080", "localhost:8080", "127.0.0.1:8080"] {
        let request = Request::get("/api/prefixes")
            .header(header::HOST, host)
            .header(TOKEN_HEADER, READ_TOKEN)
            .body(Body::empty())
            .unwrap();
        let (status, body) = env.call(request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {body}");
    }
    let (status, body) = env.call(get_with_token("/api/prefixes", READ_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn off_loopback_every_read_needs_a_read_or_write_token_and_the_page_says_so() {
    let env = off_loopback().await;
    let reads = [
        "/api/prefixes",
        "/api/config?prefix=/config/checkout",
        "/api/history?prefix=/config/checkout",
        "/api/rollout?prefix=/config/checkout",
        "/api/rollout/events?prefix=/config/checkout",
        "/api/locks",
        "/api/ids",
        "/api/services",
    ];
    for uri in reads {
        let (status, body) = env.get(uri).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("needs a token"),
            "{body}"
        );
        assert!(!body.to_string().contains("sk-live-123"), "{body}");
    }
    for token in [READ_TOKEN, TOKEN] {
        for uri in reads.iter().filter(|uri| !uri.contains("events")) {
            let (status, body) = env.call(get_with_token(uri, token)).await;
            assert_eq!(status, StatusCode::OK, "{uri} with {token}: {body}");
        }
    }
    // The page itself holds no data: it loads without a token, to ask for one.
    let (status, page) = env.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.as_str()
            .unwrap()
            .contains("name=\"read-token\" content=\"true\""),
        "{page}"
    );
    // A read token does not write.
    let (status, _) = env
        .post_with(
            "/api/release",
            release_body(json!(45), 1),
            Some(&env.csrf.clone()),
            Some(READ_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(env.timeout().await, 30);
}

#[tokio::test]
async fn on_loopback_a_read_token_file_closes_reads_and_without_one_they_stay_open() {
    let closed = env_with(|| {
        Access::read_only(true).with_readers(vec![("viewer".into(), READ_TOKEN.into())])
    })
    .await;
    let (status, _) = closed.get("/api/prefixes").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = closed
        .call(get_with_token("/api/prefixes", READ_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK);

    let open = env().await;
    open.get_ok("/api/prefixes").await;
    let (_, page) = open.get("/").await;
    assert!(page
        .as_str()
        .unwrap()
        .contains("name=\"read-token\" content=\"false\""));
}

#[tokio::test]
async fn a_token_of_another_length_is_refused_for_reads_and_writes() {
    let env = off_loopback().await;
    for wrong in [
        "x",
        &READ_TOKEN[..READ_TOKEN.len() - 1],
        &format!("{READ_TOKEN}0"),
    ] {
        let (status, _) = env.call(get_with_token("/api/prefixes", wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let csrf = env.csrf.clone();
    for wrong in ["x", &format!("{TOKEN}0")] {
        let (status, _) = env
            .post_with(
                "/api/release",
                release_body(json!(45), 1),
                Some(&csrf),
                Some(wrong),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    assert_eq!(env.timeout().await, 30);
}

#[tokio::test]
async fn after_five_wrong_tokens_even_the_right_one_is_answered_429_with_retry_after() {
    let env = off_loopback().await;
    for _ in 0..super::auth::MAX_FAILURES {
        let (status, _) = env
            .call(get_with_token("/api/prefixes", "guess-0123456789abcdef"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let response = env
        .respond(get_with_token("/api/prefixes", READ_TOKEN))
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Writes are token checks too.
    let (status, body) = env.post("/api/release", release_body(json!(45), 1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(env.timeout().await, 30);
}

/// The response to `POST /api/login` with `token`.
async fn login(env: &Env, token: Option<&str>) -> axum::response::Response {
    let mut request = Request::post("/api/login");
    if let Some(token) = token {
        request = request.header(TOKEN_HEADER, token);
    }
    env.respond(request.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn the_event_stream_takes_the_cookie_a_token_buys_and_nothing_else_does() {
    let env = off_loopback().await;
    let response = login(&env, Some(READ_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let set = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/api/rollout/events"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(
        !set.contains(READ_TOKEN),
        "the cookie is not the token: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();

    let events = |cookie: String| {
        Request::get("/api/rollout/events?prefix=/config/checkout")
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap()
    };
    let response = env.respond(events(format!("theme=dark; {cookie}"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let (status, _) = env
        .call(events("coord_events=0123456789abcdef".into()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The cookie opens the stream only, not the API.
    let request = Request::get("/api/prefixes")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let (status, _) = env.call(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(login(&env, None).await.status(), StatusCode::UNAUTHORIZED);
    let open = login(&super::tests::env().await, None).await;
    assert_eq!(open.status(), StatusCode::NO_CONTENT);
    assert!(!open.headers().contains_key(header::SET_COOKIE));
}

#[tokio::test]
async fn coords_own_keys_and_prefixes_without_a_schema_are_refused_for_reads_and_writes() {
    let env = env().await;
    // Even a schema under /coord/ (the library refuses to publish one; etcdctl could write
    // it) does not open it.
    let refused = env
        .coord
        .config()
        .publish_schema_at::<Checkout>("/coord/releases/config/checkout")
        .await;
    assert!(
        matches!(refused, Err(coord::Error::InvalidArgument { .. })),
        "{refused:?}"
    );
    let schema = coord::config::PublishedSchema::of::<Checkout>("/coord/releases/config/checkout");
    env.coord
        .store()
        .put(
            &coord::config::PublishedSchema::key("/coord/releases/config/checkout"),
            serde_json::to_vec(&schema).unwrap(),
            0,
        )
        .await
        .unwrap();
    let listed = env.get_ok("/api/prefixes").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    for route in [
        "config",
        "history",
        "rollout",
        "rollout/events",
        "proposals",
    ] {
        for (prefix, want) in [
            ("/coord/releases/config/checkout", StatusCode::FORBIDDEN),
            ("/coord", StatusCode::FORBIDDEN),
            ("/coord/", StatusCode::FORBIDDEN),
            ("/config", StatusCode::NOT_FOUND),
            ("/config/nothing", StatusCode::NOT_FOUND),
            ("config/checkout", StatusCode::BAD_REQUEST),
            ("", StatusCode::BAD_REQUEST),
        ] {
            let (status, body) = env.get(&format!("/api/{route}?prefix={prefix}")).await;
            assert_eq!(status, want, "{route} {prefix}: {body}");
            assert!(body["error"].is_string(), "{body}");
            assert!(!body.to_string().contains("sk-live-123"), "{body}");
        }
    }
    let (status, _) = env.get("/api/locks?prefix=/coord/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    for (prefix, want) in [
        ("/coord/releases/config/checkout", StatusCode::FORBIDDEN),
        ("/config/nothing", StatusCode::NOT_FOUND),
    ] {
        for (uri, body) in [
            (
                "/api/release",
                json!({ "prefix": prefix, "values": { "timeout_secs": 1 }, "message": "m" }),
            ),
            (
                "/api/rollback",
                json!({ "prefix": prefix, "seq": 1, "message": "m" }),
            ),
            (
                "/api/gray/start",
                json!({ "prefix": prefix, "values": { "timeout_secs": 1 }, "selector": { "instances": ["a"] }, "message": "m" }),
            ),
            (
                "/api/gray/promote",
                json!({ "prefix": prefix, "seq": 1, "message": "m" }),
            ),
            (
                "/api/gray/abort",
                json!({ "prefix": prefix, "seq": 1, "message": "m" }),
            ),
            (
                "/api/proposals/approve",
                json!({ "prefix": prefix, "id": "0a1b2c3d" }),
            ),
            (
                "/api/proposals/reject",
                json!({ "prefix": prefix, "id": "0a1b2c3d", "reason": "no" }),
            ),
        ] {
            let (status, answer) = env.post(uri, body).await;
            assert_eq!(status, want, "{uri} {prefix}: {answer}");
        }
    }
    assert_eq!(env.releases().await, 1);
}

/// The security headers every answer carries.
fn assert_security_headers(response: &axum::response::Response, what: &str) {
    let headers = response.headers();
    for (name, want) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            Some(want),
            "{what}: {name}"
        );
    }
    let policy = headers
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{what}: {policy:?}"
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_errors_included() {
    let env = env().await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    for (what, request, status) in [
        ("the page", get("/"), StatusCode::OK),
        ("the script", get("/assets/app.js"), StatusCode::OK),
        ("an API answer", get("/api/prefixes"), StatusCode::OK),
        (
            "an API error",
            get("/api/config?prefix=/config/nothing"),
            StatusCode::NOT_FOUND,
        ),
        (
            "a foreign host",
            get_from("/api/prefixes", "rebound.example"),
            StatusCode::FORBIDDEN,
        ),
        (
            "an unknown route",
            get("/api/nothing"),
            StatusCode::NOT_FOUND,
        ),
        (
            "a refused write",
            Request::post("/api/release")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let response = env.respond(request).await;
        assert_eq!(response.status(), status, "{what}");
        assert_security_headers(&response, what);
    }
    let closed = off_loopback().await;
    let response = closed.respond(get("/api/prefixes")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_security_headers(&response, "a read without a token");
}

async fn open_stream(env: &Env) -> axum::response::Response {
    env.respond(
        Request::get("/api/rollout/events?prefix=/config/checkout")
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn one_event_stream_more_than_the_limit_is_refused_and_a_closed_one_frees_its_slot() {
    let limits = StreamLimits {
        max: 2,
        ..StreamLimits::default()
    };
    let env = env_with_limits(|| Access::read_only(true), limits).await;
    let first = open_stream(&env).await;
    let second = open_stream(&env).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    let watches = env.coord.store().stats().open_watches();
    let refused = open_stream(&env).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(
        env.coord.store().stats().open_watches(),
        watches,
        "a refused stream opens no watch"
    );
    drop(first);
    assert_eq!(open_stream(&env).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_event_stream_with_no_event_for_the_idle_time_ends_and_frees_its_slot() {
    let limits = StreamLimits {
        max: 1,
        idle: Duration::from_millis(200),
    };
    let env = env_with_limits(|| Access::read_only(true), limits).await;
    let response = open_stream(&env).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut buffer = String::new();
    let (name, _) = next_event(&mut body, &mut buffer).await;
    assert_eq!(name, "rollout");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while body.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream went on past its idle time");
    assert_eq!(open_stream(&env).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_typed_value_is_refused_with_field_type_and_doc_and_nothing_is_written() {
    let env = env().await;
    let body = json!({
        "prefix": PREFIX,
        "values": { "timeout_secs": "abc", "api_key": "sk-new" },
        "message": "typo",
        "expect_latest": 1,
    });
    let (status, body) = env.post("/api/release", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "refused");
    let fields = body["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "only the wrong field: {body}");
    assert_eq!(fields[0]["key"], "timeout_secs");
    assert_eq!(fields[0]["type_name"], "u64");
    assert_eq!(
        fields[0]["doc"],
        "Seconds before a payment attempt is abandoned."
    );
    assert!(
        fields[0]["reason"]
            .as_str()
            .unwrap()
            .contains("expected u64"),
        "{body}"
    );
    // Refused whole: the right field was not written either.
    assert_eq!(env.timeout().await, 30);
    assert_eq!(
        env.coord
            .config()
            .get::<String>("/config/checkout/api_key")
            .await
            .unwrap(),
        "sk-live-123"
    );
    assert_eq!(env.releases().await, 1);
}

#[tokio::test]
async fn a_release_without_a_message_or_without_changes_is_refused() {
    let env = env().await;
    let mut body = release_body(json!(45), 1);
    body["message"] = json!("  ");
    let (status, _) = env.post("/api/release", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .post(
            "/api/release",
            json!({ "prefix": PREFIX, "values": {}, "message": "m", "expect_latest": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(env.releases().await, 1);
}

#[tokio::test]
async fn a_release_over_a_release_made_meanwhile_is_a_conflict_showing_the_diff() {
    let env = env().await;
    // Someone else releases after the page loaded release 1.
    env.coord
        .config()
        .release_raw(
            PREFIX,
            BTreeMap::from([("timeout_secs".to_owned(), json!(60))]),
        )
        .author("bob")
        .commit()
        .await
        .unwrap();
    let (status, body) = env.post("/api/release", release_body(json!(45), 1)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "conflict");
    assert_eq!(body["expected"], 1);
    assert_eq!(body["latest"], 2);
    assert_eq!(
        body["diff"],
        json!([{ "key": "timeout_secs", "change": "changed", "old": 30, "new": 60 }])
    );
    assert_eq!(env.timeout().await, 60, "the other release stands");
}

#[tokio::test]
async fn rollback_restores_an_earlier_release_and_records_who() {
    let env = env().await;
    env.post("/api/release", release_body(json!(45), 1)).await;
    let (status, body) = env
        .post(
            "/api/rollback",
            json!({ "prefix": PREFIX, "seq": 1, "message": "too slow", "expect_latest": 2 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "rollback to 1");
    assert_eq!(body["author"], "ana (console)");
    assert_eq!(env.timeout().await, 30);

    let (status, body) = env
        .post(
            "/api/rollback",
            json!({ "prefix": PREFIX, "seq": 99, "message": "m" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn gray_start_then_promote_and_gray_start_then_abort() {
    let env = env().await;
    let start = json!({
        "prefix": PREFIX,
        "values": { "timeout_secs": 45 },
        "selector": { "labels": { "zone": "eu-1" } },
        "message": "try in eu-1",
    });
    let (status, gray) = env.post("/api/gray/start", start.clone()).await;
    assert_eq!(status, StatusCode::OK, "{gray}");
    assert!(gray["kind"].as_str().unwrap().starts_with("gray"), "{gray}");
    assert_eq!(env.timeout().await, 30, "not for everyone yet");
    let (status, body) = env
        .post(
            "/api/gray/promote",
            json!({ "prefix": PREFIX, "seq": gray["seq"], "message": "eu-1 is fine" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(env.timeout().await, 45);

    let mut again = start;
    again["values"] = json!({ "timeout_secs": 50 });
    let (_, gray) = env.post("/api/gray/start", again).await;
    let (status, body) = env
        .post(
            "/api/gray/abort",
            json!({ "prefix": PREFIX, "seq": gray["seq"], "message": "errors in eu-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], format!("abort {}", gray["seq"]));
    assert_eq!(env.timeout().await, 45);

    let (status, _) = env
        .post(
            "/api/gray/start",
            json!({ "prefix": PREFIX, "values": { "timeout_secs": 1 }, "message": "m" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a gray release needs a selector"
    );
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Pool {
    size: u32,
    host: String,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/tenants")]
struct Tenants {
    /// Requests per second, per tenant.
    #[coord(map)]
    limits: coord::config::Map<u32>,
    /// Connection pools by name.
    #[coord(map, nested)]
    pools: coord::config::Map<Pool>,
}

#[tokio::test]
async fn map_entries_are_shown_with_their_types_and_released_added_changed_and_removed() {
    let env = env().await;
    let config = env.coord.config();
    config.publish_schema::<Tenants>().await.unwrap();
    let raw = |pairs: &[(&str, Value)]| -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    config
        .release_raw(
            "/config/tenants",
            raw(&[
                ("limits/eu", json!(100)),
                ("limits/us", json!(200)),
                ("pools/main/size", json!(8)),
                ("pools/main/host", json!("db-1")),
            ]),
        )
        .commit()
        .await
        .unwrap();
    let live = env.coord.live::<Tenants>().await.unwrap();

    let page = env.get_ok("/api/config?prefix=/config/tenants").await;
    let limits = &page["fields"][0];
    assert_eq!(limits["kind"], "map");
    assert_eq!(limits["entry_type"], "u32");
    assert_eq!(limits["value"], json!({ "eu": 100, "us": 200 }));
    let pools = &page["fields"][1];
    assert_eq!(pools["kind"], "nested_map");
    let entry_fields: Vec<(&str, &str)> = pools["entry_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap(), f["type_name"].as_str().unwrap()))
        .collect();
    assert_eq!(entry_fields, [("size", "u32"), ("host", "String")]);
    assert_eq!(
        pools["value"],
        json!({ "main/size": 8, "main/host": "db-1" })
    );

    // A wrong-typed entry is refused under its own key, nothing written.
    let (status, body) = env
        .post(
            "/api/release",
            json!({ "prefix": "/config/tenants", "values": { "limits/ap": "lots" }, "message": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["key"], "limits/ap");
    assert_eq!(body["fields"][0]["type_name"], "u32");

    // One release changes an entry, adds one (and a whole nested entry) and removes one.
    let (status, body) = env
        .post(
            "/api/release",
            json!({
                "prefix": "/config/tenants",
                "values": { "limits/eu": 150, "limits/ap": 50, "pools/spare/size": 2, "pools/spare/host": "db-2" },
                "remove": ["limits/us"],
                "message": "rebalance",
                "expect_latest": page["latest_seq"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let want_limits: BTreeMap<String, u32> =
        BTreeMap::from([("ap".to_owned(), 50), ("eu".to_owned(), 150)]);
    for _ in 0..100 {
        if live.load().pools.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = live.load();
    let limits: BTreeMap<String, u32> =
        now.limits.iter().map(|(k, v)| (k.to_owned(), *v)).collect();
    assert_eq!(limits, want_limits);
    assert_eq!(
        now.pools.get("spare").cloned(),
        Some(Pool {
            size: 2,
            host: "db-2".into()
        })
    );
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Account {
    user: String,
    #[coord(secret)]
    password: coord::Secret<String>,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/vault")]
struct Vault {
    /// API tokens by partner.
    #[coord(map)]
    tokens: coord::config::Map<coord::Secret<String>>,
    /// Database accounts by name.
    #[coord(map, nested)]
    accounts: coord::config::Map<Account>,
}

/// Every stored secret of the vault tests carries this, so one search finds any that leaks.
const MARK: &str = "s3cr3t";

fn raw(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The vault's schema published and released twice (every secret changed), then a gray
/// release of one token.
async fn vault(env: &Env) {
    let config = env.coord.config();
    config.publish_schema::<Vault>().await.unwrap();
    for round in ["one", "two"] {
        config
            .release_raw(
                "/config/vault",
                raw(&[
                    ("tokens/acme", json!(format!("tok-{round}-{MARK}"))),
                    ("accounts/main/user", json!("ana")),
                    (
                        "accounts/main/password",
                        json!(format!("pw-{round}-{MARK}")),
                    ),
                ]),
            )
            .commit()
            .await
            .unwrap();
    }
    config
        .release_raw(
            "/config/vault",
            raw(&[("tokens/acme", json!(format!("tok-gray-{MARK}")))]),
        )
        .to(coord::config::Selector::default().instance("api-1"))
        .commit()
        .await
        .unwrap();
}

#[tokio::test]
async fn map_entries_of_secrets_and_secret_fields_of_nested_entries_never_leave_the_console() {
    let env = env().await;
    vault(&env).await;

    let page = env.get_ok("/api/config?prefix=/config/vault").await;
    assert!(!page.to_string().contains(MARK), "{page}");
    let tokens = &page["fields"][0];
    assert_eq!(tokens["value"], json!({ "acme": "<redacted>" }));
    assert_eq!(
        tokens["secret"], true,
        "the page edits the entries as secrets"
    );
    let accounts = &page["fields"][1];
    assert_eq!(
        accounts["value"],
        json!({ "main/user": "ana", "main/password": "<redacted>" })
    );
    let entry_secrets: Vec<(&str, bool)> = accounts["entry_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap(), f["secret"].as_bool().unwrap()))
        .collect();
    assert_eq!(entry_secrets, [("user", false), ("password", true)]);

    let history = env.get_ok("/api/history?prefix=/config/vault").await;
    assert!(!history.to_string().contains(MARK), "{history}");
    // The changed secrets are listed, their values not.
    let changed: Vec<&str> = history[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        ["accounts/main/password", "tokens/acme"],
        "{history}"
    );
    assert_eq!(history[0]["changes"][0]["new"], "<redacted>", "{history}");

    // A write's answer and a conflict's diff show no secret either.
    let (status, body) = env
        .post(
            "/api/release",
            json!({
                "prefix": "/config/vault",
                "values": { "tokens/beta": format!("tok-new-{MARK}") },
                "message": "beta partner",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains(MARK), "{body}");
    let (status, body) = env
        .post(
            "/api/release",
            json!({
                "prefix": "/config/vault",
                "values": { "accounts/main/user": "bob" },
                "message": "stale page",
                "expect_latest": 1,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(!body["diff"].as_array().unwrap().is_empty(), "{body}");
    assert!(!body.to_string().contains(MARK), "{body}");
}

async fn revision(env: &Env) -> i64 {
    env.coord.store().status().await.unwrap().revision
}

/// GETs every route the page reads (`/config/checkout`'s among them), and the event stream
/// until its first event.
async fn read_every_route(env: &Env) {
    for uri in [
        "/",
        "/assets/app.js",
        "/api/prefixes",
        "/api/config?prefix=/config/checkout",
        "/api/history?prefix=/config/checkout",
        "/api/rollout?prefix=/config/checkout",
        "/api/locks",
        "/api/ids",
        "/api/ids?service=worker",
        "/api/services",
        "/api/services?name=api",
        "/api/proposals?prefix=/config/checkout",
        "/api/audit",
        "/api/audit?prefix=/config/checkout&since=1h",
    ] {
        env.get_ok(uri).await;
    }
    let response = open_stream(env).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let (name, _) = next_event(&mut body, &mut String::new()).await;
    assert_eq!(name, "rollout");
}

/// A lock held, an ID taken and a service registered, so every list has something to read.
async fn coordination_state(
    env: &Env,
) -> (
    coord::LockGuard,
    coord::IdGuard,
    coord::registry::Registration,
) {
    let lock = env
        .coord
        .locks()
        .acquire("/locks/jobs", Duration::from_secs(10))
        .await
        .unwrap();
    let id = env
        .coord
        .ids("worker", 8)
        .await
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let registration = env
        .coord
        .registry()
        .register(
            ServiceInfo::new("api", "api-1", "10.0.0.1:80"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    (lock, id, registration)
}

#[tokio::test]
async fn reading_every_route_leaves_the_store_revision_unchanged() {
    let env = env().await;
    let _held = coordination_state(&env).await;
    let before = revision(&env).await;
    read_every_route(&env).await;
    assert_eq!(revision(&env).await, before, "a read wrote to the store");
}

/// Fails until the library's history stops recording drift when it reads (it computes it at
/// read time instead): the config and history routes read history.
#[tokio::test]
async fn reading_every_route_after_a_change_outside_releases_leaves_the_store_revision_unchanged() {
    let env = env().await;
    let _held = coordination_state(&env).await;
    // A plain write, not a release: history finds the prefix drifted from its latest record.
    env.coord
        .config()
        .set("/config/checkout/timeout_secs", &45)
        .await
        .unwrap();
    let before = revision(&env).await;
    read_every_route(&env).await;
    assert_eq!(revision(&env).await, before, "a read wrote to the store");
}

const BO_TOKEN: &str = "bo-token-0123456789ab";
const CY_TOKEN: &str = "cy-token-0123456789ab";

/// ana may propose on the prefix, cy too, bo may release and approve there; the prefix
/// requires review. The console's own principal (the embedded store's `anonymous`) is a
/// delegate that holds no grant of its own.
const REVIEW_POLICY: &str = r#"
[principals.ana]
roles = ["editor"]
[principals.cy]
roles = ["editor"]
[principals.bo]
roles = ["owner"]
[principals.anonymous]
delegate = true

[roles.editor]
grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
[roles.owner]
grants = [{ prefix = "/config/checkout", actions = ["release", "approve"] }]

[review."/config/checkout"]
"#;

/// A console whose tokens act as ana, bo and cy (cy's holder is named `oncall`), under
/// [`REVIEW_POLICY`], with one open proposal of ana's (timeout_secs 45); returns its id.
async fn review_env() -> (Env, String) {
    let env = env_with(|| {
        Access::with_tokens(
            vec![
                TokenLine::new("ana", "ana", TOKEN),
                TokenLine::new("bo", "bo", BO_TOKEN),
                TokenLine::new("oncall", "cy", CY_TOKEN),
            ],
            true,
        )
    })
    .await;
    apply_policy(&env, REVIEW_POLICY).await;
    let proposal = env
        .coord
        .config()
        .as_principal("ana")
        .unwrap()
        .release_raw(PREFIX, raw(&[("timeout_secs", json!(45))]))
        .message("slower provider")
        .propose()
        .await
        .unwrap();
    (env, proposal.id)
}

/// Makes `policy` (TOML) the store's access policy.
async fn apply_policy(env: &Env, policy: &str) {
    let access = env.coord.access();
    let policy = coord::access::Policy::parse_toml(policy).unwrap();
    let plan = access.plan(&policy, &BTreeMap::new()).await.unwrap();
    access.apply(&plan).await.unwrap();
}

impl Env {
    async fn post_as(&self, uri: &str, body: Value, token: &str) -> (StatusCode, Value) {
        self.post_with(uri, body, Some(&self.csrf.clone()), Some(token), None)
            .await
    }

    /// Approves proposal `id` of `PREFIX` as `token`'s principal, as the page does: with the
    /// proposal's revision the page showed, if `seen`.
    async fn approve_as(&self, id: &str, seen: Option<i64>, token: &str) -> (StatusCode, Value) {
        let mut body = json!({ "prefix": PREFIX, "id": id });
        if let Some(revision) = seen {
            body["revision"] = json!(revision);
        }
        self.post_as("/api/proposals/approve", body, token).await
    }

    /// Rejects proposal `id` of `PREFIX` with `reason` as `token`'s principal.
    async fn reject_as(&self, id: &str, reason: &str, token: &str) -> (StatusCode, Value) {
        let body = json!({ "prefix": PREFIX, "id": id, "reason": reason });
        self.post_as("/api/proposals/reject", body, token).await
    }
}

/// One audit record as `(principal, via, action, outcome)`, `-` for a field it lacks.
type AuditRow = (String, String, String, String);

/// The records `GET /api/audit` answered, as rows.
fn audit_rows(records: &Value) -> Vec<AuditRow> {
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or("-").to_owned();
            (
                field("principal"),
                field("via"),
                field("action"),
                field("outcome"),
            )
        })
        .collect()
}

fn audit_row(principal: &str, via: &str, action: &str, outcome: &str) -> AuditRow {
    (
        principal.to_owned(),
        via.to_owned(),
        action.to_owned(),
        outcome.to_owned(),
    )
}

#[tokio::test]
async fn the_review_route_lists_proposals_with_their_diff_and_who_may_approve() {
    let (env, id) = review_env().await;
    let uri = "/api/proposals?prefix=/config/checkout";
    let (status, as_bo) = env.call(get_with_token(uri, BO_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{as_bo}");
    assert_eq!(as_bo["principal"], "bo", "{as_bo}");
    assert_eq!(as_bo["can_approve"], true, "{as_bo}");
    let proposal = &as_bo["proposals"][0];
    assert_eq!(proposal["id"], id.as_str(), "{as_bo}");
    assert_eq!(proposal["state"], "open", "{as_bo}");
    assert_eq!(proposal["proposer"], "ana", "{as_bo}");
    assert_eq!(proposal["message"], "slower provider", "{as_bo}");
    assert_eq!(
        proposal["changes"],
        json!([{ "key": "timeout_secs", "change": "changed", "old": 30, "new": 45 }]),
        "{as_bo}"
    );

    let (_, as_cy) = env.call(get_with_token(uri, CY_TOKEN)).await;
    assert_eq!(as_cy["principal"], "cy", "{as_cy}");
    assert_eq!(as_cy["can_approve"], false, "{as_cy}");
    assert!(
        as_cy["reason"].as_str().unwrap().contains("editor"),
        "the policy's reason: {as_cy}"
    );
    // Without a write token, nobody to approve as.
    let anyone = env.get_ok(uri).await;
    assert_eq!(anyone["can_approve"], false, "{anyone}");
    assert_eq!(anyone["proposals"][0]["id"], id.as_str(), "{anyone}");
    let (status, _) = env
        .call(get_with_token(uri, "wrong-token-0123456789"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn approving_needs_the_approve_grant_of_the_tokens_principal_and_is_recorded_as_theirs() {
    let (env, id) = review_env().await;

    let (status, refused) = env.approve_as(&id, None, CY_TOKEN).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["code"], "permission_denied", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("cy"),
        "{refused}"
    );
    let (status, own) = env.approve_as(&id, None, TOKEN).await;
    assert_eq!(status, StatusCode::CONFLICT, "{own}");
    assert_eq!(own["code"], "proposal", "{own}");
    assert_eq!(env.timeout().await, 30, "nothing released");

    // A page that showed an older revision of the proposal approves nothing.
    let (_, listed) = env
        .call(get_with_token(
            "/api/proposals?prefix=/config/checkout",
            BO_TOKEN,
        ))
        .await;
    let shown = listed["proposals"][0]["revision"].as_i64().unwrap();
    let (status, stale) = env.approve_as(&id, Some(shown - 1), BO_TOKEN).await;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");
    assert!(
        stale["error"].as_str().unwrap().contains("rewritten"),
        "{stale}"
    );
    assert_eq!(env.timeout().await, 30, "nothing released");

    let (status, release) = env.approve_as(&id, Some(shown), BO_TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{release}");
    assert_eq!(release["principal"], "ana", "{release}");
    assert_eq!(release["approved_by"], "bo", "{release}");
    assert_eq!(env.timeout().await, 45);
    let (status, again) = env.approve_as(&id, None, BO_TOKEN).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    let rows = audit_rows(&env.get_ok("/api/audit?prefix=/config/checkout").await);
    for expected in [
        audit_row("ana", "-", "propose", "done"),
        audit_row("cy", "anonymous", "approve", "refused"),
        audit_row("ana", "anonymous", "approve", "refused"),
        audit_row("bo", "anonymous", "approve", "done"),
    ] {
        assert!(rows.contains(&expected), "{expected:?} in {rows:?}");
    }
    let (status, bad) = env.get("/api/audit?since=lately").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let recent = env.get_ok("/api/audit?principal=bo&limit=1").await;
    assert_eq!(recent.as_array().map(Vec::len), Some(1), "{recent}");
    assert_eq!(recent[0]["action"], "approve", "{recent}");
}

#[tokio::test]
async fn a_proposal_is_rejected_with_a_reason_by_who_may_approve_or_withdrawn_by_its_proposer() {
    let (env, id) = review_env().await;
    let (status, empty) = env.reject_as(&id, " ", BO_TOKEN).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{empty}");
    let (status, refused) = env.reject_as(&id, "no", CY_TOKEN).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, rejected) = env.reject_as(&id, "too slow", BO_TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(rejected["state"], "rejected", "{rejected}");
    assert_eq!(rejected["decided_by"], "bo", "{rejected}");
    assert_eq!(rejected["reason"], "too slow", "{rejected}");

    let withdrawn = env
        .coord
        .config()
        .as_principal("ana")
        .unwrap()
        .release_raw(PREFIX, raw(&[("timeout_secs", json!(50))]))
        .propose()
        .await
        .unwrap();
    let (status, answer) = env.reject_as(&withdrawn.id, "not needed", TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(env.timeout().await, 30);
}

#[tokio::test]
async fn every_console_write_is_checked_as_the_tokens_principal() {
    let (env, _) = review_env().await;
    let before = env.releases().await;
    // ana may only propose: a release is the policy's refusal, with its reason.
    let (status, refused) = env
        .post_as("/api/release", release_body(json!(40), 1), TOKEN)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["code"], "permission_denied", "{refused}");
    // bo may release, but the prefix requires review.
    let (status, review) = env
        .post_as("/api/release", release_body(json!(40), 1), BO_TOKEN)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{review}");
    assert_eq!(review["code"], "review_required", "{review}");
    assert!(
        review["error"]
            .as_str()
            .unwrap()
            .contains("requires review"),
        "{review}"
    );
    let (status, rollback) = env
        .post_as(
            "/api/rollback",
            json!({ "prefix": PREFIX, "seq": 1, "message": "back" }),
            TOKEN,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{rollback}");
    assert_eq!(env.releases().await, before, "nothing released");
    assert_eq!(env.timeout().await, 30);
}

#[tokio::test]
async fn without_a_policy_a_write_is_recorded_as_the_tokens_principal_via_the_console() {
    let env =
        env_with(|| Access::with_tokens(vec![TokenLine::new("oncall", "ops", TOKEN)], true)).await;
    let (status, release) = env.post("/api/release", release_body(json!(40), 1)).await;
    assert_eq!(status, StatusCode::OK, "{release}");
    assert_eq!(release["author"], "oncall (console)", "{release}");
    assert_eq!(release["principal"], "ops", "{release}");
    let records = env.get_ok("/api/audit?principal=ops").await;
    assert_eq!(records[0]["action"], "release", "{records}");
    assert_eq!(records[0]["via"], "anonymous", "{records}");
    assert_eq!(records[0]["outcome"], "done", "{records}");
}

#[tokio::test]
async fn a_console_started_as_a_claimed_principal_writes_via_that_principal() {
    let env = env_acting_as(
        || Access::with_tokens(vec![("ana".into(), TOKEN.into())], true),
        StreamLimits::default(),
        Some("console"),
    )
    .await;
    let (status, release) = env.post("/api/release", release_body(json!(40), 1)).await;
    assert_eq!(status, StatusCode::OK, "{release}");
    assert_eq!(release["principal"], "ana", "{release}");
    let records = env.get_ok("/api/audit?principal=ana").await;
    assert_eq!(records[0]["via"], "console", "{records}");
}

// ---- rollout plans ----------------------------------------------------------------------

/// A plan for `PREFIX`: a longer timeout and a new API key (a secret), to 50% for an hour,
/// then everyone.
fn checkout_plan() -> coord::rollout::RolloutPlan {
    coord::rollout::RolloutPlan::new(
        PREFIX,
        raw(&[
            ("timeout_secs", json!(45)),
            ("api_key", json!("sk-new-456")),
        ]),
    )
    .message("slower provider")
    .step(
        coord::config::Selector::default().percent(50),
        Duration::from_secs(3600),
    )
    .step(coord::config::Selector::default(), Duration::ZERO)
}

/// `GET /api/plan` until the plan is in `state`.
async fn plan_until(env: &Env, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let plan = env.get_ok("/api/plan?prefix=/config/checkout").await;
        if plan["state"] == state {
            return plan;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plan is not {state}: {plan}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_plan_view_is_404_without_a_plan_then_shows_steps_instances_and_log_redacted() {
    let env = env().await;
    let uri = "/api/plan?prefix=/config/checkout";
    let (status, none) = env.get(uri).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{none}");
    let (status, none) = env
        .post("/api/plan/pause", json!({ "prefix": PREFIX }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{none}");

    env.coord.rollouts().start(checkout_plan()).await.unwrap();
    let plan = env.get_ok(uri).await;
    assert_eq!(plan["state"], "pending", "{plan}");
    assert_eq!(plan["plan"]["message"], "slower provider", "{plan}");
    assert_eq!(plan["plan"]["values"]["timeout_secs"], 45, "{plan}");
    assert_eq!(plan["plan"]["values"]["api_key"], "<redacted>", "{plan}");
    assert!(!plan.to_string().contains("sk-new-456"), "{plan}");
    assert_eq!(plan["steps"][0]["describe"], "50%", "{plan}");
    assert_eq!(plan["steps"][0]["bake"], "1h", "{plan}");
    assert_eq!(plan["steps"][0]["state"], "pending", "{plan}");
    assert_eq!(plan["steps"][1]["describe"], "everyone", "{plan}");
    assert_eq!(plan["plan"]["gates"]["healthy"], true, "{plan}");
    assert!(
        plan["log"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("started by"),
        "{plan}"
    );
    assert_eq!(plan["can_steer"], false, "no write token: {plan}");
    let (_, as_ana) = env.call(get_with_token(uri, TOKEN)).await;
    assert_eq!(as_ana["principal"], "ana", "{as_ana}");
    assert_eq!(as_ana["can_steer"], true, "no policy: {as_ana}");

    // Running, with one instance: each step says whom it selects and who runs it.
    let web = Coord::from_store_as(env.coord.store(), Instance::new("web-1")).unwrap();
    let _live = web.live::<Checkout>().await.unwrap();
    let driver = tokio::spawn(env.coord.rollouts().driver(PREFIX).run());
    let plan = plan_until(&env, "running").await;
    assert_eq!(plan["steps"][0]["state"], "current", "{plan}");
    let everyone = &plan["steps"][1];
    assert_eq!(everyone["selected"], 1, "{plan}");
    assert_eq!(everyone["instances"][0]["instance"], "web-1", "{plan}");
    assert!(plan["now"].as_str().unwrap().contains("step 1/2"), "{plan}");

    let (status, cancelled) = env
        .post("/api/plan/cancel", json!({ "prefix": PREFIX }))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let ended = tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        ended.state,
        coord::rollout::PlanState::Cancelled { .. }
    ));
    assert_eq!(env.timeout().await, 30, "back on the base values");
    let (status, again) = env
        .post("/api/plan/cancel", json!({ "prefix": PREFIX }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "ended", "{again}");
}

/// ana may only propose on the prefix, bo may release there; the console's own principal
/// (the embedded store's `anonymous`) is a delegate with no grant of its own.
const PLAN_POLICY: &str = r#"
[principals.ana]
roles = ["editor"]
[principals.bo]
roles = ["owner"]
[principals.anonymous]
delegate = true

[roles.editor]
grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
[roles.owner]
grants = [{ prefix = "/config/checkout", actions = ["release"] }]
"#;

#[tokio::test]
async fn pausing_resuming_and_cancelling_a_plan_takes_release_on_the_prefix() {
    let env = env_with(|| {
        Access::with_tokens(
            vec![
                TokenLine::new("ana", "ana", TOKEN),
                TokenLine::new("bo", "bo", BO_TOKEN),
            ],
            true,
        )
    })
    .await;
    env.coord.rollouts().start(checkout_plan()).await.unwrap();
    apply_policy(&env, PLAN_POLICY).await;
    let body = json!({ "prefix": PREFIX });

    let uri = "/api/plan?prefix=/config/checkout";
    let (_, as_ana) = env.call(get_with_token(uri, TOKEN)).await;
    assert_eq!(as_ana["can_steer"], false, "{as_ana}");
    assert!(
        as_ana["reason"].as_str().unwrap().contains("editor"),
        "the policy's reason: {as_ana}"
    );
    let (_, as_bo) = env.call(get_with_token(uri, BO_TOKEN)).await;
    assert_eq!(as_bo["can_steer"], true, "{as_bo}");

    for route in ["/api/plan/pause", "/api/plan/cancel"] {
        let (status, refused) = env.post_as(route, body.clone(), TOKEN).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}: {refused}");
        assert_eq!(refused["code"], "permission_denied", "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("ana"),
            "{refused}"
        );
    }
    let (status, paused) = env.post_as("/api/plan/pause", body.clone(), BO_TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true, "{paused}");
    let (status, refused) = env.post_as("/api/plan/resume", body.clone(), TOKEN).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(env.get_ok(uri).await["paused"], true, "still paused");
    let (status, resumed) = env
        .post_as("/api/plan/resume", body.clone(), BO_TOKEN)
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["paused"], false, "{resumed}");
    let (status, cancelled) = env
        .post_as("/api/plan/cancel", body.clone(), BO_TOKEN)
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let (status, ended) = env.post_as("/api/plan/pause", body, BO_TOKEN).await;
    assert_eq!(status, StatusCode::CONFLICT, "{ended}");

    // Steered as the token's principal, via the console: in the plan's log and the audit log.
    let log: Vec<String> = cancelled["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect();
    for said in ["paused by bo", "resumed by bo", "cancelled by bo"] {
        assert!(log.iter().any(|l| l.starts_with(said)), "{said}: {log:?}");
    }
    let rows = audit_rows(&env.get_ok("/api/audit?prefix=/config/checkout").await);
    let row = |p: &str, a: &str, o: &str| audit_row(p, "anonymous", a, o);
    for expected in [
        row("ana", "plan_pause", "refused"),
        row("bo", "plan_pause", "done"),
        row("bo", "plan_resume", "done"),
        row("bo", "plan_cancel", "done"),
    ] {
        assert!(rows.contains(&expected), "{expected:?} in {rows:?}");
    }
}
