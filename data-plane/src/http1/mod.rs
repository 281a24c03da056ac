//! HTTP/1.1, on its own: the syntax both directions share, the server
//! codec of the fast path, the client codec of the upstream pool, the
//! framing guard that stands in front of hyper, and the upstream's header
//! fields as read. Nothing here knows routes, keys or plans: the request
//! path (`proxy`) is a caller of this module, never the reverse.
//!
//! - `syntax`: field names, lengths, token lists, the gateway's own field
//!   names, the limits table, and the rules a request head must meet
//!   ([`syntax::check_head`]), for both engines.
//! - `server`: the fast path of plain-TCP client connections.
//! - `guard`: the framing guard on the bytes hyper parses: one verdict per
//!   request head, never switched off but by a real upgrade or HTTP/2.
//! - `client`: the pooled client codec toward plain-HTTP targets.
//! - `fields`: an upstream answer's fields, carried beside the response.
//! - `timeouts`: the send deadline toward clients and the idle deadline on
//!   upstream bodies.

pub mod client;
pub mod fields;
pub mod guard;
pub mod server;
pub mod syntax;
pub mod timeouts;

pub use syntax::{Engine, Limits};
