"""Build time: ONNX export, int8 quantization and its gate, measurements, random checkpoints.

Needs the `build` extra (torch, transformers, onnx). Uses the serving modules of `model`;
they never import this package (a test scans their imports). Entry point: `python -m model`.
"""
