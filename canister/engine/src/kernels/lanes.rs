//! 128-bit vectors — four f32, eight i16, four i32 — as wasm `simd128` in the canister and
//! plain arrays elsewhere.
//!
//! The SIMD kernels are written once against this type. Natively (where `cargo test`
//! runs) the emulation lets those same kernels be compared with the portable ones; in the
//! wasm build every function here is one simd128 instruction.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::{
        f32x4_abs, f32x4_add, f32x4_convert_i32x4, f32x4_div, f32x4_extract_lane, f32x4_mul,
        f32x4_pmax, f32x4_pmin, f32x4_splat, f32x4_sub, i16x8_load_extend_i8x8, i16x8_narrow_i32x4,
        i16x8_splat, i32x4_add, i32x4_dot_i16x8, i32x4_shl, i32x4_shuffle, i32x4_splat, i32x4_sub,
        v128, v128_load, v128_load32_splat, v128_store,
    };

    #[derive(Clone, Copy)]
    pub struct F32x4(v128);

    impl F32x4 {
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            F32x4(f32x4_splat(x))
        }

        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            F32x4(f32x4_add(self.0, o.0))
        }

        #[inline(always)]
        pub fn mul(self, o: Self) -> Self {
            F32x4(f32x4_mul(self.0, o.0))
        }

        #[inline(always)]
        pub fn div(self, o: Self) -> Self {
            F32x4(f32x4_div(self.0, o.0))
        }

        /// Each lane limited to `lo..=hi` by compare-and-select (`pmax`/`pmin`: 1
        /// instruction each, where `f32x4.min`/`max` cost 4).
        #[inline(always)]
        pub fn clamp(self, lo: Self, hi: Self) -> Self {
            F32x4(f32x4_pmin(hi.0, f32x4_pmax(lo.0, self.0)))
        }

        /// # Safety
        /// `p..p+4` must be readable f32s (no alignment needed: v128.load is unaligned).
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> Self {
            F32x4(v128_load(p as *const v128))
        }

        /// # Safety
        /// `p..p+4` must be writable f32s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            v128_store(p as *mut v128, self.0)
        }

        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            [
                f32x4_extract_lane::<0>(self.0),
                f32x4_extract_lane::<1>(self.0),
                f32x4_extract_lane::<2>(self.0),
                f32x4_extract_lane::<3>(self.0),
            ]
        }
    }

    #[derive(Clone, Copy)]
    pub struct I16x8(v128);

    impl I16x8 {
        /// # Safety
        /// `p..p+8` must be readable i16s.
        #[inline(always)]
        pub unsafe fn load(p: *const i16) -> Self {
            I16x8(v128_load(p as *const v128))
        }

        /// Eight int8 values widened to i16 by the load itself (`v128.load8x8_s`).
        ///
        /// # Safety
        /// `p..p+8` must be readable i8s.
        #[inline(always)]
        pub unsafe fn load_i8(p: *const i8) -> Self {
            I16x8(i16x8_load_extend_i8x8(p))
        }
    }

    #[derive(Clone, Copy)]
    pub struct I32x4(v128);

    impl I32x4 {
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            I32x4(i32x4_add(self.0, o.0))
        }

        /// Lane i gets `a[2i]·b[2i] + a[2i+1]·b[2i+1]`: eight multiply-adds in one instruction.
        #[inline(always)]
        pub fn dot(a: I16x8, b: I16x8) -> Self {
            I32x4(i32x4_dot_i16x8(a.0, b.0))
        }

        /// # Safety
        /// `p..p+4` must be readable i32s.
        #[inline(always)]
        pub unsafe fn load(p: *const i32) -> Self {
            I32x4(v128_load(p as *const v128))
        }

        /// # Safety
        /// `p..p+4` must be writable i32s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut i32) {
            v128_store(p as *mut v128, self.0)
        }

        /// Lane r gets the sum of the four lanes of the r-th argument.
        #[inline(always)]
        pub fn sums(a: Self, b: Self, c: Self, d: Self) -> Self {
            // Pairwise interleave-and-add twice: six shuffles and three adds for four sums.
            let ab = i32x4_add(
                i32x4_shuffle::<0, 4, 1, 5>(a.0, b.0),
                i32x4_shuffle::<2, 6, 3, 7>(a.0, b.0),
            );
            let cd = i32x4_add(
                i32x4_shuffle::<0, 4, 1, 5>(c.0, d.0),
                i32x4_shuffle::<2, 6, 3, 7>(c.0, d.0),
            );
            I32x4(i32x4_add(
                i32x4_shuffle::<0, 1, 4, 5>(ab, cd),
                i32x4_shuffle::<2, 3, 6, 7>(ab, cd),
            ))
        }

        #[inline(always)]
        pub fn to_f32(self) -> F32x4 {
            F32x4(f32x4_convert_i32x4(self.0))
        }
    }

    impl F32x4 {
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            F32x4(f32x4_sub(self.0, o.0))
        }

        #[inline(always)]
        pub fn abs(self) -> Self {
            F32x4(f32x4_abs(self.0))
        }

        /// `self < o ? o : self` per lane (`pmax`, 1 instruction).
        #[inline(always)]
        pub fn max(self, o: Self) -> Self {
            F32x4(f32x4_pmax(self.0, o.0))
        }

        #[inline(always)]
        pub fn to_bits(self) -> I32x4 {
            I32x4(self.0)
        }

        #[inline(always)]
        pub fn from_bits(v: I32x4) -> Self {
            F32x4(v.0)
        }
    }

    impl I16x8 {
        #[inline(always)]
        pub fn splat(x: i16) -> Self {
            I16x8(i16x8_splat(x))
        }

        /// Saturating narrowing: lanes 0..4 from `a`, 4..8 from `b`.
        #[inline(always)]
        pub fn narrow(a: I32x4, b: I32x4) -> Self {
            I16x8(i16x8_narrow_i32x4(a.0, b.0))
        }

        /// The two i16 at `p` repeated four times (`v128.load32_splat`).
        ///
        /// # Safety
        /// `p..p+2` must be readable i16s.
        #[inline(always)]
        pub unsafe fn load_pair_splat(p: *const i16) -> Self {
            I16x8(v128_load32_splat(p as *const u32))
        }

        /// # Safety
        /// `p..p+8` must be writable i16s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut i16) {
            v128_store(p as *mut v128, self.0)
        }
    }

    impl I32x4 {
        #[inline(always)]
        pub fn splat(x: i32) -> Self {
            I32x4(i32x4_splat(x))
        }

        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            I32x4(i32x4_sub(self.0, o.0))
        }

        #[inline(always)]
        pub fn shl(self, n: u32) -> Self {
            I32x4(i32x4_shl(self.0, n))
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod imp {
    #[derive(Clone, Copy)]
    pub struct F32x4([f32; 4]);

    impl F32x4 {
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            F32x4([x; 4])
        }

        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            F32x4(core::array::from_fn(|i| self.0[i] + o.0[i]))
        }

        #[inline(always)]
        pub fn mul(self, o: Self) -> Self {
            F32x4(core::array::from_fn(|i| self.0[i] * o.0[i]))
        }

        #[inline(always)]
        pub fn div(self, o: Self) -> Self {
            F32x4(core::array::from_fn(|i| self.0[i] / o.0[i]))
        }

        #[inline(always)]
        pub fn clamp(self, lo: Self, hi: Self) -> Self {
            // pmax(lo, x) = lo < x ? x : lo; pmin(hi, y) = y < hi ? y : hi.
            F32x4(core::array::from_fn(|i| {
                let y = if lo.0[i] < self.0[i] { self.0[i] } else { lo.0[i] };
                if y < hi.0[i] {
                    y
                } else {
                    hi.0[i]
                }
            }))
        }

        /// # Safety
        /// `p..p+4` must be readable f32s.
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> Self {
            F32x4(core::ptr::read_unaligned(p as *const [f32; 4]))
        }

        /// # Safety
        /// `p..p+4` must be writable f32s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            core::ptr::write_unaligned(p as *mut [f32; 4], self.0)
        }

        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            self.0
        }
    }

    #[derive(Clone, Copy)]
    pub struct I16x8([i16; 8]);

    impl I16x8 {
        /// # Safety
        /// `p..p+8` must be readable i16s.
        #[inline(always)]
        pub unsafe fn load(p: *const i16) -> Self {
            I16x8(core::ptr::read_unaligned(p as *const [i16; 8]))
        }

        /// # Safety
        /// `p..p+8` must be readable i8s.
        #[inline(always)]
        pub unsafe fn load_i8(p: *const i8) -> Self {
            I16x8(core::ptr::read_unaligned(p as *const [i8; 8]).map(i16::from))
        }
    }

    #[derive(Clone, Copy)]
    pub struct I32x4([i32; 4]);

    impl I32x4 {
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            I32x4(core::array::from_fn(|i| self.0[i].wrapping_add(o.0[i])))
        }

        #[inline(always)]
        pub fn dot(a: I16x8, b: I16x8) -> Self {
            let p = |i: usize| a.0[i] as i32 * b.0[i] as i32;
            I32x4(core::array::from_fn(|i| p(2 * i).wrapping_add(p(2 * i + 1))))
        }

        /// # Safety
        /// `p..p+4` must be readable i32s.
        #[inline(always)]
        pub unsafe fn load(p: *const i32) -> Self {
            I32x4(core::ptr::read_unaligned(p as *const [i32; 4]))
        }

        /// # Safety
        /// `p..p+4` must be writable i32s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut i32) {
            core::ptr::write_unaligned(p as *mut [i32; 4], self.0)
        }

        #[inline(always)]
        pub fn sums(a: Self, b: Self, c: Self, d: Self) -> Self {
            let s = |v: Self| {
                let [w, x, y, z] = v.0;
                w.wrapping_add(y).wrapping_add(x.wrapping_add(z))
            };
            I32x4([s(a), s(b), s(c), s(d)])
        }

        #[inline(always)]
        pub fn to_f32(self) -> F32x4 {
            F32x4(self.0.map(|v| v as f32))
        }
    }

    impl F32x4 {
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            F32x4(core::array::from_fn(|i| self.0[i] - o.0[i]))
        }

        #[inline(always)]
        pub fn abs(self) -> Self {
            F32x4(self.0.map(f32::abs))
        }

        #[inline(always)]
        pub fn max(self, o: Self) -> Self {
            F32x4(core::array::from_fn(|i| if self.0[i] < o.0[i] { o.0[i] } else { self.0[i] }))
        }

        #[inline(always)]
        pub fn to_bits(self) -> I32x4 {
            I32x4(self.0.map(|v| v.to_bits() as i32))
        }

        #[inline(always)]
        pub fn from_bits(v: I32x4) -> Self {
            F32x4(v.0.map(|b| f32::from_bits(b as u32)))
        }
    }

    impl I16x8 {
        #[inline(always)]
        pub fn splat(x: i16) -> Self {
            I16x8([x; 8])
        }

        #[inline(always)]
        pub fn narrow(a: I32x4, b: I32x4) -> Self {
            let n = |v: i32| v.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            I16x8(core::array::from_fn(|i| if i < 4 { n(a.0[i]) } else { n(b.0[i - 4]) }))
        }

        /// # Safety
        /// `p..p+2` must be readable i16s.
        #[inline(always)]
        pub unsafe fn load_pair_splat(p: *const i16) -> Self {
            let [a, b] = core::ptr::read_unaligned(p as *const [i16; 2]);
            I16x8([a, b, a, b, a, b, a, b])
        }

        /// # Safety
        /// `p..p+8` must be writable i16s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut i16) {
            core::ptr::write_unaligned(p as *mut [i16; 8], self.0)
        }
    }

    impl I32x4 {
        #[inline(always)]
        pub fn splat(x: i32) -> Self {
            I32x4([x; 4])
        }

        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            I32x4(core::array::from_fn(|i| self.0[i].wrapping_sub(o.0[i])))
        }

        #[inline(always)]
        pub fn shl(self, n: u32) -> Self {
            I32x4(self.0.map(|v| v.wrapping_shl(n)))
        }
    }
}

pub use imp::{F32x4, I16x8, I32x4};

impl F32x4 {
    #[inline(always)]
    pub fn sum(self) -> f32 {
        let [a, b, c, d] = self.to_array();
        (a + b) + (c + d)
    }
}
