//! Exact integer noise drawn from a keyed stream, so the same question gets the same noise.
//!
//! The stream is blake3's extendable output, keyed by the site's privacy secret over a
//! context (the canonical question, the row's labels and the component counted: see
//! [`super::Release`]). Nobody without the secret can predict it; anyone asking the same
//! question again reads the same bits and so the same noise — asking again teaches nothing.
//!
//! OpenDP's samplers draw from the system's randomness and cannot take a stream, so the
//! discrete Laplace sampler of Canonne, Kamath and Steinke (2020, "The Discrete Gaussian for
//! Differential Privacy", algorithms 1–2), the one OpenDP documents and uses, is written here
//! over the stream, with exact rational arithmetic (`dashu`, OpenDP's own big-number crate):
//! no floating point touches a sample (Mironov 2012: floating-point Laplace leaks through the
//! low bits). `tests::matches_opendp` checks its distribution against OpenDP's sampler and the
//! exact probability mass function.
//!
//! Wire format: none; the context bytes are built by [`super::Release`].

use dashu::base::{BitTest, UnsignedAbs};
use dashu::integer::{IBig, UBig};
use dashu::rational::RBig;

/// Random bits for one noise draw: blake3 keyed by a secret over a context.
pub struct KeyedStream {
    reader: blake3::OutputReader,
}

impl KeyedStream {
    /// The stream of `key` over `context`.
    pub fn new(key: &[u8; 32], context: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(context);
        Self {
            reader: h.finalize_xof(),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        self.reader.fill(buf);
    }

    /// One fair bit.
    fn bit(&mut self) -> bool {
        let mut b = [0u8; 1];
        self.fill(&mut b);
        b[0] & 1 == 1
    }

    /// Uniform in `0..n` (`n` > 0), by rejection: draw as many bits as `n - 1` has, retry
    /// when the draw is `n` or more (at most half of the time).
    fn below(&mut self, n: &UBig) -> UBig {
        let bits = (n - UBig::ONE).bit_len();
        if bits == 0 {
            return UBig::ZERO;
        }
        let mut buf = vec![0u8; bits.div_ceil(8)];
        let spare = buf.len() * 8 - bits;
        loop {
            self.fill(&mut buf);
            if let Some(top) = buf.last_mut() {
                *top &= 0xffu8 >> spare;
            }
            let u = UBig::from_le_bytes(&buf);
            if &u < n {
                return u;
            }
        }
    }

    /// Bernoulli(`p`) for a rational `p` in [0, 1].
    fn bernoulli(&mut self, p: &RBig) -> bool {
        let (num, den) = p.clone().into_parts();
        let u = self.below(&den);
        IBig::from(u) < num
    }

    /// Bernoulli(exp(-x)) for a rational `x` in [0, 1] (CKS20 algorithm 1, first part).
    fn bernoulli_exp1(&mut self, x: &RBig) -> bool {
        let mut k = UBig::ONE;
        loop {
            let p = x.clone() / RBig::from(k.clone());
            if self.bernoulli(&p) {
                k += UBig::ONE;
            } else {
                return k.bit(0);
            }
        }
    }

    /// Bernoulli(exp(-x)) for a rational `x` ≥ 0: exp(-x) is exp(-1) to the whole part of
    /// `x` times exp(-(x - whole part)).
    fn bernoulli_exp(&mut self, x: &RBig) -> bool {
        let mut x = x.clone();
        while x > RBig::ONE {
            if !self.bernoulli_exp1(&RBig::ONE) {
                return false;
            }
            x -= RBig::ONE;
        }
        self.bernoulli_exp1(&x)
    }

    /// Geometric with success probability 1 - exp(-x), counting failures (slow: one
    /// Bernoulli per unit).
    fn geometric_slow(&mut self, x: &RBig) -> UBig {
        let mut k = UBig::ZERO;
        while self.bernoulli_exp(x) {
            k += UBig::ONE;
        }
        k
    }

    /// Geometric with success probability 1 - exp(-x), `x` = s/t (CKS20 algorithm 2's
    /// inner loop): a uniform remainder u below t accepted with probability exp(-u/t), a
    /// whole part v from Geometric(1 - exp(-1)); the draw is floor((v·t + u) / s).
    fn geometric_fast(&mut self, x: &RBig) -> UBig {
        if *x == RBig::ZERO {
            return UBig::ZERO;
        }
        let (s, t) = x.clone().into_parts();
        let s = s.unsigned_abs();
        let u = loop {
            let u = self.below(&t);
            let frac = RBig::from_parts(IBig::from(u.clone()), t.clone());
            if self.bernoulli_exp(&frac) {
                break u;
            }
        };
        let v = self.geometric_slow(&RBig::ONE);
        (v * &t + u) / s
    }

    /// One draw of the discrete Laplace distribution with `scale` b > 0:
    /// P[X = x] ∝ exp(-|x| / b) over the integers (CKS20 algorithm 2). Scale 0 is no noise.
    pub fn discrete_laplace(&mut self, scale: &RBig) -> IBig {
        if *scale == RBig::ZERO {
            return IBig::ZERO;
        }
        let inv = RBig::ONE / scale.clone();
        loop {
            let positive = self.bit();
            let magnitude = IBig::from(self.geometric_fast(&inv));
            // Zero would come up twice (+0 and -0): drop the negative one.
            if positive || magnitude != IBig::ZERO {
                return if positive { magnitude } else { -magnitude };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(scale: f64, n: usize, mut f: impl FnMut(usize, &RBig) -> i64) -> Vec<i64> {
        let s = RBig::try_from(scale).expect("finite scale");
        (0..n).map(|i| f(i, &s)).collect()
    }

    fn ours(scale: f64, n: usize) -> Vec<i64> {
        draws(scale, n, |i, s| {
            let mut k = KeyedStream::new(&[7u8; 32], format!("test {i}").as_bytes());
            i64::try_from(k.discrete_laplace(s)).expect("small")
        })
    }

    fn theirs(scale: f64, n: usize) -> Vec<i64> {
        draws(scale, n, |_, s| {
            let x = opendp::traits::samplers::sample_discrete_laplace(s.clone())
                .expect("system randomness");
            i64::try_from(x).expect("small")
        })
    }

    /// P[X = x] of the discrete Laplace distribution.
    fn pmf(scale: f64, x: i64) -> f64 {
        let a = (-1.0 / scale).exp();
        (1.0 - a) / (1.0 + a) * a.powi(x.unsigned_abs() as i32)
    }

    /// Pearson's chi-square of `sample` against the pmf, bins -w..=w plus both tails.
    fn chi_square(sample: &[i64], scale: f64, w: i64) -> (f64, usize) {
        let n = sample.len() as f64;
        let mut stat = 0.0;
        let mut bins = 0;
        let mut tail_p = 1.0;
        for x in -w..=w {
            let p = pmf(scale, x);
            tail_p -= p;
            let o = sample.iter().filter(|v| **v == x).count() as f64;
            stat += (o - n * p).powi(2) / (n * p);
            bins += 1;
        }
        let o = sample.iter().filter(|v| v.abs() > w).count() as f64;
        stat += (o - n * tail_p).powi(2) / (n * tail_p);
        (stat, bins)
    }

    #[test]
    fn same_key_and_context_same_noise() {
        let s = RBig::try_from(3.5).expect("finite");
        let a = KeyedStream::new(&[1; 32], b"q").discrete_laplace(&s);
        let b = KeyedStream::new(&[1; 32], b"q").discrete_laplace(&s);
        assert_eq!(a, b);
        let differ = (0..20)
            .filter(|i| {
                KeyedStream::new(&[2; 32], format!("q{i}").as_bytes()).discrete_laplace(&s)
                    != KeyedStream::new(&[3; 32], format!("q{i}").as_bytes()).discrete_laplace(&s)
            })
            .count();
        assert!(
            differ >= 10,
            "other keys must give other noise ({differ} of 20 differ)"
        );
    }

    #[test]
    fn matches_opendp() {
        // Scales used by reports (small and large), 20 000 draws each: our keyed sampler and
        // OpenDP's must both fit the exact pmf (chi-square below the 0.01 % critical value for
        // these degrees of freedom) and have the same mean and variance within a few
        // standard errors.
        for (scale, w, critical) in [(1.0, 4, 34.0), (4.0, 12, 60.5), (16.5, 30, 111.0)] {
            let n = 20_000;
            let mine = ours(scale, n);
            let lib = theirs(scale, n);
            for (name, s) in [("keyed", &mine), ("opendp", &lib)] {
                let (stat, bins) = chi_square(s, scale, w);
                assert!(
                    stat < critical,
                    "{name} sampler at scale {scale}: chi-square {stat:.1} over {bins} bins"
                );
            }
            let a = (-1.0 / scale).exp();
            let var = 2.0 * a / (1.0 - a).powi(2);
            let se = (var / n as f64).sqrt();
            let mean = |s: &[i64]| s.iter().sum::<i64>() as f64 / s.len() as f64;
            let msq = |s: &[i64]| s.iter().map(|x| (x * x) as f64).sum::<f64>() / s.len() as f64;
            assert!((mean(&mine) - mean(&lib)).abs() < 5.0 * se * 2f64.sqrt());
            let (vm, vl) = (msq(&mine), msq(&lib));
            assert!(
                (vm - vl).abs() / var < 0.1,
                "variances {vm:.2} and {vl:.2} (expected {var:.2}) at scale {scale}"
            );
        }
    }
}
