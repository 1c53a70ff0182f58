"""medprobe family plugin: transformers ``CLIPModel`` / ``SiglipModel`` vision towers as baselines
(PubMedCLIP, MedSigLIP, ...).

``plugin`` registers the ``hf_clip`` adapter lazily (imports nothing heavy); ``adapter`` holds it.
"""
