//! Code generation from the checked model, and the fallback impl on errors.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::{Field, Input};
use crate::attr::DefaultValue;
use crate::check;
use crate::ctxt::Ctxt;

pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let model = Input::from_syn(&cx, input);
    if let Some(model) = &model {
        check::check(&cx, model);
    }
    match (cx.check(), model) {
        (Ok(()), Some(model)) => expand(&model),
        (Err(errors), _) => fallback(input, errors),
        // `from_syn` only gives no model after reporting why; keep the promise of one error
        // anyway rather than panic in the user's build.
        (Ok(()), None) => fallback(
            input,
            syn::Error::new(Span::call_site(), "#[derive(CoordConfig)] failed"),
        ),
    }
}

fn expand(input: &Input) -> TokenStream {
    let ident = input.ident;

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
            impl ::coord::config::HasPrefix for #ident {}
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
    let field_infos = input.fields.iter().map(field_info);
    let reads = input.fields.iter().map(read);
    let writes = input.fields.iter().map(write);
    let field_count = input.fields.len();

    let default_fns: Vec<TokenStream> = default_fns.collect();
    let default_impl = (!default_fns.is_empty()).then(|| {
        quote! {
            // Inherent, so a default may say `Self::CONSTANT`; private and `__coord_`-named,
            // so it is invisible outside the module and cannot clash with the user's methods.
            #[automatically_derived]
            impl #ident {
                #(#default_fns)*
            }
        }
    });

    quote! {
        const _: () = {
            #default_impl

            #[automatically_derived]
            impl ::coord::config::CoordConfig for #ident {
                const PREFIX: ::core::option::Option<&'static str> = #prefix;

                fn fields() -> ::std::vec::Vec<::coord::config::FieldInfo> {
                    let mut __fields = ::std::vec::Vec::with_capacity(#field_count);
                    #(#field_infos)*
                    __fields
                }

                fn from_source(
                    __source: &::coord::config::Source<'_>,
                ) -> ::core::result::Result<Self, ::coord::Error> {
                    let __value = #ident {
                        #(#reads)*
                    };
                    ::coord::config::Source::validated(__source, __value)
                }

                fn to_values(
                    &self,
                ) -> ::core::result::Result<::coord::config::Values, ::coord::Error> {
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

fn field_info(field: &Field) -> TokenStream {
    let key = field.key();
    let ty = field.ty;
    // Spanned at the field type, so "X does not implement CoordConfig / Serialize" points
    // at the type the user wrote. Nested types are named as `<T as CoordConfig>` in all three
    // methods so a type that is not CoordConfig gives three identical errors, which rustc
    // prints once.
    if field.attrs.nested.is_some() {
        return quote_spanned! {ty.span()=>
            __fields.extend(::coord::config::FieldInfo::nested(
                #key,
                <#ty as ::coord::config::CoordConfig>::fields(),
            ));
        };
    }
    let type_name = field.type_name();
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
    quote! {
        __fields.push(
            ::coord::config::FieldInfo::new(#key, #type_name, #doc) #secret #default
        );
    }
}

fn read(field: &Field) -> TokenStream {
    let ident = field.ident;
    let key = field.key();
    let ty = field.ty;
    let value = if field.attrs.nested.is_some() {
        quote_spanned! {ty.span()=>
            <#ty as ::coord::config::CoordConfig>::from_source(
                &::coord::config::Source::at(__source, #key),
            )
        }
    } else if field.attrs.default.is_some() {
        let name = default_fn_ident(field);
        quote_spanned! {ty.span()=>
            ::coord::config::Source::get_or_else::<#ty>(__source, #key, Self::#name)
        }
    } else if field.option {
        // As serde does for an absent `Option` field: missing means `None`.
        quote_spanned! {ty.span()=>
            ::coord::config::Source::get_or_else::<#ty>(
                __source,
                #key,
                || ::core::option::Option::None,
            )
        }
    } else {
        quote_spanned!(ty.span()=> ::coord::config::Source::get::<#ty>(__source, #key))
    };
    quote!(#ident: #value?,)
}

fn write(field: &Field) -> TokenStream {
    let ident = field.ident;
    let key = field.key();
    let ty = field.ty;
    if field.attrs.nested.is_some() {
        quote_spanned! {ty.span()=>
            __values.extend(::coord::config::nested_values(
                #key,
                <#ty as ::coord::config::CoordConfig>::to_values(&self.#ident),
            )?);
        }
    } else {
        quote_spanned! {ty.span()=>
            __values.push(::coord::config::encode::<#ty>(#key, &self.#ident)?);
        }
    }
}

/// The errors, plus an impl with no body so the rest of the user's code (a `live::<T>()`, a
/// `publish`) type-checks and the user sees the one real error, not a cascade.
fn fallback(input: &DeriveInput, errors: syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    if !input.generics.params.is_empty() {
        return errors;
    }
    let ident = &input.ident;
    quote! {
        #errors

        #[automatically_derived]
        impl ::coord::config::CoordConfig for #ident
        where
            // A bound that names a lifetime is not checked at the impl, so a struct that is
            // not Send (the real problem is reported above) adds no error of its own here.
            for<'__fallback> #ident: ::core::marker::Send + ::core::marker::Sync,
        {
            const PREFIX: ::core::option::Option<&'static str> = ::core::option::Option::None;

            fn fields() -> ::std::vec::Vec<::coord::config::FieldInfo> {
                ::core::unreachable!()
            }

            fn from_source(
                _: &::coord::config::Source<'_>,
            ) -> ::core::result::Result<Self, ::coord::Error> {
                ::core::unreachable!()
            }

            fn to_values(
                &self,
            ) -> ::core::result::Result<::coord::config::Values, ::coord::Error> {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl ::coord::config::HasPrefix for #ident
        where
            for<'__fallback> #ident: ::core::marker::Send + ::core::marker::Sync,
        {
        }
    }
}
