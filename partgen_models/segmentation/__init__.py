"""Segmentation: a multi-view grid → ranked multi-view part proposals (PartGen's colour-coded
diffusion, plus SAM-based backends), and selecting the parts that go on to completion."""
