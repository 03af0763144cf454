use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout", validate = "not a path!")]
struct Checkout {
    timeout_secs: u64,
}

fn main() {}
