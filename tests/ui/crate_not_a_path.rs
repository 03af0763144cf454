use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(crate = "not a path", prefix = "/config/checkout")]
struct Checkout {
    timeout_secs: u64,
}

fn main() {}
