//! Code generation from the checked model, and the fallback impl on errors.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::{Field, Input};
use crate::attr::{self, DefaultValue};
use crate::check;
use crate::ctxt::Ctxt;

pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let attrs = attr::Container::from_attrs(&cx, &input.attrs);
    let krate = check::crate_path(&cx, &attrs);
    let model = Input::from_syn(&cx, input, attrs);
    if let Some(model) = &model {
        check::check(&cx, model);
    }
    match (cx.check(), model, krate) {
        (Ok(()), Some(model), Some(krate)) => expand(&model, &krate),
        (Err(errors), _, krate) => fallback(input, errors, krate.as_ref()),
        // `from_syn` and `crate_path` only give nothing after reporting why; keep the promise
        // of one error anyway rather than panic in the user's build.
        (Ok(()), _, krate) => fallback(
            input,
            syn::Error::new(Span::call_site(), "#[derive(CoordConfig)] failed"),
            krate.as_ref(),
        ),
    }
}

/// `krate` is the path to the coord crate (`::coord` unless `#[coord(crate = "...")]`).
fn expand(input: &Input, krate: &syn::Path) -> TokenStream {
    let ident = input.ident;
    let generics = bounded(input, krate);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let prefix = match &input.attrs.prefix {
        Some(prefix) => {
            let value = &prefix.value;
            quote_spanned!(prefix.span=> ::core::option::Option::Some(#value))
        }
        None => quote!(::core::option::Option::None),
    };
    let has_prefix = input.attrs.prefix.as_ref().map(|_| {
        quote! {
            #[automatically_derived]
            impl #impl_generics #krate::config::HasPrefix for #ident #ty_generics #where_clause {}
        }
    });
    let validate = input.attrs.validate.as_ref().map(|path| {
        quote_spanned! {path.span()=>
            fn validate(&self) -> ::core::result::Result<(), ::std::string::String> {
                #path(self)
            }
        }
    });

    let default_fns = input.fields.iter().filter_map(default_fn);
    let field_infos = input.fields.iter().map(|field| field_info(field, krate));
    let reads = input.fields.iter().map(|field| read(field, krate));
    let writes = input.fields.iter().map(|field| write(field, krate));
    let field_count = input.fields.len();
    let reads: Vec<TokenStream> = reads.collect();
    // One body for both: `__prev` is the value last built (`None` on a first build), which
    // map fields use to re-read only changed entries and nested structs pass on.
    let build = quote! {
        let __value = #ident {
            #(#reads)*
        };
        #krate::config::Source::validated(__source, __value)
    };
    let rebuild = input
        .fields
        .iter()
        .any(|field| field.attrs.map.is_some() || field.attrs.nested.is_some())
        .then(|| {
            quote! {
                fn rebuild(
                    &self,
                    __source: &#krate::config::Source<'_>,
                ) -> ::core::result::Result<Self, #krate::Error> {
                    let __prev: ::core::option::Option<&Self> = ::core::option::Option::Some(self);
                    #build
                }
            }
        });

    let default_fns: Vec<TokenStream> = default_fns.collect();
    let default_impl = (!default_fns.is_empty()).then(|| {
        quote! {
            // Inherent, so a default may say `Self::CONSTANT`; private and `__coord_`-named,
            // so it is invisible outside the module and cannot clash with the user's methods.
            #[automatically_derived]
            impl #impl_generics #ident #ty_generics #where_clause {
                #(#default_fns)*
            }
        }
    });

    quote! {
        const _: () = {
            #default_impl

            #[automatically_derived]
            impl #impl_generics #krate::config::CoordConfig for #ident #ty_generics #where_clause {
                const PREFIX: ::core::option::Option<&'static str> = #prefix;

                fn fields() -> ::std::vec::Vec<#krate::config::FieldInfo> {
                    let mut __fields = ::std::vec::Vec::with_capacity(#field_count);
                    #(#field_infos)*
                    __fields
                }

                fn from_source(
                    __source: &#krate::config::Source<'_>,
                ) -> ::core::result::Result<Self, #krate::Error> {
                    let __prev: ::core::option::Option<&Self> = ::core::option::Option::None;
                    #build
                }

                #rebuild

                fn to_values(
                    &self,
                ) -> ::core::result::Result<#krate::config::Values, #krate::Error> {
                    let mut __values = ::std::vec::Vec::with_capacity(#field_count);
                    #(#writes)*
                    ::core::result::Result::Ok(__values)
                }

                #validate
            }

            #has_prefix
        };
    }
}

/// The struct's generics with the bounds the generated code needs, as serde_derive adds
/// `T: Serialize`: every type parameter `Send + Sync + 'static` (a `CoordConfig` is shared
/// across threads and reloads), and each field whose type names a parameter bounded by what
/// its code calls (JSON both ways for a value, `CoordConfig` for a nested struct, `MapField`
/// for a map, `Default` for `#[coord(default)]`). Fields of concrete types get no bound: their
/// errors stay at the field, as without generics.
fn bounded(input: &Input, krate: &syn::Path) -> syn::Generics {
    let mut generics = input.generics.clone();
    let params: Vec<&syn::Ident> = input.generics.type_params().map(|p| &p.ident).collect();
    if !input.fields.iter().any(|field| field.generic) && params.is_empty() {
        return generics;
    }
    let json = quote! {
        #krate::__private::serde::de::DeserializeOwned + #krate::__private::serde::Serialize
    };
    let mut predicates: Vec<TokenStream> = params
        .iter()
        .map(|param| quote!(#param: ::core::marker::Send + ::core::marker::Sync + 'static))
        .collect();
    for field in input.fields.iter().filter(|field| field.generic) {
        let ty = field.ty;
        let map = quote!(#krate::config::MapField);
        predicates.push(match (&field.attrs.map, &field.attrs.nested) {
            (Some(_), Some(_)) => quote! {
                #ty: #map, <#ty as #map>::Value: #krate::config::CoordConfig
            },
            (Some(_), None) => quote!(#ty: #map, <#ty as #map>::Value: #json),
            (None, Some(_)) => quote!(#ty: #krate::config::CoordConfig),
            (None, None) => quote!(#ty: #json),
        });
        if matches!(
            field.attrs.default.as_ref().map(|d| &d.value),
            Some(DefaultValue::Trait)
        ) {
            predicates.push(quote!(#ty: ::core::default::Default));
        }
    }
    let where_clause = generics.make_where_clause();
    for predicate in predicates {
        // Each is a list of predicates quoted above, which always parses.
        if let Ok(parsed) = syn::parse::Parser::parse2(
            syn::punctuated::Punctuated::<syn::WherePredicate, syn::Token![,]>::parse_terminated,
            predicate,
        ) {
            where_clause.predicates.extend(parsed);
        }
    }
    generics
}

fn default_fn_ident(field: &Field) -> syn::Ident {
    format_ident!("__coord_default_{}", field.ident.unraw())
}

/// One function per default, so the user's expression is written out (and type-checked, and
/// reported) once although both `fields()` and `from_source` need it.
fn default_fn(field: &Field) -> Option<TokenStream> {
    let default = field.attrs.default.as_ref()?;
    let name = default_fn_ident(field);
    let ty = field.ty;
    let body = match &default.value {
        DefaultValue::Trait => quote_spanned!(default.span=> ::core::default::Default::default()),
        DefaultValue::Expr(expr) => quote!(#expr),
    };
    Some(quote! {
        #[doc(hidden)]
        fn #name() -> #ty {
            #body
        }
    })
}

fn field_info(field: &Field, krate: &syn::Path) -> TokenStream {
    let key = field.key();
    let ty = field.ty;
    // Spanned at the field type, so "X does not implement CoordConfig / Serialize" points
    // at the type the user wrote. Nested types are named as `<T as CoordConfig>` in all three
    // methods so a type that is not CoordConfig gives three identical errors, which rustc
    // prints once.
    if field.attrs.map.is_some() {
        let type_name = if field.generic {
            quote!(::core::any::type_name::<#ty>())
        } else {
            let name = field.type_name();
            quote!(#name)
        };
        let doc = &field.doc;
        if field.attrs.nested.is_some() {
            return quote_spanned! {ty.span()=>
                __fields.push(#krate::config::FieldInfo::nested_map(
                    #key,
                    #type_name,
                    #doc,
                    <<#ty as #krate::config::MapField>::Value as #krate::config::CoordConfig>::fields(),
                ));
            };
        }
        // Call-site span, as `read_map`'s bound is reported: a type that is not a `MapField`
        // then gives one error, not a second one at the type.
        let schema = (!field.generic)
            .then(|| json_schema(&quote!(<#ty as #krate::config::MapField>::Value), krate));
        return quote! {
            __fields.push(#krate::config::FieldInfo::map(#key, #type_name, #doc) #schema);
        };
    }
    if field.attrs.nested.is_some() {
        return quote_spanned! {ty.span()=>
            __fields.extend(#krate::config::FieldInfo::nested(
                #key,
                <#ty as #krate::config::CoordConfig>::fields(),
            ));
        };
    }
    // A parameter's name says nothing about the type: the instance's (`u32` for
    // `Limits<u32>`) goes into the description and the published schema.
    let type_name = if field.generic {
        quote!(::core::any::type_name::<#ty>())
    } else {
        let name = field.type_name();
        quote!(#name)
    };
    let doc = &field.doc;
    let secret = field.attrs.secret.map(|_| quote!(.secret()));
    let default = if field.attrs.default.is_some() {
        let name = default_fn_ident(field);
        Some(quote_spanned!(ty.span()=> .with_default::<#ty>(Self::#name)))
    } else if field.option {
        Some(quote_spanned!(ty.span()=> .with_default::<#ty>(|| ::core::option::Option::None)))
    } else {
        None
    };
    // Whether a parameter implements `JsonSchema` is only known per instance, past where the
    // probe decides: a generic field carries no schema.
    let schema = (!field.generic).then(|| json_schema(&quote!(#ty), krate));
    let aliases = (!field.attrs.aliases.is_empty()).then(|| {
        let aliases = &field.attrs.aliases;
        quote!(.with_aliases(&[#(#aliases),*]))
    });
    let env = field.attrs.env.as_ref().map(|var| quote!(.with_env(#var)));
    quote! {
        __fields.push(
            #krate::config::FieldInfo::new(#key, #type_name, #doc)
                #secret #default #aliases #env #schema
        );
    }
}

/// `.with_json_schema(..)` of `ty`: coord's `__field_json_schema!` gives `Some(schema)` when
/// its `schema` feature is on and `ty` implements `schemars::JsonSchema`, else `None`, so the
/// derive need not know whether the feature is on.
fn json_schema(ty: &TokenStream, krate: &syn::Path) -> TokenStream {
    quote! {
        .with_json_schema(#krate::__field_json_schema!(#ty))
    }
}

fn read(field: &Field, krate: &syn::Path) -> TokenStream {
    let ident = field.ident;
    let key = field.key();
    let ty = field.ty;
    let value = if field.attrs.map.is_some() {
        let read = if field.attrs.nested.is_some() {
            quote!(read_nested_map)
        } else {
            quote!(read_map)
        };
        quote_spanned! {ty.span()=>
            #krate::config::#read::<#ty>(
                __source,
                #key,
                ::core::option::Option::map(__prev, |__prev| &__prev.#ident),
            )
        }
    } else if field.attrs.nested.is_some() {
        quote_spanned! {ty.span()=>
            match __prev {
                ::core::option::Option::Some(__prev) => <#ty as #krate::config::CoordConfig>::rebuild(
                    &__prev.#ident,
                    &#krate::config::Source::at(__source, #key),
                ),
                ::core::option::Option::None => <#ty as #krate::config::CoordConfig>::from_source(
                    &#krate::config::Source::at(__source, #key),
                ),
            }
        }
    } else {
        // The key to read: the field's own, or the first alias stored while it is missing.
        let read_key = if field.attrs.aliases.is_empty() {
            quote!(#key)
        } else {
            let aliases = &field.attrs.aliases;
            quote!(#krate::config::Source::resolve(__source, #key, &[#(#aliases),*]))
        };
        if field.attrs.default.is_some() {
            let name = default_fn_ident(field);
            quote_spanned! {ty.span()=>
                #krate::config::Source::get_or_else::<#ty>(__source, #read_key, Self::#name)
            }
        } else if field.option {
            // As serde does for an absent `Option` field: missing means `None`.
            quote_spanned! {ty.span()=>
                #krate::config::Source::get_or_else::<#ty>(
                    __source,
                    #read_key,
                    || ::core::option::Option::None,
                )
            }
        } else {
            quote_spanned!(ty.span()=> #krate::config::Source::get::<#ty>(__source, #read_key))
        }
    };
    // An environment override wins over whatever the store holds, at every build.
    let value = match &field.attrs.env {
        Some(var) => quote_spanned! {ty.span()=>
            match #krate::config::env_override::<#ty>(#var) {
                ::core::result::Result::Ok(::core::option::Option::Some(__value)) => {
                    ::core::result::Result::Ok(__value)
                }
                ::core::result::Result::Ok(::core::option::Option::None) => #value,
                ::core::result::Result::Err(__error) => ::core::result::Result::Err(__error),
            }
        },
        None => value,
    };
    match &field.attrs.validate {
        // The check runs on whatever the field holds, read, aliased or defaulted, as the
        // struct's own `validate` sees it. A plain call, so `&String` coerces to a `fn(&str)`
        // as in any call; spanned at the string, so a wrong signature is an error there.
        Some(path) => {
            let check = quote_spanned! {path.span()=>
                let __check: ::core::result::Result<(), ::std::string::String> = #path(&__field);
            };
            quote! {
                #ident: {
                    let __field: #ty = #value?;
                    #check
                    #krate::config::Source::validated_field(__source, #key, __field, __check)?
                },
            }
        }
        None => quote!(#ident: #value?,),
    }
}

fn write(field: &Field, krate: &syn::Path) -> TokenStream {
    let ident = field.ident;
    let key = field.key();
    let ty = field.ty;
    if field.attrs.map.is_some() {
        let write = if field.attrs.nested.is_some() {
            quote!(write_nested_map)
        } else {
            quote!(write_map)
        };
        quote_spanned! {ty.span()=>
            __values.extend(#krate::config::#write::<#ty>(#key, &self.#ident)?);
        }
    } else if field.attrs.nested.is_some() {
        quote_spanned! {ty.span()=>
            __values.extend(#krate::config::nested_values(
                #key,
                <#ty as #krate::config::CoordConfig>::to_values(&self.#ident),
            )?);
        }
    } else {
        quote_spanned! {ty.span()=>
            __values.push(#krate::config::encode::<#ty>(#key, &self.#ident)?);
        }
    }
}

/// The errors, plus an impl with no body so the rest of the user's code (a `live::<T>()`, a
/// `publish`) type-checks and the user sees the one real error, not a cascade. Without a
/// usable crate path (`krate` is `None`) there is no naming the traits, so only the errors.
fn fallback(input: &DeriveInput, errors: syn::Error, krate: Option<&syn::Path>) -> TokenStream {
    let errors = errors.to_compile_error();
    let Some(krate) = krate else {
        return errors;
    };
    if !input.generics.params.is_empty() {
        return errors;
    }
    let ident = &input.ident;
    quote! {
        #errors

        #[automatically_derived]
        impl #krate::config::CoordConfig for #ident
        where
            // A bound that names a lifetime is not checked at the impl, so a struct that is
            // not Send (the real problem is reported above) adds no error of its own here.
            for<'__fallback> #ident: ::core::marker::Send + ::core::marker::Sync,
        {
            const PREFIX: ::core::option::Option<&'static str> = ::core::option::Option::None;

            fn fields() -> ::std::vec::Vec<#krate::config::FieldInfo> {
                ::core::unreachable!()
            }

            fn from_source(
                _: &#krate::config::Source<'_>,
            ) -> ::core::result::Result<Self, #krate::Error> {
                ::core::unreachable!()
            }

            fn to_values(
                &self,
            ) -> ::core::result::Result<#krate::config::Values, #krate::Error> {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl #krate::config::HasPrefix for #ident
        where
            for<'__fallback> #ident: ::core::marker::Send + ::core::marker::Sync,
        {
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(input: TokenStream) -> String {
        let input: DeriveInput = syn::parse2(input).unwrap();
        derive(&input).to_string()
    }

    #[test]
    fn crate_path_replaces_every_mention_of_coord() {
        let out = expand_str(quote! {
            #[coord(crate = "my_platform::coord", prefix = "/config/x")]
            struct X {
                #[coord(default)]
                a: u32,
                b: Option<u32>,
                #[coord(nested)]
                n: N,
            }
        });

        assert!(out.contains("impl my_platform :: coord :: config :: CoordConfig for X"));
        assert!(out.contains("impl my_platform :: coord :: config :: HasPrefix for X"));
        assert!(out.contains("my_platform :: coord :: __field_json_schema ! (u32)"));
        let stripped = out.replace("my_platform :: coord", "");
        assert!(!stripped.contains("coord ::"), "{out}");
    }

    #[test]
    fn without_a_crate_path_the_code_names_absolute_coord() {
        let out = expand_str(quote! {
            struct X { a: u32 }
        });

        assert!(
            out.contains("impl :: coord :: config :: CoordConfig for X"),
            "{out}"
        );
    }

    #[test]
    fn the_fallback_impl_uses_the_crate_path_too() {
        let out = expand_str(quote! {
            #[coord(crate = "my_platform::coord", prefix = "relative")]
            struct X { a: u32 }
        });

        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("impl my_platform :: coord :: config :: CoordConfig for X"));
        assert!(
            !out.replace("my_platform :: coord", "").contains("coord ::"),
            "{out}"
        );
    }

    #[test]
    fn a_generic_struct_bounds_its_parameters_and_generic_fields_only() {
        let out = expand_str(quote! {
            #[coord(prefix = "/config/x")]
            struct X<T, const N: usize> where T: Clone {
                a: T,
                #[coord(nested)]
                b: Inner<T>,
                c: [u32; N],
                d: u32,
            }
        });

        assert!(
            out.contains(
                "impl < T , const N : usize > :: coord :: config :: CoordConfig for X < T , N >"
            ),
            "{out}"
        );
        assert!(
            out.contains("T : Clone"),
            "the user's where clause is kept: {out}"
        );
        assert!(
            out.contains("T : :: core :: marker :: Send + :: core :: marker :: Sync + 'static"),
            "{out}"
        );
        assert!(
            out.contains("T : :: coord :: __private :: serde :: de :: DeserializeOwned"),
            "{out}"
        );
        assert!(
            out.contains("Inner < T > : :: coord :: config :: CoordConfig"),
            "{out}"
        );
        assert!(
            out.contains("[u32 ; N] : :: coord :: __private :: serde"),
            "{out}"
        );
        assert!(
            !out.contains("u32 : :: coord"),
            "a concrete field gets no bound: {out}"
        );
    }

    #[test]
    fn a_crate_path_that_does_not_parse_gives_only_the_error() {
        let out = expand_str(quote! {
            #[coord(crate = "not a path")]
            struct X { a: u32 }
        });

        assert!(out.contains("compile_error"), "{out}");
        assert!(!out.contains("impl"), "{out}");
    }
}
