//! One Redis connection per node, shared by every task: a `redis` connection manager, which
//! multiplexes commands over one socket and reconnects by itself after Redis restarts.
//!
//! Its retry settings are short on purpose: while Redis is down a request should fail soon with
//! `UNAVAILABLE` (contract section 10) rather than hang; the next request tries again.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::ClusterError;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection attempts behind one failing request, 50 ms apart and doubling up to 400 ms.
pub const RECONNECT_RETRIES: usize = 2;

/// Checks a Redis URL without connecting.
pub fn client(url: &str) -> Result<redis::Client, ClusterError> {
    redis::Client::open(url).map_err(ClusterError::InvalidUrl)
}

/// Connects to Redis; fails if the first connection cannot be made.
pub async fn connect(url: &str) -> Result<ConnectionManager, ClusterError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(400));
    Ok(ConnectionManager::new_with_config(client(url)?, config).await?)
}
