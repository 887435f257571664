//! waf-agent: an edge security agent. The XDP filter at the NIC (`xdp`), reputation feeds and
//! bans, playbooks, an inspecting HTTP proxy, and the control plane that steers them.

pub mod api;
pub mod bans;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod events;
pub mod feeds;
pub mod geo;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod playbooks;
pub mod proxy;
pub mod store;
pub mod xdp;
