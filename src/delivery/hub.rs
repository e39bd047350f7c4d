//! Routes server frames to users' sockets without ever waiting on one.
//!
//! Each socket owns a bounded queue drained by its own task. Delivery is `try_send` only: a
//! socket whose queue is full is too slow or dead, so it is closed and counted instead of
//! delaying everyone else's events.
//!
//! The hub is also the presence registry. A user is *online* while it holds at least one
//! socket (that decides who is rung), and *present* while it holds a socket or a connected
//! peer connection (that keeps a joined participant's seat).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;

/// Frames waiting for one socket, at most; a ringing burst is a handful of frames, so only
/// a stalled reader ever fills this.
pub const SOCKET_QUEUE: usize = 256;

/// One JSON text frame, shared by every socket it goes to.
pub type Frame = Arc<str>;

pub type SocketId = u64;

/// Why the hub asked a socket to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    None,
    /// Its queue overflowed: it could not keep up with its events.
    Overflow,
    /// The node is draining: what is queued is still sent, then close 1001.
    GoingAway,
}

#[derive(Clone)]
struct SocketHandle {
    id: SocketId,
    tx: mpsc::Sender<Frame>,
    kick: Arc<watch::Sender<Kick>>,
}

/// What a session gets when it registers: its id, its frames and its kick signal.
pub struct Registration {
    pub id: SocketId,
    pub frames: mpsc::Receiver<Frame>,
    pub kicked: watch::Receiver<Kick>,
}

pub struct Hub {
    users: DashMap<String, Vec<SocketHandle>>,
    /// Connected peer connections per user, reported by the media side.
    peers: DashMap<String, usize>,
    /// Bumped whenever a user stops being present, so a disconnect timer can tell whether
    /// the user came back (and maybe went away again) while it slept.
    offline_epochs: DashMap<String, u64>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Hub {
        Hub {
            users: DashMap::new(),
            peers: DashMap::new(),
            offline_epochs: DashMap::new(),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    pub fn register(&self, user: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, frames) = mpsc::channel(SOCKET_QUEUE);
        let (kick, kicked) = watch::channel(Kick::None);
        let mut sockets = self.users.entry(user.to_owned()).or_default();
        if sockets.is_empty() {
            self.metrics.online_users.inc();
        }
        sockets.push(SocketHandle {
            id,
            tx,
            kick: Arc::new(kick),
        });
        self.metrics.ws_connections.inc();
        Registration { id, frames, kicked }
    }

    /// Removes a socket; returns the user's new absence epoch if the user is now absent.
    pub fn unregister(&self, user: &str, id: SocketId) -> Option<u64> {
        // One shard lock over check-and-remove, so a concurrent register cannot slip between.
        let went_offline = match self.users.entry(user.to_owned()) {
            Entry::Occupied(mut entry) => {
                let before = entry.get().len();
                entry.get_mut().retain(|s| s.id != id);
                if entry.get().len() < before {
                    self.metrics.ws_connections.dec();
                }
                if entry.get().is_empty() {
                    entry.remove();
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(_) => false,
        };
        if !went_offline {
            return None;
        }
        self.metrics.online_users.dec();
        self.absent_now(user)
    }

    /// A peer connection of `user` connected.
    pub fn peer_up(&self, user: &str) {
        *self.peers.entry(user.to_owned()).or_insert(0) += 1;
    }

    /// A peer connection of `user` closed or failed; returns the new absence epoch if the user
    /// is now absent.
    pub fn peer_down(&self, user: &str) -> Option<u64> {
        let none_left = match self.peers.entry(user.to_owned()) {
            Entry::Occupied(mut entry) => {
                *entry.get_mut() = entry.get().saturating_sub(1);
                if *entry.get() == 0 {
                    entry.remove();
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(_) => false,
        };
        if none_left {
            self.absent_now(user)
        } else {
            None
        }
    }

    /// Starts a new absence if the user has neither sockets nor connected peers.
    fn absent_now(&self, user: &str) -> Option<u64> {
        if self.is_present(user) {
            return None;
        }
        let mut epoch = self.offline_epochs.entry(user.to_owned()).or_insert(0);
        *epoch += 1;
        Some(*epoch)
    }

    /// A socket or a connected peer connection: what keeps a joined participant's seat.
    pub fn is_present(&self, user: &str) -> bool {
        self.is_online(user) || self.peers.get(user).is_some_and(|n| *n > 0)
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|s| !s.is_empty())
    }

    /// The number of absences so far (0 if never): a disconnect timer remembers it to tell
    /// later whether the user came back in between.
    pub fn absence_epoch(&self, user: &str) -> u64 {
        self.offline_epochs.get(user).map_or(0, |e| *e)
    }

    /// True while the user has not been present since the absence numbered `epoch` began.
    pub fn still_absent_since(&self, user: &str, epoch: u64) -> bool {
        !self.is_present(user) && self.absence_epoch(user) == epoch
    }

    /// Queues `frame` on every socket of `user`; never waits.
    pub fn send_to_user(&self, user: &str, frame: &Frame) {
        let Some(sockets) = self.users.get(user) else {
            return;
        };
        for socket in sockets.iter() {
            self.push(socket, frame);
        }
    }

    /// Queues `frame` on one socket of `user`; false if that socket is gone.
    pub fn send_to_socket(&self, user: &str, id: SocketId, frame: &Frame) -> bool {
        if let Some(sockets) = self.users.get(user)
            && let Some(socket) = sockets.iter().find(|s| s.id == id)
        {
            self.push(socket, frame);
            return true;
        }
        false
    }

    fn push(&self, socket: &SocketHandle, frame: &Frame) {
        match socket.tx.try_send(frame.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Kicking is idempotent: later frames to the same socket just drop.
                if *socket.kick.borrow() == Kick::None {
                    tracing::warn!(socket = socket.id, "socket queue overflowed; closing it");
                    self.metrics.ws_overflow_closes_total.inc();
                    let _ = socket.kick.send(Kick::Overflow);
                }
            }
            // The session is already shutting down and will unregister itself.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    pub fn online_users(&self) -> usize {
        self.users.len()
    }

    /// Open sockets, over all users.
    pub fn socket_count(&self) -> usize {
        self.users.iter().map(|sockets| sockets.len()).sum()
    }

    /// Asks every socket to close with 1001 after the frames already queued for it; returns
    /// how many were asked.
    pub fn close_all_going_away(&self) -> usize {
        let mut asked = 0;
        for sockets in self.users.iter() {
            for socket in sockets.iter() {
                going_away(socket);
                asked += 1;
            }
        }
        asked
    }

    /// Asks one socket to close with 1001 (one registered while the others were being closed).
    pub fn close_going_away(&self, user: &str, id: SocketId) {
        if let Some(sockets) = self.users.get(user)
            && let Some(socket) = sockets.iter().find(|s| s.id == id)
        {
            going_away(socket);
        }
    }
}

/// A socket already kicked keeps its first reason.
fn going_away(socket: &SocketHandle) {
    socket.kick.send_if_modified(|kick| {
        let first = *kick == Kick::None;
        if first {
            *kick = Kick::GoingAway;
        }
        first
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(Arc::new(Metrics::new()))
    }

    #[test]
    fn presence_follows_the_last_socket() {
        let hub = hub();
        let a = hub.register("alice");
        let b = hub.register("alice");
        assert!(hub.is_online("alice"));
        assert_eq!(hub.unregister("alice", a.id), None);
        let epoch = hub.unregister("alice", b.id).expect("went offline");
        assert!(!hub.is_online("alice"));
        assert!(hub.still_absent_since("alice", epoch));
        let c = hub.register("alice");
        assert!(!hub.still_absent_since("alice", epoch), "came back");
        let later = hub.unregister("alice", c.id).expect("offline again");
        assert!(!hub.still_absent_since("alice", epoch), "a newer absence");
        assert!(hub.still_absent_since("alice", later));
        assert_eq!(hub.metrics.ws_connections.get(), 0);
        assert_eq!(hub.metrics.online_users.get(), 0);
    }

    #[test]
    fn a_connected_peer_keeps_a_user_present_without_sockets() {
        let hub = hub();
        let socket = hub.register("bob");
        hub.peer_up("bob");
        assert_eq!(hub.unregister("bob", socket.id), None, "media still up");
        assert!(!hub.is_online("bob"));
        assert!(hub.is_present("bob"));
        let epoch = hub.peer_down("bob").expect("now absent");
        assert!(hub.still_absent_since("bob", epoch));
        assert_eq!(hub.peer_down("bob"), None, "no double absence");
    }

    #[test]
    fn a_full_queue_kicks_only_that_socket() {
        let hub = hub();
        let mut slow = hub.register("slow");
        let mut fast = hub.register("fast");
        let frame: Frame = Arc::from("{}");
        for _ in 0..SOCKET_QUEUE + 10 {
            hub.send_to_user("slow", &frame);
            hub.send_to_user("fast", &frame);
            // The fast socket keeps reading.
            assert!(fast.frames.try_recv().is_ok());
        }
        assert_eq!(*slow.kicked.borrow_and_update(), Kick::Overflow);
        assert_eq!(*fast.kicked.borrow(), Kick::None);
        assert_eq!(hub.metrics.ws_overflow_closes_total.get(), 1);
        let mut queued = 0;
        while slow.frames.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, SOCKET_QUEUE, "the queue is bounded");
    }

    #[test]
    fn closing_all_asks_every_socket_once_and_keeps_an_overflow() {
        let hub = hub();
        let mut a = hub.register("alice");
        let mut b = hub.register("bob");
        let frame: Frame = Arc::from("{}");
        for _ in 0..SOCKET_QUEUE + 1 {
            hub.send_to_user("bob", &frame);
        }
        assert_eq!(hub.socket_count(), 2);
        assert_eq!(hub.close_all_going_away(), 2);
        assert_eq!(*a.kicked.borrow_and_update(), Kick::GoingAway);
        assert_eq!(*b.kicked.borrow_and_update(), Kick::Overflow);
        assert!(a.frames.try_recv().is_err(), "no frame of its own");
    }

    #[test]
    fn frames_reach_every_device_of_a_user() {
        let hub = hub();
        let mut phone = hub.register("bob");
        let mut laptop = hub.register("bob");
        let frame: Frame = Arc::from("{\"type\":\"call:incoming\"}");
        hub.send_to_user("bob", &frame);
        hub.send_to_user("nobody", &frame);
        assert_eq!(&*phone.frames.try_recv().unwrap(), &*frame);
        assert_eq!(&*laptop.frames.try_recv().unwrap(), &*frame);
        hub.send_to_socket("bob", phone.id, &frame);
        assert!(phone.frames.try_recv().is_ok());
        assert!(laptop.frames.try_recv().is_err());
    }
}
