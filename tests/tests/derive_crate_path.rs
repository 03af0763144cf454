//! `#[coord(crate = "...")]`: a crate that reaches coord through a re-export (a platform crate
//! that wraps it) derives with that path instead of `::coord`.

/// Stands for a platform crate that re-exports coord.
mod platform {
    pub use ::coord as inner;
}

mod service {
    // Everything through the re-export, as a crate without a direct coord dependency would.
    // (This test crate does depend on coord, so `::coord` would resolve here too; the derive's
    // own unit tests check the generated code names only the given path.)
    use super::platform::inner::CoordConfig;
    use super::platform::inner::config::Source;

    #[derive(CoordConfig, Debug, Clone, PartialEq)]
    #[coord(crate = "super::platform::inner", prefix = "/config/wrapped")]
    pub struct Wrapped {
        #[coord(default = 3)]
        pub retries: u32,
        pub endpoint: String,
        #[coord(nested)]
        pub limits: Limits,
    }

    #[derive(CoordConfig, Debug, Clone, PartialEq)]
    #[coord(crate = "super::platform::inner")]
    pub struct Limits {
        pub burst: Option<u32>,
    }

    pub fn build_from(values: &std::collections::BTreeMap<String, Vec<u8>>) -> Wrapped {
        Wrapped::from_source(&Source::new("/config/wrapped", values)).unwrap()
    }
}

use service::{Limits, Wrapped};

#[test]
fn derive_through_a_reexported_path_builds_from_source() {
    let values = [("/config/wrapped/endpoint".to_string(), b"\"e\"".to_vec())].into();

    assert_eq!(
        service::build_from(&values),
        Wrapped {
            retries: 3,
            endpoint: "e".into(),
            limits: Limits { burst: None },
        }
    );
}

#[tokio::test]
async fn derive_through_a_reexported_path_binds_on_the_memory_backend() {
    let coord = platform::inner::Coord::in_memory();
    coord
        .config()
        .set("/config/wrapped/endpoint", "e")
        .await
        .unwrap();

    let live = coord.live::<Wrapped>().await.unwrap();

    assert_eq!(live.load().retries, 3);
    assert_eq!(live.load().endpoint, "e");
}
