use coord::CoordConfig;

#[derive(CoordConfig)]
struct Db {
    host: String,
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(nested, env = "CHECKOUT_DB")]
    db: Db,
    #[coord(env = "1TIMEOUT")]
    timeout_secs: u64,
    #[coord(env = "RATE-LIMIT")]
    rate_limit: u32,
    #[coord(env = "CHECKOUT_BURST")]
    burst: u32,
    #[coord(env = "CHECKOUT_BURST")]
    burst_max: u32,
}

fn main() {}
