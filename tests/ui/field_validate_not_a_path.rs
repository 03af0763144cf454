use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(validate = "|secs| secs > 0")]
    timeout_secs: u64,
}

fn main() {}
