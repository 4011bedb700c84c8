//! Training augmentation of the reference: a random crop with 4 pixels of zero padding, then a
//! random rotation within +-15 degrees (nearest neighbour, zero fill). Both are drawn from the
//! caller's seeded `Rng` and applied in one resampling pass on raw `(H, W, C)` bytes.

use crate::ff::ImageShape;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Padding of the random crop, in pixels.
    pub padding: usize,
    /// Largest rotation, in degrees.
    pub max_degrees: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            padding: 4,
            max_degrees: 15.0,
        }
    }
}

/// The random draws of one augmented image: the crop's shift and the rotation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    shift_y: isize,
    shift_x: isize,
    radians: f32,
}

impl Augment {
    /// Draws one image's crop and rotation. Drawing is sequential (one seeded stream);
    /// applying the draws can then run in parallel.
    pub fn draw(&self, rng: &mut Rng) -> Draw {
        let pad = self.padding as isize;
        let shift_y = rng.below(2 * self.padding as u32 + 1) as isize - pad;
        let shift_x = rng.below(2 * self.padding as u32 + 1) as isize - pad;
        let radians = rng
            .uniform(-self.max_degrees, self.max_degrees)
            .to_radians();
        Draw {
            shift_y,
            shift_x,
            radians,
        }
    }

    /// out = rotate(crop(pad(image))), both of `shape`, with the given draw.
    pub fn apply_draw(&self, out: &mut [u8], image: &[u8], shape: ImageShape, d: Draw) {
        let (h, w, c) = (shape.height, shape.width, shape.channels);
        let (shift_y, shift_x) = (d.shift_y, d.shift_x);
        let (sin, cos) = d.radians.sin_cos();
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        for y in 0..h {
            for x in 0..w {
                // Inverse rotation about the centre, then the crop's shift.
                let (dy, dx) = (y as f32 - cy, x as f32 - cx);
                let sy = (cos * dy - sin * dx + cy).round() as isize + shift_y;
                let sx = (sin * dy + cos * dx + cx).round() as isize + shift_x;
                let dst = &mut out[(y * w + x) * c..][..c];
                if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                    dst.fill(0);
                } else {
                    dst.copy_from_slice(&image[(sy as usize * w + sx as usize) * c..][..c]);
                }
            }
        }
    }
}
