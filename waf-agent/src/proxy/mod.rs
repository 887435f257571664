//! The inspecting reverse proxy.
