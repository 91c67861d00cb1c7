//! Decoder fuzz target. The first input byte picks the protocol version (and a maximum
//! packet size); the rest is a byte stream decoded until it needs more or fails.
//! Beyond "never panics", every packet accepted must re-encode to a frame that decodes to
//! the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use surgemq::protocol::{decode, DecodeOptions, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let version = match sel % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    let max_packet_size = if sel & 0x80 != 0 { 64 } else { 1 << 20 };
    let opts = DecodeOptions {
        version,
        max_packet_size,
    };
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(packet)) = decode(&mut buf, &opts) {
        let mut out = BytesMut::new();
        packet
            .encode(version, &mut out)
            .expect("a decoded packet encodes");
        let again = decode(&mut out, &DecodeOptions::new(version))
            .expect("our own encoding decodes")
            .expect("our own encoding is a whole frame");
        assert_eq!(again, packet);
        assert!(out.is_empty());
    }
});
