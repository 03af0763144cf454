use std::collections::{BTreeMap, HashMap};

use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/tenancy")]
struct Tenancy {
    #[coord(map)]
    not_a_map: Vec<String>,
    #[coord(map)]
    numbered: HashMap<u32, bool>,
    #[coord(map, default)]
    with_default: BTreeMap<String, u32>,
    #[coord(map, secret)]
    secret: HashMap<String, String>,
    #[coord(map)]
    optional: Option<HashMap<String, u32>>,
}

fn main() {}
