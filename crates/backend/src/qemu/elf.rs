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

/// Drops the run of zero bytes that ends a kernel ELF's last loadable segment (`.bss`,
/// `.brk`, `.init.scratch`: 23 MiB of Debian's 6.1 kernel) by making the segment's file size
/// smaller than its memory size, which every ELF loader zero-fills (QEMU's does); the section
/// headers that followed the segment go too (a loader reads only the program headers).
/// Returns the bytes dropped, `None` when there is nothing to drop or the layout is not the
/// expected one (the last segment ends the loadable data and no segment reaches past it).
pub fn trim_zero_tail(b: &mut Vec<u8>) -> Option<usize> {
    const PT_LOAD: u32 = 1;
    let phoff = usize::try_from(u64_at(b, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(b, 0x36)?);
    let headers = program_headers(b)?;
    let (index, &(_, offset, filesz)) = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.0 == PT_LOAD)
        .max_by_key(|(_, h)| h.1)?;
    let (offset, filesz) = (usize::try_from(offset).ok()?, usize::try_from(filesz).ok()?);
    let end = offset.checked_add(filesz)?;
    let ends_within =
        |&(_, o, s): &(u32, u64, u64)| usize::try_from(o.checked_add(s)?).ok().map(|e| e <= end);
    let headers_end = phoff.checked_add(phentsize.checked_mul(headers.len())?)?;
    if end > b.len()
        || headers_end > offset
        || !headers.iter().all(|h| ends_within(h) == Some(true))
    {
        return None;
    }
    let data = b[offset..end]
        .iter()
        .rposition(|&x| x != 0)
        .map_or(0, |i| i + 1);
    if data == filesz {
        return None;
    }
    let at = phoff + index * phentsize + 0x20;
    b[at..at + 8].copy_from_slice(&(data as u64).to_le_bytes());
    // e_shoff, e_shnum, e_shstrndx: no section headers.
    b[0x28..0x30].fill(0);
    b[0x3c..0x40].fill(0);
    let dropped = b.len() - (offset + data);
    b.truncate(offset + data);
    Some(dropped)
}
