#![no_main]

#[path = "common.rs"]
mod common;

use confd_ha::proto::frame::read_frame;

// The first byte picks the frame size limit; the rest is the byte stream.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut stream)) = data.split_first() else {
        return;
    };
    let max = [16, 1024, 64 * 1024, 16 << 20, usize::MAX][sel as usize % 5];
    while let Ok(frame) = read_frame(&mut stream, max) {
        assert!(frame.len() <= max);
        common::payload(&frame);
    }
});
