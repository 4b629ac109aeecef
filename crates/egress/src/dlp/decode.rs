//! Decoders for compressed request bodies, fed chunk by chunk (nothing is buffered whole):
//! `gzip`, `deflate` (zlib, as HTTP means it), `br` and `zstd`. What comes out is counted
//! against [`super::DECODE_LIMIT`] by the caller.

use std::io::Write;

/// A `Content-Encoding` egress can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// The coding of a `Content-Encoding` value: `Ok(None)` for none (or `identity`),
    /// `Err` with the value for one egress cannot read (several codings included).
    pub(crate) fn of(value: Option<&[u8]>) -> Result<Option<Coding>, String> {
        let Some(v) = value else { return Ok(None) };
        let text = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
        match text.as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Brotli)),
            "zstd" => Ok(Some(Coding::Zstd)),
            _ => Err(format!("Content-Encoding {text}")),
        }
    }
}

/// A decoder that takes compressed chunks and appends what they decode to.
pub(crate) enum Decoder {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    Zstd(Box<ZstdPush>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl Decoder {
    pub(crate) fn new(coding: Coding) -> Decoder {
        match coding {
            Coding::Gzip => Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            Coding::Deflate => Decoder::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            Coding::Brotli => Decoder::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(Vec::new(), 16 * 1024),
            )),
            Coding::Zstd => Decoder::Zstd(Box::default()),
        }
    }

    /// Decodes a chunk; returns what it decoded to.
    pub(crate) fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let err = |e: std::io::Error| format!("the compressed body is not valid: {e}");
        match self {
            Decoder::Gzip(d) => {
                d.write_all(input).map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Deflate(d) => {
                d.write_all(input).map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Brotli(d) => {
                d.write_all(input).map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Zstd(d) => d.push(input),
        }
    }

    /// The body ended: the rest, or an error if the stream was cut short.
    pub(crate) fn finish(&mut self) -> Result<Vec<u8>, String> {
        let err = |e: std::io::Error| format!("the compressed body is not valid: {e}");
        match self {
            Decoder::Gzip(d) => {
                d.try_finish().map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Deflate(d) => {
                d.try_finish().map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Brotli(d) => {
                d.close().map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

/// ruzstd's frame decoder, fed by pushes: it needs whole blocks (at most 128 KiB), so the
/// input not yet decoded is kept.
#[derive(Default)]
pub(crate) struct ZstdPush {
    dec: ruzstd::decoding::FrameDecoder,
    pending: Vec<u8>,
    started: bool,
}

impl ZstdPush {
    fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.started && self.dec.is_finished() && self.dec.can_collect() == 0 {
                // a frame ended: the next bytes start another frame
                if self.pending.is_empty() {
                    break;
                }
                self.started = false;
            }
            if !self.started {
                // a frame header needs up to 18 bytes
                if self.pending.len() < 18 {
                    let mut probe = self.pending.as_slice();
                    match self.dec.init(&mut probe) {
                        Ok(()) => {
                            let used = self.pending.len() - probe.len();
                            self.pending.drain(..used);
                            self.started = true;
                            continue;
                        }
                        Err(_) => break,
                    }
                }
                let mut src = self.pending.as_slice();
                self.dec
                    .init(&mut src)
                    .map_err(|e| format!("the zstd body is not valid: {e}"))?;
                let used = self.pending.len() - src.len();
                self.pending.drain(..used);
                self.started = true;
            }
            let (read, written) = self
                .dec
                .decode_from_to(&self.pending, &mut buf)
                .map_err(|e| format!("the zstd body is not valid: {e}"))?;
            self.pending.drain(..read);
            out.extend_from_slice(&buf[..written]);
            if read == 0 && written == 0 {
                break;
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, String> {
        let out = self.push(&[])?;
        if !self.pending.is_empty() || (self.started && !self.dec.is_finished()) {
            return Err("the zstd body ends in the middle of a frame".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn decode_in_chunks(coding: Coding, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut d = Decoder::new(coding);
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            out.extend(d.push(c).unwrap());
        }
        out.extend(d.finish().unwrap());
        out
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("line {i} AKIA\n").into_bytes())
            .collect()
    }

    #[test]
    fn gzip_and_deflate_decode_in_small_chunks() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode_in_chunks(Coding::Gzip, &gz, 1000), data);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        let z = z.finish().unwrap();
        assert_eq!(decode_in_chunks(Coding::Deflate, &z, 333), data);
    }

    #[test]
    fn zstd_decodes_in_small_chunks() {
        let data = sample();
        let z = ruzstd::encoding::compress_to_vec(
            data.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for chunk in [7, 1000, 1 << 20] {
            assert_eq!(decode_in_chunks(Coding::Zstd, &z, chunk), data, "{chunk}");
        }
    }

    #[test]
    fn a_truncated_body_is_an_error() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let mut d = Decoder::new(Coding::Gzip);
        d.push(&gz[..gz.len() / 2]).unwrap();
        assert!(d.finish().is_err());
    }

    #[test]
    fn unknown_codings_are_named() {
        assert_eq!(Coding::of(Some(b"gzip")), Ok(Some(Coding::Gzip)));
        assert_eq!(Coding::of(None), Ok(None));
        assert_eq!(
            Coding::of(Some(b"gzip, br")),
            Err("Content-Encoding gzip, br".to_string())
        );
    }
}
