//! Smoke checks of the kernel that `cargo xtask vm-test` boots: bpffs, loading and running a
//! hand-assembled XDP program, veth pairs in a network namespace, and the agent's XDP object.
//! The checks live in `tests/smoke.rs`; they need root, so the crate stays out of the
//! workspace's default members.
