use coord::config::Map;
use coord::CoordConfig;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Pool {
    size: u32,
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/tenancy")]
struct Tenancy {
    #[coord(map, nested)]
    pools: Map<Pool>,
}

fn main() {}
