use coord::CoordConfig;

// Type parameters are supported; a borrowed field is not: a live value outlives any borrow.
#[derive(CoordConfig)]
#[coord(prefix = "/config/pool")]
struct Pool<'a, T> {
    name: &'a str,
    size: T,
}

fn main() {}
