//! Playbooks close the loop from L7 offences to the NIC: blocked requests are counted per
//! source in a sliding window, and tiers fire actions (ban at the NIC, throttle, notify).

pub mod config;
pub mod engine;
pub mod executor;

#[cfg(test)]
mod tests;
