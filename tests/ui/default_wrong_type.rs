use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(default = "30")]
    timeout_secs: u64,
}

fn main() {}
