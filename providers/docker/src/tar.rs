//! A minimal ustar archive writer: files copied into containers, and the test image.

/// A minimal ustar archive writer.
pub struct Tar(Vec<u8>);

impl Tar {
    pub fn new() -> Tar {
        Tar(Vec::new())
    }
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], off: usize, len: usize, s: &[u8]| h[off..off + s.len().min(len)].copy_from_slice(&s[..s.len().min(len)]);
        put(&mut h, 0, 100, name.as_bytes());
        put(&mut h, 100, 8, format!("{mode:07o}\0").as_bytes());
        put(&mut h, 108, 8, b"0000000\0");
        put(&mut h, 116, 8, b"0000000\0");
        put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
        put(&mut h, 136, 12, format!("{:011o}\0", 1_700_000_000u64).as_bytes());
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        put(&mut h, 157, 100, link.as_bytes());
        put(&mut h, 257, 6, b"ustar\0");
        put(&mut h, 263, 2, b"00");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
    }
    pub fn dir(&mut self, name: &str) {
        self.header(&format!("{}/", name.trim_end_matches('/')), 0o755, 0, b'5', "");
    }
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, mode, data.len(), b'0', "");
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }
    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

impl Default for Tar {
    fn default() -> Self {
        Tar::new()
    }
}
