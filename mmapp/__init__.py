"""mmapp: image captioning and visual question answering with attention maps.

Shape legend used throughout the code base:
    B batch, T time (words), P grid cells (= H * W), H x W grid, D feature width,
    E embedding width, A attention width, S hidden state width, K beam width,
    V vocabulary size, N answers, G glimpses, L question length.

Nothing heavy is imported here: models, data and the app load on first use.
"""

__version__ = "0.1.0"
