//! Examples and benchmark support for Ferry.

pub mod compare;
pub mod workload;
