//! The frame decoder and envelope decoding, fed arbitrary bytes in
//! arbitrary pieces: the first byte picks the limit, the second the piece
//! size. Checks that nothing panics, that every body respects the limit,
//! and that a refused length really is over it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snow_fox::wire::proto::public_api::Message;
use snow_fox::wire::{FRAME_HEADER_LEN, FrameDecoder, FrameError, decode_envelope};

fuzz_target!(|data: &[u8]| {
    let [limit, piece, stream @ ..] = data else {
        return;
    };
    let max_frame = u32::from(*limit) * 16;
    let piece = usize::from(*piece).max(1);
    let mut decoder = FrameDecoder::new(max_frame);
    let mut consumed = 0;
    for chunk in stream.chunks(piece) {
        decoder.extend(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= max_frame as usize);
                    consumed += FRAME_HEADER_LEN + body.len();
                    let _ = decode_envelope::<Message>(body);
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max }) => {
                    assert!(len > max);
                    return;
                }
            }
        }
    }
    assert_eq!(consumed + decoder.buffered(), stream.len());
});
