//! The CUDA backend's buffer: f32 data on the GPU, and optionally a bf16 copy of it.
//!
//! The copy exists so that an op which writes a convolution's input (the norms, in bf16
//! precision) can write its bf16 form in the same pass, and the convolution's forward and
//! backward then read it instead of converting the f32 data twice. It is only ever read
//! while fresh, and every way to change the f32 data goes through [`CudaBuf::f32_mut`], which
//! marks the copy stale: the fields are private to this module, so the compiler holds every
//! writer to that.
//!
//! Where only a convolution reads what an op writes (BatchNorm's output in bf16), the op may
//! write the copy alone ([`CudaBuf::half_only_mut`]); the f32 data is then stale, and reading
//! it through [`CudaBuf::f32`] is an error, not stale numbers.

use cudarc::driver::{CudaSlice, CudaStream, DriverError};
use std::sync::Arc;

/// A flat f32 buffer on the GPU. cuMemAlloc refuses zero bytes, so an empty buffer still
/// holds one element; `len` is the logical length.
pub struct CudaBuf {
    data: CudaSlice<f32>,
    len: usize,
    half: Option<CudaSlice<u16>>,
    half_fresh: bool,
    /// False after [`CudaBuf::half_only_mut`], until the f32 data is written again.
    f32_fresh: bool,
}

impl CudaBuf {
    pub(super) fn new(data: CudaSlice<f32>, len: usize) -> CudaBuf {
        CudaBuf {
            data,
            len,
            half: None,
            half_fresh: false,
            f32_fresh: true,
        }
    }

    /// Elements (the logical length).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The f32 data, to read; an error if only the bf16 copy holds the current values.
    pub(super) fn f32(&self) -> Result<&CudaSlice<f32>, StaleF32> {
        match self.f32_fresh {
            true => Ok(&self.data),
            false => Err(StaleF32),
        }
    }

    /// The f32 data, to write (directly or through a raw address taken from it), all of it:
    /// the bf16 copy is stale from here on, and the f32 data current.
    pub(super) fn f32_mut(&mut self) -> &mut CudaSlice<f32> {
        self.half_fresh = false;
        self.f32_fresh = true;
        &mut self.data
    }

    /// Room for the bf16 copy alone, for a kernel that writes only it (for a convolution to
    /// read): the f32 data is stale from here on, until written again.
    pub(super) fn half_only_mut(
        &mut self,
        stream: &Arc<CudaStream>,
    ) -> Result<&mut CudaSlice<u16>, DriverError> {
        self.grow_half(stream)?;
        self.half_fresh = true;
        self.f32_fresh = false;
        Ok(self.half.as_mut().expect("just grown"))
    }

    /// Allocates the bf16 copy if there is none of the data's length.
    fn grow_half(&mut self, stream: &Arc<CudaStream>) -> Result<(), DriverError> {
        if self.half.as_ref().is_none_or(|h| h.len() < self.data.len()) {
            self.half = None;
            self.half = Some(stream.alloc_zeros::<u16>(self.data.len())?);
        }
        Ok(())
    }

    /// The bf16 copy, if it holds the current f32 data.
    pub(super) fn fresh_half(&self) -> Option<&CudaSlice<u16>> {
        self.half.as_ref().filter(|_| self.half_fresh)
    }

    /// The f32 data and room for its bf16 copy, for one kernel that writes both: the copy
    /// counts as fresh from here on (the stream runs that kernel before any later reader).
    pub(super) fn f32_and_half_mut(
        &mut self,
        stream: &Arc<CudaStream>,
    ) -> Result<(&mut CudaSlice<f32>, &mut CudaSlice<u16>), DriverError> {
        self.grow_half(stream)?;
        self.half_fresh = true;
        self.f32_fresh = true;
        Ok((&mut self.data, self.half.as_mut().expect("just grown")))
    }
}

/// A read of f32 data that only a buffer's bf16 copy holds (a backend bug, reported as an
/// error rather than read as stale numbers).
#[derive(Debug)]
pub struct StaleF32;

impl From<StaleF32> for crate::error::Error {
    fn from(_: StaleF32) -> Self {
        crate::error::Error::Device {
            device: "cuda".into(),
            msg: "internal: an op read f32 data that only the buffer's bf16 copy holds".into(),
        }
    }
}
