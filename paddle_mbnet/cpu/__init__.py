"""CPU speed: the depthwise and fused BatchNorm operators (``ops``), MKL on its AVX2 path (``blas``), malloc
keeping freed memory (``memory``). See docs/performance.md."""
