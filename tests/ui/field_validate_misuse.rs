use coord::CoordConfig;

fn at_most_a_minute(secs: &u32) -> Result<(), String> {
    if *secs > 60 {
        return Err("too long".into());
    }
    Ok(())
}

fn not_empty(name: &str) -> bool {
    !name.is_empty()
}

#[derive(CoordConfig)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    // Takes a `&u32`, the field is a `u64`.
    #[coord(validate = "at_most_a_minute")]
    timeout_secs: u64,
    // Returns a `bool`.
    #[coord(validate = "not_empty")]
    name: String,
}

fn main() {}
