//! Conv 3x3, stride 1, padding 1, no bias: `y[n,h,w,o] = sum_{ky,kx,i} W[o,ky,kx,i] *
//! x[n,h+ky-1,w+kx-1,i]`. Input `(N, H, W, Cin)`, weight `(Cout, 3, 3, Cin)`, output
//! `(N, H, W, Cout)`. Initialised like PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

use super::{Param, ParamLayout};
use crate::backend::{Backend, ConvShape};
use crate::error::Result;
use crate::rng::Rng;

pub struct Conv3x3<B: Backend> {
    pub weight: Param<B>,
    pub c_in: usize,
    pub c_out: usize,
}

impl<B: Backend> Conv3x3<B> {
    pub fn new(backend: &B, c_in: usize, c_out: usize, rng: &mut Rng) -> Result<Self> {
        let bound = 1.0 / ((c_in * 9) as f32).sqrt();
        let data: Vec<f32> = (0..c_out * c_in * 9)
            .map(|_| rng.uniform(-bound, bound))
            .collect();
        let weight = Param::new(
            backend,
            "weight",
            &[c_out, c_in, 3, 3],
            ParamLayout::ConvOihw { c_out, c_in },
            &data,
        )?;
        Ok(Conv3x3 {
            weight,
            c_in,
            c_out,
        })
    }

    pub fn shape(&self, n: usize, h: usize, w: usize) -> ConvShape {
        ConvShape {
            n,
            h,
            w,
            c_in: self.c_in,
            c_out: self.c_out,
        }
    }
}
