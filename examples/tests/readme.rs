//! The README is a guide a newcomer follows top to bottom, copying every block as written.
//! Its Rust blocks run as doc tests of this package (`src/lib.rs`); these tests hold the rest
//! of it to the code: that no Rust block is skipped, that the etcd program it shows is the
//! `from_etcd` example and works against a real etcd as the README says, that every struct
//! called `Checkout` is the same one, that the file-mode sample is the file the doc test
//! reads, that the blocks need no crate the Install section leaves out, and that every path
//! in the capability map exists.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use coord::testing::EtcdServer;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the examples package sits in the workspace")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A fenced block of the README: its info string (`rust`, `rust,no_run`, `sh`…), the line
/// its fence opens on (1-based) and its text.
struct Block {
    tag: String,
    line: usize,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(tag)) => {
                open = Some(Block {
                    tag: tag.trim().to_owned(),
                    line: index + 1,
                    text: String::new(),
                })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                blocks.extend(open.take());
            }
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a block of the README is never closed");
    blocks
}

fn rust_blocks(markdown: &str) -> Vec<Block> {
    blocks(markdown)
        .into_iter()
        .filter(|b| b.tag.split(',').next() == Some("rust"))
        .collect()
}

/// The source of `examples/src/from_etcd.rs` after its `//!` header: what the README shows.
fn from_etcd_program() -> String {
    let source = read("examples/src/from_etcd.rs");
    let body: Vec<&str> = source
        .lines()
        .skip_while(|line| line.starts_with("//!"))
        .skip(1)
        .collect();
    body.join("\n") + "\n"
}

#[test]
fn every_block_is_tagged_and_every_rust_block_runs_but_the_etcd_program() {
    let readme = read("README.md");
    let all = blocks(&readme);
    for block in &all {
        assert!(
            !block.tag.is_empty(),
            "the block at README.md:{} has no language: rustdoc would compile it as Rust; tag it (text, sh, toml…)",
            block.line
        );
    }
    let rust = rust_blocks(&readme);
    assert!(rust.len() >= 9, "{} Rust blocks", rust.len());
    let program = from_etcd_program();
    for block in &rust {
        match block.tag.as_str() {
            "rust" => {}
            "rust,no_run" => assert_eq!(
                block.text, program,
                "README.md:{}: the only block that does not run is the etcd program, and it is examples/src/from_etcd.rs after its header (which examples/tests/readme.rs runs against etcd)",
                block.line
            ),
            other => panic!(
                "README.md:{}: a `{other}` block is not run; every Rust block must run as a doc test",
                block.line
            ),
        }
    }
    assert_eq!(
        rust.iter().filter(|b| b.tag == "rust,no_run").count(),
        1,
        "the etcd program is in the README"
    );
}

/// The text from the `RateLimit` struct's derive line to the end of the `Checkout` struct.
fn checkout_definition(source: &str) -> Option<String> {
    let start = source
        .find("#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]\nstruct RateLimit")?;
    let rest = &source[start..];
    let checkout = rest.find("struct Checkout {")?;
    let end = checkout + rest[checkout..].find("\n}\n")? + 3;
    Some(rest[..end].to_owned())
}

#[test]
fn every_checkout_struct_in_the_readme_and_the_examples_is_the_same_one() {
    let readme = read("README.md");
    let mut definitions: Vec<(String, String)> = rust_blocks(&readme)
        .iter()
        .filter(|b| b.text.contains("struct Checkout"))
        .map(|b| {
            let definition = checkout_definition(&b.text).unwrap_or_else(|| {
                panic!(
                    "README.md:{}: Checkout is not defined as the quickstart's (RateLimit first)",
                    b.line
                )
            });
            (format!("README.md:{}", b.line), definition)
        })
        .collect();
    assert!(
        definitions.len() >= 3,
        "quickstart, etcd, live config, file mode"
    );
    for example in [
        "examples/src/quickstart.rs",
        "examples/src/hot_reload.rs",
        "examples/src/from_etcd.rs",
    ] {
        let definition = checkout_definition(&read(example))
            .unwrap_or_else(|| panic!("{example} defines no Checkout"));
        definitions.push((example.to_owned(), definition));
    }
    let (first_place, first) = &definitions[0];
    for (place, definition) in &definitions[1..] {
        assert_eq!(
            definition, first,
            "{place} defines Checkout differently from {first_place}"
        );
    }
}

#[test]
fn the_file_mode_sample_is_the_file_its_doc_test_reads() {
    let readme = read("README.md");
    let samples: Vec<Block> = blocks(&readme)
        .into_iter()
        .filter(|b| b.tag == "toml" && b.text.contains("[\"/config/checkout\"]"))
        .collect();
    assert_eq!(samples.len(), 1, "one file-mode sample");
    assert_eq!(
        samples[0].text,
        read("examples/coord.toml"),
        "README.md:{} is examples/coord.toml, which the file-mode block loads",
        samples[0].line
    );
}

#[test]
fn the_blocks_need_no_crate_the_install_section_leaves_out() {
    let readme = read("README.md");
    let install = blocks(&readme)
        .into_iter()
        .find(|b| b.tag == "toml" && b.text.starts_with("[dependencies]"))
        .expect("an Install block with [dependencies]");
    for line in [
        "coord = \"0.1\"",
        "serde = { version = \"1\", features = [\"derive\"] }",
        "tokio = { version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }",
    ] {
        assert!(install.text.contains(line), "Install lacks {line}");
    }
    for block in rust_blocks(&readme) {
        for line in block.text.lines() {
            if let Some(path) = line.trim().strip_prefix("use ") {
                let root = path.split("::").next().unwrap_or_default();
                assert!(
                    ["std", "coord", "serde"].contains(&root),
                    "README.md:{}: `use {path}` needs a crate Install does not list",
                    block.line
                );
            }
            if let Some(at) = line.find("tokio::") {
                assert!(
                    line.trim() == "#[tokio::main]",
                    "README.md:{}: `{}` may need a tokio feature Install does not turn on",
                    block.line,
                    &line[at..]
                );
            }
        }
    }
}

#[test]
fn every_path_in_the_capability_map_exists() {
    let readme = read("README.md");
    let start = readme
        .find("<!-- capabilities -->")
        .expect("the capability map's start marker");
    let end = readme
        .find("<!-- /capabilities -->")
        .expect("the capability map's end marker");
    let map = &readme[start..end];
    let mut checked = 0;
    for (index, cell) in map.split('`').enumerate() {
        let is_code = index % 2 == 1;
        if is_code && cell.contains('/') && (cell.ends_with(".rs") || cell.ends_with('/')) {
            assert!(
                root().join(cell).exists(),
                "the capability map names `{cell}`, which is not in the repository"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} paths found in the map");
}

/// Runs `etcdctl` against `server`, as the README's recipe does.
fn etcdctl(server: &EtcdServer, args: &[&str]) {
    server
        .etcdctl(args)
        .unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"));
}

/// `from_etcd` with `COORD_ENDPOINTS` set to `server` and no other `COORD_*` variable.
fn from_etcd(server: &EtcdServer) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_from_etcd"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COORD_") {
            command.env_remove(name);
        }
    }
    command
        .env("COORD_ENDPOINTS", server.endpoint())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The next line the program prints; panics after 30 s or at the end of its output.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line within 30 s")
        .expect("read the program's output")
        .expect("the program is still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_program_follows_a_real_etcd_as_the_readme_says() {
    let server = EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)");

    // Before the key without a default is written, the bind fails naming it.
    let early = from_etcd(&server)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run from_etcd");
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(!early.status.success(), "binds without rate_limit?");
    assert!(
        stderr.contains("/config/checkout/rate_limit")
            && stderr.contains("required key is missing"),
        "{stderr}"
    );
    // It seeded the keys that have defaults first: what is missing is the one without.
    let stdout = String::from_utf8_lossy(&early.stdout);
    assert!(
        stdout.starts_with("seeded [")
            && stdout.contains("/config/checkout/timeout_secs")
            && stdout.contains("/config/checkout/flags"),
        "{stdout}"
    );

    etcdctl(
        &server,
        &[
            "put",
            "/config/checkout/rate_limit",
            r#"{"per_second":100,"burst":20}"#,
        ],
    );
    let mut child: Child = from_etcd(&server)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start from_etcd");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let seeded = next_line(&mut lines).await;
    assert_eq!(
        seeded, "seeded []",
        "the defaults are there from the first run"
    );
    let bound = next_line(&mut lines).await;
    assert!(
        bound.starts_with("bound at revision")
            && bound.contains("timeout_secs: 30")
            && bound.contains("RateLimit { per_second: 100, burst: 20 }"),
        "{bound}"
    );

    etcdctl(&server, &["put", "/config/checkout/timeout_secs", "45"]);
    let reloaded = next_line(&mut lines).await;
    assert!(
        reloaded.starts_with("reloaded") && reloaded.contains("timeout_secs: 45"),
        "{reloaded}"
    );

    // A value that does not decode is refused: no line for it, the next good one is printed.
    etcdctl(
        &server,
        &["put", "/config/checkout/timeout_secs", "\"soon\""],
    );
    etcdctl(&server, &["put", "/config/checkout/timeout_secs", "60"]);
    let after = next_line(&mut lines).await;
    assert!(
        after.starts_with("reloaded") && after.contains("timeout_secs: 60"),
        "the refused value printed nothing: {after}"
    );
    child.kill().await.expect("stop from_etcd");
}
