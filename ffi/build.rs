//! Gives the shared library its SONAME. Until 1.0 the ABI may change with the
//! minor version (cargo's semver rules for 0.x), so the SONAME carries
//! `0.MINOR`; from 1.0 on it carries the major version only.

fn main() {
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    let soname = if major == 0 {
        format!("libswitchyard.so.0.{minor}")
    } else {
        format!("libswitchyard.so.{major}")
    };
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    println!("cargo:soname={soname}");
    println!("cargo:rerun-if-changed=build.rs");
}
