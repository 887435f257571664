//! Test hosts: network namespaces joined by veth, created by a test and always removed.
//! Addresses come from 198.18.0.0/15 and 2001:2::/48 only.

use std::process::{Command, Output};

/// Runs a command, panicking with the command line and its output when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two hosts: the filter side (`host`, with interface `host_if` where XDP attaches) and a
/// `peer` namespace whose interface carries several source addresses.
pub struct Lab {
    pub host: String,
    pub peer: String,
    pub host_if: String,
    pub peer_if: String,
}

impl Lab {
    /// host_if has 198.18.<net>.1/24 and 2001:2:0:<net>::1/64; the peer gets `.2`, `::2`
    /// plus the extra addresses given (IPv4 in the /24, IPv6 in the /64).
    pub fn new(net: u8, extra_peer_addrs: &[&str]) -> Lab {
        let id = crate::unique("w");
        let lab = Lab {
            host: format!("{id}h"),
            peer: format!("{id}p"),
            host_if: format!("{id}a"),
            peer_if: format!("{id}b"),
        };
        sh(&["ip", "netns", "add", &lab.host]);
        sh(&["ip", "netns", "add", &lab.peer]);
        sh(&[
            "ip",
            "-n",
            &lab.host,
            "link",
            "add",
            &lab.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &lab.peer_if,
            "netns",
            &lab.peer,
        ]);
        for (ns, ifname, last) in [(&lab.host, &lab.host_if, 1), (&lab.peer, &lab.peer_if, 2)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("198.18.{net}.{last}/24"),
                "dev",
                ifname,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("2001:2:0:{net}::{last}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for a in extra_peer_addrs {
            let with_len = if a.contains(':') {
                format!("{a}/64")
            } else {
                format!("{a}/24")
            };
            let mut args = vec![
                "ip",
                "-n",
                &lab.peer,
                "addr",
                "add",
                &with_len,
                "dev",
                &lab.peer_if,
            ];
            if a.contains(':') {
                args.push("nodad");
            }
            sh(&args);
        }
        lab
    }

    /// Runs `args` inside the host namespace (only the network namespace, so pins are seen).
    pub fn in_host(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.host))
            .args(args)
            // The lockout guards read these; a test run from an SSH session must not trip
            // them unless a test sets them itself.
            .env_remove("SSH_CLIENT")
            .env_remove("SSH_CONNECTION")
            .env_remove("SUDO_USER");
        c
    }

    /// Starts pinging `dst` from `src` in the peer, `interval` seconds apart, until
    /// [`Pinger::finish`].
    pub fn start_ping(&self, src: &str, dst: &str, interval: &str) -> Pinger {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.peer, "ping", "-n", "-q"])
            .args(["-i", interval, "-W", "1", "-I", src, dst])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("running ping");
        Pinger { child }
    }

    /// Sends `count` pings from `src` in the peer to `dst`, `interval` seconds apart;
    /// returns how many were answered.
    pub fn ping(&self, src: &str, dst: &str, count: u32, interval: &str) -> u32 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.peer, "ping", "-n", "-q", "-c"])
            .arg(count.to_string())
            .args(["-i", interval, "-W", "1", "-I", src, dst])
            .output()
            .expect("running ping");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains("received"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// A ping running in the background.
pub struct Pinger {
    child: std::process::Child,
}

impl Pinger {
    /// Stops the ping (SIGINT, so it prints its summary); returns (sent, answered).
    pub fn finish(self) -> (u32, u32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains("received")).unwrap_or("");
        let field = |i: usize| {
            line.split(", ")
                .nth(i)
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (field(0), field(1))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer])
            .output();
    }
}
