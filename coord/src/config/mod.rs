//! Typed configuration: the config center ([`ConfigCenter`]), the [`CoordConfig`] trait that
//! `#[derive(CoordConfig)]` implements, and hot-reloading [`Live<T>`](Live).

mod cache;
mod center;
pub mod explain;
pub(crate) mod gray;
pub(crate) mod hub;
pub(crate) mod layout;
mod live;
pub(crate) mod map;
pub(crate) mod offline;
pub(crate) mod published;
pub(crate) mod raw;
pub(crate) mod redact;
pub(crate) mod release;
pub(crate) mod reserved;
mod schema;
mod secret;
pub(crate) mod shared;
pub(crate) mod status;
mod template;
mod type_name;

pub use center::{Batch, ConfigCenter, ConfigEvent, Watcher};
pub use explain::{Explained, Explanation, Origin};
pub use gray::Selector;
pub use live::{Live, LiveGuard, LiveReader};
pub use map::{Map, MapField, read_map, read_nested_map, write_map, write_nested_map};
pub use published::{PublishedField, PublishedKind, PublishedSchema, SCHEMAS_PREFIX};
pub(crate) use release::{Along, PlannedTexts};
pub use release::{
    Change, KeyDiff, Proposal, ProposalState, Release, ReleaseBuilder, ReleaseEvent, ReleaseEvents,
    ReleaseKind, StoredSecret,
};
pub use reserved::RESERVED_ROOT;
pub(crate) use schema::prefix_of;
pub use schema::{
    CoordConfig, FieldInfo, FieldKind, HasPrefix, Source, Values, describe, encode, encode_nested,
    env_override, nested_values,
};
pub use secret::{REDACTED, Secret};
pub use status::{InstanceHealth, InstanceStatus, StatusError};
pub use template::{TemplateFormat, template};

#[cfg(feature = "schema")]
pub use published::json_schema_of;
