"""mmapp: image captioning and visual question answering with attention maps.

Shape legend used throughout the code base (one meaning per letter):
    B batch (images, captions or questions), I images of a grouped batch, T time (words),
    P grid cells (= H * W), H x W grid height x width, D feature width, E embedding width,
    A attention width, S hidden state width, F fused width, Q question width, K beam width,
    V vocabulary size, N answers, G glimpses, L question length, R relation directions,
    M decoded (packed) steps; in the Transformer decoder d model width, nh heads,
    J positions attended to.

Nothing heavy is imported here: models, data and the app load on first use.
"""

__version__ = "0.1.0"
