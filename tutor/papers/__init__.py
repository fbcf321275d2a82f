"""One module per paper, each built on the shared core and never imported by it.

``amtfl`` (Deep-AMTFL, ICML 2018), ``meta_dropout`` (ICLR 2020), ``bayesian_taml`` (ICLR 2020),
``mvt`` (MVT-style, ICML 2020), ``cts`` (ICML 2021), ``hyperdistill`` (ICLR 2022),
``seq_reptile`` (ICLR 2022) -- as they land.  Each module docstring maps the paper's equations to
functions and lists its deliberate simplifications.
"""
