//! Black-box tests of the `ferry` binary: one test executable, one module per area and topic.

mod util;

mod sync_dryrun;
mod sync_errors;
mod sync_initial;
mod sync_meta;
mod sync_noop;
mod sync_property;
mod sync_safety;
mod sync_skip;
mod sync_stale;
