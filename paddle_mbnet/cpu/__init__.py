"""CPU speed: the depthwise operator (``ops``), MKL on its AVX2 path (``blas``), malloc keeping freed memory
(``memory``). See docs/performance.md."""
