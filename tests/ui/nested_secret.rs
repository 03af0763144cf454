use coord::CoordConfig;

#[derive(CoordConfig)]
struct Db {
    password: coord::config::Secret<String>,
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(nested, secret)]
    db: Db,
}

fn main() {}
