use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout", rename_all = "kebab_case")]
struct Checkout {
    timeout_secs: u64,
}

fn main() {}
