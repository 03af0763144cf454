//! Every misuse of `#[derive(CoordConfig)]` is a compile error at the offending token.
//! Regenerate the expected output with `TRYBUILD=overwrite`, then read it.

#[test]
fn derive_misuse_is_a_compile_error_at_the_offending_token() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
