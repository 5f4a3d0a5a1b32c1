#!/usr/bin/env python3
"""Derives the erfc polynomial of gelu.cu's 16-bit path (run by hand; needs mpmath).

erfc(z) = t exp(-z^2) Q(t), t = 1 / (1 + p z), z >= 0. Q is smooth on t in (0, 1]
(Q(1) = 1; Q -> 1 / (p sqrt(pi)) as z -> inf), so a polynomial fits it well. This
fits Q by least squares on Chebyshev nodes in t with relative weights (so the
tail x -> -inf of GELU, where Phi(x) = 0.5 erfc(|x| / sqrt 2), keeps its relative
accuracy), rounds the coefficients to fp32 and prints them (highest degree last)
with the largest relative error of Q over z in (0, 10].

    python3 src/kernels/gelu_erfc_fit.py [degree] [p]      # gelu.cu: 8 0.4
"""
import struct
import sys

import mpmath as mp

mp.mp.dps = 40


def q_exact(t, p):
    z = (1 / t - 1) / p
    return mp.erfc(z) * mp.exp(z * z) / t


def fit(degree, p, nodes=400):
    ts = [mp.mpf(1) / 2 + mp.mpf(1) / 2 * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / nodes) for k in range(nodes)]
    ts = [t for t in ts if t > mp.mpf("1e-6")]
    a = mp.matrix(len(ts), degree + 1)
    for i, t in enumerate(ts):
        q = q_exact(t, p)
        for j in range(degree + 1):
            a[i, j] = t**j / q
    rhs = mp.matrix([1] * len(ts))
    c = mp.lu_solve(a.T * a, a.T * rhs)
    return [c[j] for j in range(degree + 1)]


def to_f32(x):
    return struct.unpack("f", struct.pack("f", float(x)))[0]


def main():
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    p = mp.mpf(sys.argv[2]) if len(sys.argv) > 2 else mp.mpf("0.4")
    c = [to_f32(x) for x in fit(degree, p)]
    worst = mp.mpf(0)
    for i in range(1, 3001):
        z = mp.mpf(i) / 300
        t = 1 / (1 + p * z)
        approx = sum(mp.mpf(cj) * t**j for j, cj in enumerate(c))
        worst = max(worst, abs(approx / q_exact(t, p) - 1))
    print(f"degree {degree}, p {float(p)}: max relative error of Q over z in (0, 10] {mp.nstr(worst, 3)}")
    for j, cj in enumerate(c):
        print(f"  c{j} = {cj:.9e}")


if __name__ == "__main__":
    main()
