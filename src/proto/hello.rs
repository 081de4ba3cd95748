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

/// Defaults sent by the library: those of NSO 6.7 (spec §0).
pub const DEFAULT_PROTO_VSN: u16 = 87;
pub const DEFAULT_LIB_VSN: u32 = 0x0807_0000;
pub const DEFAULT_MAXDEPTH: u8 = 20;
pub const DEFAULT_MAXKEYLEN: u8 = 9;

/// Hello status byte: accepted / rejected.
pub const HELLO_OK: u8 = 0;
pub const HELLO_BAD_VSN: u8 = 1;

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

/// The versions the library announces: the defaults above, overridden by
/// `CONFD_HA_LIB_PROTO_VSN` (decimal) and `CONFD_HA_LIB_VSN` (decimal or
/// 0x-prefixed hex) when those are set and parse.
pub fn lib_versions() -> (u16, u32) {
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
        .and_then(|v| u16::try_from(v).ok())
        .unwrap_or(DEFAULT_PROTO_VSN);
    let vsn = std::env::var("CONFD_HA_LIB_VSN")
        .ok()
        .and_then(|s| parse(&s))
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(DEFAULT_LIB_VSN);
    (proto, vsn)
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
