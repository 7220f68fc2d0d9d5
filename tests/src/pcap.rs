//! Minimal classic pcap files (microsecond, Ethernet): enough to feed `net_pcap` and read what
//! it wrote.

use std::path::Path;

const MAGIC: u32 = 0xa1b2_c3d4;

/// Writes `frames` as a pcap file.
///
/// # Errors
/// The file cannot be written.
pub fn write(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = Vec::new();
    out.extend(MAGIC.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(65_535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        out.extend(1_700_000_000u32.to_le_bytes());
        out.extend((i as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend(f);
    }
    std::fs::write(path, out)
}

/// Reads every frame of a pcap file (either byte order, micro- or nanosecond).
///
/// # Errors
/// The file cannot be read or is not a pcap file.
pub fn read(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let b = std::fs::read(path)?;
    if b.len() < 24 {
        return Err(bad("short pcap header"));
    }
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return Err(bad("not a pcap file")),
    };
    let u32_at = |i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut frames = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let caplen = u32_at(i + 8) as usize;
        i += 16;
        if i + caplen > b.len() {
            return Err(bad("truncated record"));
        }
        frames.push(b[i..i + caplen].to_vec());
        i += caplen;
    }
    Ok(frames)
}
