use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/pair")]
struct Pair {
    #[coord(key = "b")]
    a: u64,
    b: u64,
}

fn main() {}
