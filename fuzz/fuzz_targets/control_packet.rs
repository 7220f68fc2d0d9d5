//! A datagram through the control-channel packet parser (`proto::packet`): what parses
//! re-encodes to the bytes it came from (all of them, or for a `P_ACK_V1`, which carries no
//! payload, the bytes its fields cover), `encoded_len` says how many, and the encoding parses
//! back to the same packet. sluice's control channel is UDP only: there is no TCP stream
//! framing to fuzz.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::proto::packet::{opcode, ControlPacket, MAX_ACKS, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ControlPacket::parse(data) else {
        return;
    };
    assert!(p.acks.len() <= MAX_ACKS);
    assert!(p.payload.len() <= MAX_PAYLOAD);
    assert_ne!(p.session_id, [0; 8]);
    assert_eq!(p.remote_session_id.is_some(), !p.acks.is_empty());
    assert_eq!(p.msg_id.is_none(), p.opcode == opcode::ACK_V1);
    let mut out = Vec::new();
    p.encode(&mut out);
    assert_eq!(out.len(), p.encoded_len());
    if p.opcode == opcode::ACK_V1 {
        assert_eq!(
            out[..],
            data[..out.len()],
            "an ack re-encodes to its fields' bytes"
        );
    } else {
        assert_eq!(out[..], data[..], "a packet re-encodes to its bytes");
    }
    let again = ControlPacket::parse(&out).expect("the encoding parses");
    assert_eq!(again, p);
});
