"""Data: the corpus builder (raw sources -> grammar -> tokens -> ArrayRecord shards + manifest) and the
Grain training pipeline (shards -> mixture -> packing -> per-host global batches).

Modules: ``corpus`` (on-disk format, modalities, manifest), ``sources`` (raw-record readers),
``builder`` (``logos data build``), ``pipeline`` (``make_train_iterator``, ``make_eval_batches``),
``commands`` (CLI). Nothing heavy is imported here.
"""
