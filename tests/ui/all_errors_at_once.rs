//! Every misuse is reported in one compile, and the struct still implements the traits, so
//! code that uses it adds no errors of its own.
use coord::config::HasPrefix;
use coord::CoordConfig;

#[derive(CoordConfig)]
#[coord(prefix = "relative")]
struct Checkout {
    #[coord(secret)]
    api_key: String,
    #[coord(key = "api_key")]
    other: String,
}

fn needs_prefix<T: HasPrefix>() {}

fn main() {
    let _ = Checkout::fields();
    needs_prefix::<Checkout>();
}
