//! Integration tests live in `tests/`; run them with `cargo xtask it`.
