//! Build script: the versioned soname of the shared library, the C body of
//! the one variadic function (`confd_fatal`), and the C headers generated
//! by cbindgen.
//!
//! Each header is generated from one module of `src/ffi/` with its own
//! cbindgen config (`cbindgen.toml` for confd_lib.h, `cbindgen-<name>.toml`
//! for the others). The headers are written to `$OUT_DIR/include` and copied
//! to `target/<profile>/include/`; `make headers` copies them into the
//! committed `include/`, and `make check-headers` fails when the committed
//! ones differ from what this script generates.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The error numbers and texts, from the one source the library uses.
#[allow(dead_code)]
#[path = "src/errcode.rs"]
mod errcode;

/// (config file, module source, header)
const HEADERS: &[(&str, &str, &str)] = &[
    ("cbindgen.toml", "src/ffi/lib.rs", "confd_lib.h"),
    ("cbindgen-ha.toml", "src/ffi/ha.rs", "confd_ha.h"),
    (
        "cbindgen-events.toml",
        "src/ffi/events.rs",
        "confd_events.h",
    ),
    ("cbindgen-cha.toml", "src/ffi/cha.rs", "cha.h"),
];

/// The C body of confd_fatal().
const FATAL_C: &str = "src/ffi/fatal.c";

fn main() {
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libconfd_ha.so.{major}");

    // confd_fatal() is variadic: its body is C (src/ffi/fatal.c); the
    // exported entry point is a Rust naked function that jumps to it.
    println!("cargo:rerun-if-changed={FATAL_C}");
    cc::Build::new()
        .file(FATAL_C)
        .warnings(true)
        .compile("confd_ha_fatal");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/errcode.rs");
    for (cfg, src, _) in HEADERS {
        println!("cargo:rerun-if-changed={cfg}");
        println!("cargo:rerun-if-changed={src}");
    }

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("include");
    fs::create_dir_all(&out).expect("create OUT_DIR/include");
    let version = env::var("CARGO_PKG_VERSION").expect("CARGO_PKG_VERSION");

    for (cfg, src, header) in HEADERS {
        let mut config = cbindgen::Config::from_file(root.join(cfg))
            .unwrap_or_else(|e| panic!("reading {cfg}: {e}"));
        if *header == "confd_lib.h" {
            let lib_rs =
                fs::read_to_string(root.join(src)).unwrap_or_else(|e| panic!("reading {src}: {e}"));
            let mut extra = config.after_includes.take().unwrap_or_default();
            extra.push_str(&lib_h_generated(&version, &lib_rs));
            config.after_includes = Some(extra);
        }
        if *header == "confd_events.h" {
            let events_rs =
                fs::read_to_string(root.join(src)).unwrap_or_else(|e| panic!("reading {src}: {e}"));
            let mut extra = config.after_includes.take().unwrap_or_default();
            extra.push_str(&notif_bits(&events_rs));
            config.after_includes = Some(extra);
        }
        let bindings = cbindgen::Builder::new()
            .with_config(config)
            .with_src(root.join(src))
            .generate()
            .unwrap_or_else(|e| panic!("cbindgen on {src} for {header}: {e}"));
        bindings.write_to_file(out.join(header));
    }

    // Copy to target/<profile>/include (OUT_DIR is
    // target/<profile>/build/<pkg>-<hash>/out).
    if let Some(profile_dir) = Path::new(&env::var("OUT_DIR").unwrap()).ancestors().nth(3) {
        let dst = profile_dir.join("include");
        if fs::create_dir_all(&dst).is_ok() {
            for (_, _, header) in HEADERS {
                let from = out.join(header);
                let to = dst.join(header);
                let same = fs::read(&from).ok() == fs::read(&to).ok();
                if !same {
                    fs::copy(&from, &to)
                        .unwrap_or_else(|e| panic!("copying {header} to {}: {e}", dst.display()));
                }
            }
        }
    }
}

/// The `CONFD_NOTIF_*` bits as `#define NAME (1LL << n)`, read from the
/// `NOTIF_BITS` table of src/ffi/events.rs (lines `("NAME", n),`).
fn notif_bits(events_rs: &str) -> String {
    let start = events_rs
        .find("pub const NOTIF_BITS")
        .expect("src/ffi/events.rs has no NOTIF_BITS table");
    let table = &events_rs[start..];
    let table = &table[..table.find("];").expect("NOTIF_BITS is not closed")];
    let mut s = String::from(
        "\n/* Event bits: the subscription mask is an OR of them; a read event's\n   type is exactly one. 64-bit, as in ConfD 8.x / NSO 6.x. */\n",
    );
    let mut n = 0;
    for line in table.lines() {
        let Some(entry) = line.trim().strip_prefix("(\"") else {
            continue;
        };
        let (name, rest) = entry.split_once("\", ").expect("(\"NAME\", bit),");
        let bit: u32 = rest
            .trim_end_matches("),")
            .parse()
            .unwrap_or_else(|e| panic!("bit of {name}: {e}"));
        let _ = writeln!(s, "#define {name:<30} (1LL << {bit})");
        n += 1;
    }
    assert!(n >= 32, "NOTIF_BITS has {n} entries");
    s
}

/// The value of `pub const NAME: c_int = <number>;` in `src` (decimal or
/// 0x-hex, `_` separators allowed).
fn const_value(src: &str, name: &str) -> i64 {
    let prefix = format!("pub const {name}: c_int = ");
    let line = src
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("src/ffi/lib.rs has no `{prefix}...`"));
    let num = line.trim_end_matches(';').replace('_', "");
    match num.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16),
        None => num.parse(),
    }
    .unwrap_or_else(|e| panic!("{name} = {num}: {e}"))
}

/// Text for confd_lib.h that cbindgen cannot produce from src/ffi/lib.rs:
/// the `*_VSN_STR` strings of its version numbers, the library version and
/// every `CONFD_ERR_*` number of src/errcode.rs.
fn lib_h_generated(version: &str, lib_rs: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n/* The version numbers of src/ffi/lib.rs as strings, as ConfD's header has them. */"
    );
    for name in ["CONFD_LIB_VSN", "CONFD_LIB_API_VSN"] {
        let _ = writeln!(
            s,
            "#define {name}_STR \"{:08x}\"",
            const_value(lib_rs, name)
        );
    }
    let _ = writeln!(
        s,
        "#define CONFD_LIB_PROTO_VSN_STR \"{}\"",
        const_value(lib_rs, "CONFD_LIB_PROTO_VSN")
    );
    let _ = writeln!(s, "\n/* The version of this library (Cargo.toml). */");
    let _ = writeln!(s, "#define CONFD_HA_VERSION \"{version}\"");
    let _ = writeln!(
        s,
        "\n/* confd_errno values, with their confd_strerror() texts (src/errcode.rs). */"
    );
    for code in 0..1000 {
        if let Some(name) = errcode::name(code) {
            let _ = writeln!(
                s,
                "#define {name:<36} {code:>2}  /* {} */",
                errcode::strerror(code)
            );
        }
    }
    s
}
