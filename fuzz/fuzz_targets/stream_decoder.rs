//! qemu's stream framing: any bytes, cut anywhere, give frames within the limit, a framing
//! error, or a wait for more; never a panic. The first byte picks the piece size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sans_io::wire::stream::StreamDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let piece = usize::from(first).max(1);
    let mut dec = StreamDecoder::new(512, 1500);
    for chunk in rest.chunks(piece) {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let room = dec.spare();
            let n = room.len().min(chunk.len());
            room[..n].copy_from_slice(&chunk[..n]);
            dec.filled(n);
            chunk = &chunk[n..];
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => assert!(!f.is_empty() && f.len() <= 1500),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
});
