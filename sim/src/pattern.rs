//! Byte patterns for transfers: every byte depends on its offset and a salt, so that a lost,
//! duplicated, reordered or foreign byte shows up at its exact offset.

use crate::rng::mix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pattern(pub u64);

impl Pattern {
    /// The byte at `offset`.
    pub fn byte(self, offset: u64) -> u8 {
        let word = mix(self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (offset / 8));
        (word >> ((offset % 8) * 8)) as u8
    }

    /// Fills `buf` with the bytes starting at `offset`.
    pub fn fill(self, offset: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(offset + i as u64);
        }
    }

    /// `len` bytes from offset 0.
    pub fn bytes(self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(0, &mut v);
        v
    }

    /// Checks that `data` is exactly the first `len` bytes of the pattern; describes the first
    /// difference otherwise.
    pub fn check(self, data: &[u8], len: u64) -> Result<(), String> {
        if let Some(i) = data
            .iter()
            .enumerate()
            .position(|(i, &b)| b != self.byte(i as u64))
        {
            return Err(format!(
                "pattern {:#x}: byte {i} of {} is {:#04x}, expected {:#04x}",
                self.0,
                data.len(),
                data[i],
                self.byte(i as u64)
            ));
        }
        if data.len() as u64 != len {
            return Err(format!(
                "pattern {:#x}: got {} bytes, expected {len}",
                self.0,
                data.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_matter() {
        let p = Pattern(1);
        let a = p.bytes(4096);
        assert!(p.check(&a, 4096).is_ok());
        let mut b = a.clone();
        b.swap(100, 1100);
        assert!(p.check(&b, 4096).unwrap_err().contains("byte 100"));
        assert!(p.check(&a[..10], 4096).is_err());
        assert_ne!(Pattern(2).bytes(64), p.bytes(64));
        let mut tail = [0; 10];
        p.fill(4000, &mut tail);
        assert_eq!(&tail[..], &a[4000..4010]);
    }
}
