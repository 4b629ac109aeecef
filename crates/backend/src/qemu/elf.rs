//! Just enough ELF and bzImage reading for the guest-kernel and busybox checks (x86_64, little-endian).

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point QEMU boots directly.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// `(p_type, p_offset, p_filesz)` of each program header of a 64-bit little-endian ELF.
fn program_headers(b: &[u8]) -> Option<Vec<(u32, u64, u64)>> {
    if b.get(..4)? != b"\x7fELF" || *b.get(4)? != 2 || *b.get(5)? != 1 {
        return None;
    }
    let phoff = usize::try_from(u64_at(b, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(b, 0x36)?);
    let phnum = usize::from(u16_at(b, 0x38)?);
    if phentsize < 0x38 {
        return None;
    }
    (0..phnum)
        .map(|i| {
            let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
            Some((u32_at(b, at)?, u64_at(b, at + 8)?, u64_at(b, at + 0x20)?))
        })
        .collect()
}

/// Whether an ELF executable needs no dynamic loader; `None` when it is not a 64-bit ELF.
pub fn is_static(b: &[u8]) -> Option<bool> {
    Some(
        !program_headers(b)?
            .iter()
            .any(|&(kind, _, _)| kind == PT_INTERP),
    )
}

/// Whether a kernel ELF carries the PVH entry note (`Xen`, type 18).
pub fn has_pvh_entry(b: &[u8]) -> bool {
    let Some(headers) = program_headers(b) else {
        return false;
    };
    headers
        .iter()
        .filter(|&&(kind, _, _)| kind == PT_NOTE)
        .any(|&(_, offset, size)| {
            let (Ok(offset), Ok(size)) = (usize::try_from(offset), usize::try_from(size)) else {
                return false;
            };
            let Some(notes) = offset.checked_add(size).and_then(|end| b.get(offset..end)) else {
                return false;
            };
            let mut at = 0;
            while let (Some(namesz), Some(descsz), Some(kind)) = (
                u32_at(notes, at),
                u32_at(notes, at + 4),
                u32_at(notes, at + 8),
            ) {
                let (namesz, descsz) = (namesz as usize, descsz as usize);
                let name = notes.get(at + 12..at + 12 + namesz);
                if name == Some(b"Xen\0") && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                    return true;
                }
                at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
            }
            false
        })
}

/// The xz-compressed kernel inside a bzImage (`payload_offset`/`payload_length` of the
/// boot protocol, 2.08+), `None` when it is not a bzImage with an xz payload.
pub fn bzimage_xz_payload(b: &[u8]) -> Option<&[u8]> {
    if b.get(0x202..0x206)? != b"HdrS" || u16_at(b, 0x206)? < 0x0208 {
        return None;
    }
    let setup_sects = match *b.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let offset = start.checked_add(usize::try_from(u32_at(b, 0x248)?).ok()?)?;
    let length = usize::try_from(u32_at(b, 0x24c)?).ok()?;
    let payload = b.get(offset..offset.checked_add(length)?)?;
    payload.starts_with(b"\xfd7zXZ\x00").then_some(payload)
}
