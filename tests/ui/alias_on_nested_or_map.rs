use coord::config::Map;
use coord::CoordConfig;

#[derive(CoordConfig)]
struct Db {
    host: String,
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(nested, alias = "database")]
    db: Db,
    #[coord(map, alias = "limits")]
    per_tenant: Map<u32>,
}

fn main() {}
