//! Scanning into archives and compressed files (gitleaks' `--max-archive-depth`): zip, 7z,
//! tar, and gzip / bzip2 / xz / zstd / LZ4 streams (a compressed tar is one archive), nested
//! up to a depth. Every decoder is pure Rust. rar is not opened: the `unrar` crates bind
//! RARLAB's C++ unrar, whose licence is not a free one; the pure-Rust rar readers found
//! (`rar`, `rars`, `compcol`'s decoder) are young or partial (single-volume, some filters
//! unsupported) and none is yet a well-kept dependency for input an attacker shapes. A rar
//! file is scanned as bytes, like any file of a kind this module does not know.
//!
//! Why bounded: an archive is input an attacker may shape. A small file can expand to
//! gigabytes (a "zip bomb") or hold millions of entries. Every read is capped: each entry at
//! the file size limit (larger entries are skipped and listed, like large files), and the
//! whole expansion of one file on disk at [`Limits::max_total`] bytes, [`Limits::max_entries`]
//! entries and [`Limits::max_ratio`] times its own size. Past a cap the whole archive is
//! refused, with a message that says so, and nothing in it counts as scanned.
//!
//! Entries are named as gitleaks names them: `outer.zip!dir/inner.txt`, nested archives
//! adding one `!` each; a compressed file that is not a tar keeps its own name.

use std::io::{Cursor, Read};

/// How deep and how much an archive may expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Archives nested deeper than this are not opened (0: archives are not opened).
    pub max_depth: usize,
    /// Entries larger than this are skipped.
    pub max_entry: u64,
    /// The whole expansion of one file (all entries, all levels) may not exceed this.
    pub max_total: u64,
    /// At most this many entries, all levels.
    pub max_entries: usize,
    /// The expansion may not exceed this many times the file's own size (once past 1 MiB).
    pub max_ratio: u64,
}

/// Expansions above this size are judged by their ratio.
const RATIO_FLOOR: u64 = 1 << 20;

/// What opening an archive gave.
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    /// Entries to scan: name and content.
    pub entries: Vec<(String, Vec<u8>)>,
    /// Entries not scanned: name and why.
    pub skipped: Vec<(String, String)>,
}

/// Why an archive was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused as an archive bomb: {0}")]
pub(crate) struct Refused(pub String);

/// The kinds this module opens, by their first bytes (tar by its `ustar` magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Zip,
    SevenZ,
    Tar,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Lz4,
}

fn kind_of(data: &[u8]) -> Option<Kind> {
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        Some(Kind::Zip)
    } else if data.starts_with(b"\x1f\x8b") {
        Some(Kind::Gzip)
    } else if data.starts_with(b"\xfd7zXZ\x00") {
        Some(Kind::Xz)
    } else if data.starts_with(b"\x28\xb5\x2f\xfd") {
        Some(Kind::Zstd)
    } else if data.starts_with(b"7z\xbc\xaf\x27\x1c") {
        Some(Kind::SevenZ)
    } else if data.len() >= 4 && data.starts_with(b"BZh") && (b'1'..=b'9').contains(&data[3]) {
        Some(Kind::Bzip2)
    } else if data.starts_with(b"\x04\x22\x4d\x18") {
        Some(Kind::Lz4)
    } else if data.len() >= 263 && &data[257..262] == b"ustar" {
        Some(Kind::Tar)
    } else {
        None
    }
}

/// Whether `data` is an archive or compressed stream this module opens.
pub(crate) fn is_archive(data: &[u8]) -> bool {
    kind_of(data).is_some()
}

/// Opens `data` (named `name`, an archive at depth 0) and everything nested in it up to the
/// depth limit. Nested archives past the limit are listed as skipped.
pub(crate) fn expand(name: &str, data: &[u8], limits: &Limits) -> Result<Expansion, Refused> {
    let mut walk = Walk {
        limits,
        top_size: data.len() as u64,
        total: 0,
        entries: 0,
        out: Expansion::default(),
    };
    walk.open(name, data, 0)?;
    Ok(walk.out)
}

struct Walk<'a> {
    limits: &'a Limits,
    top_size: u64,
    total: u64,
    entries: usize,
    out: Expansion,
}

impl Walk<'_> {
    /// Opens the archive `data` found at `depth` (0: the file itself).
    fn open(&mut self, name: &str, data: &[u8], depth: usize) -> Result<(), Refused> {
        let Some(kind) = kind_of(data) else {
            return Ok(());
        };
        if depth >= self.limits.max_depth {
            self.out.skipped.push((
                name.to_string(),
                format!(
                    "an archive nested deeper than --max-archive-depth {}",
                    self.limits.max_depth
                ),
            ));
            return Ok(());
        }
        match kind {
            Kind::Zip => self.zip(name, data, depth),
            Kind::SevenZ => self.seven_z(name, data, depth),
            Kind::Tar => self.tar(name, data, depth),
            Kind::Gzip | Kind::Bzip2 | Kind::Xz | Kind::Zstd | Kind::Lz4 => {
                let inner = match self.decompress(name, kind, data)? {
                    Some(inner) => inner,
                    None => return Ok(()),
                };
                if kind_of(&inner) == Some(Kind::Tar) {
                    // A compressed tar is one archive (one level), as gitleaks counts it.
                    self.tar(name, &inner, depth)
                } else {
                    self.entry(name.to_string(), inner, depth + 1)
                }
            }
        }
    }

    /// An entry found at `depth`: scanned, or opened when it is an archive itself.
    fn entry(&mut self, name: String, data: Vec<u8>, depth: usize) -> Result<(), Refused> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Refused(format!(
                "more than {} entries",
                self.limits.max_entries
            )));
        }
        if is_archive(&data) {
            return self.open(&name, &data, depth);
        }
        self.out.entries.push((name, data));
        Ok(())
    }

    /// Counts `n` more expanded bytes against the caps.
    fn charge(&mut self, n: u64) -> Result<(), Refused> {
        self.total = self.total.saturating_add(n);
        if self.total > self.limits.max_total {
            return Err(Refused(format!(
                "expands to more than {} bytes (from {} bytes)",
                self.limits.max_total, self.top_size
            )));
        }
        if self.total > RATIO_FLOOR && self.total / self.top_size.max(1) > self.limits.max_ratio {
            return Err(Refused(format!(
                "expands more than {} times (from {} bytes to over {} bytes)",
                self.limits.max_ratio, self.top_size, self.total
            )));
        }
        Ok(())
    }

    /// Reads at most one entry's worth from `r`: the bytes, or `None` when the entry is larger
    /// than an entry may be (then listed as skipped). What is read counts against the caps.
    fn read_bounded(&mut self, name: &str, r: impl Read) -> Result<Option<Vec<u8>>, Refused> {
        let cap = self.limits.max_entry;
        let mut buf = Vec::new();
        let mut limited = r.take(cap.saturating_add(1));
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = match limited.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    self.out
                        .skipped
                        .push((name.to_string(), format!("cannot be read: {e}")));
                    return Ok(None);
                }
            };
            self.charge(n as u64)?;
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.len() as u64 > cap {
            self.out
                .skipped
                .push((name.to_string(), format!("larger than {cap} bytes")));
            return Ok(None);
        }
        Ok(Some(buf))
    }

    fn decompress(
        &mut self,
        name: &str,
        kind: Kind,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, Refused> {
        match kind {
            Kind::Gzip => self.read_bounded(name, flate2::read::MultiGzDecoder::new(data)),
            Kind::Bzip2 => self.read_bounded(name, bzip2::read::MultiBzDecoder::new(data)),
            Kind::Lz4 => self.read_bounded(name, lz4_flex::frame::FrameDecoder::new(data)),
            Kind::Xz => self.read_bounded(name, lzma_rust2::XzReader::new(data, true)),
            Kind::Zstd => match ruzstd::decoding::StreamingDecoder::new(data) {
                Ok(d) => self.read_bounded(name, d),
                Err(e) => {
                    self.out
                        .skipped
                        .push((name.to_string(), format!("cannot be read: {e}")));
                    Ok(None)
                }
            },
            Kind::Zip | Kind::SevenZ | Kind::Tar => Ok(Some(data.to_vec())),
        }
    }

    fn tar(&mut self, name: &str, data: &[u8], depth: usize) -> Result<(), Refused> {
        let mut archive = tar::Archive::new(data);
        let entries = match archive.entries() {
            Ok(e) => e,
            Err(e) => {
                self.out
                    .skipped
                    .push((name.to_string(), format!("cannot be read as tar: {e}")));
                return Ok(());
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.out
                        .skipped
                        .push((name.to_string(), format!("cannot be read as tar: {e}")));
                    return Ok(());
                }
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let inner = match entry.path() {
                Ok(p) => clean(&p.to_string_lossy()),
                Err(_) => String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            };
            let full = format!("{name}!{inner}");
            if let Some(bytes) = self.read_bounded(&full, entry)? {
                self.entry(full, bytes, depth + 1)?;
            }
        }
        Ok(())
    }

    fn zip(&mut self, name: &str, data: &[u8], depth: usize) -> Result<(), Refused> {
        let mut archive = match zip::ZipArchive::new(Cursor::new(data)) {
            Ok(a) => a,
            Err(e) => {
                self.out
                    .skipped
                    .push((name.to_string(), format!("cannot be read as zip: {e}")));
                return Ok(());
            }
        };
        for i in 0..archive.len() {
            let file = match archive.by_index(i) {
                Ok(f) => f,
                Err(e) => {
                    self.out.skipped.push((
                        format!("{name}!#{i}"),
                        format!("cannot be read from the zip: {e}"),
                    ));
                    continue;
                }
            };
            if !file.is_file() {
                continue;
            }
            let inner = match file.name() {
                Ok(n) => clean(&n),
                Err(_) => clean(&String::from_utf8_lossy(file.name_raw())),
            };
            let full = format!("{name}!{inner}");
            if let Some(bytes) = self.read_bounded(&full, file)? {
                self.entry(full, bytes, depth + 1)?;
            }
        }
        Ok(())
    }
}

impl Walk<'_> {
    /// A 7z archive: each file's content, in order (a solid block is decoded once, its files
    /// one after the other). The decoder's dictionaries and header buffers are capped at
    /// [`SEVEN_Z_MEMORY_KIB`]; an archive that needs more is listed as not readable. A file
    /// larger than an entry may be is skipped with the rest of its block, which is not
    /// decoded (decoding it only to throw it away would let one file cost unbounded time).
    fn seven_z(&mut self, name: &str, data: &[u8], depth: usize) -> Result<(), Refused> {
        use sevenz_rust2::{ArchiveReader, EntryDecision, Password};
        let mut archive = match ArchiveReader::new_with_memory_limit(
            Cursor::new(data),
            Password::empty(),
            SEVEN_Z_MEMORY_KIB,
        ) {
            Ok(a) => a,
            Err(e) => {
                self.out
                    .skipped
                    .push((name.to_string(), format!("cannot be read as 7z: {e}")));
                return Ok(());
            }
        };
        archive.set_thread_count(1);
        let mut refused = None;
        let result = archive.for_each_entries_with_decision(|entry, reader| {
            if entry.is_directory() || !entry.has_stream() {
                return Ok(EntryDecision::Continue);
            }
            let full = format!("{name}!{}", clean(entry.name()));
            let skipped_before = self.out.skipped.len();
            match self.read_bounded(&full, reader) {
                Ok(Some(bytes)) => match self.entry(full, bytes, depth + 1) {
                    Ok(()) => Ok(EntryDecision::Continue),
                    Err(r) => {
                        refused = Some(r);
                        Ok(EntryDecision::Stop)
                    }
                },
                Ok(None) => {
                    if self.out.skipped.len() > skipped_before {
                        let last = self.out.skipped.len() - 1;
                        self.out.skipped[last]
                            .1
                            .push_str(" (the rest of its 7z block, if any, is not read)");
                    }
                    Ok(EntryDecision::SkipBlock)
                }
                Err(r) => {
                    refused = Some(r);
                    Ok(EntryDecision::Stop)
                }
            }
        });
        if let Some(r) = refused {
            return Err(r);
        }
        if let Err(e) = result {
            self.out
                .skipped
                .push((name.to_string(), format!("cannot be read as 7z: {e}")));
        }
        Ok(())
    }
}

/// The most memory (KiB) a 7z archive's decoder may ask for (dictionaries, header buffers):
/// 64 MiB, the dictionary of 7-Zip's "ultra" preset. A larger demand is refused by the
/// decoder before it allocates.
const SEVEN_Z_MEMORY_KIB: usize = 64 * 1024;

/// An entry's path as reported: `/` separators, no leading `./` or `/`.
fn clean(path: &str) -> String {
    let p = path.replace('\\', "/");
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn limits() -> Limits {
        Limits {
            max_depth: 8,
            max_entry: 1 << 20,
            max_total: 4 << 20,
            max_entries: 100,
            max_ratio: 100,
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_gzip_stream_keeps_its_name_and_a_bomb_is_refused() {
        let x = expand("a.txt.gz", &gz(b"hello\n"), &limits()).unwrap();
        assert_eq!(
            x.entries,
            vec![("a.txt.gz".to_string(), b"hello\n".to_vec())]
        );
        let bomb = gz(&vec![0u8; 3 << 20]);
        let err = expand("bomb.gz", &bomb, &limits()).unwrap_err();
        assert!(err.to_string().contains("archive bomb"), "{err}");
    }

    /// A 7z archive, its entries in one solid block or each in its own.
    fn seven_z(entries: &[(&str, &[u8])], solid: bool) -> Vec<u8> {
        use sevenz_rust2::{ArchiveEntry, ArchiveWriter, SourceReader};
        let mut w = ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
        if solid {
            let names = entries
                .iter()
                .map(|(n, _)| ArchiveEntry::new_file(n))
                .collect();
            let readers = entries.iter().map(|(_, d)| SourceReader::new(*d)).collect();
            w.push_archive_entries(names, readers).unwrap();
        } else {
            for (n, d) in entries {
                w.push_archive_entry(ArchiveEntry::new_file(n), Some(*d))
                    .unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn an_oversize_7z_entry_is_skipped_without_decoding_the_rest_of_its_block() {
        let l = Limits {
            max_entry: 1024,
            ..limits()
        };
        let big = vec![b'a'; 64 * 1024];
        let entries: [(&str, &[u8]); 3] = [
            ("a.txt", b"first\n"),
            ("big.bin", &big),
            ("c.txt", b"third\n"),
        ];
        // Each entry its own block: the entry after the big one is still read.
        let x = expand("x.7z", &seven_z(&entries, false), &l).unwrap();
        let names: Vec<&str> = x.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["x.7z!a.txt", "x.7z!c.txt"]);
        assert_eq!(x.skipped.len(), 1, "{:?}", x.skipped);
        assert!(x.skipped[0].1.starts_with("larger than 1024 bytes"));
        // One solid block: what follows the big entry in its block is not decoded, and the
        // listing says so.
        let x = expand("x.7z", &seven_z(&entries, true), &l).unwrap();
        let names: Vec<&str> = x.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["x.7z!a.txt"]);
        assert_eq!(x.skipped[0].0, "x.7z!big.bin");
        assert!(
            x.skipped[0].1.contains("the rest of its 7z block"),
            "{:?}",
            x.skipped
        );
        // Not a 7z after its signature: listed, nothing scanned, no panic.
        let mut broken = seven_z(&entries, false);
        broken.truncate(40);
        let x = expand("x.7z", &broken, &l).unwrap();
        assert!(x.entries.is_empty());
        assert!(
            x.skipped[0].1.starts_with("cannot be read as 7z"),
            "{:?}",
            x.skipped
        );
    }

    #[test]
    fn depth_zero_opens_nothing() {
        let l = Limits {
            max_depth: 0,
            ..limits()
        };
        let x = expand("a.gz", &gz(b"x"), &l).unwrap();
        assert!(x.entries.is_empty());
        assert_eq!(x.skipped.len(), 1);
    }
}
