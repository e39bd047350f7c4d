//! Delivery of server events to users' sockets, wherever those sockets are held.
//!
//! The call service and the media bridge decide *what* a user must hear; this module decides
//! *how* it reaches them. Neither `http` nor `ws` owns it: the WebSocket sessions register
//! their sockets here, and the services send through the [`Delivery`] interface without
//! knowing whether the recipient's socket is on this node.
//!
//! - [`hub`]: this node's sockets, each with its own bounded queue, and the presence that
//!   follows from them.
//!
//! On a single node the hub itself is the [`Delivery`]: it holds every socket there is.

pub mod hub;

pub use hub::{Frame, Hub, Kick, Registration, SocketId};

/// What a handled request sends back: the `ack`'s data, and events that must follow the ack on
/// the same socket (the server's candidates after its answer, contract section 6).
pub struct Reply {
    pub data: serde_json::Value,
    pub then: Vec<Frame>,
}

impl From<serde_json::Value> for Reply {
    fn from(data: serde_json::Value) -> Self {
        Self {
            data,
            then: Vec::new(),
        }
    }
}

/// Where the services' frames go. Every method queues and returns at once: a decision is
/// never held up by a slow or distant socket.
///
/// A cluster deployment puts a second implementation behind this interface, one that also
/// reaches sockets held by other nodes; the services stay as they are.
pub trait Delivery: Send + Sync {
    /// Queues `frame` on every socket `user` holds.
    fn to_user(&self, user: &str, frame: &Frame);

    /// Queues `frame` on one socket of `user`; false if that socket is gone, so the caller
    /// can fall back to all of the user's sockets.
    fn to_socket(&self, user: &str, socket: SocketId, frame: &Frame) -> bool;

    /// Whether `user` holds at least one socket: that decides who is rung and who is
    /// missed at once.
    fn is_online(&self, user: &str) -> bool;
}

/// The single-node delivery: every socket of the deployment is in this node's hub.
impl Delivery for Hub {
    fn to_user(&self, user: &str, frame: &Frame) {
        self.send_to_user(user, frame);
    }

    fn to_socket(&self, user: &str, socket: SocketId, frame: &Frame) -> bool {
        self.send_to_socket(user, socket, frame)
    }

    fn is_online(&self, user: &str) -> bool {
        Hub::is_online(self, user)
    }
}
