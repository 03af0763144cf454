use coord::CoordConfig;

/// Legal on its own: bound with `coord.live_at::<Db>(prefix)`.
#[derive(CoordConfig)]
struct Db {
    host: String,
}

async fn bind(coord: coord::Coord) {
    let _ = coord.live::<Db>().await;
}

fn main() {
    drop(bind(coord::Coord::in_memory()));
}
