//! Examples and benchmark support for Ferry.

pub mod benchkit;
pub mod compare;
pub mod crashcheck;
pub mod embed;
pub mod procfs;
pub mod services;
pub mod tools;
pub mod workload;
