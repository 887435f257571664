//! nginx with ModSecurity v3 and the OWASP CRS of the Debian packages, on loopback, with a
//! configuration written to a temporary directory: the reference the proxy is measured
//! against. Blocking mode, anomaly threshold 5, paranoia level as asked.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context as _;

use crate::loopback::{free_port, wait_listening};

pub const MODULE: &str = "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so";
pub const BASE_CONF: &str = "/etc/nginx/modsecurity.conf";
pub const CRS_SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";
pub const CRS_RULES: &str = "/usr/share/modsecurity-crs/rules";

/// A running nginx; stopped when dropped.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx + ModSecurity + CRS proxying to `upstream`.
    pub fn start(upstream: SocketAddr, paranoia: u8, workers: usize) -> anyhow::Result<Nginx> {
        for f in [MODULE, BASE_CONF, CRS_SETUP, CRS_RULES] {
            anyhow::ensure!(
                Path::new(f).exists(),
                "{f} is missing: install nginx libnginx-mod-http-modsecurity modsecurity-crs"
            );
        }
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("waf-eval-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let rules = dir.join("modsec.conf");
        std::fs::write(
            &rules,
            format!(
                "Include {BASE_CONF}\nSecRuleEngine On\nSecResponseBodyAccess Off\nSecAuditEngine Off\n\
SecAction \"id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia}\"\n\
SecAction \"id:900110,phase:1,nolog,pass,t:none,setvar:tx.inbound_anomaly_score_threshold=5\"\n\
Include {CRS_SETUP}\nInclude {CRS_RULES}/*.conf\n"
            ),
        )?;
        let d = dir.display();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module {MODULE};\ndaemon off;\nworker_processes {workers};\npid {d}/nginx.pid;\n\
error_log {d}/error.log error;\nevents {{ worker_connections 4096; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  client_max_body_size 10m;\n  large_client_header_buffers 4 64k;\n\
  upstream app {{ server {upstream}; keepalive 64; }}\n\
  server {{\n    listen 127.0.0.1:{port};\n    modsecurity on;\n    modsecurity_rules_file {r};\n\
    location / {{ proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://app; }}\n  }}\n}}\n",
                r = rules.display()
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("start nginx")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx { addr, child, dir };
        if let Err(e) = wait_listening(addr) {
            let _ = nginx.child.kill();
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
                + &std::fs::read_to_string(nginx.dir.join("stderr.log")).unwrap_or_default();
            anyhow::bail!("nginx did not start: {e}\n{log}");
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master must live long enough to stop its workers.
        let pid = self.child.id().to_string();
        let termed = Command::new("kill").args(["-TERM", &pid]).status();
        if termed.is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
