//! What classifying an image will allocate, read from its header before
//! anything is decoded. A few hundred bytes of PNG or JPEG can declare an
//! image whose decoding needs gigabytes, and on wasm32 a failed allocation
//! aborts the whole module, so an image is refused up front when its
//! footprint is over the limit (`Classifier::with_memory_limit`).
//!
//! The estimate follows what this crate's decode path allocates (image
//! 0.24, png 0.17, jpeg-decoder 0.2 without threads) in three stages: the
//! decoder at its peak, the copy of its output converted to the model's
//! pixel type, and the crop resized to the model's input. The stages are
//! added up, with the file's own bytes, which stay in memory throughout: a
//! later stage reuses the memory an earlier one freed only when it fits
//! (the RGB copy of a progressive grayscale JPEG does not fit where its
//! coefficients were), and a wasm memory never shrinks.

use crate::{crop_box, decode_error, target_color, Error, Preprocess};
use image::{ColorType, ImageFormat};

const KIB: u128 = 1024;

/// The memory one image needs, estimated from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub width: u32,
    pub height: u32,
    /// How the file stores its pixels, e.g. "16-bit RGBA PNG".
    pub kind: String,
    /// At most what decoding and preprocessing the image add to the
    /// module's memory, its file's bytes included.
    pub bytes: u64,
}

/// A decoder's part of the footprint.
struct Decoding {
    width: u32,
    height: u32,
    kind: String,
    /// The pixel type of the image the decoder hands over.
    color: ColorType,
    /// The most the decoder holds at once, its output included.
    peak: u128,
}

/// The footprint of a PNG or JPEG image preprocessed as `p` says.
pub fn footprint(bytes: &[u8], p: &Preprocess) -> Result<Footprint, Error> {
    let target = target_color(p.channels)?;
    let decoding = match image::guess_format(bytes).map_err(decode_error)? {
        ImageFormat::Png => png_decoding(bytes)?,
        ImageFormat::Jpeg => jpeg_decoding(bytes)?,
        other => return Err(Error::Decode(format!("{:?} images are not supported", other))),
    };
    // into_rgb8 and into_luma8 hand over an image already of the model's
    // type, and copy any other
    let converted = if decoding.color == target {
        0
    } else {
        u128::from(decoding.width) * u128::from(decoding.height) * u128::from(target.bytes_per_pixel())
    };
    let total = bytes.len() as u128 + decoding.peak + converted + resizing(decoding.width, decoding.height, p);
    Ok(Footprint {
        width: decoding.width,
        height: decoding.height,
        kind: decoding.kind,
        bytes: u64::try_from(total).unwrap_or(u64::MAX),
    })
}

/// What resizing the crop to the model's input and normalizing it allocate.
/// image's resize runs a vertical pass first, into a buffer as wide as the
/// crop and as high as the output, of 4 f32 channels whatever the pixel
/// type (imageops/sample.rs); the horizontal pass writes the output.
fn resizing(width: u32, height: u32, p: &Preprocess) -> u128 {
    let (crop_width, _) = crop_box(width, height, p);
    let [tw, th] = p.size;
    let output = u128::from(tw) * u128::from(th) * p.channels as u128;
    let vertical_pass = u128::from(crop_width) * u128::from(th) * 16;
    // the output as bytes, then as the f32 tensor
    vertical_pass + output + output * 4
}

/// A PNG as image 0.24 decodes it: png's EXPAND turns palettes into RGB,
/// a tRNS chunk into an alpha channel and depths under 8 bits into 8; 16
/// bits stay 16.
fn png_decoding(bytes: &[u8]) -> Result<Decoding, Error> {
    let mut decoder = png::StreamingDecoder::new();
    read_png_header(&mut decoder, bytes)?;
    let info = decoder.info().ok_or_else(|| Error::Decode("the PNG ends before its header".into()))?;
    let depth = info.bit_depth as u8;
    let color = png_output(info.color_type, info.trns.is_some(), depth == 16);
    let (w, h) = (u128::from(info.width), u128::from(info.height));
    let image = w * h * u128::from(color.bytes_per_pixel());
    // png's Reader holds the previous raw row (filter byte included), one
    // expanded row, and the inflated data not yet consumed: up to a raw row
    // and an inflate chunk, in a Vec that grows by doubling. Each larger
    // buffer lands past the freed smaller ones, so the memory it takes up
    // reaches twice its final capacity, which is up to twice its length.
    // Interlacing adds nothing: next_frame expands each pass's rows into
    // the output in place.
    let raw_row = 1 + (w * info.color_type.samples() as u128 * u128::from(depth) + 7) / 8;
    let row = w * u128::from(color.bytes_per_pixel());
    let rows = raw_row + row + 4 * (raw_row + 64 * KIB);
    // inflate state and windows, the read buffer, and an ICC profile,
    // inflated while the header is read (png caps it at 8 MB)
    let icc = info.icc_profile.as_ref().map_or(0, |p| p.len() as u128);
    let fixed = 256 * KIB + 2 * icc;
    let interlaced = if info.interlaced { " interlaced" } else { "" };
    Ok(Decoding {
        width: info.width,
        height: info.height,
        kind: format!("{}-bit {}{} PNG", depth, png_color_name(info.color_type), interlaced),
        color,
        peak: image + rows + fixed,
    })
}

/// Feeds the PNG's chunks to `decoder` up to its image data, which it does
/// not inflate; png's Reader::read_info would allocate its row buffers. A
/// file that ends sooner is still sized by its IHDR: decoding it fails
/// later, if it is not refused first.
fn read_png_header(decoder: &mut png::StreamingDecoder, bytes: &[u8]) -> Result<(), Error> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (used, event) = decoder.update(rest, &mut Vec::new()).map_err(decode_error)?;
        rest = &rest[used..];
        match event {
            png::Decoded::ChunkBegin(_, png::chunk::IDAT) | png::Decoded::ImageEnd => break,
            png::Decoded::Nothing if used == 0 => break,
            _ => {}
        }
    }
    Ok(())
}

fn png_output(color: png::ColorType, trns: bool, sixteen: bool) -> ColorType {
    use png::ColorType::*;
    let (eight_bit, sixteen_bit) = match (color, trns) {
        (Grayscale, false) => (ColorType::L8, ColorType::L16),
        (Grayscale, true) | (GrayscaleAlpha, _) => (ColorType::La8, ColorType::La16),
        (Rgb, false) | (Indexed, false) => (ColorType::Rgb8, ColorType::Rgb16),
        (Rgb, true) | (Indexed, true) | (Rgba, _) => (ColorType::Rgba8, ColorType::Rgba16),
    };
    if sixteen {
        sixteen_bit
    } else {
        eight_bit
    }
}

fn png_color_name(color: png::ColorType) -> &'static str {
    match color {
        png::ColorType::Grayscale => "grayscale",
        png::ColorType::GrayscaleAlpha => "grayscale+alpha",
        png::ColorType::Rgb => "RGB",
        png::ColorType::Rgba => "RGBA",
        png::ColorType::Indexed => "indexed",
    }
}

/// A JPEG's frame header (SOF): what jpeg-decoder sizes its buffers by.
#[derive(Debug)]
struct Frame {
    /// The SOF marker's last byte: 0xC2 is progressive, 0xC3 lossless.
    marker: u8,
    precision: u8,
    width: u32,
    height: u32,
    /// Each component's horizontal and vertical sampling factors.
    sampling: Vec<(u32, u32)>,
}

/// A JPEG as jpeg-decoder 0.2 decodes it: each component into a plane of
/// whole MCUs, a progressive image's coefficients kept as i16 for the whole
/// decode, then the planes upsampled and interleaved into its result,
/// which image hands over as is (CMYK is converted to RGB, 16-bit samples
/// to u16).
fn jpeg_decoding(bytes: &[u8]) -> Result<Decoding, Error> {
    let frame = jpeg_frame(bytes)?;
    let components = frame.sampling.len() as u128;
    let (h_max, v_max) = frame.sampling.iter().fold((1, 1), |(h, v), &(hs, vs)| (h.max(hs), v.max(vs)));
    let mcus_x = u128::from((frame.width + 8 * h_max - 1) / (8 * h_max));
    let mcus_y = u128::from((frame.height + 8 * v_max - 1) / (8 * v_max));
    let planes: u128 =
        frame.sampling.iter().map(|&(hs, vs)| mcus_x * u128::from(hs) * 8 * mcus_y * u128::from(vs) * 8).sum();
    // two MCU rows of i16 coefficients: the one being read, the one handed on
    let rows: u128 = frame.sampling.iter().map(|&(hs, vs)| 2 * mcus_x * u128::from(hs * vs) * 64 * 2).sum();
    let pixels = u128::from(frame.width) * u128::from(frame.height);
    let sample_bytes = if frame.precision > 8 { 2 } else { 1 };
    let result = pixels * components * sample_bytes;
    let (working, process) = match frame.marker {
        0xC2 | 0xC6 | 0xCA | 0xCE => (3 * planes + rows, "progressive "),
        // u16 planes, interleaved, then turned into bytes twice
        0xC3 | 0xC7 | 0xCB | 0xCF => (2 * planes + 2 * result, "lossless "),
        _ => (planes + rows, ""),
    };
    let color = match (components, sample_bytes) {
        (1, 1) => ColorType::L8,
        (1, _) => ColorType::L16,
        _ => ColorType::Rgb8,
    };
    let converted =
        if components == 4 || color == ColorType::L16 { pixels * u128::from(color.bytes_per_pixel()) } else { 0 };
    let name = match components {
        1 => "grayscale",
        3 => "color",
        _ => "CMYK",
    };
    Ok(Decoding {
        width: frame.width,
        height: frame.height,
        kind: format!("{}-bit {} {}JPEG", frame.precision, name, process),
        color,
        peak: working + result + converted,
    })
}

/// The first frame header, found as jpeg-decoder finds it: stray bytes
/// before a marker and 0xFF fill bytes are skipped.
fn jpeg_frame(bytes: &[u8]) -> Result<Frame, Error> {
    let bad = |what: &str| Error::Decode(format!("JPEG: {}", what));
    let mut at = 2; // past SOI
    loop {
        let marker = next_marker(bytes, &mut at).ok_or_else(|| bad("no frame header"))?;
        match marker {
            // RSTn and TEM stand alone
            0xD0..=0xD7 | 0x01 => continue,
            0xD9 | 0xDA => return Err(bad("no frame header before the image data")),
            _ => {}
        }
        let length = bytes.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let segment = length.filter(|&n| n >= 2).and_then(|n| bytes.get(at + 2..at + n));
        let segment = segment.ok_or_else(|| bad("truncated header"))?;
        at += 2 + segment.len();
        // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC)
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            return parse_frame(marker, segment).ok_or_else(|| bad("malformed frame header"));
        }
    }
}

fn next_marker(bytes: &[u8], at: &mut usize) -> Option<u8> {
    loop {
        while *bytes.get(*at)? != 0xFF {
            *at += 1;
        }
        while *bytes.get(*at)? == 0xFF {
            *at += 1;
        }
        let marker = *bytes.get(*at)?;
        *at += 1;
        if marker != 0 {
            return Some(marker);
        }
    }
}

/// SOF: precision, height, width, component count, then per component its
/// id, sampling factors (4 bits each) and quantization table.
fn parse_frame(marker: u8, segment: &[u8]) -> Option<Frame> {
    let (&precision, rest) = segment.split_first()?;
    let height = u32::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let width = u32::from(u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]));
    let count = usize::from(*rest.get(4)?);
    let specs = rest.get(5..5 + 3 * count)?;
    let sampling: Vec<(u32, u32)> =
        specs.chunks_exact(3).map(|c| (u32::from(c[1] >> 4), u32::from(c[1] & 15))).collect();
    let factors_ok = sampling.iter().all(|&(h, v)| (1..=4).contains(&h) && (1..=4).contains(&v));
    // jpeg-decoder decodes 1, 3 or 4 components; a height of 0 (set later by
    // a DNL marker) it does not support
    if width == 0 || height == 0 || ![1, 3, 4].contains(&count) || !factors_ok {
        return None;
    }
    Some(Frame { marker, precision, width, height, sampling })
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::test::{jpeg_header, png_header, preprocess_spec};
    use crate::Layout;

    const MIB: u64 = 1 << 20;

    fn spec() -> Preprocess {
        Preprocess { size: [224, 224], crop_fraction: 0.875, ..preprocess_spec(Layout::NCHW) }
    }

    #[test]
    fn a_wide_16_bit_rgba_row_counts_its_row_buffers() {
        // issue 24's repro: one 256 MiB row, which png holds raw, expanded
        // and inflated (up to 1 GiB as it grows) besides the 256 MiB image
        // (the module reached 1800 MiB decoding it), then a 96 MiB RGB copy
        let f = footprint(&png_header(33_554_432, 1, 16, 6), &spec()).unwrap();
        assert_eq!((f.width, f.height, f.kind.as_str()), (33_554_432, 1, "16-bit RGBA PNG"));
        let least = (7 * 256 + 96) * MIB;
        assert!(f.bytes > least && f.bytes < least + 2 * MIB, "{}", f.bytes / MIB);
    }

    #[test]
    fn an_rgb_png_is_used_as_decoded() {
        // 8-bit RGB: the decoded image is the model's type, not copied
        let f = footprint(&png_header(5000, 5000, 8, 2), &spec()).unwrap();
        let image = 5000 * 5000 * 3;
        assert!(f.bytes > image && f.bytes < image + 20 * MIB, "{}", f.bytes / MIB);
        // with alpha it is copied to RGB: both are alive at once
        let rgba = footprint(&png_header(5000, 5000, 8, 6), &spec()).unwrap();
        assert!(rgba.bytes >= 5000 * 5000 * 7, "{}", rgba.bytes / MIB);
    }

    #[test]
    fn sixteen_bits_take_two_bytes_a_sample() {
        let eight = footprint(&png_header(4000, 3000, 8, 6), &spec()).unwrap();
        let sixteen = footprint(&png_header(4000, 3000, 16, 6), &spec()).unwrap();
        // 16-bit RGBA and its RGB copy, against 8-bit RGBA and its copy
        assert_eq!((sixteen.bytes - eight.bytes) / 4000 / 3000, 4, "{} {}", sixteen.bytes, eight.bytes);
    }

    #[test]
    fn jpeg_planes_follow_the_sampling_factors() {
        let (w, h) = (6000, 4000);
        let baseline_420 = footprint(&jpeg_header(0xC0, w, h, &[0x22, 0x11, 0x11]), &spec()).unwrap();
        let baseline_444 = footprint(&jpeg_header(0xC0, w, h, &[0x11, 0x11, 0x11]), &spec()).unwrap();
        let progressive = footprint(&jpeg_header(0xC2, w, h, &[0x11, 0x11, 0x11]), &spec()).unwrap();
        let pixels = u64::from(w) * u64::from(h);
        // planes of 1.5 or 3 bytes a pixel
        assert_eq!(baseline_444.bytes - baseline_420.bytes, pixels * 3 / 2);
        // and 2 bytes of coefficients a sample, kept for the whole decode
        assert_eq!(progressive.bytes - baseline_444.bytes, pixels * 6);
        assert_eq!(progressive.kind, "8-bit color progressive JPEG");
    }

    #[test]
    fn a_32_megapixel_photo_fits_the_default_limit() {
        let limit = crate::DEFAULT_MEMORY_LIMIT;
        let (w, h) = (6928u16, 4842u16);
        let headers = [
            png_header(w.into(), h.into(), 8, 2),
            png_header(w.into(), h.into(), 16, 6),
            jpeg_header(0xC2, w, h, &[0x11; 3]),
        ];
        for header in headers {
            let f = footprint(&header, &spec()).unwrap();
            assert!(f.bytes < limit, "{}: {} MiB", f.kind, f.bytes / MIB);
        }
    }

    #[test]
    fn jpeg_markers_before_the_frame_are_skipped() {
        let mut jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\x00\x00\xff\xff".to_vec(); // APP0, stray bytes, fill
        jpeg.extend_from_slice(&jpeg_header(0xC0, 640, 480, &[0x11])[2..]);
        let f = footprint(&jpeg, &spec()).unwrap();
        assert_eq!((f.width, f.height, f.kind.as_str()), (640, 480, "8-bit grayscale JPEG"));
    }

    #[test]
    fn malformed_headers_are_decode_errors() {
        let p = spec();
        for bad in [
            b"\xff\xd8\xff\xc0\x00\x11".to_vec(),             // truncated SOF
            jpeg_header(0xC0, 0, 480, &[0x11]),               // zero width
            jpeg_header(0xC0, 640, 480, &[0x11, 0x11]),       // two components
            jpeg_header(0xC0, 640, 480, &[0x51, 0x11, 0x11]), // sampling factor 5
            b"\xff\xd8\xff\xda\x00\x02".to_vec(),             // scan before frame
            png_header(64, 64, 8, 2)[..20].to_vec(),          // truncated IHDR
        ] {
            assert!(matches!(footprint(&bad, &p), Err(Error::Decode(_))), "{:?}", bad);
        }
    }
}
