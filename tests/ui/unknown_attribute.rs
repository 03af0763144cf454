use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(defualt = 3)]
    retries: u32,
}

fn main() {}
