"""medprobe family plugin: Hulu-Med (ZJU-AI4H), whose model code is remote (``trust_remote_code``).

``plugin`` registers the adapter lazily; ``adapter`` holds it; ``listing`` reads the module-name
listings recorded from the published modeling code (``listing_<variant>.json``), which
``record_listing`` regenerates.
"""
