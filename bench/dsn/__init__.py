"""DSN (Zhao et al., ICCV 2021, "Deep Symmetric Network for Underexposed Image Enhancement
with Recurrent Attentional Learning"), rebuilt from the paper and the documented behaviour of
the official code (see ``bench/dsn/NOTES.md`` and ``/work/shared/notes/dsn_reference.md``).

Modules:

- :mod:`bench.dsn.model`    -- the network (``DSN``), its ablation variants and parameter/MAC counters;
- :mod:`bench.dsn.encoder`  -- the fixed encoder/decoder tensors (VGG-16 conv1 loader, fallback, Haar);
- :mod:`bench.dsn.official` -- strict import/export of state dicts in the official key layout.
"""
