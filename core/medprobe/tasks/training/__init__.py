"""The parts of ``medprobe train`` (:mod:`medprobe.tasks.train` is the entry point).

=============  ==================================================================================
module         concept
=============  ==================================================================================
``record``     the trained-run directory: ``train.json`` (format ``medprobe.tasks.train/1``), its reader
               :class:`~.record.TrainRun`, per-split metrics, the report entry (no torch)
``data``       samples per split, light augmentation, inverse-frequency class weights, batching
``backbones``  what turns images into pooled (B, D) features with gradients: a baseline's
               ``encode_images``, or an MLLM's vision tower up to the layer that feeds its connector
``loop``       the classifier head, AdamW + warmup-cosine, weighted label-smoothed cross-entropy,
               early stopping on validation accuracy, ``train_log.jsonl``
=============  ==================================================================================

Importing this package imports nothing heavy; ``backbones`` and ``loop`` import torch.
"""
