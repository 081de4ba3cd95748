//! The 9-byte IPC hello (spec §D.2), both directions.

/// Client ids (the first hello byte).
pub const CLIENT_CAPI: u8 = 3;
pub const CLIENT_CDB: u8 = 5;
pub const CLIENT_MAAPI: u8 = 7;
pub const CLIENT_STREAM: u8 = 8;
pub const CLIENT_EVENT_MGR: u8 = 11;
pub const CLIENT_HA: u8 = 17;
/// Project-defined: the data API of `ha-node` (ConfD does not use this id).
pub const CLIENT_HADATA: u8 = 42;

/// The versions the library starts with: those of NSO 6.7 (spec §0). A
/// daemon of another release refuses them and names its own, which the
/// library then uses (spec §H.2, §H.5; see `client::hello_adapting`).
pub const DEFAULT_PROTO_VSN: u16 = 87;
pub const DEFAULT_LIB_VSN: u32 = 0x0807_0000;
/// The MAXDEPTH / MAXKEYLEN of ConfD 6.6's and 7.x's headers (20 / 9): what
/// C programs built against those headers pass to `confd_init_vsn_sz`, and
/// what `ha-node` answers as its (schemaless) data model's needs.
pub const DEFAULT_MAXDEPTH: u8 = 20;
pub const DEFAULT_MAXKEYLEN: u8 = 9;

/// The keypath limits the library announces in every hello (bytes 7 and 8):
/// 0 / 0, as econfd announces them. A daemon refuses a hello whose limits
/// are below what its data model needs (answer status 2); ConfD's C
/// libraries announce the sizes of their fixed keypath arrays (20 / 9 in
/// ConfD 6.6 and 7.x, 60 / 18 in NSO 6.x), which a deep enough model
/// exceeds. This library has no fixed-size keypath arrays, which is exactly
/// econfd's situation, and econfd's 0 / 0 is accepted by every daemon
/// whatever its model (measured with ConfD 6.6, spec §H.5; econfd runs
/// inside every NSO release against arbitrary device models). So 0 / 0 is
/// both honest and the one value no model exceeds.
pub const ANNOUNCED_MAXDEPTH: u8 = 0;
pub const ANNOUNCED_MAXKEYLEN: u8 = 0;

/// Hello status byte: accepted.
pub const HELLO_OK: u8 = 0;
/// Hello status byte: the library's protocol version is refused; the answer
/// carries the daemon's own LIB_PROTO_VSN and LIB_VSN.
pub const HELLO_BAD_VSN: u8 = 1;
/// Hello status byte: the library's MAXDEPTH / MAXKEYLEN (hello bytes 7-8)
/// are below what the daemon's data model needs (answer bytes 7-8).
pub const HELLO_BAD_SIZES: u8 = 2;

/// The client's hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    pub client_id: u8,
    pub proto_vsn: u16,
    pub lib_vsn: u32,
    pub maxdepth: u8,
    pub maxkeylen: u8,
}

/// The daemon's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    pub status: u8,
    pub proto_vsn: u16,
    pub vsn: u32,
    pub maxdepth: u8,
    pub maxkeylen: u8,
}

fn pack(first: u8, proto: u16, vsn: u32, a: u8, b: u8) -> [u8; 9] {
    let p = proto.to_be_bytes();
    let v = vsn.to_be_bytes();
    [first, p[0], p[1], v[0], v[1], v[2], v[3], a, b]
}

fn unpack(b: &[u8; 9]) -> (u8, u16, u32, u8, u8) {
    (
        b[0],
        u16::from_be_bytes([b[1], b[2]]),
        u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
        b[7],
        b[8],
    )
}

impl ClientHello {
    pub fn encode(&self) -> [u8; 9] {
        pack(
            self.client_id,
            self.proto_vsn,
            self.lib_vsn,
            self.maxdepth,
            self.maxkeylen,
        )
    }
    pub fn decode(b: &[u8; 9]) -> Self {
        let (client_id, proto_vsn, lib_vsn, maxdepth, maxkeylen) = unpack(b);
        ClientHello {
            client_id,
            proto_vsn,
            lib_vsn,
            maxdepth,
            maxkeylen,
        }
    }
}

impl ServerHello {
    pub fn encode(&self) -> [u8; 9] {
        pack(
            self.status,
            self.proto_vsn,
            self.vsn,
            self.maxdepth,
            self.maxkeylen,
        )
    }
    pub fn decode(b: &[u8; 9]) -> Self {
        let (status, proto_vsn, vsn, maxdepth, maxkeylen) = unpack(b);
        ServerHello {
            status,
            proto_vsn,
            vsn,
            maxdepth,
            maxkeylen,
        }
    }
}

/// The versions the library starts a hello with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibVersions {
    pub proto: u16,
    pub vsn: u32,
    /// `CONFD_HA_LIB_PROTO_VSN` pins the protocol version: a refusal is then
    /// an error, not a reason to adapt.
    pub proto_pinned: bool,
    /// `CONFD_HA_LIB_VSN` pins the library version sent in every hello.
    pub vsn_pinned: bool,
}

/// The versions the library starts with: the defaults above, or what
/// `CONFD_HA_LIB_PROTO_VSN` (decimal) and `CONFD_HA_LIB_VSN` (decimal or
/// 0x-prefixed hex) pin when they are set and parse.
pub fn lib_versions() -> LibVersions {
    fn parse(s: &str) -> Option<u64> {
        let s = s.trim();
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    }
    let proto = std::env::var("CONFD_HA_LIB_PROTO_VSN")
        .ok()
        .and_then(|s| parse(&s))
        .and_then(|v| u16::try_from(v).ok());
    let vsn = std::env::var("CONFD_HA_LIB_VSN")
        .ok()
        .and_then(|s| parse(&s))
        .and_then(|v| u32::try_from(v).ok());
    LibVersions {
        proto: proto.unwrap_or(DEFAULT_PROTO_VSN),
        vsn: vsn.unwrap_or(DEFAULT_LIB_VSN),
        proto_pinned: proto.is_some(),
        vsn_pinned: vsn.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_matches_the_spec_example() {
        let h = ClientHello {
            client_id: CLIENT_HA,
            proto_vsn: 87,
            lib_vsn: 0x0807_0200,
            maxdepth: 0,
            maxkeylen: 0,
        };
        assert_eq!(
            h.encode(),
            [0x11, 0x00, 0x57, 0x08, 0x07, 0x02, 0x00, 0x00, 0x00]
        );
        assert_eq!(ClientHello::decode(&h.encode()), h);
        let s = ServerHello {
            status: 1,
            proto_vsn: 86,
            vsn: 0x0806_0000,
            maxdepth: 20,
            maxkeylen: 9,
        };
        assert_eq!(ServerHello::decode(&s.encode()), s);
    }
}
