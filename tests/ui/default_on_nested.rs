use coord::CoordConfig;

#[derive(CoordConfig)]
struct Db {
    #[coord(default)]
    pool_size: u32,
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(nested, default)]
    db: Db,
}

fn main() {}
