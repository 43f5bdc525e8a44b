"""Packaging beyond pyproject.toml: the top-level ``checkpoints/`` folder ships inside the wheel as
``mmapp/checkpoints/`` (package data), so ``pip install .`` then ``mmapp caption photo.jpg`` and
``Captioner.from_pretrained()`` find the default checkpoints (``mmapp.inference.default_checkpoint``)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["mmapp", "mmapp.*"]), "mmapp.checkpoints"],
    package_dir={"mmapp.checkpoints": "checkpoints"},
    package_data={"mmapp.checkpoints": ["*.safetensors"],
                  # the tables training reads: the objects vocabulary, the ImageNet classes' hypernyms
                  "mmapp.data.objects": ["*.tsv"], "mmapp.models": ["*.tsv"]},
)
