use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "")]
struct Checkout {
    timeout_secs: u64,
}

fn main() {}
