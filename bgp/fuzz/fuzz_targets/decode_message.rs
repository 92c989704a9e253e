//! Fuzz target for the BGP message decoder: the first octet picks the session context
//! (4-octet AS, ADD-PATH), the rest is a TCP byte stream cut into messages by `frame_len`.
//!
//! Besides "never panic", it checks that whatever the decoder accepts, the encoder turns into
//! bytes the decoder accepts again: a decoded message is always re-encodable.
#![no_main]

use bgp::packet::{frame_len, DecodeContext, Message, MAX_MESSAGE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut stream)) = data.split_first() else {
        return;
    };
    let ctx = DecodeContext {
        four_octet_as: selector & 1 != 0,
        add_path_ipv4: selector & 2 != 0,
        add_path_ipv6: selector & 4 != 0,
        add_path_send_ipv4: false,
        add_path_send_ipv6: false,
        extended_messages: false,
    };
    // Re-encoding never writes path identifiers (we never negotiate ADD-PATH send).
    let plain = DecodeContext {
        add_path_ipv4: false,
        add_path_ipv6: false,
        extended_messages: false,
        ..ctx
    };
    while let Ok(Some(len)) = frame_len(stream) {
        let Some(msg) = stream.get(..len) else {
            return;
        };
        if let Ok(decoded) = Message::decode(msg, &ctx) {
            let bytes = decoded.to_bytes(&plain);
            if bytes.len() <= MAX_MESSAGE_LEN {
                if let Err(e) = Message::decode(&bytes, &plain) {
                    panic!("re-encoded {decoded:?} does not decode: {e}");
                }
            }
        }
        stream = &stream[len..];
    }
});
