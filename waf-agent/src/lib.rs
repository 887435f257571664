//! waf-agent: an edge security agent. The XDP filter at the NIC (`xdp`), reputation feeds and
//! bans, playbooks, an inspecting HTTP proxy, and the control plane that steers them.

pub mod bans;
pub mod config;
pub mod feeds;
pub mod geo;
pub mod store;
pub mod xdp;
