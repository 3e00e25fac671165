//! The parts of the `ferry` node other programs and tests reuse: node identity, TLS, the
//! wire protocol and the link actors that carry a pipeline's messages between nodes, the
//! node's config file, the runtime of `ferry run`, and the web dashboard with the status
//! model it shows.

pub mod config;
pub mod dashboard;
pub mod duration;
mod readme;
pub mod remote;
pub mod runtime;
pub mod status;
pub mod stopping;
