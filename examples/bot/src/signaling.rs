//! The bot's WebSocket signaling client.
