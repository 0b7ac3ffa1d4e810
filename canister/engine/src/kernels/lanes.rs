//! 128-bit vectors — four f32, eight i16, four i32 — as wasm `simd128` in the canister and
//! plain arrays elsewhere.
//!
//! The SIMD kernels are written once against this type. Natively (where `cargo test`
//! runs) the emulation lets those same kernels be compared with the portable ones; in the
//! wasm build every function here is one simd128 instruction.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::{
        f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat, i32x4_add, i32x4_dot_i16x8, v128,
        v128_load, v128_store,
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
