//! Error collection: every misuse is reported, each at its own token, in one compile.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::thread;

use proc_macro2::Span;

/// Gathers `syn::Error`s while the input is read and checked.
///
/// It must be consumed with [`check`](Ctxt::check): dropping it unchecked panics (outside an
/// unwind), so an error can never be collected and then forgotten.
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
    checked: Cell<bool>,
}

impl Ctxt {
    pub fn new() -> Self {
        Ctxt::default()
    }

    /// An error whose squiggle covers `span`.
    pub fn error_at(&self, span: Span, msg: impl Display) {
        self.errors.borrow_mut().push(syn::Error::new(span, msg));
    }

    pub fn syn_error(&self, err: syn::Error) {
        self.errors.borrow_mut().push(err);
    }

    pub fn darling_error(&self, err: darling::Error) {
        self.syn_error(err.into());
    }

    /// All errors combined into one (each keeps its span), or `Ok` if there were none.
    pub fn check(self) -> syn::Result<()> {
        self.checked.set(true);
        let mut errors = self.errors.take().into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for rest in errors {
            combined.combine(rest);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !self.checked.get() && !thread::panicking() {
            panic!("coord-derive bug: errors were collected but never checked");
        }
    }
}
