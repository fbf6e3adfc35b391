//! Generates the apiary.v1 messages, server and client from proto/apiary/v1/apiary.proto.
//! protox parses the .proto in Rust, so no protoc is needed on the build machine.
//!
//! The hook messages of `AttachSpec`'s oneof also get serde derives, shaped like apiary-core's
//! `AttachSpec` JSON (the oneof is tagged `type`, kebab-case; enum fields are written by name),
//! so src/hooks.rs converts every hook through serde and adding a hook needs no Rust here.
//! Which messages and fields get which attribute is read from the descriptors, not listed.

use std::collections::BTreeSet;
use std::fmt::Write as _;

const PACKAGE: &str = ".apiary.v1";
/// descriptor.proto's `LABEL_REPEATED`.
const LABEL_REPEATED: i32 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/apiary/v1/apiary.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let file = fds
        .file
        .iter()
        .find(|f| f.package() == &PACKAGE[1..])
        .ok_or("apiary.proto declares no apiary.v1 package")?;

    let enums: BTreeSet<String> = file
        .enum_type
        .iter()
        .map(|e| format!("{PACKAGE}.{}", e.name()))
        .collect();
    let spec = file
        .message_type
        .iter()
        .find(|m| m.name() == "AttachSpec")
        .ok_or("apiary.proto has no AttachSpec message")?;
    let hooks: BTreeSet<&str> = spec
        .field
        .iter()
        .filter(|f| f.oneof_index.is_some())
        .map(|f| f.type_name())
        .collect();

    let mut config = tonic_prost_build::configure()
        // Decoding errors become INVALID_ARGUMENT instead of tonic's INTERNAL (see codec.rs).
        .codec_path("crate::codec::ApiaryCodec")
        .btree_map(".")
        .type_attribute(
            format!("{PACKAGE}.AttachSpec.hook"),
            "#[derive(serde::Serialize, serde::Deserialize)] \
             #[serde(tag = \"type\", rename_all = \"kebab-case\")]",
        );
    for hook in &hooks {
        let msg = file
            .message_type
            .iter()
            .find(|m| format!("{PACKAGE}.{}", m.name()) == *hook)
            .ok_or_else(|| {
                format!("AttachSpec's hook type {hook} is not a message of apiary.v1")
            })?;
        // Fields left out of apiary-core's JSON (skipped when empty) read as proto defaults.
        config = config.type_attribute(
            hook,
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        );
        for f in &msg.field {
            let path = format!("{hook}.{}", f.name());
            if enums.contains(f.type_name()) {
                // Enum fields are i32 on the wire; apiary-core writes them by name.
                if f.label == Some(LABEL_REPEATED) || f.proto3_optional() {
                    return Err(
                        format!("{path}: only plain enum fields are supported in hooks").into(),
                    );
                }
                let e = f.type_name().rsplit('.').next().unwrap_or_default();
                config = config.field_attribute(
                    path,
                    format!(
                        "#[serde(serialize_with = \"crate::hooks::ser_enum::<{e}, _>\", \
                         deserialize_with = \"crate::hooks::de_enum::<{e}, _>\")]"
                    ),
                );
            } else if f.proto3_optional() {
                // apiary-core leaves unset options out (and fills its own defaults for them).
                config = config
                    .field_attribute(path, "#[serde(skip_serializing_if = \"Option::is_none\")]");
            }
        }
    }
    config.compile_fds(fds.clone())?;

    // How each enum is named, for the serde helpers and for errors.
    let mut out = String::new();
    for e in &file.enum_type {
        let name = e.name();
        let prefix = format!("{}_", screaming_snake(name));
        if let Some(v) = e.value.iter().find(|v| !v.name().starts_with(&prefix)) {
            return Err(format!(
                "enum {name}: value {} does not start with {prefix}",
                v.name()
            )
            .into());
        }
        writeln!(
            out,
            "impl crate::hooks::ProtoEnum for {name} {{\n    \
                const WHAT: &'static str = {what:?};\n    \
                const PREFIX: &'static str = {prefix:?};\n    \
                fn name_of(v: i32) -> Option<&'static str> {{\n        \
                    Self::try_from(v).ok().map(|e| e.as_str_name())\n    \
                }}\n    \
                fn value_of(name: &str) -> Option<i32> {{\n        \
                    Self::from_str_name(name).map(|e| e as i32)\n    \
                }}\n\
             }}",
            what = words(name),
        )?;
    }
    let dir = std::env::var("OUT_DIR")?;
    std::fs::write(format!("{dir}/proto_enums.rs"), out)?;
    Ok(())
}

/// `XdpMode` → `XDP_MODE`, the prefix protobuf style puts on an enum's values.
fn screaming_snake(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s
}

/// `XdpMode` → `XDP mode`, for "unknown XDP mode 7".
fn words(name: &str) -> String {
    screaming_snake(name)
        .split('_')
        .map(|w| match w {
            "XDP" | "TC" | "TCX" | "CPU" | "BPF" => w.to_string(),
            _ => w.to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
