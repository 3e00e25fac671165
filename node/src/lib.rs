//! The parts of the `ferry` node other programs and tests reuse: node identity, TLS, the
//! wire protocol and the link actors that carry a pipeline's messages between nodes, and the
//! node's config file.

pub mod config;
pub mod duration;
pub mod remote;
