//! Confab: a self-hosted SFU media server with integrated call signaling.
//!
//! This crate is the wiring: configuration, HTTP and WebSocket handlers, the history store,
//! authentication and metrics. Calls are decided in `confab-signaling`; media is forwarded by
//! `confab-sfu`.

pub mod announce;
pub mod app;
pub mod auth;
pub mod calls;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod drain;
pub mod engine_metrics;
pub mod http;
pub mod ice;
pub mod media;
pub mod metrics;
pub mod quality;
pub mod store;
pub mod webhooks;
pub mod writer;
pub mod ws;
