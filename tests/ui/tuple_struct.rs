use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/pair")]
struct Pair(u64, String);

fn main() {}
