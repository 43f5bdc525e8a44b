"""Installable: the wheel carries the default checkpoints, ``from_pretrained`` finds them with no path,
and the README's first screen states figures that match the committed checkpoints."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mmapp.errors import CheckpointError
from mmapp.inference import Captioner, VQAModel, default_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_the_wheel_carries_the_default_checkpoints(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("mmapp-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {"mmapp/inference.py", "mmapp/http_api.py", "mmapp/app/ui.py"} <= names
        for name in ("captioner.safetensors", "vqa.safetensors"):
            assert _sha(z.read(f"mmapp/checkpoints/{name}")) == _sha((REPO / "checkpoints" / name).read_bytes())
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "mmapp = mmapp.cli:main" in z.read(entry).decode()


def test_default_checkpoint_lookup_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MMAPP_CHECKPOINTS", raising=False)
    assert default_checkpoint("captioner") == REPO / "checkpoints" / "captioner.safetensors"  # a source checkout
    monkeypatch.setenv("MMAPP_CHECKPOINTS", str(tmp_path))
    assert default_checkpoint("vqa") == tmp_path / "vqa.safetensors"
    with pytest.raises(CheckpointError, match="MMAPP_CHECKPOINTS"):
        Captioner.from_pretrained("cpu")


def test_from_pretrained_loads_with_no_path(tmp_path, monkeypatch):
    from tests.support.tiny import make_tiny_checkpoints

    make_tiny_checkpoints(tmp_path)
    monkeypatch.setenv("MMAPP_CHECKPOINTS", str(tmp_path))
    captioner = Captioner.from_pretrained("cpu")
    vqa = VQAModel.from_pretrained("cpu", encoder=captioner.encoder)
    assert captioner.meta["training"]["dataset"] == "tiny random (tests)" and vqa.encoder is captioner.encoder


def test_readme_first_screen_matches_the_checkpoints():
    from mmapp.checkpoint import read_checkpoint
    from mmapp.data.shapes.scene import COLORS, SHAPES, SIZES
    from mmapp.vocab import SPECIALS

    readme = (REPO / "README.md").read_text()
    assert readme.splitlines()[:4] == ["```bash", readme.splitlines()[1], readme.splitlines()[2], "```"]
    assert readme.splitlines()[1].startswith("make app") and readme.splitlines()[2].startswith("make test")
    first_screen = "\n".join(readme.splitlines()[:12])
    _, cap = read_checkpoint(default_checkpoint("captioner"))
    _, vqa = read_checkpoint(default_checkpoint("vqa"))
    answers = vqa["answers"]["answers"]
    words = [w for w in cap["vocab"]["words"] if w not in SPECIALS]
    stated = {k: int(n) for n, k in re.findall(r"(\d+) (shapes|colours|sizes|words|answers|kinds|groups)",
                                               first_screen)}
    knows = {k: v for k, v in vqa["training"]["knows"].items() if k != "shape"}
    assert stated == {"shapes": len(set(SHAPES) & set(answers)), "colours": len(set(COLORS) & set(answers)),
                      "sizes": len(set(SIZES) & set(answers)), "words": len(words), "answers": len(answers),
                      "kinds": sum(len(v) for v in knows.values()), "groups": len(knows)}
    assert "real photographs" in first_screen
    assert f"{len(answers)} answers, " in readme and "100 answers" not in readme  # the model card's table
    assert "What was tried" not in readme and "What was tried" in (REPO / "docs" / "model_card.md").read_text()
