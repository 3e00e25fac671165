//! Integration test support for Ferry.
