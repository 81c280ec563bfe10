//! `codi sample`: text-to-image with a pretrained pipeline (the embedded default's teacher by default).

use std::io::Write;
use std::path::PathBuf;

use std::path::Path;

use crate::device::{with_backend, BackendTask, DeviceSpec};
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use burn::tensor::TensorData;
use clap::Args as ClapArgs;
use codi_core::{Sampler, SamplerKind, SeededNoise};
use codi_pipelines::image_file::{has_image_extension, read_rgb, square, Window, IMAGE_EXTENSIONS};
use codi_pipelines::image_io::save_grid;
use codi_pipelines::ConditionalPipeline;
use codi_pipelines::TaskKind;
use codi_pipelines::TextToImage;

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// Pipeline folder (vae/, unet/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, default_value = "assets/tiny")]
    model: PathBuf,
    /// A prompt; repeat for one grid row per prompt (text-to-image), or the caption of a conditional sample.
    #[arg(long)]
    prompt: Vec<String>,
    /// Conditional sampling with a distilled adapter: sr | inpaint | edit | depth | controlnet.
    #[arg(long)]
    task: Option<String>,
    /// The adapter folder (a `codi distill` output). Default: <model>/adapters/<task>.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Condition image(s): an image file (PNG, JPEG, WebP, … of any size: its centred square is used) or a
    /// folder of them (sr: the low-resolution image; inpaint: the image; edit: the source image; depth: the
    /// depth map; controlnet: the conditioning image).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Inpainting: the mask image (white = fill), the size of the input image.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Editing: the instruction.
    #[arg(long)]
    instruction: Option<String>,
    /// Samples per prompt (grid columns).
    #[arg(long, value_parser = super::at_least_one, default_value_t = 8)]
    batch: usize,
    /// Sampling steps (default: 50 for text-to-image and a conditional teacher, a progressive student's own
    /// count, 4 for a CoDi adapter).
    #[arg(long, value_parser = super::at_least_one)]
    steps: Option<usize>,
    /// ddim | ddim-trailing | dpmpp | codi | lcm (default: ddim for text-to-image, a conditional teacher and
    /// a progressive student (on its grid), codi for a CoDi adapter)
    #[arg(long)]
    sampler: Option<String>,
    /// Classifier-free guidance scale (1 = off). Default: 3 for text-to-image, 1 with --task (the adapters are
    /// distilled without guidance).
    #[arg(long, value_parser = super::non_negative)]
    guidance: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side in pixels.
    #[arg(long, value_parser = super::at_least_one, default_value_t = 32)]
    size: usize,
    /// The grid: PNG, or JPEG when the name ends in .jpg / .jpeg.
    #[arg(long, default_value = "grid.png")]
    out: PathBuf,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        if a.task.is_some() {
            return conditional::<B::InnerBackend>(&a, &device);
        }
        if a.prompt.is_empty() {
            bail!("give at least one --prompt");
        }
        let steps = a.steps.unwrap_or(50);
        let pipe = TextToImage::<B::InnerBackend>::load(&a.model, &device)?;
        pipe.check_size(a.size)?;
        let sampler = Sampler::new(
            SamplerKind::from_name(a.sampler.as_deref().unwrap_or("ddim"))?,
            steps,
        );
        let mut noise = SeededNoise::new(a.seed);
        let mut rows = Vec::new();
        let total = a.prompt.len();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        for (i, p) in a.prompt.iter().enumerate() {
            let prompts = vec![p.as_str(); a.batch];
            let img = pipe.generate(
                &prompts,
                &sampler,
                a.guidance.unwrap_or(3.0),
                a.size,
                &mut noise,
                &device,
                |s, n| {
                    // A bar in a terminal; a line per tenth of the run in a log.
                    if tty {
                        eprint!("\r[sample] prompt {}/{total} {p:?}: step {s}/{n}   ", i + 1);
                        let _ = std::io::stderr().flush();
                    } else if s == n || s % n.div_ceil(10) == 0 {
                        eprintln!("[sample] prompt {}/{total} {p:?}: step {s}/{n}", i + 1);
                    }
                },
            )?;
            rows.push(img);
        }
        if tty {
            eprintln!();
        }
        save_grid(Tensor::cat(rows, 0), a.batch, 1, &a.out)?;
        println!(
            "wrote {} ({} × {} samples)",
            a.out.display(),
            total,
            a.batch
        );
        Ok(())
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    with_backend(device, Task(args))?
}

/// The image files of `input`: itself, or the images in the folder (sorted).
fn image_files(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("reading {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && has_image_extension(p))
            .collect();
        v.sort();
        if v.is_empty() {
            bail!(
                "{}: no image files ({})",
                input.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        Ok(v)
    } else {
        Ok(vec![input.to_path_buf()])
    }
}

/// An image of any format and size as size × size with `channels` channels: its largest centred square,
/// resized (grey → mean of RGB). → (pixels, the file's [height, width])
fn load_as(file: &Path, size: usize, channels: usize) -> Result<(Vec<f32>, [usize; 2])> {
    let image = read_rgb(file)?;
    let (w, h) = image.dimensions();
    let img = square(&image, Window::centre(w, h), size, false);
    let plane = size * size;
    let pixels = match channels {
        3 => img,
        1 => (0..plane)
            .map(|i| (img[i] + img[plane + i] + img[2 * plane + i]) / 3.0)
            .collect(),
        _ => unreachable!(),
    };
    Ok((pixels, [h as usize, w as usize]))
}

fn conditional<B: burn::tensor::backend::Backend>(a: &Args, device: &B::Device) -> Result<()> {
    let name = a.task.as_deref().unwrap_or_default();
    let task = TaskKind::from_name(name).ok_or_else(|| {
        anyhow!("unknown task '{name}' (expected sr, inpaint, edit, depth, controlnet)")
    })?;
    let input = a
        .input
        .as_ref()
        .ok_or_else(|| anyhow!("--task needs --input IMG|DIR"))?;
    let adapter = a
        .adapter
        .clone()
        .unwrap_or_else(|| a.model.join("adapters").join(task.name()));
    let pipe = ConditionalPipeline::<B>::load(&a.model, &adapter, device)?;
    if pipe.info.task != task.name() {
        bail!(
            "{} holds a {} adapter, not {}",
            adapter.display(),
            pipe.info.task,
            task.name()
        );
    }
    // A conditional teacher samples like its backbone (50 DDIM steps), a progressive student with DDIM on its
    // grid, unless asked otherwise.
    let steps = a.steps.unwrap_or(pipe.default_steps());
    let sampler = match a.sampler.as_deref() {
        None => pipe.default_sampler(steps),
        Some("codi") => pipe.codi_sampler(steps),
        Some(other) => Sampler::new(SamplerKind::from_name(other)?, steps),
    };
    let s = a.size;
    pipe.base.check_size(s)?;
    let text = match task {
        TaskKind::Edit => a
            .instruction
            .clone()
            .ok_or_else(|| anyhow!("--task edit needs --instruction TEXT"))?,
        _ => a.prompt.first().cloned().unwrap_or_default(),
    };
    let mut noise = SeededNoise::new(a.seed);
    let mut rows = Vec::new();
    let files = image_files(input)?;
    for f in &files {
        let cc = task.condition_channels();
        let (cond, shown) = match task {
            TaskKind::SuperResolution | TaskKind::Edit | TaskKind::ControlNet => {
                let (c, _) = load_as(f, s, 3)?;
                (c.clone(), c)
            }
            TaskKind::Depth => {
                let (d, _) = load_as(f, s, 1)?;
                (d.clone(), [d.clone(), d.clone(), d].concat())
            }
            TaskKind::Inpainting => {
                let m = a
                    .mask
                    .as_ref()
                    .ok_or_else(|| anyhow!("--task inpaint needs --mask PNG"))?;
                let (img, img_size) = load_as(f, s, 3)?;
                let (mask, mask_size) = load_as(m, s, 1)?;
                if mask_size != img_size {
                    bail!(
                        "{}: the mask is {}×{} pixels but the image {} is {}×{}: a mask marks the holes of \
                         its own image",
                        m.display(),
                        mask_size[0],
                        mask_size[1],
                        f.display(),
                        img_size[0],
                        img_size[1]
                    );
                }
                let mask: Vec<f32> = mask
                    .into_iter()
                    .map(|v| if v > 0.5 { 1.0 } else { 0.0 })
                    .collect();
                let cond = codi_pipelines::task::inpainting_condition(&img, &mask);
                let masked = cond[..3 * s * s].to_vec();
                (cond, masked)
            }
        };
        let cond_t = Tensor::<B, 4>::from_data(TensorData::new(cond, [1, cc, s, s]), device)
            .repeat_dim(0, a.batch);
        let texts = vec![text.as_str(); a.batch];
        let img = pipe.generate(
            cond_t,
            &texts,
            &sampler,
            a.guidance.unwrap_or(1.0),
            &mut noise,
            device,
            |_, _| {},
        )?;
        rows.push(Tensor::<B, 4>::from_data(
            TensorData::new(shown, [1, 3, s, s]),
            device,
        ));
        rows.push(img);
        eprintln!("[sample] {}", f.display());
    }
    save_grid(Tensor::cat(rows, 0), a.batch + 1, 1, &a.out)?;
    println!(
        "wrote {} ({} inputs: condition, then {} samples at {} steps)",
        a.out.display(),
        files.len(),
        a.batch,
        steps
    );
    Ok(())
}
