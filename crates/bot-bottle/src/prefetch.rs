//! The cold start's reads of its own executables, issued at once.
//!
//! A `start` whose executable is not in the page cache reads most of `bot-bottle`'s loaded
//! segments (42 of its 50 MB on the machine of bench/README.md's native10 section) as it
//! runs: each page fault that misses waits for a readahead window around it, one window at a
//! time, and the bundle (`bot-bottle sidecar`) and the native helper (`bot-bottle-helper`)
//! fault their own pages in after it. [`executables_for_start`] asks the kernel on a thread
//! of its own (`posix_fadvise(POSIX_FADV_WILLNEED)`) to read the executable's loaded segments
//! and the helper beside it in one sequential stream, so the faults that follow wait for
//! reads already under way instead of starting them. Warm, the pages are cached and the
//! advice returns without reading anything. It changes what is read ahead, never what runs:
//! a failure (no `/proc`, an executable that is not ELF) leaves the start as it was. The
//! files are opened close-on-exec (as every `File::open`), so a bundle or helper spawned while
//! the advice is under way inherits no descriptor of them.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Starts the reads of the running executable's loaded segments, then of
/// [`backend::HELPER_EXE_NAME`] beside it, on a detached thread; returns at once.
pub fn executables_for_start() {
    let _ = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(|| {
            let Ok(exe) = std::env::current_exe() else {
                return;
            };
            will_need(&exe);
            let helper = exe.with_file_name(backend::HELPER_EXE_NAME);
            if helper != exe {
                will_need(&helper);
            }
        });
}

/// Advises the kernel that the file's loaded segments (all of it when it is not ELF) will be
/// read soon. Errors are ignored: this is advice.
fn will_need(path: &Path) {
    let Ok(mut file) = File::open(path) else {
        return;
    };
    let len = loaded_len(&mut file).unwrap_or(0);
    let len = nix::libc::off_t::try_from(len).unwrap_or(0);
    let _ = nix::fcntl::posix_fadvise(
        &file,
        0,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
}

/// The end of the last `PT_LOAD` segment's bytes in a little-endian ELF64 file: what the
/// loader maps (the symbol tables after it are read only by debuggers and profilers).
fn loaded_len(file: &mut File) -> Option<u64> {
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().ok()?);
    let phentsize = usize::from(u16::from_le_bytes(header[0x36..0x38].try_into().ok()?));
    let phnum = usize::from(u16::from_le_bytes(header[0x38..0x3a].try_into().ok()?));
    if phentsize < 56 || phnum == 0 || phnum > 256 {
        return None;
    }
    let mut table = vec![0u8; phentsize * phnum];
    std::io::Seek::seek(file, std::io::SeekFrom::Start(phoff)).ok()?;
    file.read_exact(&mut table).ok()?;
    let mut end = None;
    for ph in table.chunks_exact(phentsize) {
        let kind = u32::from_le_bytes(ph[0..4].try_into().ok()?);
        if kind != 1 {
            continue; // not PT_LOAD
        }
        let offset = u64::from_le_bytes(ph[8..16].try_into().ok()?);
        let filesz = u64::from_le_bytes(ph[32..40].try_into().ok()?);
        let seg_end = offset.checked_add(filesz)?;
        end = Some(end.map_or(seg_end, |e: u64| e.max(seg_end)));
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loaded length of this test's own executable (a real ELF file) is its segments'
    /// end, short of the file's length (the symbol table follows) and past its code.
    #[test]
    fn the_loaded_length_of_a_real_executable_ends_before_its_symbol_tables() {
        let exe = std::env::current_exe().expect("the test executable");
        let mut file = File::open(&exe).expect("open the test executable");
        let loaded = loaded_len(&mut file).expect("an ELF64 executable");
        let size = std::fs::metadata(&exe).expect("stat").len();
        assert!(loaded <= size, "{loaded} > file size {size}");
        // The segments hold at least this function's code: more than a page.
        assert!(loaded > 4096, "loaded length {loaded}");
        // What `readelf -l` would say: the maximum of offset + filesz over PT_LOAD.
        let out = std::process::Command::new("readelf")
            .args(["-lW"])
            .arg(&exe)
            .output()
            .ok()
            .filter(|o| o.status.success());
        if let Some(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            let expect = text
                .lines()
                .filter(|l| l.trim_start().starts_with("LOAD"))
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16);
                    hex(f[1]).expect("offset") + hex(f[4]).expect("filesz")
                })
                .max()
                .expect("LOAD segments");
            assert_eq!(loaded, expect);
        } else {
            println!("readelf not found: compared with the file size only");
        }
    }

    /// A file that is not ELF has no loaded length: the whole file is advised.
    #[test]
    fn a_file_that_is_not_elf_has_no_loaded_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("script");
        std::fs::write(&path, b"#!/bin/sh\nexit 0\n").expect("write");
        let mut file = File::open(&path).expect("open");
        assert_eq!(loaded_len(&mut file), None);
        will_need(&path); // advice on a plain file: returns, reads nothing back
        let truncated = dir.path().join("truncated");
        std::fs::write(&truncated, b"\x7fELF\x02\x01").expect("write");
        assert_eq!(loaded_len(&mut File::open(&truncated).expect("open")), None);
    }
}
