//! The `waf-agent` binary run as a process inside a test host's network namespace.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::lab::Lab;

/// The agent binary: `WAF_AGENT_BIN`, or the debug build beside this crate.
pub fn binary() -> PathBuf {
    std::env::var_os("WAF_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/waf-agent"))
}

/// The admin API socket of the agent using `pin_dir`, so tests never reach another agent.
pub fn socket_for(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map_or("waf-test".into(), |n| n.to_string_lossy().into_owned());
    PathBuf::from("/run").join(format!("{name}.sock"))
}

/// Runs `waf-agent ARGS` to completion in the host namespace; returns (status, stdout, stderr).
pub fn cli(lab: &Lab, pin_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = lab
        .in_host(&[binary().to_str().expect("utf-8 path"), "--pin-dir"])
        .arg(pin_dir)
        .arg("--socket")
        .arg(socket_for(pin_dir))
        .args(args)
        .output()
        .expect("running waf-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `waf-agent run -c config` in the host namespace, logging to a file, and waits
    /// until it reports the filter attached to every interface.
    pub fn start(lab: &Lab, pin_dir: &Path, config: &Path, log: &Path) -> Agent {
        let file = std::fs::File::create(log).expect("log file");
        let child = lab
            .in_host(&[binary().to_str().expect("utf-8 path"), "--pin-dir"])
            .arg(pin_dir)
            .arg("--socket")
            .arg(socket_for(pin_dir))
            .args(["run", "--summary-interval", "1", "--state-dir"])
            .arg(
                log.parent()
                    .map_or_else(|| log.with_extension("state"), |d| d.join("state")),
            )
            .arg("-c")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting waf-agent");
        let agent = Agent {
            child,
            log: log.to_owned(),
        };
        // Generous: under software emulation (the VM suite) loading the rules alone takes seconds.
        agent.wait_for_log("attached", Duration::from_secs(60));
        agent
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent log never showed {needle:?}:\n{}", self.log_text());
    }

    /// SIGKILL: no cleanup of any kind runs.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(mut self) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// XDP programs attached to `iface` in the host namespace, by id.
pub fn attached_programs(lab: &Lab, iface: &str) -> Vec<u32> {
    let out = lab
        .in_host(&["ip", "-d", "link", "show", "dev", iface])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(3)
        .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
        .filter_map(|w| w[2].parse().ok())
        .collect()
}
