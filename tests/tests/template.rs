//! `coord::config::template`: the document it writes loads in the local file mode, and a struct
//! whose fields all have defaults binds from it unchanged.

use coord::config::{Map, TemplateFormat, template};
use coord::{Coord, CoordConfig, Secret};

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Pool {
    /// Connections kept open.
    #[coord(default = 8)]
    max_size: u32,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Tenant {
    #[coord(default = 5)]
    limit: u32,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/templated")]
struct Templated {
    /// Seconds before a payment
    /// attempt is abandoned.
    #[coord(default = 30)]
    timeout_secs: u64,
    #[coord(default = "eu-west".to_string(), key = "region-name")]
    region: String,
    #[coord(default)]
    tags: Vec<String>,
    #[coord(default = serde_json::json!({"per_sec": 100, "burst": 20}))]
    rate_limit: serde_json::Value,
    /// Never in a committed file.
    #[coord(secret, default = Secret::new("dev-only".to_string()))]
    api_key: Secret<String>,
    #[coord(nested)]
    pool: Pool,
    /// Per-tenant request limits.
    #[coord(map)]
    limits: Map<u32>,
    #[coord(map, nested)]
    tenants: Map<Tenant>,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/required")]
struct Required {
    #[coord(default = 1)]
    replicas: u32,
    endpoint: String,
}

fn defaults() -> Templated {
    Templated {
        timeout_secs: 30,
        region: "eu-west".into(),
        tags: vec![],
        rate_limit: serde_json::json!({"per_sec": 100, "burst": 20}),
        api_key: Secret::new("dev-only".into()),
        pool: Pool { max_size: 8 },
        limits: Map::default(),
        tenants: Map::default(),
    }
}

async fn bind_from<T: coord::config::HasPrefix + Send + Sync + 'static>(
    name: &str,
    text: &str,
) -> coord::Result<coord::Live<T>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let coord = Coord::from_file(&path).await?;
    coord.live::<T>().await
}

#[tokio::test]
async fn the_toml_template_loads_and_binds_to_the_defaults() {
    let text = template::<Templated>(TemplateFormat::Toml);
    // Docs, types and defaults are there for whoever fills it in.
    assert!(
        text.contains("# Seconds before a payment\n# attempt is abandoned.\n# u64, default 30\ntimeout_secs = 30\n"),
        "{text}"
    );
    assert!(text.contains("region-name = \"eu-west\""), "{text}");
    assert!(
        text.contains(
            "[\"/config/templated/pool\"]\n# Connections kept open.\n# u32, default 8\nmax_size = 8"
        ),
        "{text}"
    );
    assert!(text.contains("# Per-tenant request limits.\n"), "{text}");
    assert!(
        text.contains("[\"/config/templated/tenants/NAME\"]"),
        "{text}"
    );
    assert!(
        !text.contains("dev-only"),
        "a secret's default stays out: {text}"
    );
    assert!(text.contains("# api_key = ..."), "{text}");

    let live = bind_from::<Templated>("coord.toml", &text).await.unwrap();
    // The secret was left out, so it takes its default from the struct, not the file.
    assert_eq!(*live.load_full(), defaults());
}

#[tokio::test]
async fn the_json_template_loads_and_binds_to_the_defaults() {
    let text = template::<Templated>(TemplateFormat::Json);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["/config/templated"]["timeout_secs"], 30);
    assert_eq!(document["/config/templated/pool"]["max_size"], 8);
    assert_eq!(document["/config/templated/limits"], serde_json::json!({}));
    assert_eq!(
        document["/config/templated"]["api_key"],
        serde_json::Value::Null
    );
    // `null` for the secret: drop it, or the struct reads `null` as its value.
    let mut document = document;
    document["/config/templated"]
        .as_object_mut()
        .unwrap()
        .remove("api_key");
    let live = bind_from::<Templated>("coord.json", &document.to_string())
        .await
        .unwrap();
    assert_eq!(*live.load_full(), defaults());
}

#[tokio::test]
async fn a_required_field_is_left_to_fill_in() {
    let text = template::<Required>(TemplateFormat::Toml);
    assert!(
        text.contains("# String, required\n# endpoint = ...\n"),
        "{text}"
    );
    // As written it does not bind: the required key is missing, and the error says which.
    let error = bind_from::<Required>("coord.toml", &text)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("/config/required/endpoint"),
        "{error}"
    );
    let filled = text.replace("# endpoint = ...", "endpoint = \"https://pay.example\"");
    let live = bind_from::<Required>("coord.toml", &filled).await.unwrap();
    assert_eq!(live.load().endpoint, "https://pay.example");
    assert_eq!(live.load().replicas, 1);
}
