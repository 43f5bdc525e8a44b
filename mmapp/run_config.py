"""The configuration of a training run: data, encoder, model and optimisation, as one frozen tree.

``mmapp train caption --config FILE key=value ...`` resolves it with ``config.load_config`` and
writes the result to ``<run dir>/config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmapp.config import CaptionDecoderConfig, EncoderConfig, VQAConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives. Annotation files are in the official formats.

    Captions: ``train_captions`` / ``val_captions`` are COCO caption files (``captions_train2014.json``)
    or one Karpathy split file (``dataset_coco.json``) used for both, with ``train_split``/``val_split``.
    VQA: ``*_questions`` / ``*_annotations`` are VQA v2 files; image files are found through
    ``image_index`` (comma-separated COCO captions/instances files listing ``file_name`` per image
    id) or, failing that, the official ``COCO_<subtype>_<id>.jpg`` names.
    ``features``: a feature cache (``mmapp features``) covering the train and val images; without one
    the encoder runs on the images at every step (needed when fine-tuning the encoder).
    """

    images: str = ""
    features: str = ""
    train_captions: str = ""
    val_captions: str = ""
    train_split: str = "train"
    val_split: str = "val"
    train_questions: str = ""
    train_annotations: str = ""
    val_questions: str = ""
    val_annotations: str = ""
    image_index: str = ""
    min_word_freq: int = 5
    max_caption_len: int = 20
    max_question_len: int = 30
    top_answers: int = 3000
    val_limit: int = 0  # score at most this many validation images/questions (0: all)
    train_instances: str = ""  # COCO instances file of the training images (train.grounding_weight)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32  # images per batch; each brings all its captions (or questions)
    lr: float = 4e-4
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | step | constant
    warmup_steps: int = 100
    grad_clip: float = 5.0
    attention_weight: float = 1.0  # doubly stochastic attention regulariser (captions)
    # weight of the loss putting attention on the boxes of the objects a question is about (each
    # glimpse; needs "object_ids" in the VQA annotations) or a caption word names (shapes captions,
    # instances with color/size); needs data.train_instances; 0: off
    grounding_weight: float = 0.0
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | fp16 | off
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    patience: int = 5  # early stopping: epochs without a better validation metric
    metric: str = ""  # default: CIDEr-D for captions, accuracy for VQA
    checkpoint_every: int = 0  # optimizer steps between mid-epoch 'last' checkpoints (0: per epoch)
    val_beam_size: int = 3
    deterministic: bool = False
    compile: bool = False  # torch.compile the recurrent decoder's per-word update (GPU training)
    # the fast path (mmapp/speed/fast_path.py): fixed-shape batches, a tensor learning rate and training
    # steps replayed from CUDA graphs. auto: on CUDA where the run allows it | on (on a CPU: the same
    # steps, eager) | off
    cuda_graphs: str = "auto"
    row_bucket: int = 8  # fast path: captions / questions per batch rounded up to a multiple of this
    length_bucket: int = 4  # fast path: caption / question tokens rounded up to a multiple of this
    # Self-critical sequence training (captions): from this many finished epochs on, the captioner
    # samples scst_samples captions per image and learns from their CIDEr-D against the image's
    # training references, each sample's baseline being the mean reward of the image's other
    # samples; -1: cross-entropy only
    self_critical_after: int = -1
    scst_samples: int = 5
    scst_lr: float = 5e-5  # constant through the self-critical epochs (the schedule covers the others)
    # with self-critical training: reward - this x the objects a sample names that its image lacks
    # (CHAIR's hallucinations; shapes captions, needs data.train_instances); 0: off
    scst_hallucination_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"train.schedule must be cosine, step or constant, got {self.schedule!r}")
        if self.cuda_graphs not in ("auto", "on", "off"):
            raise ValueError(f"train.cuda_graphs must be auto, on or off, got {self.cuda_graphs!r}")
        if self.row_bucket < 1 or self.length_bucket < 1:
            raise ValueError("train.row_bucket and train.length_bucket must be >= 1")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("train.epochs and train.batch_size must be >= 1")
        if self.self_critical_after >= 0 and self.scst_samples < 2:
            raise ValueError("train.scst_samples must be >= 2: each sample's baseline is the image's other samples")
        if self.scst_lr <= 0:
            raise ValueError("train.scst_lr must be > 0")
        if self.scst_hallucination_weight < 0:
            raise ValueError("train.scst_hallucination_weight must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    task: str = "caption"
    out: str = "runs/caption"
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: CaptionDecoderConfig = field(default_factory=CaptionDecoderConfig)
    vqa: VQAConfig = field(default_factory=VQAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.task not in ("caption", "vqa"):
            raise ValueError(f"task must be caption or vqa, got {self.task!r}")
        if self.train.grounding_weight < 0:
            raise ValueError("train.grounding_weight must be >= 0")
        if self.train.scst_hallucination_weight > 0 and not self.data.train_instances:
            raise ValueError("train.scst_hallucination_weight needs data.train_instances (the objects of "
                             "each training image, shapes instances format)")
        if self.train.grounding_weight > 0 and not self.data.train_instances:
            raise ValueError("train.grounding_weight needs data.train_instances (the training images' "
                             "COCO instances file, whose boxes the annotations' object_ids refer to)")
