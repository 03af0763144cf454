//! Rules between attributes, and between attributes and fields.

use std::collections::BTreeMap;

use syn::spanned::Spanned;
use syn::Type;

use crate::ast::Input;
use crate::attr;
use crate::ctxt::Ctxt;
use crate::symbol::{ALIAS, CRATE, DEFAULT, ENV, KEY, MAP, NESTED, SECRET, SECRET_TYPE};

pub fn check(cx: &Ctxt, input: &Input) {
    check_nested(cx, input);
    check_maps(cx, input);
    check_secret_types(cx, input);
    check_aliases(cx, input);
    check_env(cx, input);
    check_unique_keys(cx, input);
}

/// The path generated code names the runtime crate by: `crate = "..."` parsed as a module
/// path (each segment's tokens carry the string's span), else `::coord`. `None` if the
/// attribute does not parse; the error is in `cx`, at the string.
pub fn crate_path(cx: &Ctxt, container: &attr::Container) -> Option<syn::Path> {
    let Some(lit) = &container.crate_path else {
        return Some(syn::parse_quote!(::coord));
    };
    match lit.parse_with(syn::Path::parse_mod_style) {
        Ok(path) => Some(path),
        Err(_) => {
            cx.error_at(
                lit.span(),
                format!(
                    "#[coord({CRATE} = ...)] must be the path the coord crate is reachable at, \
                     as a string, e.g. {CRATE} = \"my_platform::coord\""
                ),
            );
            None
        }
    }
}

fn check_nested(cx: &Ctxt, input: &Input) {
    for field in &input.fields {
        // A nested map's entries are nested structs; the map rules are in `check_maps`.
        if field.attrs.nested.is_none() || field.attrs.map.is_some() {
            continue;
        }
        if let Some(default) = &field.attrs.default {
            cx.error_at(
                default.span,
                format!(
                    "#[coord({DEFAULT})] cannot be used on a #[coord({NESTED})] field: a nested \
                     struct takes its defaults from its own fields' #[coord({DEFAULT})]"
                ),
            );
        }
        if let Some(secret) = field.attrs.secret {
            cx.error_at(
                secret,
                format!(
                    "#[coord({SECRET})] cannot be used on a #[coord({NESTED})] field: mark the \
                     secret fields inside the nested struct instead"
                ),
            );
        }
    }
}

fn check_maps(cx: &Ctxt, input: &Input) {
    for field in &input.fields {
        if field.attrs.map.is_none() {
            continue;
        }
        if let Some(default) = &field.attrs.default {
            cx.error_at(
                default.span,
                format!(
                    "#[coord({DEFAULT})] cannot be used on a #[coord({MAP})] field: a map with \
                     no entries stored is empty"
                ),
            );
        }
        if let Some(secret) = field.attrs.secret {
            cx.error_at(
                secret,
                format!(
                    "#[coord({SECRET})] cannot be used on a #[coord({MAP})] field: make the \
                     entry type a coord::Secret<T>, or mark secret fields inside a nested entry"
                ),
            );
        }
        if let Err((span, problem)) = map_type(field.ty) {
            cx.error_at(
                span,
                format!(
                    "#[coord({MAP})] {problem}; write coord::config::Map<V>, \
                     HashMap<String, V> or BTreeMap<String, V> (entries are named by key)"
                ),
            );
        }
    }
}

/// A map field's type, as written: `Map<V>`, or `HashMap` / `BTreeMap` whose first argument
/// is `String` (an alias is not seen through; the runtime's `MapField` bound is the final
/// word, this is for an error at the right place).
fn map_type(ty: &Type) -> Result<(), (proc_macro2::Span, &'static str)> {
    let path = match ty {
        Type::Path(path) if path.qself.is_none() => &path.path,
        Type::Group(group) => return map_type(&group.elem),
        Type::Paren(paren) => return map_type(&paren.elem),
        _ => return Err((ty.span(), "needs a map type")),
    };
    let Some(last) = path.segments.last() else {
        return Err((ty.span(), "needs a map type"));
    };
    let name = last.ident.to_string();
    if !matches!(name.as_str(), "Map" | "HashMap" | "BTreeMap") {
        return Err((ty.span(), "needs a map type"));
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err((ty.span(), "needs the map's type arguments"));
    };
    if name == "Map" {
        return Ok(());
    }
    match args.args.first() {
        Some(syn::GenericArgument::Type(Type::Path(key)))
            if key.qself.is_none()
                && key
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "String") =>
        {
            Ok(())
        }
        Some(key) => Err((
            key.span(),
            "needs `String` keys: an entry's name is its key",
        )),
        None => Err((ty.span(), "needs the map's type arguments")),
    }
}

/// An alias is an older name of one key. A nested struct or a map is many keys under `{key}/`,
/// where "the first name that is present" would mix two halves of a move made key by key.
fn check_aliases(cx: &Ctxt, input: &Input) {
    for field in &input.fields {
        let (kind, instead) = if field.attrs.map.is_some() {
            (
                MAP,
                "an entry's struct fields may have aliases (#[coord(map, nested)])",
            )
        } else if field.attrs.nested.is_some() {
            (
                NESTED,
                "give the aliases to the nested struct's fields instead",
            )
        } else {
            continue;
        };
        for alias in &field.attrs.aliases {
            cx.error_at(
                alias.span(),
                format!(
                    "#[coord({ALIAS})] cannot be used on a #[coord({kind})] field: its value is \
                     the keys under `{}/`, not one key, so it has no single older key to read; \
                     {instead}",
                    field.key()
                ),
            );
        }
    }
}

/// An environment override replaces one value; a nested struct or a map is many keys (give
/// the override to a field of the nested struct). Two fields overridden by one variable would
/// take one text as two values: a mistake.
fn check_env(cx: &Ctxt, input: &Input) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for field in &input.fields {
        let Some(var) = &field.attrs.env else {
            continue;
        };
        if field.attrs.map.is_some() || field.attrs.nested.is_some() {
            let kind = if field.attrs.map.is_some() {
                MAP
            } else {
                NESTED
            };
            cx.error_at(
                var.span(),
                format!(
                    "#[coord({ENV})] cannot be used on a #[coord({kind})] field: its value is the \
                     keys under `{}/`, not one value; give the override to a field of the \
                     struct inside",
                    field.key()
                ),
            );
            continue;
        }
        let name = var.value();
        let ident = field.ident.to_string();
        match seen.iter().find(|(other, _)| *other == name) {
            Some((_, first)) => cx.error_at(
                var.span(),
                format!(
                    "#[coord({ENV} = \"{name}\")] already overrides field `{first}`; one \
                     variable overrides one field"
                ),
            ),
            None => seen.push((name, ident)),
        }
    }
}

fn check_secret_types(cx: &Ctxt, input: &Input) {
    for field in &input.fields {
        if field.attrs.secret.is_some()
            && field.attrs.nested.is_none()
            && field.attrs.map.is_none()
            && !is_secret(field.ty)
        {
            cx.error_at(
                field.ty.span(),
                format!(
                    "#[coord({SECRET})] fields must have type coord::Secret<T> so Debug and logs \
                     never show the value"
                ),
            );
        }
    }
}

/// The last path segment is `Secret`: the type may be imported or written in full.
fn is_secret(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == SECRET_TYPE),
        Type::Group(group) => is_secret(&group.elem),
        Type::Paren(paren) => is_secret(&paren.elem),
        _ => false,
    }
}

/// Every key a field reads, its own and its aliases, belongs to that field alone: two fields
/// reading one key would each take the other's value. The error is at the later claim.
fn check_unique_keys(cx: &Ctxt, input: &Input) {
    // Who claimed a key first, and whether as its key (`true`) or as an alias.
    let mut seen: BTreeMap<String, (&syn::Ident, bool)> = BTreeMap::new();
    let claimed_by = |(first, as_key): (&syn::Ident, bool)| {
        if as_key {
            format!("field `{first}` is already stored under it")
        } else {
            format!("field `{first}` already reads it as an alias")
        }
    };
    for field in &input.fields {
        let key = field.key();
        match seen.get(&key) {
            Some(&first) => cx.error_at(
                field.key_span(),
                format!(
                    "duplicate key `{key}`: {}; give one of them another \
                     #[coord({KEY} = \"...\")]",
                    claimed_by(first)
                ),
            ),
            None => {
                seen.insert(key.clone(), (field.ident, true));
            }
        }
        for alias in &field.attrs.aliases {
            let name = alias.value();
            if name == key {
                cx.error_at(
                    alias.span(),
                    format!(
                        "#[coord({ALIAS} = \"{name}\")] is field `{}`'s own key; an alias names \
                         an older key, read while the key is missing",
                        field.ident
                    ),
                );
                continue;
            }
            match seen.get(&name) {
                Some(&first) => cx.error_at(
                    alias.span(),
                    format!(
                        "duplicate key `{name}`: {}; an alias must be a key no other field \
                         or alias reads",
                        claimed_by(first)
                    ),
                ),
                None => {
                    seen.insert(name, (field.ident, false));
                }
            }
        }
    }
}
