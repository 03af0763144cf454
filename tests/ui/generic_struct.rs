use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/pool")]
struct Pool<T> {
    size: T,
}

fn main() {}
