//! Image classification around a compiled model. Everything model-specific
//! (input name and shape, crop, resize filter, mean/std, layout, labels)
//! comes from the model's metadata (`model.json`), nothing is hard-coded.

use image::imageops::FilterType;
use image::{ImageBuffer, Pixel};
use model_runtime::{Model, Session};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

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
    /// The image declares more pixels than the limit; refused before decoding.
    TooLarge { width: u32, height: u32, limit: u64 },
    /// The model failed.
    Model(model_runtime::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Metadata(m) => write!(f, "model metadata: {}", m),
            Error::Decode(m) => write!(f, "not a decodable PNG or JPEG image ({})", m),
            Error::TooLarge { width, height, limit } => {
                write!(f, "image is {}x{} pixels, more than the limit of {} pixels", width, height, limit)
            }
            Error::Model(e) => write!(f, "{}", e),
        }
    }
}

impl std::error::Error for Error {}

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

/// Images with more pixels than this are refused before they are decoded:
/// a few bytes of PNG can declare gigapixels. 32 Mpx is a large camera photo,
/// and decodes within about 200 MB.
pub const DEFAULT_PIXEL_LIMIT: u64 = 1 << 25;

/// A model with its metadata and labels, ready to classify images.
pub struct Classifier {
    model: Model,
    info: ModelInfo,
    labels: Vec<String>,
    pixel_limit: u64,
}

impl Classifier {
    pub fn new(model: Model, meta_json: &str, labels: &str) -> Result<Classifier, Error> {
        let info: ModelInfo = serde_json::from_str(meta_json).map_err(|e| Error::Metadata(e.to_string()))?;
        if info.inputs.len() != 1 || info.outputs.is_empty() {
            return Err(Error::Metadata("a classifier has one image input and a logits output".into()));
        }
        // Every line is a class, class 0 included.
        let labels: Vec<String> = labels.lines().map(|l| l.trim_end().to_string()).collect();
        let classifier = Classifier { model, info, labels, pixel_limit: DEFAULT_PIXEL_LIMIT };
        let classes = classifier.model.outputs().first().map(|o| o.shape.iter().product::<i64>()).unwrap_or(0);
        if classes as usize != classifier.labels.len() {
            return Err(Error::Metadata(format!("{} labels for {} classes", classifier.labels.len(), classes)));
        }
        Ok(classifier)
    }

    /// Refuse images with more than `pixels` pixels (see DEFAULT_PIXEL_LIMIT).
    pub fn with_pixel_limit(mut self, pixels: u64) -> Classifier {
        self.pixel_limit = pixels;
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
        check_pixels(image, self.pixel_limit)?;
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
    let decoded = image::load_from_memory(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    match p.channels {
        1 => Ok(normalize(&crop_and_resize(&decoded.to_luma8(), p)?, p)),
        3 => Ok(normalize(&crop_and_resize(&decoded.to_rgb8(), p)?, p)),
        n => Err(Error::Metadata(format!("{} channels (1 or 3 are supported)", n))),
    }
}

/// Reads only the image's header: refuses more than `limit` pixels.
pub fn check_pixels(bytes: &[u8], limit: u64) -> Result<(), Error> {
    let (width, height) = declared_size(bytes)?;
    if width as u64 * height as u64 > limit {
        return Err(Error::TooLarge { width, height, limit });
    }
    Ok(())
}

/// The width and height an image's header declares, read without decoding.
/// PNG headers go to the png crate directly: image's PNG decoder sizes its
/// output buffer while it reads the header, and on wasm32 that size overflows
/// for gigapixel images before their dimensions can be compared.
fn declared_size(bytes: &[u8]) -> Result<(u32, u32), Error> {
    let format = image::guess_format(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    if format == image::ImageFormat::Png {
        let mut decoder = png::Decoder::new(bytes);
        let info = decoder.read_header_info().map_err(|e| Error::Decode(e.to_string()))?;
        return Ok((info.width, info.height));
    }
    image::io::Reader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| Error::Decode(e.to_string()))
}

type Image<P> = ImageBuffer<P, Vec<u8>>;

fn crop_and_resize<P: Pixel<Subpixel = u8> + 'static>(img: &Image<P>, p: &Preprocess) -> Result<Image<P>, Error> {
    let (w, h) = img.dimensions();
    let [tw, th] = p.size;
    if w == 0 || h == 0 || tw == 0 || th == 0 {
        return Err(Error::Decode("empty image".into()));
    }
    // The largest centred box with the target's aspect ratio, scaled down.
    let scale = (w as f32 / tw as f32).min(h as f32 / th as f32) * p.crop_fraction;
    let cw = ((tw as f32 * scale).round() as u32).clamp(1, w);
    let ch = ((th as f32 * scale).round() as u32).clamp(1, h);
    let crop = image::imageops::crop_imm(img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    Ok(image::imageops::resize(&crop, tw, th, filter(p.interpolation)))
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
mod test {
    use super::*;

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

    fn preprocess_spec(layout: Layout) -> Preprocess {
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

    /// The 8-byte signature and an IHDR chunk that declares width x height.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&width.to_be_bytes());
        chunk.extend_from_slice(&height.to_be_bytes());
        chunk.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
        png
    }

    #[test]
    fn declared_size_above_the_limit_is_refused_from_the_header() {
        let err = check_pixels(&png_header(100_000, 100_000), DEFAULT_PIXEL_LIMIT).unwrap_err();
        assert!(matches!(err, Error::TooLarge { width: 100_000, height: 100_000, .. }), "{}", err);
        assert!(check_pixels(&png_header(64, 64), DEFAULT_PIXEL_LIMIT).is_ok());
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
