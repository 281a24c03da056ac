//! Config from the control plane: the `Config.Watch` client, conversion of
//! its prost messages into model types, and the `--state-dir` snapshot;
//! beside Watch, the connections API's stream (`connections`).

pub mod client;
mod connections;
pub mod convert;
pub mod state_file;

pub use client::{ConfigClient, Connection};
pub use convert::ConvertError;
pub use state_file::{StateFileError, StateWriter};
