use std::collections::HashMap;

use coord::CoordConfig;

#[derive(serde::Serialize, serde::Deserialize)]
struct Limit {
    per_second: u32,
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/tenancy")]
struct Tenancy {
    #[coord(map)]
    limits: HashMap<String, Limit>,
}

fn main() {}
