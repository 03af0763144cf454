use coord::CoordConfig;

/// Legal on its own: bound with `coord.live_at::<Db>(prefix)`.
#[derive(CoordConfig)]
struct Db {
    host: String,
}

/// What `Coord::live::<T>()` requires of `T`.
fn needs_prefix<T: coord::config::HasPrefix>() {}

fn main() {
    needs_prefix::<Db>();
}
