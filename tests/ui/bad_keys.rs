use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(key = "db/host")]
    db_host: String,
    #[coord(key = "")]
    empty: String,
}

fn main() {}
