//! Builds the XDP program (`waf-ebpf`) for the BPF target with nightly and bpf-linker, and
//! leaves the object in OUT_DIR for `include_bytes!`. `AYA_BUILD_SKIP=1` skips it (for
//! tooling that does not need the object; the agent then refuses to load).

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../waf-ebpf/src");
    println!("cargo:rerun-if-changed=../waf-common/src");
    // Without this a build with the object and one without share a fingerprint, and a
    // shared target directory hands out whichever ran first.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("waf-ebpf");
        if !out.exists() {
            std::fs::write(&out, [])?;
        }
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "waf-ebpf",
            root_dir: "../waf-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
