//! Image classification around a compiled model. Everything model-specific
//! (input name and shape, crop, resize filter, mean/std, layout, labels)
//! comes from the model's metadata (`model.json`), nothing is hard-coded.

mod footprint;

pub use footprint::{footprint, Footprint};
use image::codecs::jpeg::JpegDecoder;
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, Pixel};
use model_runtime::{Model, Session};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

#[derive(Debug, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub inputs: BTreeMap<String, InputSpec>,
    pub outputs: Vec<String>,
    pub preprocess: Preprocess,
}

#[derive(Debug, Deserialize)]
pub struct InputSpec {
    pub shape: Vec<usize>,
    pub dtype: String,
}

#[derive(Debug, Deserialize)]
pub struct Preprocess {
    /// Width and height fed to the model.
    pub size: [u32; 2],
    /// The centred crop covers this fraction of the image, before resizing.
    pub crop_fraction: f32,
    pub interpolation: Interpolation,
    /// Per channel, on pixel values in 0..=255: (x - mean) / std.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub layout: Layout,
    /// 3 for RGB (the default), 1 for grayscale.
    #[serde(default = "rgb")]
    pub channels: usize,
}

fn rgb() -> usize {
    3
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Layout {
    NCHW,
    NHWC,
}

#[derive(Debug)]
pub enum Error {
    /// The embedded metadata or labels do not fit the model.
    Metadata(String),
    /// The bytes are not an image this build can decode.
    Decode(String),
    /// Decoding the image would need more memory than the limit (bytes);
    /// refused from its header, before decoding.
    TooLarge { footprint: Footprint, limit: u64 },
    /// The model failed.
    Model(model_runtime::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Metadata(m) => write!(f, "model metadata: {}", m),
            Error::Decode(m) => write!(f, "not a decodable PNG or JPEG image ({})", m),
            Error::TooLarge { footprint: fp, limit } => write!(
                f,
                "image is {}x{} pixels, {}: decoding needs about {} MiB, more than the limit of {}",
                fp.width,
                fp.height,
                fp.kind,
                (fp.bytes + MIB - 1) / MIB,
                mebibytes(*limit)
            ),
            Error::Model(e) => write!(f, "{}", e),
        }
    }
}

impl std::error::Error for Error {}

const MIB: u64 = 1 << 20;

/// "416 MiB", or "1.5 MiB" for a limit that is not whole mebibytes.
fn mebibytes(bytes: u64) -> String {
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

impl From<model_runtime::Error> for Error {
    fn from(e: model_runtime::Error) -> Error {
        Error::Model(e)
    }
}

/// One class and its softmax probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction<'a> {
    pub class: usize,
    pub label: &'a str,
    pub probability: f32,
}

/// Images whose footprint (the memory decoding and preprocessing them need,
/// their file included) is over this are refused before they are decoded.
/// It lets every 32 Mpx 8-bit photo through: a PNG needs 111 to 367 MiB
/// besides its file, a progressive JPEG without chroma subsampling, the
/// costliest JPEG, up to 402. And it leaves 96 MiB of a 512 MiB instance
/// for the module itself (its model and session, about 30 MiB) and the
/// actor's second copy of a request's body (16 MiB at most). There is no
/// separate pixel limit: memory is what an image can exhaust (the host
/// bounds time), and every decoded pixel takes at least a byte of this.
pub const DEFAULT_MEMORY_LIMIT: u64 = 416 * MIB;

/// A model with its metadata and labels, ready to classify images.
pub struct Classifier {
    model: Model,
    info: ModelInfo,
    labels: Vec<String>,
    memory_limit: u64,
}

impl Classifier {
    pub fn new(model: Model, meta_json: &str, labels: &str) -> Result<Classifier, Error> {
        let info: ModelInfo = serde_json::from_str(meta_json).map_err(|e| Error::Metadata(e.to_string()))?;
        if info.inputs.len() != 1 || info.outputs.is_empty() {
            return Err(Error::Metadata("a classifier has one image input and a logits output".into()));
        }
        // Every line is a class, class 0 included.
        let labels: Vec<String> = labels.lines().map(|l| l.trim_end().to_string()).collect();
        let classifier = Classifier { model, info, labels, memory_limit: DEFAULT_MEMORY_LIMIT };
        let classes = classifier.model.outputs().first().map(|o| o.shape.iter().product::<i64>()).unwrap_or(0);
        if classes as usize != classifier.labels.len() {
            return Err(Error::Metadata(format!("{} labels for {} classes", classifier.labels.len(), classes)));
        }
        Ok(classifier)
    }

    /// Refuse images whose footprint is over `bytes` (see DEFAULT_MEMORY_LIMIT).
    pub fn with_memory_limit(mut self, bytes: u64) -> Classifier {
        self.memory_limit = bytes;
        self
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn session(&self) -> Session<'_> {
        self.model.session()
    }

    /// Decodes, preprocesses and classifies one image; the `top` best classes.
    pub fn classify(&self, session: &mut Session<'_>, image: &[u8], top: usize) -> Result<Vec<Prediction<'_>>, Error> {
        let (input, _) = self.info.inputs.iter().next().ok_or_else(|| Error::Metadata("no input".into()))?;
        check_footprint(image, &self.info.preprocess, self.memory_limit)?;
        let tensor = preprocess(image, &self.info.preprocess)?;
        session.set_input_f32(input, &tensor)?;
        session.run()?;
        let logits = session.output_f32(&self.info.outputs[0])?;
        Ok(top_k(&logits, top)
            .into_iter()
            .map(|(class, probability)| Prediction { class, label: &self.labels[class], probability })
            .collect())
    }
}

fn filter(i: Interpolation) -> FilterType {
    match i {
        Interpolation::Nearest => FilterType::Nearest,
        Interpolation::Bilinear => FilterType::Triangle,
        // Catmull-Rom is the cubic with a = -0.5 that PIL and torchvision use.
        Interpolation::Bicubic => FilterType::CatmullRom,
        Interpolation::Lanczos => FilterType::Lanczos3,
    }
}

/// Decodes PNG or JPEG bytes into the float tensor the model expects.
pub fn preprocess(bytes: &[u8], p: &Preprocess) -> Result<Vec<f32>, Error> {
    if p.mean.len() != p.channels || p.std.len() != p.channels {
        return Err(Error::Metadata(format!("mean and std need {} values each", p.channels)));
    }
    let target = target_color(p.channels)?;
    // into_*: an image already of the model's type is used as it is
    let decoded = decode(bytes)?;
    if target == ColorType::L8 {
        Ok(normalize(&crop_and_resize(&decoded.into_luma8(), p)?, p))
    } else {
        Ok(normalize(&crop_and_resize(&decoded.into_rgb8(), p)?, p))
    }
}

/// The pixel type the model's channels call for.
fn target_color(channels: usize) -> Result<ColorType, Error> {
    match channels {
        1 => Ok(ColorType::L8),
        3 => Ok(ColorType::Rgb8),
        n => Err(Error::Metadata(format!("{} channels (1 or 3 are supported)", n))),
    }
}

/// Reads only the image's header: refuses an image whose footprint is over
/// `limit` bytes.
pub fn check_footprint(bytes: &[u8], p: &Preprocess, limit: u64) -> Result<(), Error> {
    let footprint = footprint(bytes, p)?;
    if footprint.bytes > limit {
        return Err(Error::TooLarge { footprint, limit });
    }
    Ok(())
}

fn decode_error(e: impl fmt::Display) -> Error {
    Error::Decode(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<DynamicImage, Error> {
    match image::guess_format(bytes).map_err(decode_error)? {
        ImageFormat::Jpeg => decode_jpeg(bytes),
        format => image::load_from_memory_with_format(bytes, format).map_err(decode_error),
    }
}

/// A JPEG through image's decoder, but by its reader: read_image would copy
/// jpeg-decoder's result into a second buffer of the same size, the reader
/// hands that result over.
fn decode_jpeg(bytes: &[u8]) -> Result<DynamicImage, Error> {
    let decoder = JpegDecoder::new(bytes).map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let mut data = Vec::new();
    decoder.into_reader().map_err(decode_error)?.read_to_end(&mut data).map_err(decode_error)?;
    let expected = u64::from(width) * u64::from(height) * u64::from(color.bytes_per_pixel());
    if data.len() as u64 != expected {
        return Err(Error::Decode(format!(
            "{} bytes decoded for a {}x{} {:?} image",
            data.len(),
            width,
            height,
            color
        )));
    }
    let image = match color {
        ColorType::L8 => ImageBuffer::from_raw(width, height, data).map(DynamicImage::ImageLuma8),
        ColorType::Rgb8 => ImageBuffer::from_raw(width, height, data).map(DynamicImage::ImageRgb8),
        // 16-bit samples come as native-endian bytes
        ColorType::L16 => {
            let samples = data.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect();
            ImageBuffer::from_raw(width, height, samples).map(DynamicImage::ImageLuma16)
        }
        _ => None,
    };
    image.ok_or_else(|| Error::Decode(format!("JPEG decoded to {:?} pixels", color)))
}

type Image<P> = ImageBuffer<P, Vec<u8>>;

fn crop_and_resize<P: Pixel<Subpixel = u8> + 'static>(img: &Image<P>, p: &Preprocess) -> Result<Image<P>, Error> {
    let (w, h) = img.dimensions();
    let [tw, th] = p.size;
    if w == 0 || h == 0 || tw == 0 || th == 0 {
        return Err(Error::Decode("empty image".into()));
    }
    let (cw, ch) = crop_box(w, h, p);
    // Resized from a view of the crop: a copy would be one more large buffer.
    let crop = image::imageops::crop_imm(img, (w - cw) / 2, (h - ch) / 2, cw, ch);
    Ok(image::imageops::resize(&*crop, tw, th, filter(p.interpolation)))
}

/// The crop's width and height: the largest centred box with the target's
/// aspect ratio, scaled down by the crop fraction.
fn crop_box(w: u32, h: u32, p: &Preprocess) -> (u32, u32) {
    let [tw, th] = p.size;
    let scale = (w as f32 / tw as f32).min(h as f32 / th as f32) * p.crop_fraction;
    let cw = ((tw as f32 * scale).round() as u32).clamp(1, w.max(1));
    let ch = ((th as f32 * scale).round() as u32).clamp(1, h.max(1));
    (cw, ch)
}

fn normalize<P: Pixel<Subpixel = u8>>(img: &Image<P>, p: &Preprocess) -> Vec<f32> {
    let channels = p.channels;
    let plane = img.pixels().len();
    let mut out = vec![0f32; plane * channels];
    for (i, px) in img.pixels().enumerate() {
        for (c, &v) in px.channels().iter().enumerate().take(channels) {
            let index = match p.layout {
                Layout::NCHW => c * plane + i,
                Layout::NHWC => i * channels + c,
            };
            out[index] = (v as f32 - p.mean[c]) / p.std[c];
        }
    }
    out
}

/// The `k` most probable classes with softmax probabilities, best first.
/// Works for any logits, all-negative ones included; NaN ranks last.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().cloned().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&v| if v.is_nan() { 0.0 } else { (v - max).exp() }).collect();
    let sum: f32 = exps.iter().sum();
    let mut ranked: Vec<(usize, f32)> = exps.iter().map(|&e| e / sum).enumerate().collect();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;
    use image::GenericImageView;

    #[test]
    fn top_k_handles_negative_logits() {
        let top = top_k(&[-5.0, -1.0, -3.0], 2);
        assert_eq!(top[0].0, 1);
        assert_eq!(top[1].0, 2);
        assert!((top_k(&[-5.0, -1.0, -3.0], 3).iter().map(|t| t.1).sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_ranks_nan_last() {
        assert_eq!(top_k(&[f32::NAN, 1.0], 1)[0].0, 1);
    }

    pub(crate) fn preprocess_spec(layout: Layout) -> Preprocess {
        Preprocess {
            size: [2, 2],
            crop_fraction: 1.0,
            interpolation: Interpolation::Nearest,
            mean: vec![0.0, 0.0, 0.0],
            std: vec![1.0, 1.0, 2.0],
            layout,
            channels: 3,
        }
    }

    #[test]
    fn normalizes_into_the_layout() {
        let img = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([(x + 2 * y) as u8, 10, 20]));
        let nchw = normalize(&img, &preprocess_spec(Layout::NCHW));
        assert_eq!(&nchw[..4], &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(nchw[8], 10.0);
        let nhwc = normalize(&img, &preprocess_spec(Layout::NHWC));
        assert_eq!(&nhwc[..3], &[0.0, 10.0, 10.0]);
    }

    #[test]
    fn grayscale_has_one_plane() {
        let img = image::GrayImage::from_fn(2, 2, |x, y| image::Luma([(x + 2 * y) as u8 * 16]));
        let spec = Preprocess { mean: vec![0.0], std: vec![16.0], channels: 1, ..preprocess_spec(Layout::NCHW) };
        assert_eq!(normalize(&img, &spec), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn mean_and_std_must_fit_the_channels() {
        let spec = Preprocess { channels: 1, ..preprocess_spec(Layout::NCHW) };
        assert!(matches!(preprocess(b"", &spec), Err(Error::Metadata(_))));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(preprocess(b"not an image", &preprocess_spec(Layout::NCHW)), Err(Error::Decode(_))));
    }

    /// The 8-byte signature and an IHDR chunk that declares width x height
    /// pixels of `depth` bits and PNG color type `color` (2 RGB, 6 RGBA).
    pub(crate) fn png_header(width: u32, height: u32, depth: u8, color: u8) -> Vec<u8> {
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&width.to_be_bytes());
        chunk.extend_from_slice(&height.to_be_bytes());
        chunk.extend_from_slice(&[depth, color, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
        png
    }

    /// SOI and a frame header: SOF `marker` (0xC0 baseline, 0xC2
    /// progressive), 8-bit, one component per sampling byte (0x22: 2x2).
    pub(crate) fn jpeg_header(marker: u8, width: u16, height: u16, sampling: &[u8]) -> Vec<u8> {
        let mut sof = vec![8];
        sof.extend_from_slice(&height.to_be_bytes());
        sof.extend_from_slice(&width.to_be_bytes());
        sof.push(sampling.len() as u8);
        for (id, &factors) in sampling.iter().enumerate() {
            sof.extend_from_slice(&[id as u8 + 1, factors, 0]);
        }
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, marker];
        jpeg.extend_from_slice(&(sof.len() as u16 + 2).to_be_bytes());
        jpeg.extend_from_slice(&sof);
        jpeg
    }

    #[test]
    fn a_footprint_over_the_limit_is_refused_from_the_header() {
        let p = Preprocess { size: [224, 224], ..preprocess_spec(Layout::NCHW) };
        let err = check_footprint(&png_header(100_000, 100_000, 8, 2), &p, DEFAULT_MEMORY_LIMIT).unwrap_err();
        // 28610 MiB of pixels, and the crop's vertical resize pass (224 rows
        // of 100000 RGBA f32 pixels)
        assert_eq!(
            err.to_string(),
            "image is 100000x100000 pixels, 8-bit RGB PNG: decoding needs about 28955 MiB, \
             more than the limit of 416 MiB"
        );
        assert!(check_footprint(&png_header(64, 64, 8, 2), &p, DEFAULT_MEMORY_LIMIT).is_ok());
        // 3 MB of pixels, 3.6 MB of vertical resize pass, png's buffers
        let err = check_footprint(&png_header(1000, 1000, 8, 2), &p, 3 * MIB / 2).unwrap_err();
        assert!(err.to_string().ends_with("needs about 8 MiB, more than the limit of 1.5 MiB"), "{}", err);
    }

    #[test]
    fn jpeg_decodes_to_its_own_buffer() {
        // a real JPEG through decode_jpeg: the reader's buffer becomes the image
        let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 100]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg).encode_image(&img).unwrap();
        let decoded = decode(&jpeg).unwrap();
        assert_eq!((decoded.dimensions(), decoded.color()), ((40, 30), ColorType::Rgb8));
        let gray = image::GrayImage::from_fn(8, 8, |x, _| image::Luma([x as u8 * 30]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg).encode_image(&gray).unwrap();
        assert_eq!(decode(&jpeg).unwrap().color(), ColorType::L8);
    }

    #[test]
    fn crops_the_centre_of_the_shorter_side() {
        let img = image::RgbImage::from_fn(8, 4, |x, _| image::Rgb([x as u8, 0, 0]));
        let out = crop_and_resize(&img, &preprocess_spec(Layout::NCHW)).unwrap();
        assert_eq!(out.dimensions(), (2, 2));
        // The 4x4 centre spans x = 2..6.
        assert!(out.pixels().all(|p| (2..6).contains(&p[0])));
    }
}
