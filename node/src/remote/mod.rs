//! Remote targets: node identities, mutual TLS, the framed CBOR protocol, and the link
//! actors that make an Applier on another node look like a local one.

pub mod attached;
pub mod client;
pub mod codec;
pub mod fit;
pub mod fuzz;
pub mod identity;
pub mod metered;
pub mod nodeid;
pub mod parts;
pub mod protocol;
pub mod server;
pub mod tls;
pub mod url;
