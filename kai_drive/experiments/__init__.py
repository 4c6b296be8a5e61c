"""Experiments built from many training runs: :mod:`kai_drive.experiments.ablation` (does pretrained
perception help? ``python -m kai_drive.experiments.ablation``)."""
