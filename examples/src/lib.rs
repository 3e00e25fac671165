//! Examples and benchmark support for Ferry.

pub mod benchkit;
pub mod compare;
pub mod procfs;
pub mod workload;
