//! Helpers shared by the integration tests.

pub mod db;
pub mod http1;
pub mod process;
pub mod server;
pub mod ws;
