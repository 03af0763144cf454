//! Rust type names as people read them, from `std::any::type_name`.

/// `my_crate::config::Checkout<my_crate::Db>` → `Checkout<Db>`.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(segment_start);
            continue;
        }
        out.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            segment_start = out.len();
        }
    }
    out
}

/// True if the type named `full` (as `std::any::type_name` writes it, or as written in
/// source) holds a [`Secret`](crate::config::Secret) anywhere: `Secret<u64>`,
/// `Option<coord::config::Secret<String>>`. A type of another crate that is also called
/// `Secret` counts too: when unsure, hide.
pub(crate) fn names_secret(full: &str) -> bool {
    full.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|segment| segment == "Secret")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_names_drop_module_paths() {
        assert_eq!(short_type_name("app::config::Checkout"), "Checkout");
        assert_eq!(short_type_name("Checkout"), "Checkout");
        assert_eq!(
            short_type_name("app::Wrapper<alloc::string::String, app::db::Db>"),
            "Wrapper<String, Db>"
        );
    }

    #[test]
    fn secret_types_are_found_at_any_depth() {
        assert!(names_secret("coord::config::secret::Secret<u64>"));
        assert!(names_secret(
            "core::option::Option<coord::config::secret::Secret<alloc::string::String>>"
        ));
        assert!(!names_secret("alloc::string::String"));
        assert!(!names_secret("app::Secrets<u8>"));
        assert!(!names_secret("app::SecretSauce"));
    }
}
