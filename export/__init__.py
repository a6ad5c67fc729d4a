"""Exporters of tfvqvae (installed as ``tfvqvae.export``).

SavedModel for TF Serving, TFLite and ONNX arrive with the export issue; the
folder exists now because the design fixes the top level.
"""
