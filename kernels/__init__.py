"""int4lab's Triton kernels, one module per kernel (installed as int4lab.kernels).

Import these through `int4lab`, never on their own: `import int4lab` sets TRITON_INTERPRET=1 on
machines without a GPU before any kernel here is decorated.
"""
