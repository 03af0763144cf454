//! Integration tests of coord live in `tests/`.
