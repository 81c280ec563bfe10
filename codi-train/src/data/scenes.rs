//! A procedural 3D-scenes dataset, deterministic from a seed: one or two ray-cast primitives (sphere, box,
//! cylinder) in colour on a floor, one light with shadows, camera jitter. Each item carries its RGB image, its
//! exact depth map and a caption ("a red sphere and a blue box on a grey floor") — the depth-to-image task's
//! true depth.

use burn::data::dataset::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ImageItem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Sphere,
    Box,
    Cylinder,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Sphere, Shape::Box, Shape::Cylinder];
    pub fn name(self) -> &'static str {
        match self {
            Shape::Sphere => "sphere",
            Shape::Box => "box",
            Shape::Cylinder => "cylinder",
        }
    }
}

/// The object colours and their names.
pub const COLOURS: [(&str, [f32; 3]); 6] = [
    ("red", [0.85, 0.15, 0.12]),
    ("green", [0.15, 0.7, 0.2]),
    ("blue", [0.15, 0.3, 0.9]),
    ("yellow", [0.92, 0.85, 0.15]),
    ("purple", [0.6, 0.2, 0.75]),
    ("white", [0.92, 0.92, 0.92]),
];
pub const FLOORS: [(&str, [f32; 3]); 3] = [
    ("grey", [0.5, 0.5, 0.5]),
    ("brown", [0.45, 0.32, 0.2]),
    ("dark", [0.2, 0.2, 0.22]),
];
/// Depth of the background (the sky), in scene units; depth maps are divided by it.
pub const FAR: f32 = 12.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub shape: Shape,
    pub colour: usize,
    /// Centre on the floor (x, z) and size (radius / half-width).
    pub x: f32,
    pub z: f32,
    pub size: f32,
}

/// One rendered scene.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneItem {
    pub image: ImageItem,
    /// Distance along the camera's viewing axis divided by [`FAR`], in [0, 1]: size × size.
    pub depth: Vec<f32>,
    pub objects: Vec<Object>,
}

type V3 = [f32; 3];
fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn mul(a: V3, s: f32) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn dot(a: V3, b: V3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: V3) -> V3 {
    mul(a, 1.0 / dot(a, a).sqrt())
}
fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

impl Object {
    /// Nearest hit t > eps of the ray o + t·d, with the surface normal.
    fn hit(&self, o: V3, d: V3) -> Option<(f32, V3)> {
        let s = self.size;
        match self.shape {
            Shape::Sphere => {
                let c = [self.x, s, self.z];
                let oc = sub(o, c);
                let b = dot(oc, d);
                let disc = b * b - (dot(oc, oc) - s * s);
                if disc < 0.0 {
                    return None;
                }
                let t = [-b - disc.sqrt(), -b + disc.sqrt()]
                    .into_iter()
                    .find(|&t| t > 1e-4)?;
                Some((t, norm(sub(add(o, mul(d, t)), c))))
            }
            Shape::Box => {
                let (lo, hi) = (
                    [self.x - s, 0.0, self.z - s],
                    [self.x + s, 2.0 * s, self.z + s],
                );
                let (mut t0, mut t1, mut axis) = (f32::NEG_INFINITY, f32::INFINITY, 0);
                for a in 0..3 {
                    let inv = 1.0 / d[a];
                    let (mut ta, mut tb) = ((lo[a] - o[a]) * inv, (hi[a] - o[a]) * inv);
                    if ta > tb {
                        std::mem::swap(&mut ta, &mut tb);
                    }
                    if ta > t0 {
                        t0 = ta;
                        axis = a;
                    }
                    t1 = t1.min(tb);
                }
                if t0 > t1 || t0 < 1e-4 {
                    return None;
                }
                let mut n = [0.0; 3];
                n[axis] = -d[axis].signum();
                Some((t0, n))
            }
            Shape::Cylinder => {
                let h = 2.0 * s;
                let (ox, oz) = (o[0] - self.x, o[2] - self.z);
                let a = d[0] * d[0] + d[2] * d[2];
                let b = ox * d[0] + oz * d[2];
                let disc = b * b - a * (ox * ox + oz * oz - s * s);
                let mut best: Option<(f32, V3)> = None;
                if a > 1e-9 && disc >= 0.0 {
                    let t = (-b - disc.sqrt()) / a;
                    let y = o[1] + t * d[1];
                    if t > 1e-4 && (0.0..=h).contains(&y) {
                        best = Some((t, norm([ox + t * d[0], 0.0, oz + t * d[2]])));
                    }
                }
                if d[1].abs() > 1e-9 {
                    let t = (h - o[1]) / d[1];
                    let (px, pz) = (ox + t * d[0], oz + t * d[2]);
                    if t > 1e-4 && px * px + pz * pz <= s * s && best.is_none_or(|(bt, _)| t < bt) {
                        best = Some((t, [0.0, 1.0, 0.0]));
                    }
                }
                best
            }
        }
    }
}

/// Scenes `0..len` of a split, each drawn from (seed, index).
#[derive(Debug, Clone)]
pub struct Scenes {
    pub seed: u64,
    pub len: usize,
    pub size: usize,
}

impl Scenes {
    /// Fixed splits: train (seed 0) and test (seed 1) never share a scene.
    pub fn train(len: usize) -> Self {
        Self {
            seed: 0,
            len,
            size: 32,
        }
    }
    pub fn test(len: usize) -> Self {
        Self {
            seed: 1,
            len,
            size: 32,
        }
    }

    /// Renders scene `index`.
    pub fn render(&self, index: usize) -> SceneItem {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
        let n_obj = rng.random_range(1..=2);
        let mut objects: Vec<Object> = Vec::new();
        while objects.len() < n_obj {
            let o = Object {
                shape: Shape::ALL[rng.random_range(0..3)],
                colour: rng.random_range(0..COLOURS.len()),
                x: rng.random_range(-1.3..1.3),
                z: rng.random_range(-0.9..0.9),
                size: rng.random_range(0.35..0.6),
            };
            let apart = objects.iter().all(|p| {
                ((p.x - o.x).powi(2) + (p.z - o.z).powi(2)).sqrt() > (p.size + o.size) * 1.5
            });
            if apart {
                objects.push(o);
            }
        }
        objects.sort_by(|a, b| a.x.total_cmp(&b.x));
        let floor = rng.random_range(0..FLOORS.len());
        let eye = [
            rng.random_range(-0.4..0.4),
            rng.random_range(1.6..2.2),
            rng.random_range(3.8..4.4),
        ];
        let target = [rng.random_range(-0.2..0.2), 0.4, 0.0];
        let light = norm([rng.random_range(-1.0..1.0), 1.5, rng.random_range(0.3..1.0)]);
        let fwd = norm(sub(target, eye));
        let right = norm(cross(fwd, [0.0, 1.0, 0.0]));
        let up = cross(right, fwd);
        let focal = 1.0 / (20f32.to_radians()).tan();
        let n = self.size;
        let mut pixels = vec![0f32; 3 * n * n];
        let mut depth = vec![1f32; n * n];
        let trace = |o: V3, d: V3| -> (Option<(f32, V3)>, [f32; 3]) {
            let mut best: Option<(f32, V3, [f32; 3])> = None;
            for ob in &objects {
                if let Some((t, nrm)) = ob.hit(o, d) {
                    if best.is_none_or(|(bt, _, _)| t < bt) {
                        best = Some((t, nrm, COLOURS[ob.colour].1));
                    }
                }
            }
            if d[1] < -1e-6 {
                let t = -o[1] / d[1];
                if best.is_none_or(|(bt, _, _)| t < bt) {
                    best = Some((t, [0.0, 1.0, 0.0], FLOORS[floor].1));
                }
            }
            match best {
                None => (
                    None,
                    [0.55 + 0.3 * d[1].max(0.0), 0.7 + 0.2 * d[1].max(0.0), 0.9],
                ),
                Some((t, nrm, albedo)) => {
                    let p = add(o, mul(d, t));
                    let lit = objects
                        .iter()
                        .all(|ob| ob.hit(add(p, mul(nrm, 1e-3)), light).is_none());
                    let diffuse = if lit { dot(nrm, light).max(0.0) } else { 0.0 };
                    let shade = 0.25 + 0.75 * diffuse;
                    (Some((t, nrm)), albedo.map(|c| (c * shade).min(1.0)))
                }
            }
        };
        // 2×2 supersampling for colour; depth from the pixel centre.
        for y in 0..n {
            for x in 0..n {
                let ray = |sx: f32, sy: f32| {
                    let u = (2.0 * (x as f32 + sx) / n as f32) - 1.0;
                    let v = 1.0 - (2.0 * (y as f32 + sy) / n as f32);
                    norm(add(add(mul(fwd, focal), mul(right, u)), mul(up, v)))
                };
                let mut c = [0f32; 3];
                for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let (_, col) = trace(eye, ray(sx, sy));
                    for k in 0..3 {
                        c[k] += col[k] / 4.0;
                    }
                }
                for k in 0..3 {
                    pixels[k * n * n + y * n + x] = c[k];
                }
                let d = ray(0.5, 0.5);
                if let (Some((t, _)), _) = trace(eye, d) {
                    depth[y * n + x] = (t * dot(d, fwd) / FAR).min(1.0);
                }
            }
        }
        let names: Vec<String> = objects
            .iter()
            .map(|o| format!("a {} {}", COLOURS[o.colour].0, o.shape.name()))
            .collect();
        let caption = format!("{} on a {} floor", names.join(" and "), FLOORS[floor].0);
        // The label is the shape of the object nearest the camera (the most visible).
        let nearest = objects
            .iter()
            .min_by(|a, b| {
                let da = dot(sub([a.x, a.size, a.z], eye), fwd);
                let db = dot(sub([b.x, b.size, b.z], eye), fwd);
                da.total_cmp(&db)
            })
            .expect("at least one object");
        let label = Shape::ALL
            .iter()
            .position(|s| *s == nearest.shape)
            .expect("a shape");
        SceneItem {
            image: ImageItem {
                pixels,
                size: n,
                caption,
                label,
            },
            depth,
            objects,
        }
    }
}

impl Dataset<SceneItem> for Scenes {
    fn get(&self, index: usize) -> Option<SceneItem> {
        (index < self.len).then(|| self.render(index))
    }
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_and_captioned() {
        let ds = Scenes::train(20);
        let a = ds.get(3).unwrap();
        assert_eq!(a, ds.get(3).unwrap());
        assert_ne!(a.image.pixels, ds.get(4).unwrap().image.pixels);
        assert_ne!(
            a.image.pixels,
            Scenes::test(20).get(3).unwrap().image.pixels
        );
        for i in 0..20 {
            let s = ds.get(i).unwrap();
            for o in &s.objects {
                let words = format!("{} {}", COLOURS[o.colour].0, o.shape.name());
                assert!(
                    s.image.caption.contains(&words),
                    "{} lacks {words}",
                    s.image.caption
                );
            }
            assert!(s.image.caption.ends_with(" floor"));
            assert!(s.image.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
            assert!(s.depth.iter().all(|d| (0.0..=1.0).contains(d)));
        }
        assert!(ds.get(20).is_none());
    }

    #[test]
    fn depth_is_geometric() {
        let s = Scenes::train(1).render(0);
        let n = s.image.size;
        // The top row sees the sky (far), the bottom row the floor close to the camera, nearer than the middle.
        assert!(s.depth[..n].iter().all(|&d| d == 1.0));
        let bottom = s.depth[(n - 1) * n + n / 2];
        assert!(bottom < 0.5, "floor below the camera at depth {bottom}");
        // Every object covers some pixels nearer than the floor or sky behind it.
        assert!(s.depth.iter().filter(|&&d| d < 1.0).count() > n * n / 4);
    }
}
