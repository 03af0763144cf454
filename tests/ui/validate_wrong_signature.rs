use coord::CoordConfig;

fn positive(c: &Checkout) -> bool {
    c.timeout_secs > 0
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout", validate = "positive")]
struct Checkout {
    timeout_secs: u64,
}

fn main() {}
