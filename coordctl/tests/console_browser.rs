//! `coordctl console` in a real browser: headless Chromium driven through chromedriver, the
//! real binary against a real etcd, and a `Live` in this process that must see what the page
//! does. Needs `chromium` and `chromedriver` (`bash scripts/deps.sh test` installs them).
//!
//! The run writes a screenshot of the prefix page to `console.png` in cargo's temporary
//! directory for integration tests (`target/tmp/`, under `CARGO_TARGET_DIR` if set), so a run
//! leaves the tracked files alone. To refresh the one the README shows, run it with
//! `COORD_UPDATE_SCREENSHOT=1`: it then writes `docs/console.png` too.
//!
//! ```sh
//! COORD_UPDATE_SCREENSHOT=1 cargo test -p coordctl --test console_browser
//! ```

mod common;

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{etcd, eventually, path_text, private_file, Ctl};
use coord::{ClientConfig, Coord, CoordConfig, Instance, Live};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "ana:console-test-token-0123456789";
const WRITE_TOKEN: &str = "console-test-token-0123456789";
const READ_TOKEN_LINE: &str = "viewer:console-read-token-0123456789";
const READ_TOKEN: &str = "console-read-token-0123456789";
/// How long a `Live` here has to see what the page did.
const WAIT: Duration = Duration::from_secs(10);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    /// Seconds before a payment attempt is abandoned.
    #[coord(default = 30)]
    timeout_secs: u64,
    /// Retries of a declined payment.
    #[coord(default = 2)]
    retries: u32,
    /// The payment provider's key.
    #[coord(secret, default)]
    api_key: coord::Secret<String>,
    /// Requests per second, per tenant.
    #[coord(map)]
    limits: coord::config::Map<u32>,
}

/// A program on PATH, or a panic that says how to install it.
fn program(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run `bash scripts/deps.sh test` \
                 (or apt-get install -y --no-install-recommends {package})"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// chromedriver on a free port, killed when dropped.
async fn start_chromedriver() -> (Child, u16) {
    let driver = program("chromedriver", "chromium-driver");
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not listen on {port} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

/// A token file holding `line`, readable by its owner only (the console refuses others).
fn token_file(dir: &tempfile::TempDir, name: &str, line: &str) -> PathBuf {
    private_file(dir.path(), name, &format!("{line}\n"))
}

/// `coordctl console` on a free port with a write token file and a read token file (so
/// every read needs a token); returns it and its URL.
async fn start_console(
    endpoint: &str,
    token_file: &Path,
    read_token_file: &Path,
) -> (Child, String) {
    let mut child = Ctl::on(endpoint)
        .command(&[
            "console",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            path_text(token_file),
            "--read-token-file",
            path_text(read_token_file),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start coordctl console");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(15),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the console says where it listens within 15 s")
    .expect("read the console's stdout");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (child, url)
}

/// The text of the first element `css` finds once it says what `want` accepts.
async fn text_until(client: &Client, css: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if want(&last) {
                return last;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} did not show what was expected within 10 s; it shows {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The element `css` finds, waiting up to 10 s for the page to draw it.
async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Types `text` into the input `css` finds (after what it holds).
async fn type_into(client: &Client, css: &str, text: &str) {
    wait_for(client, css)
        .await
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn set_field(client: &Client, key: &str, text: &str) {
    let input = wait_for(client, &format!("#fields input[data-key='{key}']")).await;
    input.clear().await.expect("clear the input");
    input.send_keys(text).await.expect("type into the input");
}

/// The text of a cell of release `seq`'s row in the history, once it shows.
async fn history_cell(client: &Client, seq: u64, cell: &str) -> String {
    let css = format!("#history tr.release[data-seq='{seq}'] {cell}");
    text_until(client, &css, |t| !t.is_empty()).await
}

/// The prefix's own value of `retries` (what an instance no gray release picks sees).
async fn retries(coord: &Coord) -> u32 {
    coord
        .config()
        .get::<u32>("/config/checkout/retries")
        .await
        .unwrap()
}

/// Types why and presses Release.
async fn release_with(client: &Client, message: &str) {
    type_into(client, "#message", message).await;
    click(client, "#release").await;
}

async fn click(client: &Client, css: &str) {
    wait_for(client, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_edits_releases_and_rolls_back_in_the_browser_and_a_wrong_type_is_refused() {
    let chromium = program("chromium", "chromium");
    let server = etcd().await;
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect to the test etcd");
    coord.config().publish_schema::<Checkout>().await.unwrap();
    coord
        .config()
        .release(&Checkout {
            timeout_secs: 30,
            retries: 2,
            api_key: coord::Secret::new("sk-live-123".to_owned()),
            limits: [("eu", 100), ("us", 200)].into_iter().collect(),
        })
        .author("setup")
        .message("launch")
        .commit()
        .await
        .unwrap();
    let live = coord.live::<Checkout>().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let writers = token_file(&dir, "tokens", TOKEN);
    let readers = token_file(&dir, "readers", READ_TOKEN_LINE);
    let (_console, url) = start_console(&server.endpoint(), &writers, &readers).await;
    let (mut chromedriver, port) = start_chromedriver().await;

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1200"],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session through chromedriver");

    let scenario = AssertUnwindSafe(scenario(
        &client,
        &coord,
        &live,
        &url,
        server.client_config(),
    ))
    .catch_unwind();
    let outcome = scenario.await;
    // The browser and its driver go whatever happened, so no Chromium outlives the test.
    let _ = client.close().await;
    let _ = chromedriver.kill().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The store's revision once this process's instance has reported its status (its one
/// write), so that nothing else here moves it.
async fn settled_revision(coord: &Coord) -> i64 {
    let instance = coord.instance().name.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rollout = coord.config().rollout("/config/checkout").await.unwrap();
        if rollout.iter().any(|s| s.instance == instance) {
            return coord.store().status().await.unwrap().revision;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no status of {instance} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a page of the console by its hash route and waits for `css` to show `want`.
async fn browse(client: &Client, url: &str, route: &str, css: &str, want: &str) {
    client
        .goto(&format!("{url}#{route}"))
        .await
        .unwrap_or_else(|e| panic!("open {route}: {e}"));
    text_until(client, css, |t| t.contains(want)).await;
}

/// Marks the loaded page before a change it must show by itself (a reload, or the page drawn
/// again, loses the marks) and records every request the page makes with `fetch` from then
/// on (the event stream, already open, is not one).
const MARK_PAGE: &str = "window.coordTestMark = 'same page'; \
     document.querySelector('#rollout').dataset.testMark = 'same table'; \
     window.coordTestFetches = []; \
     const fetchBefore = window.fetch; \
     window.fetch = (...args) => { \
       window.coordTestFetches.push(String(args[0])); \
       return fetchBefore(...args); \
     };";

/// What [`MARK_PAGE`] left: the two marks and every request the page has made since.
const READ_MARKS: &str = "return [window.coordTestMark || null, \
     document.querySelector('#rollout')?.dataset.testMark || null, \
     window.coordTestFetches || null];";

/// Checks the page is the one [`MARK_PAGE`] marked, its rollout table not drawn again, and
/// that it asked the server for nothing since: what changed on it came over the event stream
/// it already had open.
async fn assert_same_page_and_no_request(client: &Client, what: &str) {
    let marks = client
        .execute(READ_MARKS, vec![])
        .await
        .expect("read the marks");
    assert_eq!(
        marks,
        json!(["same page", "same table", []]),
        "{what}: the page was reloaded, drawn again, or asked the server (marks, requests)"
    );
}

async fn scenario(
    client: &Client,
    coord: &Coord,
    live: &Live<Checkout>,
    url: &str,
    instance_config: ClientConfig,
) {
    // Every read needs a token: the page loads and asks for one.
    browse(client, url, "/", "#main .notice.bad", "needs a token").await;
    let before = settled_revision(coord).await;
    // A read token, entered once (Enter commits it), shows every page; the live rollout
    // comes through the event stream's cookie. Reading writes nothing to the store.
    type_into(client, "#token", &format!("{READ_TOKEN}\u{E007}")).await;
    text_until(client, "#main table", |t| t.contains("/config/checkout")).await;
    browse(client, url, "/locks", "#main h1", "Locks").await;
    browse(client, url, "/ids", "#main h1", "Instance IDs").await;
    browse(client, url, "/services", "#main h1", "Services").await;
    browse(
        client,
        url,
        "/prefix/config/checkout",
        "#history tbody",
        "launch",
    )
    .await;
    let instance = coord.instance().name.clone();
    text_until(client, "#rollout tbody", |t| t.contains(&instance)).await;
    let page = client.source().await.unwrap();
    assert!(!page.contains("sk-live-123"), "a secret reached the page");
    assert_eq!(
        coord.store().status().await.unwrap().revision,
        before,
        "browsing every page wrote to the store"
    );

    // The write token reads too; it replaces the read token for the edits that follow.
    wait_for(client, "#fields input[data-key='timeout_secs']").await;
    wait_for(client, "#token")
        .await
        .clear()
        .await
        .expect("clear the token");
    type_into(client, "#token", WRITE_TOKEN).await;

    // Change a value through the form and release it with a message.
    set_field(client, "timeout_secs", "45").await;
    release_with(client, "slower provider").await;
    eventually(WAIT, "the Live in the test sees 45", || {
        live.load().timeout_secs == 45
    })
    .await;
    let author = history_cell(client, 2, "td.author").await;
    assert_eq!(author, "ana (console)");
    let changes = history_cell(client, 2, "td.changes").await;
    assert!(
        changes.contains("timeout_secs") && changes.contains("45"),
        "{changes}"
    );
    let message = history_cell(client, 2, "td.message").await;
    assert_eq!(message, "slower provider");
    let page = client.source().await.unwrap();
    assert!(!page.contains("sk-live-123"), "a secret reached the page");

    // Roll back to the first release from the page, through the confirmation.
    click(client, "#history tr.release[data-seq='1'] button.rollback").await;
    click(client, "#confirm-yes").await;
    eventually(WAIT, "the Live in the test is back on 30", || {
        live.load().timeout_secs == 30
    })
    .await;
    let kind = history_cell(client, 3, "td:nth-child(2)").await;
    assert_eq!(kind, "rollback to 1");

    // A map's entries: change one, remove one, add one, in one release.
    set_field(client, "limits/eu", "150").await;
    click(client, "#fields input[data-remove='limits/us']").await;
    type_into(
        client,
        "#fields tr.new-entry[data-map='limits'] input.entry-name",
        "ap",
    )
    .await;
    type_into(
        client,
        "#fields tr.new-entry[data-map='limits'] input[data-sub='']",
        "50",
    )
    .await;
    release_with(client, "rebalance tenants").await;
    eventually(WAIT, "the Live in the test sees the new limits", || {
        let limits: Vec<(String, u32)> = live
            .load()
            .limits
            .iter()
            .map(|(name, limit)| (name.to_owned(), *limit))
            .collect();
        limits == [("ap".to_owned(), 50), ("eu".to_owned(), 150)]
    })
    .await;
    // The page is drawn again from the new values: the removed entry is gone, the new one is there.
    wait_for(client, "#fields input[data-key='limits/ap']").await;
    assert!(
        client
            .find(Locator::Css("#fields input[data-key='limits/us']"))
            .await
            .is_err(),
        "the removed entry is gone from the page"
    );

    // Someone else releases while the page is open: the page's release is a conflict that
    // shows what changed, nothing of it is written, and "reload" shows the current values.
    coord
        .config()
        .release_raw(
            "/config/checkout",
            std::collections::BTreeMap::from([("retries".to_owned(), json!(5))]),
        )
        .author("bob")
        .message("more retries")
        .commit()
        .await
        .unwrap();
    set_field(client, "timeout_secs", "60").await;
    release_with(client, "even slower").await;
    let conflict = text_until(client, "#conflict", |t| !t.is_empty()).await;
    assert!(
        conflict.contains("release 5 since release 4") && conflict.contains("retries"),
        "{conflict}"
    );
    assert_eq!(
        live.load().timeout_secs,
        30,
        "nothing of the page's release"
    );
    click(client, "#reload").await;
    // The page shows the current values after the reload.
    wait_for(
        client,
        "#fields input[data-key='retries'][data-original='5']",
    )
    .await;

    // A gray release to this process's instance only, through the confirmation: the Live
    // here sees it while the prefix keeps its value; promoting it from history makes it the
    // prefix's value.
    set_field(client, "retries", "7").await;
    type_into(client, "#gray-selector", &coord.instance().name).await;
    type_into(client, "#message", "try 7 retries here first").await;
    click(client, "#gray-start").await;
    click(client, "#confirm-yes").await;
    eventually(WAIT, "the picked Live sees the gray value", || {
        live.load().retries == 7
    })
    .await;
    assert_eq!(retries(coord).await, 5, "the prefix keeps its value");
    let kind = history_cell(client, 6, "td:nth-child(2)").await;
    assert!(kind.starts_with("gray"), "{kind}");
    click(client, "#history tr.release[data-seq='6'] button.promote").await;
    click(client, "#confirm-yes").await;
    let kind = history_cell(client, 7, "td:nth-child(2)").await;
    assert_eq!(kind, "promote 6");
    assert_eq!(retries(coord).await, 7, "promoted to the prefix");
    assert_eq!(live.load().retries, 7);
    // The page says so once it has drawn the current values again.
    text_until(client, "#write-status", |t| t.contains("Promoted 6")).await;

    // A wrong-typed value is refused beside its input, and nothing is written.
    set_field(client, "timeout_secs", "abc").await;
    release_with(client, "typo").await;
    let refusal = text_until(client, ".field-error[data-key='timeout_secs']", |t| {
        !t.is_empty()
    })
    .await;
    assert!(refusal.contains("expected u64"), "{refusal}");
    assert!(refusal.contains("\"abc\""), "{refusal}");
    assert!(
        refusal.contains("Seconds before a payment attempt is abandoned."),
        "{refusal}"
    );
    assert_eq!(
        coord
            .config()
            .get::<u64>("/config/checkout/timeout_secs")
            .await
            .unwrap(),
        30
    );
    assert_eq!(
        coord
            .config()
            .history("/config/checkout", 10)
            .await
            .unwrap()
            .len(),
        7
    );
    assert_eq!(live.load().timeout_secs, 30);

    // The rollout is live: with the page loaded, an instance that starts shows up as a row of
    // its own, and goes when it closes, without a reload, over the page's event stream.
    let instance = coord.instance().name.clone();
    text_until(client, "#rollout tbody", |t| t.contains(&instance)).await;
    client
        .execute(MARK_PAGE, vec![])
        .await
        .expect("mark the page");
    let late = Coord::connect(
        instance_config.with_instance(Instance::new("late-joiner").label("zone", "eu-1")),
    )
    .await
    .expect("connect to the test etcd");
    let late_live = late.live::<Checkout>().await.unwrap();
    let row = text_until(client, "#rollout tr[data-instance='late-joiner']", |t| {
        !t.is_empty()
    })
    .await;
    assert!(row.contains("zone=eu-1"), "{row}");
    let release = text_until(
        client,
        "#rollout tr[data-instance='late-joiner'] td:nth-child(3)",
        |t| !t.is_empty(),
    )
    .await;
    assert_eq!(release, "7", "the release it runs");
    let rows = text_until(client, "#rollout tbody", |t| t.contains(&instance)).await;
    assert!(rows.contains("late-joiner"), "{rows}");
    assert_same_page_and_no_request(client, "a starting instance").await;

    let png = client.screenshot().await.expect("a screenshot");
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).expect("create cargo's test directory");
    let path = concat!(env!("CARGO_TARGET_TMPDIR"), "/console.png");
    std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {path}: {e}"));
    println!("screenshot: {path}");
    if std::env::var_os("COORD_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/console.png");
        std::fs::write(docs, &png).unwrap_or_else(|e| panic!("write {docs}: {e}"));
        println!("screenshot: {docs} (COORD_UPDATE_SCREENSHOT=1)");
    }

    drop(late_live);
    late.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client
        .find(Locator::Css("#rollout tr[data-instance='late-joiner']"))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed instance's row is still on the page after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text_until(client, "#rollout tbody", |t| t.contains(&instance)).await;
    assert_same_page_and_no_request(client, "a closing instance").await;

    // Review: bo's proposal waits on the Review page with its diff; ana (the write token's
    // principal) approves it through the confirmation, and the Audit page shows both.
    let proposal = coord
        .config()
        .as_principal("bo")
        .unwrap()
        .release_raw(
            "/config/checkout",
            std::collections::BTreeMap::from([("retries".to_owned(), json!(9))]),
        )
        .message("nine retries")
        .propose()
        .await
        .unwrap();
    let row = format!("tr.proposal[data-id='{}']", proposal.id);
    browse(client, url, "/review", "#main", "nine retries").await;
    let changes = text_until(client, &format!("{row} td.changes"), |t| !t.is_empty()).await;
    assert!(
        changes.contains("retries") && changes.contains('9'),
        "{changes}"
    );
    click(client, &format!("{row} button.approve")).await;
    click(client, "#confirm-yes").await;
    eventually(WAIT, "the Live in the test sees the approved 9", || {
        live.load().retries == 9
    })
    .await;
    text_until(client, "#write-status", |t| t.contains("Approved")).await;
    browse(client, url, "/audit", "#main table", "approve").await;
    let records = text_until(client, "#main table", |t| t.contains("propose")).await;
    assert!(records.contains("ana (via anonymous)"), "{records}");

    // A rollout plan, driven here: its page shows the step and the instance on it, live;
    // ana pauses it, then cancels it (each through the confirmation), and the Live here is
    // back on the prefix's values.
    let plan = coord::rollout::RolloutPlan::new(
        "/config/checkout",
        std::collections::BTreeMap::from([("retries".to_owned(), json!(11))]),
    )
    .message("eleven retries")
    .step(
        coord::config::Selector::default().percent(100),
        Duration::from_secs(3600),
    )
    .step(coord::config::Selector::default(), Duration::ZERO);
    coord.rollouts().start(plan).await.unwrap();
    let driver = tokio::spawn(coord.rollouts().driver("/config/checkout").run());
    browse(
        client,
        url,
        "/plan/config/checkout",
        "#main h1",
        "Rollout plan",
    )
    .await;
    let step = text_until(client, "#plan-steps tr.step[data-step='1']", |t| {
        t.contains("current") && t.contains(&instance) && !t.contains("loading")
    })
    .await;
    assert!(step.contains("100%"), "{step}");
    assert_eq!(live.load().retries, 11, "the instance runs step 1");
    let png = client.screenshot().await.expect("a screenshot");
    let path = concat!(env!("CARGO_TARGET_TMPDIR"), "/console-plan.png");
    std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {path}: {e}"));
    println!("screenshot: {path}");
    click(client, "#plan-pause").await;
    click(client, "#confirm-yes").await;
    text_until(client, "#write-status", |t| t.contains("Paused")).await;
    text_until(client, "#plan-log", |t| t.contains("paused by ana")).await;
    wait_for(client, "#plan-resume").await;
    click(client, "#plan-cancel").await;
    click(client, "#confirm-yes").await;
    text_until(client, "#main .plan-state", |t| {
        t.contains("cancelled by ana")
    })
    .await;
    eventually(WAIT, "the Live in the test is back on 9", || {
        live.load().retries == 9
    })
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the driver ends with the plan")
        .unwrap()
        .unwrap();
    assert!(matches!(
        ended.state,
        coord::rollout::PlanState::Cancelled { .. }
    ));
}
