use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(secret)]
    api_key: String,
}

fn main() {}
