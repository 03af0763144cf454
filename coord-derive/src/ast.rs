//! The derive input as a small typed model: a struct with named fields and their attributes.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, Expr, ExprLit, Fields, GenericArgument, Generics, Ident, Lit,
    Meta, PathArguments, Type,
};

use crate::attr;
use crate::ctxt::Ctxt;
use crate::symbol::DOC;

pub struct Input<'a> {
    pub ident: &'a Ident,
    /// Type and const parameters (lifetimes are refused: a config struct is `'static`).
    pub generics: &'a Generics,
    pub attrs: attr::Container,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    pub attrs: attr::Field,
    /// The type is written `Option<..>` (see [`is_option`]): a missing key reads as `None`.
    pub option: bool,
    /// The doc comment, each line without its leading space, trimmed.
    pub doc: String,
    /// The type names one of the struct's type or const parameters (`T`, `Vec<T>`,
    /// `[u32; N]`): the impl then
    /// bounds the type by what the field's code needs, as serde_derive bounds its parameters.
    pub generic: bool,
    /// The key relative to the prefix: `key = "..."`, else the field name (without `r#`) as
    /// the struct's `rename_all` renames it.
    key: String,
}

impl<'a> Input<'a> {
    /// The model, or `None` if the input is not a struct with named fields and no lifetime
    /// parameters (the reason is in `cx`). Attribute errors are in `cx` too but still give a model, so the
    /// cross-field checks can report theirs in the same compile.
    ///
    /// `attrs` are the struct's attributes, parsed by the caller, which needs the crate path
    /// even when there is no model.
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput, attrs: attr::Container) -> Option<Self> {
        for lifetime in input.generics.lifetimes() {
            cx.error_at(
                lifetime.span(),
                "#[derive(CoordConfig)] does not support lifetime parameters: a live value is \
                 shared across threads and reloads, so it must own its data (`'static`); use \
                 `String` or `Arc<str>` instead of borrowing",
            );
        }
        // Const parameters count too: `[u32; N]` is serde only for some `N`.
        let params: Vec<&Ident> = (input.generics.type_params().map(|p| &p.ident))
            .chain(input.generics.const_params().map(|p| &p.ident))
            .collect();
        let fields = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(fields) => &fields.named,
                Fields::Unnamed(fields) => {
                    cx.error_at(
                        fields.paren_token.span.join(),
                        "#[derive(CoordConfig)] needs named fields, since each field's name \
                         is its key; write `struct Name { field: Type, .. }`",
                    );
                    return None;
                }
                Fields::Unit => {
                    cx.error_at(
                        input.ident.span(),
                        "#[derive(CoordConfig)] needs named fields, since each field's name \
                         is its key; write `struct Name { field: Type, .. }`",
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error_at(
                    data.enum_token.span(),
                    "#[derive(CoordConfig)] only works on a struct with named fields (one key \
                     per field); an enum cannot be bound to keys. Use the enum as a field type: \
                     it is stored as that key's JSON",
                );
                return None;
            }
            Data::Union(data) => {
                cx.error_at(
                    data.union_token.span(),
                    "#[derive(CoordConfig)] only works on a struct with named fields; \
                     a union cannot be bound to keys",
                );
                return None;
            }
        };
        let attrs_rename = attrs.rename_all;
        let fields = fields
            .iter()
            .filter_map(|field| {
                // A named field always has an ident; the filter only avoids an unwrap.
                let ident = field.ident.as_ref()?;
                let attrs = attr::Field::from_attrs(cx, &field.attrs);
                let key = match (&attrs.key, attrs_rename) {
                    (Some(key), _) => key.value(),
                    (None, Some(rule)) => rule.apply_to_field(&ident.unraw().to_string()),
                    (None, None) => ident.unraw().to_string(),
                };
                Some(Field {
                    ident,
                    ty: &field.ty,
                    attrs,
                    option: is_option(&field.ty),
                    doc: doc_comment(&field.attrs),
                    generic: mentions(field.ty.to_token_stream(), &params),
                    key,
                })
            })
            .collect();
        if input.generics.lifetimes().next().is_some() {
            return None;
        }
        Some(Input {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            fields,
        })
    }
}

impl Field<'_> {
    /// The key relative to the prefix: `key = "..."` wins over `rename_all`, which renames
    /// the field name (without `r#`).
    pub fn key(&self) -> String {
        self.key.clone()
    }

    /// Where to point at the key: the `key = "..."` string, else the field name.
    pub fn key_span(&self) -> Span {
        match &self.attrs.key {
            Some(key) => key.span(),
            None => self.ident.span(),
        }
    }

    /// The field type as written, with Rust's usual spacing (`Vec<(String, u32)>`), not
    /// `stringify!`'s (`Vec < (String, u32) >`).
    pub fn type_name(&self) -> String {
        let mut out = String::new();
        write_tokens(&mut out, self.ty.to_token_stream());
        out
    }
}

/// True if `tokens` name one of `params` anywhere (`T`, `Vec<T>`, `<T as Trait>::Out`). A
/// path segment that happens to share a parameter's name counts too; that only adds a bound
/// that holds.
fn mentions(tokens: TokenStream, params: &[&Ident]) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(ident) => params.iter().any(|param| **param == ident),
        TokenTree::Group(group) => mentions(group.stream(), params),
        _ => false,
    })
}

/// True for `Option<T>`, `std::option::Option<T>` and `core::option::Option<T>` (with or
/// without a leading `::`), as written. Like serde, this is syntax only: a type alias of
/// `Option` is not seen through, and such a field stays required.
fn is_option(ty: &Type) -> bool {
    let path = match ty {
        Type::Path(path) if path.qself.is_none() => &path.path,
        Type::Group(group) => return is_option(&group.elem),
        Type::Paren(paren) => return is_option(&paren.elem),
        _ => return false,
    };
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let named = match segments.as_slice() {
        [option] => path.leading_colon.is_none() && option == "Option",
        [root, module, option] => {
            (root == "std" || root == "core") && module == "option" && option == "Option"
        }
        _ => false,
    };
    // Only the last segment may carry arguments, and exactly one type.
    let earlier_plain = path
        .segments
        .iter()
        .rev()
        .skip(1)
        .all(|s| s.arguments.is_none());
    let one_type = path
        .segments
        .last()
        .is_some_and(|last| match &last.arguments {
            PathArguments::AngleBracketed(args) => {
                args.args.len() == 1 && matches!(args.args.first(), Some(GenericArgument::Type(_)))
            }
            _ => false,
        });
    named && earlier_plain && one_type
}

fn doc_comment(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path() == DOC) {
        // `#[doc = include_str!(..)]` and the like are not literals; they are left out.
        if let Meta::NameValue(nv) = &attr.meta {
            if let Expr::Lit(ExprLit {
                lit: Lit::Str(doc), ..
            }) = &nv.value
            {
                // `/// text` arrives as `" text"`: drop that one space, keep deeper indents.
                for line in doc.value().lines() {
                    lines.push(line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned());
                }
            }
        }
    }
    lines.join("\n").trim().to_owned()
}

/// Prints tokens with a space only where Rust needs or customarily has one: between two
/// words (`dyn Trait`, `'static str`), after `,` and `;`, and around `->`, `=` and `+`.
fn write_tokens(out: &mut String, tokens: TokenStream) {
    let mut prev_word = false;
    let mut prev_joint = false;
    for tt in tokens {
        match tt {
            TokenTree::Ident(ident) => {
                if prev_word {
                    out.push(' ');
                }
                out.push_str(&ident.to_string());
                prev_word = true;
                prev_joint = false;
            }
            TokenTree::Literal(lit) => {
                if prev_word {
                    out.push(' ');
                }
                out.push_str(&lit.to_string());
                prev_word = true;
                prev_joint = false;
            }
            TokenTree::Punct(punct) => {
                let ch = punct.as_char();
                let spaced = matches!(ch, '=' | '+') || (ch == '-' && !prev_joint);
                if spaced && !out.ends_with(' ') {
                    out.push(' ');
                }
                out.push(ch);
                let joint = punct.spacing() == proc_macro2::Spacing::Joint;
                if matches!(ch, ',' | ';' | '=' | '+')
                    || (ch == '>' && prev_joint && out.ends_with("->"))
                {
                    out.push(' ');
                }
                // A lifetime's quote is joint with its name: `'static` stays one word.
                prev_word = false;
                prev_joint = joint;
            }
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                if prev_word && group.delimiter() == Delimiter::Brace {
                    out.push(' ');
                }
                out.push_str(open);
                write_tokens(out, group.stream());
                // A trailing comma (`(u8,)`) leaves a space before the close.
                out.truncate(out.trim_end().len());
                out.push_str(close);
                prev_word = group.delimiter() == Delimiter::None;
                prev_joint = false;
            }
        }
    }
}
