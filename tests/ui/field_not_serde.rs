use coord::CoordConfig;

struct Opaque;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    timeout_secs: u64,
    handle: Opaque,
}

fn main() {}
