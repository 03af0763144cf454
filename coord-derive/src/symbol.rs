//! The attribute names, in one place.

use std::fmt::{self, Display};

use syn::{Ident, Path};

/// A name the derive recognizes inside `#[coord(...)]`. (`coord` itself must be a literal in
/// `proc_macro_derive(attributes(coord))` and darling's `attributes(coord)`.) darling matches
/// the words by the field names in `attr.rs`; these are for hand parsing and messages.
#[derive(Copy, Clone)]
pub struct Symbol(&'static str);

pub const DOC: Symbol = Symbol("doc");
pub const PREFIX: Symbol = Symbol("prefix");
pub const VALIDATE: Symbol = Symbol("validate");
pub const CRATE: Symbol = Symbol("crate");
pub const KEY: Symbol = Symbol("key");
pub const DEFAULT: Symbol = Symbol("default");
pub const SECRET: Symbol = Symbol("secret");
pub const NESTED: Symbol = Symbol("nested");
pub const MAP: Symbol = Symbol("map");
pub const RENAME_ALL: Symbol = Symbol("rename_all");
pub const ALIAS: Symbol = Symbol("alias");
pub const ENV: Symbol = Symbol("env");
/// The last path segment a `#[coord(secret)]` field's type must have.
pub const SECRET_TYPE: Symbol = Symbol("Secret");

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(self.0)
    }
}
