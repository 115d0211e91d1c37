"""Pure tensor / state-dict maths of model merging (no I/O, no models).

Modules (import them directly; this package imports nothing at import time):

- :mod:`~fusion_bench.merging.state_dict`: compatibility checks, floating-point keys.
- :mod:`~fusion_bench.merging.task_arithmetic`: task vectors, their (streaming) sum, applying
  a scaled task vector to a base.
- :mod:`~fusion_bench.merging.average`: (weighted) averages of state dicts, streaming.
- :mod:`~fusion_bench.merging.ties`: TIES trim -> elect sign -> disjoint merge.
- :mod:`~fusion_bench.merging.dare`: DARE drop-and-rescale with an explicit generator.
- :mod:`~fusion_bench.merging.model_stock`: Model Stock ratio and streaming merge.
"""
