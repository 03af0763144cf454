//! Typed configuration: the config center ([`ConfigCenter`]), the [`CoordConfig`] trait that
//! `#[derive(CoordConfig)]` implements, and hot-reloading [`Live<T>`](Live).

mod cache;
mod center;
pub(crate) mod hub;
mod live;
mod schema;
mod secret;

pub use center::{Batch, ConfigCenter, ConfigEvent, Watcher};
pub use live::{Live, LiveGuard, LiveReader};
pub use schema::{
    describe, encode, encode_nested, nested_values, CoordConfig, FieldInfo, HasPrefix, Source,
    Values,
};
pub use secret::Secret;
