//! Edge commands: they open the pinned maps and act on them directly.

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use serde::Serialize;
use waf_common::Mode;

use super::{exit, output::print, AllowAction, ModeArg, PanicAction};
use crate::{
    api::model,
    bans::BanSource,
    config::parse_net,
    store::{BanWrite, Store, StoreError, StoredBan, StoredUnban},
    xdp::{loader, maps::EdgeMaps, ops, ops::mode_name},
};

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// How long the CLI waits for a running agent before acting on the maps itself: an agent
/// that is stuck must not keep an operator from the panic button or a ban.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls the running agent's API; `None` when no agent listens on `socket` or it does not
/// answer in time.
pub fn via_api(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Option<anyhow::Result<serde_json::Value>> {
    if !socket.exists() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let call = crate::api::client::call(socket, method, path, body);
    match rt.block_on(async { tokio::time::timeout(API_TIMEOUT, call).await }) {
        Err(_) => {
            eprintln!(
                "warning: the agent at {} did not answer within {}s; acting on the pinned maps directly",
                socket.display(),
                API_TIMEOUT.as_secs()
            );
            None
        }
        Ok(Err(crate::api::client::ClientError::NotRunning { .. })) => None,
        Ok(Err(e)) => Some(Err(e.into())),
        Ok(Ok(v)) => Some(Ok(v)),
    }
}

pub fn open(pin_dir: &Path) -> anyhow::Result<EdgeMaps> {
    if !crate::xdp::maps::pins_exist(pin_dir) {
        return Err(Exit {
            code: exit::NOT_RUNNING,
            message: format!(
                "no filter is set up under {} (start it with `waf-agent run`)",
                pin_dir.display()
            ),
        }
        .into());
    }
    EdgeMaps::open(pin_dir).context("opening the pinned maps")
}

pub fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(s)
        .with_context(|| format!("{s:?} is not a duration (e.g. 90s, 15m, 1h)"))?;
    if d.is_zero() {
        bail!("the duration must be above zero");
    }
    Ok(d)
}

fn target(s: &str) -> anyhow::Result<IpNet> {
    parse_net(s).map_err(|m| anyhow::anyhow!(m))
}

pub fn render_status(s: &model::Status) -> String {
    let mut out = String::new();
    out.push_str(&format!("mode:        {}", s.mode));
    if let Some(r) = s.panic_remaining_seconds {
        out.push_str(&format!(" (lifts in {r}s, then {})", s.configured_mode));
    } else if s.mode == "panic" {
        out.push_str(&format!(
            " (until `waf-agent panic off`, then {})",
            s.configured_mode
        ));
    }
    out.push('\n');
    let ifaces = if s.interfaces.is_empty() {
        "(none)".to_owned()
    } else {
        s.interfaces.join(", ")
    };
    out.push_str(&format!(
        "interfaces:  {ifaces}\n\npackets by verdict and reason\n"
    ));
    for c in &s.counters {
        out.push_str(&format!(
            "  {:<8} {:<10} {:>12}\n",
            c.verdict, c.reason, c.packets
        ));
    }
    out.push_str("\nmap entries\n");
    for m in &s.maps {
        out.push_str(&format!("  {:<12} {:>10}\n", m.map, m.entries));
    }
    if !s.bans.is_empty() {
        out.push_str("\nactive bans\n");
        for b in &s.bans {
            out.push_str(&format!(
                "  {:<43} {:>8}s left\n",
                b.target, b.remaining_seconds
            ));
        }
    }
    out.trim_end().to_owned()
}

pub fn status(pin_dir: &Path, socket: &Path, json: bool) -> anyhow::Result<()> {
    if let Some(r) = via_api(socket, hyper::Method::GET, "/v1/status", None) {
        let s: model::Status = serde_json::from_value(r?)?;
        print(json, &s, render_status);
        return Ok(());
    }
    let maps = open(pin_dir)?;
    let s = ops::status(&maps, Vec::new())?;
    print(json, &s, render_status);
    Ok(())
}

#[derive(Serialize)]
struct ModeChange {
    mode: String,
    panic_until_seconds: Option<u64>,
}

/// The caller's address from the SSH environment, if logged in over SSH.
pub fn ssh_client(env_client: Option<&str>, env_connection: Option<&str>) -> Option<IpAddr> {
    env_client
        .or(env_connection)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// The operator's SSH client address, for the lockout guards: from this process's
/// environment, or, under sudo (which clears `SSH_CLIENT` by default), from the nearest
/// ancestor process whose environment has it.
pub fn caller_ssh_client() -> Option<IpAddr> {
    let own = ssh_client(
        std::env::var("SSH_CLIENT").ok().as_deref(),
        std::env::var("SSH_CONNECTION").ok().as_deref(),
    );
    if own.is_some() || std::env::var_os("SUDO_USER").is_none() {
        return own;
    }
    let mut pid = std::process::id();
    for _ in 0..64 {
        pid = parent_pid(pid)?;
        if pid <= 1 {
            return None;
        }
        if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
            if let Some(ip) = ssh_client_in_environ(&environ) {
                return Some(ip);
            }
        }
    }
    None
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the parenthesised name).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The SSH client address in a NUL-separated environment block.
fn ssh_client_in_environ(environ: &[u8]) -> Option<IpAddr> {
    let var = |name: &str| {
        environ.split(|b| *b == 0).find_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned)
        })
    };
    ssh_client(
        var("SSH_CLIENT").as_deref(),
        var("SSH_CONNECTION").as_deref(),
    )
}

pub fn panic(
    pin_dir: &Path,
    socket: &Path,
    action: &PanicAction,
    json: bool,
) -> anyhow::Result<()> {
    let mut maps = open(pin_dir)?;
    match action {
        PanicAction::On {
            ttl: ttl_text,
            force,
        } => {
            let ttl = ttl_text.as_deref().map(parse_ttl).transpose()?;
            let client = caller_ssh_client();
            if let Some(ip) = client {
                if !*force && !maps.is_allowed(ip) {
                    return Err(Exit {
                        code: exit::REFUSED,
                        message: format!(
                            "refusing: your SSH client address {ip} is not allow-listed, so panic \
                             mode would cut your session (add it with `waf-agent allow add {ip}`, \
                             or pass --force)"
                        ),
                    }
                    .into());
                }
            }
            // Through the running agent when there is one, so the change is a security event.
            let body = serde_json::json!({"on": true, "ttl": ttl_text});
            let back_to = match via_api(socket, hyper::Method::POST, "/v1/panic", Some(body)) {
                Some(r) => {
                    let m: model::ModeState = serde_json::from_value(r?)?;
                    m.configured_mode
                }
                None => mode_name(ops::panic_on(&mut maps, ttl)?.saved_mode).to_owned(),
            };
            let out = ModeChange {
                mode: "panic".to_owned(),
                panic_until_seconds: ttl.map(|d| d.as_secs()),
            };
            print(json, &out, |o| {
                match o.panic_until_seconds {
                Some(t) => format!("panic mode on for {t}s: dropping everything not allow-listed, then back to {back_to}"),
                None => "panic mode on: dropping everything not allow-listed (`waf-agent panic off` ends it)".to_owned(),
            }
            });
        }
        PanicAction::Off => {
            let body = serde_json::json!({"on": false});
            let mode = match via_api(socket, hyper::Method::POST, "/v1/panic", Some(body)) {
                Some(r) => serde_json::from_value::<model::ModeState>(r?)?.mode,
                None => mode_name(ops::panic_off(&mut maps)?.mode).to_owned(),
            };
            let out = ModeChange {
                mode,
                panic_until_seconds: None,
            };
            print(json, &out, |o| {
                format!("panic mode off: back to {}", o.mode)
            });
        }
    }
    Ok(())
}

pub fn mode(pin_dir: &Path, socket: &Path, mode: ModeArg, json: bool) -> anyhow::Result<()> {
    let body = serde_json::json!({"mode": mode.as_str()});
    if let Some(r) = via_api(socket, hyper::Method::PUT, "/v1/mode", Some(body)) {
        let m: model::ModeState = serde_json::from_value(r?)?;
        print(json, &m, |o| format!("mode: {}", o.mode));
        return Ok(());
    }
    let mut maps = open(pin_dir)?;
    let m = match mode {
        ModeArg::Monitor => Mode::Monitor,
        ModeArg::Enforce => Mode::Enforce,
    };
    let s = ops::set_mode(&mut maps, m)?;
    let out = ModeChange {
        mode: mode_name(s.mode).to_owned(),
        panic_until_seconds: None,
    };
    print(json, &out, |o| {
        if o.mode == "panic" {
            format!(
                "mode set to {}; panic mode stays on until `waf-agent panic off`",
                m.as_str()
            )
        } else {
            format!("mode: {}", o.mode)
        }
    });
    Ok(())
}

#[derive(Serialize)]
struct BanOut {
    target: String,
    ttl_seconds: Option<u64>,
    banned: bool,
}

pub fn ban(
    pin_dir: &Path,
    socket: &Path,
    t: &str,
    ttl_text: &str,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let net = target(t)?;
    let ttl = parse_ttl(ttl_text)?;
    // The same lockout guard as the panic button: never ban the operator's own session.
    let client = caller_ssh_client();
    if let Some(ip) = client.filter(|ip| net.contains(ip)) {
        let allowed = crate::xdp::maps::pins_exist(pin_dir)
            && EdgeMaps::open(pin_dir).is_ok_and(|m| m.is_allowed(ip));
        if !force && !allowed {
            return Err(Exit {
                code: exit::REFUSED,
                message: format!(
                    "refusing: {net} holds your SSH client address {ip}, so the ban would cut \
                     your session (pass --force to ban it anyway)"
                ),
            }
            .into());
        }
    }
    let body = serde_json::json!({"target": net.to_string(), "ttl": ttl_text});
    if let Some(r) = via_api(socket, hyper::Method::POST, "/v1/bans", Some(body)) {
        r?;
        let out = BanOut {
            target: net.to_string(),
            ttl_seconds: Some(ttl.as_secs()),
            banned: true,
        };
        print(json, &out, |o| {
            format!("banned {} for {}s", o.target, ttl.as_secs())
        });
        return Ok(());
    }
    let mut maps = open(pin_dir)?;
    ops::ban(&mut maps, net, ttl)?;
    // The agent restores bans from its store at start: record this one there too, so the
    // next start keeps it and a reboot does not lose it.
    offline_store_write(pin_dir, |_, now| {
        Ok(vec![
            BanWrite::Put(StoredBan {
                net: net.trunc(),
                source: BanSource::Manual,
                wall_expires: now + ttl,
                remaining: ttl,
                reason: "manual".to_owned(),
            }),
            BanWrite::DeleteUnban(net.trunc()),
        ])
    });
    let out = BanOut {
        target: net.to_string(),
        ttl_seconds: Some(ttl.as_secs()),
        banned: true,
    };
    print(json, &out, |o| {
        format!("banned {} for {}s", o.target, ttl.as_secs())
    });
    Ok(())
}

pub fn unban(pin_dir: &Path, socket: &Path, t: &str, json: bool) -> anyhow::Result<()> {
    let net = target(t)?;
    let path = format!("/v1/bans?target={}", net.to_string().replace('/', "%2F"));
    if let Some(r) = via_api(socket, hyper::Method::DELETE, &path, None) {
        r?;
        let out = BanOut {
            target: net.to_string(),
            ttl_seconds: None,
            banned: false,
        };
        print(json, &out, |o| format!("unbanned {}", o.target));
        return Ok(());
    }
    let mut maps = open(pin_dir)?;
    maps.ban_clear(net)?;
    // Without this the next start would restore the lifted ban from the store. The unban
    // lasts as long as the longest ban it lifted, as the agent's own unban does.
    offline_store_write(pin_dir, |store, now| {
        let (bans, _) = store.load_bans(now)?;
        let left = bans
            .iter()
            .filter(|b| b.net.trunc() == net.trunc())
            .map(|b| b.remaining_at(now))
            .max()
            .unwrap_or_default();
        Ok(vec![
            BanWrite::DeleteAll(net.trunc()),
            BanWrite::PutUnban(StoredUnban {
                net: net.trunc(),
                wall_until: now + left,
                remaining: left,
            }),
        ])
    });
    let out = BanOut {
        target: net.to_string(),
        ttl_seconds: None,
        banned: false,
    };
    print(json, &out, |o| format!("unbanned {}", o.target));
    Ok(())
}

/// Where the agent on `pin_dir` records its state directory at start, so that edge commands
/// run while it is stopped reach the same ban store. It lives in /run, like the pins it goes
/// with: both are gone after a reboot.
pub fn state_dir_record_path(pin_dir: &Path) -> std::path::PathBuf {
    let name = pin_dir
        .file_name()
        .map_or("waf-agent".into(), |n| n.to_string_lossy().into_owned());
    Path::new("/run").join(format!("{name}-state-dir"))
}

/// Records `state_dir` as the store of the agent on `pin_dir`.
pub fn record_state_dir(pin_dir: &Path, state_dir: &Path) -> std::io::Result<()> {
    std::fs::write(
        state_dir_record_path(pin_dir),
        state_dir.as_os_str().as_encoded_bytes(),
    )
}

/// The state directory of the agent on `pin_dir`: the one it recorded, else the default.
pub fn recorded_state_dir(pin_dir: &Path) -> std::path::PathBuf {
    std::fs::read_to_string(state_dir_record_path(pin_dir))
        .ok()
        .map(|s| std::path::PathBuf::from(s.trim_end()))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::PathBuf::from(crate::config::DEFAULT_STATE_DIR))
}

/// Applies the ban writes `make` returns to the stopped agent's store. The maps are already
/// changed; a store that cannot be written is reported on stderr and does not fail the
/// command.
fn offline_store_write(
    pin_dir: &Path,
    make: impl FnOnce(&mut Store, std::time::SystemTime) -> Result<Vec<BanWrite>, StoreError>,
) {
    let dir = recorded_state_dir(pin_dir);
    if !dir.join(crate::store::FILE_NAME).exists() {
        return;
    }
    let now = std::time::SystemTime::now();
    let (mut store, _) = Store::open(&dir, now);
    let result = make(&mut store, now).and_then(|writes| store.write_bans(&writes));
    if let Err(e) = result {
        eprintln!(
            "warning: the ban store in {} was not updated ({e}); the agent's next start may \
             undo this change",
            dir.display()
        );
    }
}

/// Run-time allow entries, kept beside the pins so the agent re-applies them on reload.
pub fn runtime_allow_path(pin_dir: &Path) -> std::path::PathBuf {
    let name = pin_dir
        .file_name()
        .map_or("waf-agent".into(), |n| n.to_string_lossy().into_owned());
    Path::new("/run").join(format!("{name}-allow.list"))
}

pub fn read_runtime_allow(pin_dir: &Path) -> BTreeSet<IpNet> {
    std::fs::read_to_string(runtime_allow_path(pin_dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| parse_net(l).ok())
        .collect()
}

fn write_runtime_allow(pin_dir: &Path, set: &BTreeSet<IpNet>) -> anyhow::Result<()> {
    let path = runtime_allow_path(pin_dir);
    let text: String = set.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn allow(
    pin_dir: &Path,
    socket: &Path,
    action: &AllowAction,
    json: bool,
) -> anyhow::Result<()> {
    let mut maps = open(pin_dir)?;
    let mut runtime = read_runtime_allow(pin_dir);
    // Changes go through the running agent when there is one.
    let api = |method: hyper::Method, net: IpNet| {
        let n = net.to_string();
        match method {
            hyper::Method::POST => via_api(
                socket,
                method,
                "/v1/allow",
                Some(serde_json::json!({"target": n})),
            ),
            _ => via_api(
                socket,
                method,
                &format!("/v1/allow?target={}", n.replace('/', "%2F")),
                None,
            ),
        }
    };
    match action {
        AllowAction::Add { target: t } => {
            let net = target(t)?;
            if let Some(r) = api(hyper::Method::POST, net) {
                r?;
                print(json, &net.to_string(), |n| format!("allow-listed {n}"));
                return Ok(());
            }
            maps.allow_insert(net)?;
            runtime.insert(net);
            write_runtime_allow(pin_dir, &runtime)?;
            print(json, &net.to_string(), |n| format!("allow-listed {n}"));
        }
        AllowAction::Rm { target: t } => {
            let net = target(t)?;
            if let Some(r) = api(hyper::Method::DELETE, net) {
                r?;
                print(json, &net.to_string(), |n| {
                    format!("removed {n} from the allow list")
                });
                return Ok(());
            }
            maps.allow_remove(net)?;
            runtime.remove(&net);
            write_runtime_allow(pin_dir, &runtime)?;
            print(json, &net.to_string(), |n| {
                format!("removed {n} from the allow list")
            });
        }
        AllowAction::List => {
            let list: Vec<String> = maps
                .allow_entries()
                .iter()
                .map(ToString::to_string)
                .collect();
            print(json, &list, |l| l.join("\n"));
        }
    }
    Ok(())
}

pub fn detach(pin_dir: &Path, json: bool) -> anyhow::Result<()> {
    let links = loader::detach_all(pin_dir)
        .with_context(|| format!("removing pins under {}", pin_dir.display()))?;
    let _ = std::fs::remove_file(runtime_allow_path(pin_dir));
    let _ = std::fs::remove_file(state_dir_record_path(pin_dir));
    print(json, &links, |l| {
        if l.is_empty() {
            format!("removed pins under {}", pin_dir.display())
        } else {
            format!(
                "detached from {} and removed pins under {}",
                l.join(", "),
                pin_dir.display()
            )
        }
    });
    Ok(())
}

/// Adds (or removes) a run-time allow entry in the list the agent re-applies on reload.
pub fn remember_runtime_allow(pin_dir: &Path, net: IpNet, add: bool) -> anyhow::Result<()> {
    let mut set = read_runtime_allow(pin_dir);
    if add {
        set.insert(net);
    } else {
        set.remove(&net);
    }
    write_runtime_allow(pin_dir, &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_client_address_is_read_from_either_variable() {
        assert_eq!(
            ssh_client(Some("198.18.0.9 50022 22"), None),
            "198.18.0.9".parse().ok()
        );
        assert_eq!(
            ssh_client(None, Some("2001:2::9 50022 2001:2::1 22")),
            "2001:2::9".parse().ok()
        );
        assert_eq!(ssh_client(None, None), None);
        assert_eq!(ssh_client(Some("garbage"), None), None);
    }

    #[test]
    fn ssh_client_is_found_in_an_environment_block() {
        let block = b"HOME=/root\0SSH_CONNECTION=198.18.0.9 50022 198.18.0.1 22\0TERM=xterm\0";
        assert_eq!(
            ssh_client_in_environ(block),
            Some("198.18.0.9".parse().expect("address"))
        );
        assert_eq!(
            ssh_client_in_environ(b"HOME=/root\0SSH_CLIENTX=1.2.3.4 1 2\0"),
            None
        );
        assert_eq!(
            parent_pid(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn ttl_rejects_zero_and_garbage() {
        assert_eq!(
            parse_ttl("15m").expect("15m parses"),
            Duration::from_secs(900)
        );
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
