//! waf-agent: an edge security agent. The XDP filter at the NIC (`xdp`), reputation feeds and
//! bans, playbooks, an inspecting HTTP proxy, and the control plane that steers them.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod playbooks;
pub mod xdp;
