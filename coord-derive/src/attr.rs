//! Every `#[coord(...)]` attribute, parsed once (by darling) into plain fields.
//!
//! Rules about one attribute's own value (a prefix starts with `/`, a key has no `/`, a
//! validate string is a path) are enforced here; rules between attributes and fields, and the
//! crate path (which decides how the impl is written even when other attributes are wrong),
//! are in `check.rs`.

use darling::util::Flag;
use darling::{FromAttributes, FromMeta};
use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, LitStr, Meta};

use crate::case::RenameRule;
use crate::ctxt::Ctxt;
use crate::symbol::{Symbol, ALIAS, DEFAULT, ENV, KEY, PREFIX, RENAME_ALL, VALIDATE};

/// The struct's attributes.
#[derive(Default)]
pub struct Container {
    /// `prefix = "/config/x"`, without a trailing `/`.
    pub prefix: Option<Prefix>,
    /// `validate = "path::to::fn"`, parsed; its tokens carry the string's span, so a function
    /// with the wrong signature is reported at the string.
    pub validate: Option<syn::Path>,
    /// `crate = "path::to::coord"`, as written; `check.rs` parses it as a path.
    pub crate_path: Option<LitStr>,
    /// `rename_all = "kebab-case"`: how a field without `key = "..."` names its key.
    pub rename_all: Option<RenameRule>,
}

pub struct Prefix {
    pub value: String,
    pub span: Span,
}

/// A field's attributes. The spans point at the word in the attribute, for errors.
#[derive(Default)]
pub struct Field {
    /// `key = "..."`.
    pub key: Option<LitStr>,
    pub default: Option<DefaultAttr>,
    pub secret: Option<Span>,
    pub nested: Option<Span>,
    /// `map`: the field's entries are the keys under `{key}/`.
    pub map: Option<Span>,
    /// Each `alias = "..."`, in the order written: older keys read when the key is missing.
    pub aliases: Vec<LitStr>,
    /// `validate = "path::to::fn"` with `fn(&FieldType) -> Result<(), String>`, parsed; its
    /// tokens carry the string's span.
    pub validate: Option<syn::Path>,
    /// `env = "VAR"`: an environment variable whose value overrides the stored one.
    pub env: Option<LitStr>,
}

/// `default` (the type's `Default`) or `default = EXPR`.
pub struct DefaultAttr {
    /// The `default` word.
    pub span: Span,
    pub value: DefaultValue,
}

pub enum DefaultValue {
    Trait,
    Expr(Expr),
}

#[derive(FromAttributes)]
#[darling(attributes(coord))]
struct RawContainer {
    prefix: Option<LitStr>,
    validate: Option<LitStr>,
    #[darling(rename = "crate")]
    crate_path: Option<LitStr>,
    rename_all: Option<LitStr>,
}

#[derive(FromAttributes)]
#[darling(attributes(coord))]
struct RawField {
    key: Option<LitStr>,
    default: Option<DefaultAttr>,
    secret: Flag,
    nested: Flag,
    map: Flag,
    #[darling(multiple, rename = "alias")]
    aliases: Vec<LitStr>,
    validate: Option<LitStr>,
    env: Option<LitStr>,
}

impl FromMeta for DefaultAttr {
    // By hand rather than darling's `syn::Expr`, which would parse `default = "text"` as the
    // expression `text`; here a string literal stays a string literal.
    fn from_meta(meta: &Meta) -> darling::Result<Self> {
        let span = meta.path().span();
        match meta {
            Meta::Path(_) => Ok(DefaultAttr {
                span,
                value: DefaultValue::Trait,
            }),
            Meta::NameValue(nv) => Ok(DefaultAttr {
                span,
                value: DefaultValue::Expr(nv.value.clone()),
            }),
            Meta::List(list) => Err(darling::Error::custom(format!(
                "write `{DEFAULT} = EXPR` for a value, or `{DEFAULT}` for Default::default()"
            ))
            .with_span(list)),
        }
    }
}

impl Container {
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let raw = match RawContainer::from_attributes(attrs) {
            Ok(raw) => raw,
            Err(e) => {
                cx.darling_error(e);
                return Container::default();
            }
        };
        Container {
            prefix: raw.prefix.and_then(|lit| parse_prefix(cx, &lit)),
            validate: raw
                .validate
                .and_then(|lit| parse_validate(cx, &lit, "&Self")),
            crate_path: raw.crate_path,
            rename_all: raw.rename_all.and_then(|lit| parse_rename_all(cx, &lit)),
        }
    }
}

impl Field {
    pub fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let raw = match RawField::from_attributes(attrs) {
            Ok(raw) => raw,
            Err(e) => {
                cx.darling_error(e);
                return Field::default();
            }
        };
        if let Some(key) = &raw.key {
            check_key(cx, key, KEY);
        }
        for alias in &raw.aliases {
            check_key(cx, alias, ALIAS);
        }
        if let Some(var) = &raw.env {
            check_env_name(cx, var);
        }
        Field {
            key: raw.key,
            default: raw.default,
            secret: raw.secret.is_present().then(|| raw.secret.span()),
            nested: raw.nested.is_present().then(|| raw.nested.span()),
            map: raw.map.is_present().then(|| raw.map.span()),
            aliases: raw.aliases,
            validate: raw
                .validate
                .and_then(|lit| parse_validate(cx, &lit, "&FieldType")),
            env: raw.env,
        }
    }
}

/// An environment variable's name as a shell can set it: letters, digits and `_`, not
/// starting with a digit (what `export NAME=...` accepts).
fn check_env_name(cx: &Ctxt, lit: &LitStr) {
    let name = lit.value();
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        Some("starts with a digit")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some("holds a character other than ASCII letters, digits and `_`")
    } else {
        None
    };
    if let Some(problem) = problem {
        cx.error_at(
            lit.span(),
            format!("#[coord({ENV} = \"{name}\")]: the variable name {problem}"),
        );
    }
}

fn parse_prefix(cx: &Ctxt, lit: &LitStr) -> Option<Prefix> {
    let value = lit.value();
    let problem = if value.is_empty() {
        Some("is empty")
    } else if !value.starts_with('/') {
        Some("does not start with `/`")
    } else if value.contains('\0') {
        Some("contains a NUL character")
    } else if value.trim_end_matches('/').contains("//") {
        Some("has an empty segment (`//`)")
    } else {
        None
    };
    if let Some(problem) = problem {
        cx.error_at(
            lit.span(),
            format!(
                "#[coord({PREFIX} = ...)] {problem}; write an absolute key prefix such as \
                 \"/config/checkout\" (keys are read at {{prefix}}/{{key}})"
            ),
        );
        return None;
    }
    Some(Prefix {
        value: value.trim_end_matches('/').to_owned(),
        span: lit.span(),
    })
}

/// `argument` is what the function takes, for the message: `&Self` or `&FieldType`.
fn parse_validate(cx: &Ctxt, lit: &LitStr, argument: &str) -> Option<syn::Path> {
    match lit.parse::<syn::Path>() {
        Ok(path) => Some(path),
        Err(_) => {
            cx.error_at(
                lit.span(),
                format!(
                    "#[coord({VALIDATE} = ...)] must name a function as a path in a string, \
                     e.g. {VALIDATE} = \"path::to::check\", where \
                     fn check({argument}) -> Result<(), String>"
                ),
            );
            None
        }
    }
}

fn parse_rename_all(cx: &Ctxt, lit: &LitStr) -> Option<RenameRule> {
    let rule = RenameRule::from_name(&lit.value());
    if rule.is_none() {
        cx.error_at(
            lit.span(),
            format!(
                "unknown case in #[coord({RENAME_ALL} = ...)]; expected one of {}",
                RenameRule::names()
            ),
        );
    }
    rule
}

/// `what` is the attribute the key was given by (`key` or `alias`), for the message.
fn check_key(cx: &Ctxt, lit: &LitStr, what: Symbol) {
    let key = lit.value();
    let problem = if key.is_empty() {
        "is empty"
    } else if key.contains('/') {
        "contains `/`; a key is one path segment (use #[coord(nested)] for a sub-struct)"
    } else if key.contains('\0') {
        "contains a NUL character"
    } else {
        return;
    };
    cx.error_at(lit.span(), format!("#[coord({what} = ...)] {problem}"));
}
