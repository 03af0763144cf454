use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "config/checkout")]
struct Checkout {
    timeout_secs: u64,
}

fn main() {}
