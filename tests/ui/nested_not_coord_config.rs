use coord::CoordConfig;

#[derive(serde::Serialize, serde::Deserialize)]
struct Db {
    host: String,
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(nested)]
    db: Db,
}

fn main() {}
