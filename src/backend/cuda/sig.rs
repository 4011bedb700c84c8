//! The parameter lists of `kernels.cu`'s kernels as Rust types, so that the compiler checks
//! every launch's arguments (their number, order and types) against the kernel it launches.
//!
//! A launch passes its arguments through cudarc as untyped bytes: a 4-byte `int` where the
//! kernel reads an 8-byte `long long`, or an f32 buffer where it reads bf16 values, builds on
//! both sides and shows only on a GPU, as wrong numbers. Here each kernel is a [`Kernel`]
//! whose type parameter lists its parameters (pointers as [`Ptr`] and [`PtrMut`], scalars and
//! argument structs as themselves); `launch!` accepts only arguments that fit ([`Arg`]). A
//! test checks this table against the C declarations in `kernels.cu`, parameter for
//! parameter, so neither side can change alone. Another checks that the argument structs
//! passed by value (`FillManyArgs`, ...) have their C structs' field offsets and size.
//!
//! Device buffers fit pointers to their own element type (a mutable pointer only from a
//! mutable borrow); a raw device address (`&u64`) fits any pointer. That is the way to pass
//! one buffer as another type's storage (a bf16 record kept in an f32 buffer): on purpose,
//! and visibly.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchArgs, PushKernelArg};
use std::marker::PhantomData;

/// The kernels' `NextNorm` (kernels.cu), field for field: device addresses (0: none) and
/// eps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NextNormArgs {
    pub out: u64,
    pub out_half: u64,
    pub gamma: u64,
    pub beta: u64,
    pub running_mean: u64,
    pub running_var: u64,
    pub eps: f32,
}

// SAFETY: plain data with the layout of the kernels' struct (six 8-byte addresses, a float,
// and padding to 8 bytes in both).
unsafe impl DeviceRepr for NextNormArgs {}

/// Buffers per launch of the `*_many` kernels (kernels.cu's MANY).
pub const MANY: usize = 8;

/// The kernels' `FillMany`: addresses and lengths of up to [`MANY`] buffers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FillManyArgs {
    pub ptr: [u64; MANY],
    pub len: [i64; MANY],
}

// SAFETY: plain data with the layout of the kernels' struct (eight 8-byte addresses, eight
// 8-byte lengths, no padding in either).
unsafe impl DeviceRepr for FillManyArgs {}

/// The kernels' `CopyMany`: sources, offsets into the destination and lengths of up to
/// [`MANY`] copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyManyArgs {
    pub src: [u64; MANY],
    pub offset: [i64; MANY],
    pub len: [i64; MANY],
}

// SAFETY: plain data with the layout of the kernels' struct (eight 8-byte addresses, then
// two arrays of eight 8-byte integers, no padding in either).
unsafe impl DeviceRepr for CopyManyArgs {}

/// The kernels' `AdamMany`: addresses (a null bf16 copy: none) and lengths of up to
/// [`MANY`] parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdamManyArgs {
    pub param: [u64; MANY],
    pub param_half: [u64; MANY],
    pub m: [u64; MANY],
    pub v: [u64; MANY],
    pub grad: [u64; MANY],
    pub n: [i64; MANY],
}

// SAFETY: plain data with the layout of the kernels' struct (six arrays of eight 8-byte
// values, no padding in either).
unsafe impl DeviceRepr for AdamManyArgs {}

/// A kernel parameter `const T*`.
pub struct Ptr<T>(PhantomData<T>);

/// A kernel parameter `T*`.
pub struct PtrMut<T>(PhantomData<T>);

/// An argument that fits a kernel parameter of kind `K`.
pub trait Arg<K> {}

impl<T> Arg<Ptr<T>> for &CudaSlice<T> {}
impl<T> Arg<Ptr<T>> for &mut CudaSlice<T> {}
impl<T> Arg<Ptr<T>> for &CudaView<'_, T> {}
impl<T> Arg<PtrMut<T>> for &mut CudaSlice<T> {}
impl<T> Arg<PtrMut<T>> for &mut CudaViewMut<'_, T> {}
impl<T> Arg<Ptr<T>> for &u64 {}
impl<T> Arg<PtrMut<T>> for &u64 {}
impl Arg<i32> for &i32 {}
impl Arg<i64> for &i64 {}
impl Arg<f32> for &f32 {}
impl Arg<FillManyArgs> for &FillManyArgs {}
impl Arg<CopyManyArgs> for &CopyManyArgs {}
impl Arg<AdamManyArgs> for &AdamManyArgs {}
impl Arg<NextNormArgs> for &NextNormArgs {}

/// The C spelling of a parameter kind, as `kernels.cu` writes it (for the test against it).
#[cfg(test)]
pub trait CType {
    fn c() -> String;
}

macro_rules! c_types {
    ($($t:ty => $c:literal),+ $(,)?) => {
        $(#[cfg(test)]
        impl CType for $t {
            fn c() -> String {
                $c.to_string()
            }
        })+
    };
}

c_types! {
    f32 => "float",
    f64 => "double",
    i32 => "int",
    i64 => "long long",
    u16 => "unsigned short",
    u32 => "unsigned",
    FillManyArgs => "FillMany",
    CopyManyArgs => "CopyMany",
    AdamManyArgs => "AdamMany",
    NextNormArgs => "NextNorm",
}

#[cfg(test)]
impl<T: CType> CType for Ptr<T> {
    fn c() -> String {
        format!("const {}*", T::c())
    }
}

#[cfg(test)]
impl<T: CType> CType for PtrMut<T> {
    fn c() -> String {
        format!("{}*", T::c())
    }
}

/// A kernel of `kernels.cu` whose parameters are `S` (a tuple of kinds).
pub struct Kernel<S> {
    pub name: &'static str,
    params: PhantomData<fn() -> S>,
}

impl<S> Clone for Kernel<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Kernel<S> {}

impl<S> Kernel<S> {
    const fn new(name: &'static str) -> Self {
        Kernel {
            name,
            params: PhantomData,
        }
    }

    /// Pushes `args` (a tuple that fits `S`) onto a launch of this kernel.
    pub fn push<'a, A: Args<'a, S>>(self, launch: &mut LaunchArgs<'a>, args: A) {
        args.push(launch);
    }
}

/// A tuple of arguments that fits the parameter kinds `S`, one by one.
pub trait Args<'a, S> {
    fn push(self, launch: &mut LaunchArgs<'a>);
}

/// The C spellings of the parameter kinds `S`.
#[cfg(test)]
pub trait Params {
    fn c() -> Vec<String>;
}

macro_rules! tuples {
    ($(($($a:ident $k:ident $i:tt),+))+) => {
        $(
            impl<'a, $($a, $k),+> Args<'a, ($($k,)+)> for ($($a,)+)
            where
                $($a: Arg<$k>, LaunchArgs<'a>: PushKernelArg<$a>,)+
            {
                fn push(self, launch: &mut LaunchArgs<'a>) {
                    $(launch.arg(self.$i);)+
                }
            }

            #[cfg(test)]
            impl<$($k: CType),+> Params for ($($k,)+) {
                fn c() -> Vec<String> {
                    vec![$($k::c()),+]
                }
            }
        )+
    };
}

tuples! {
    (A0 K0 0, A1 K1 1)
    (A0 K0 0, A1 K1 1, A2 K2 2)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5, A6 K6 6)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5, A6 K6 6, A7 K7 7)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5, A6 K6 6, A7 K7 7, A8 K8 8)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5, A6 K6 6, A7 K7 7, A8 K8 8,
     A9 K9 9)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5, A6 K6 6, A7 K7 7, A8 K8 8,
     A9 K9 9, A10 K10 10)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5, A6 K6 6, A7 K7 7, A8 K8 8,
     A9 K9 9, A10 K10 10, A11 K11 11)
    (A0 K0 0, A1 K1 1, A2 K2 2, A3 K3 3, A4 K4 4, A5 K5 5, A6 K6 6, A7 K7 7, A8 K8 8,
     A9 K9 9, A10 K10 10, A11 K11 11, A12 K12 12)
}

macro_rules! kernels {
    ($($name:ident($($k:ty),+ $(,)?);)+) => {
        $(
            #[allow(non_upper_case_globals)]
            pub const $name: Kernel<($($k,)+)> = Kernel::new(stringify!($name));
        )+

        /// Every kernel of `kernels.cu`, loaded by name when the backend starts.
        pub const NAMES: &[&str] = &[$(stringify!($name)),+];

        /// Each kernel's name and the C spellings of its parameters.
        #[cfg(test)]
        fn table() -> Vec<(&'static str, Vec<String>)> {
            vec![$((stringify!($name), <($($k,)+) as Params>::c())),+]
        }
    };
}

type F = Ptr<f32>;
type FMut = PtrMut<f32>;
type H = Ptr<u16>;
type HMut = PtrMut<u16>;
type D = Ptr<f64>;
type DMut = PtrMut<f64>;

kernels! {
    fill_f32(FMut, f32, i64);
    fill_many_f32(FillManyArgs, i32, f32);
    copy_many_f32(FMut, CopyManyArgs, i32);
    embed_forward(FMut, F, F, Ptr<u32>, i32, i32, i32);
    embed_backward(FMut, F, Ptr<u32>, i32, i32, i32);
    add_bias_map(FMut, F, F, i64, i64);
    relu_forward(FMut, i64);
    relu_backward(FMut, F, i64);
    maxpool2_forward(FMut, F, i32, i32, i32, i32);
    relu_maxpool2_backward(FMut, F, F, i32, i32, i32, i32);
    relu_maxpool2_backward_bf16(HMut, F, H, i32, i32, i32, i32);
    goodness_relu_maxpool2_backward_bf16(HMut, F, H, i32, i32, i32, i32);
    relu_backward_bf16(HMut, F, F, i64);
    goodness_relu_backward_bf16(HMut, F, F, i32, i64);
    relu_pool_goodness_f32(FMut, FMut, FMut, F, i32, i32, i32, i32, i32);
    relu_pool_goodness_bf16(FMut, FMut, FMut, H, i32, i32, i32, i32, i32);
    eval_tail_f32(FMut, FMut, FMut, F, F, i32, i32, i32, i32, NextNormArgs);
    eval_tail_bf16(FMut, FMut, FMut, H, F, i32, i32, i32, i32, NextNormArgs);
    goodness_forward(FMut, F, i32);
    goodness_backward(FMut, F, F, i32, i64);
    ff_loss(FMut, FMut, F, i32, i32, f32);
    partial_sum(DMut, DMut, F, i64, i32, i32, i64);
    partial_moments(DMut, DMut, F, i64, i32, i32, i64);
    partial_dy_dyx(DMut, DMut, F, F, i64, i32, i32, i64);
    partial_dy_dyx_bf16(DMut, DMut, H, F, i64, i32, i32, i64);
    partial_dy_xhat_rows(DMut, DMut, F, F, F, F, i64, i32, i32, i64);
    partial_dy_xhat_rows_bf16(DMut, DMut, H, F, F, F, i64, i32, i32, i64);
    batchnorm_finish_moments(FMut, FMut, FMut, FMut, F, D, D, i32, i32, i64, f32, f32);
    finish_add(FMut, FMut, D, D, i32, i32);
    batchnorm_apply(FMut, HMut, F, F, F, F, F, i32, i64);
    batchnorm_apply_eval(FMut, HMut, F, F, F, F, F, f32, i32, i64);
    batchnorm_backward_finish(FMut, FMut, FMut, FMut, FMut, D, D, i32, i32, i64, F, F, F);
    batchnorm_backward_apply(FMut, F, F, F, F, F, i32, i64);
    batchnorm_backward_apply_bf16(FMut, H, F, F, F, F, i32, i64);
    layernorm_forward(FMut, FMut, FMut, F, F, F, i32, f32);
    layernorm_backward_input(FMut, F, F, F, F, F, i32);
    layernorm_backward_input_bf16(FMut, H, F, F, F, F, i32);
    adam_step_many(AdamManyArgs, i32, f32, f32, f32, f32, f32);
    avgpool_forward(FMut, F, i32, i32, i32);
    avgpool_backward(FMut, F, i32, i32, i64);
    bias_rows(FMut, F, i32, i64);
    cross_entropy(FMut, FMut, F, Ptr<u32>, i32, i32);
    f32_to_bf16(HMut, F, i64);
    bf16_to_f32(FMut, H, i64, i32);
    repad_channels_bf16(HMut, H, i64, i32, i32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `extern "C"` kernel of `source`: its name and its parameters' types (each
    /// declaration less its parameter name, spaces normalised).
    fn declarations(source: &str) -> Vec<(String, Vec<String>)> {
        let marker = "extern \"C\" __global__ void ";
        source
            .match_indices(marker)
            .map(|(at, _)| {
                let rest = &source[at + marker.len()..];
                let open = rest.find('(').expect("a parameter list");
                let close = open + rest[open..].find(')').expect("a closed parameter list");
                let params = rest[open + 1..close]
                    .split(',')
                    .map(|p| {
                        let words: Vec<&str> = p.split_whitespace().collect();
                        let (name, ty) = words.split_last().expect("a named parameter");
                        // `float* x` and `float *x` alike: the stars belong to the type.
                        let stars = name.chars().take_while(|&c| c == '*').count();
                        format!("{}{}", ty.join(" "), "*".repeat(stars)).replace(" *", "*")
                    })
                    .collect();
                (rest[..open].trim().to_string(), params)
            })
            .collect()
    }

    #[test]
    fn the_table_matches_kernels_cu_parameter_for_parameter() {
        let declared = declarations(super::super::nvrtc::SOURCE);
        let table = table();
        assert!(declared.len() > 40, "found only {} kernels", declared.len());
        assert_eq!(
            declared.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            NAMES,
            "kernels.cu's kernels, in order, against the table's"
        );
        for ((name, params), (_, want)) in declared.iter().zip(&table) {
            assert_eq!(params, want, "kernel {name}: kernels.cu against the table");
        }
    }

    /// The byte offset of each field of C struct `name` in `source` and the struct's size,
    /// by the C layout rules for the types the argument structs use (each field at a
    /// multiple of its alignment, the size a multiple of the largest), with arrays of `many`
    /// (`MANY`) elements.
    fn c_layout(source: &str, name: &str, many: usize) -> (Vec<(String, usize)>, usize) {
        let body = source
            .split_once(&format!("struct {name} {{"))
            .and_then(|(_, rest)| rest.split_once("};"))
            .unwrap_or_else(|| panic!("kernels.cu defines struct {name}"))
            .0;
        let (mut fields, mut at, mut align) = (Vec::new(), 0usize, 1);
        for field in body.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            let (ty, decl) = field.rsplit_once(' ').expect("a type and a name");
            let (field, count) = match decl.split_once('[') {
                Some((n, "MANY]")) => (n, many),
                Some(_) => panic!("struct {name}: array length in '{field}'"),
                None => (decl, 1),
            };
            let size = match ty.trim() {
                t if t.ends_with('*') => 8,
                "long long" => 8,
                "float" | "int" | "unsigned" => 4,
                "unsigned short" => 2,
                t => panic!("struct {name}: no layout rule for type '{t}'"),
            };
            at = at.next_multiple_of(size);
            fields.push((field.trim_start_matches('*').to_string(), at));
            at += size * count;
            align = align.max(size);
        }
        (fields, at.next_multiple_of(align))
    }

    /// Each named field's offset in the Rust struct, and its size.
    macro_rules! rust_layout {
        ($t:ty { $($f:ident),+ }) => {
            (
                vec![$((stringify!($f).to_string(), std::mem::offset_of!($t, $f))),+],
                std::mem::size_of::<$t>(),
            )
        };
    }

    #[test]
    fn argument_structs_have_the_kernels_layout() {
        let source = super::super::nvrtc::SOURCE;
        let cases = [
            ("FillMany", rust_layout!(FillManyArgs { ptr, len })),
            ("CopyMany", rust_layout!(CopyManyArgs { src, offset, len })),
            (
                "AdamMany",
                rust_layout!(AdamManyArgs {
                    param,
                    param_half,
                    m,
                    v,
                    grad,
                    n
                }),
            ),
            (
                "NextNorm",
                rust_layout!(NextNormArgs {
                    out,
                    out_half,
                    gamma,
                    beta,
                    running_mean,
                    running_var,
                    eps
                }),
            ),
        ];
        let many = super::super::nvrtc::defined("MANY");
        for (name, rust) in cases {
            assert_eq!(
                c_layout(source, name, many),
                rust,
                "struct {name}: kernels.cu against Rust"
            );
        }
    }

    #[test]
    fn c_layouts_align_fields_and_pad_the_end() {
        let src = "struct S {\n    const float* p[MANY];\n    int k;\n    \
                   long long n;\n    unsigned short h;\n};";
        let fields = [("p", 0), ("k", 16), ("n", 24), ("h", 32)].map(|(f, at)| (f.into(), at));
        assert_eq!(c_layout(src, "S", 2), (fields.to_vec(), 40));
    }

    #[test]
    fn declarations_are_read_as_the_compiler_reads_them() {
        let src = "extern \"C\" __global__ void k(const float *a, unsigned short* b,\n    \
                   long long n, NextNorm next) {}";
        assert_eq!(
            declarations(src),
            [(
                "k".to_string(),
                vec![
                    "const float*".to_string(),
                    "unsigned short*".to_string(),
                    "long long".to_string(),
                    "NextNorm".to_string()
                ]
            )]
        );
        assert_eq!(
            <(Ptr<u32>, PtrMut<f64>, i32) as Params>::c(),
            ["const unsigned*", "double*", "int"]
        );
    }
}
