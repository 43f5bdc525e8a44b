"""The procedural shapes dataset: scenes (``scene``), their captions (``text``), questions
(``questions``) and the writer of the official COCO / VQA v2 / Karpathy files (``writer``)."""
