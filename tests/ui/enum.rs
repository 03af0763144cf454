use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "/config/mode")]
enum Mode {
    Fast,
    Safe,
}

fn main() {}
