"""Sentiment inference: settings, model artifacts, engines, batching, cache, predictor.

Kept free of imports so that `import model.<module>` loads only what that module needs
(a server loading a built artifact never imports torch, transformers or huggingface_hub).
Build-time code (export, quantization, the int8 gate, measurements) lives in `model.builder`,
which uses these modules and is never imported by them.
"""
