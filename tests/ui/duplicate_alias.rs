use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout", rename_all = "kebab-case")]
struct Checkout {
    // Its key is `timeout-secs`.
    timeout_secs: u64,
    // An alias that is another field's key (as renamed).
    #[coord(alias = "timeout-secs")]
    deadline: u64,
    #[coord(alias = "retries")]
    max_retries: u32,
    // A key (as renamed) that is another field's alias.
    #[coord(key = "retries")]
    retry_count: u32,
    // Two fields with one alias.
    #[coord(alias = "limit")]
    burst: u32,
    #[coord(alias = "limit")]
    rate: u32,
    // An alias that is the field's own key.
    #[coord(alias = "pool-size")]
    pool_size: u32,
    // An alias with a `/`, checked as a key is.
    #[coord(alias = "db/host")]
    host: String,
}

fn main() {}
