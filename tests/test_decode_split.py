"""``mmapp eval caption|vqa --checkpoint C --data DIR --split S``: ``mmapp.decode_split.decode_split``
decodes a split (shapes layout, COCO layout, Karpathy split) into official-format results, equal
to what the inference API gives image by image, and ``mmapp eval`` scores them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmapp.cli import main
from mmapp.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "datasets" / "fixtures" / "coco"


@pytest.fixture(autouse=True)
def _fast_scoring(monkeypatch):
    """Python tokeniser and no METEOR: the Java scorers are tested with the metrics."""
    from mmapp.metrics import caption_metrics

    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    assert main(["data", "shapes", "--out", str(out), "--train", "4", "--val", "2", "--test", "4", "--size", "64",
                 "--workers", "1", "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, shapes_dir) -> dict[str, Path]:
    """Untrained tiny captioner and VQA heads on the packaged encoder at 64x64 (4x4 grid), with the
    shapes vocabularies (training is tested in test_training.py; decoding needs only weights)."""
    from mmapp.checkpoint import save_model
    from mmapp.config import CaptionDecoderConfig, EncoderConfig, VQAConfig
    from mmapp.data.coco_captions import load_coco_captions
    from mmapp.data.vqa_v2 import build_answer_vocab, build_question_vocab, load_vqa
    from mmapp.models.caption_decoder import build_caption_decoder
    from mmapp.models.encoder import build_encoder
    from mmapp.models.vqa import VQANet
    from mmapp.vocab import Vocab

    ann = shapes_dir / "annotations"
    out = tmp_path_factory.mktemp("eval_ckpt")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build_encoder(EncoderConfig(input_size=64)).eval()
        vocab = Vocab.build(c for im in load_coco_captions(ann / "captions_train.json") for c in im.captions)
        decoder = build_caption_decoder(CaptionDecoderConfig(vocab_size=len(vocab), encoder_dim=encoder.out_dim,
                                                             embed_dim=16, attention_dim=16, hidden_dim=24))
        train = load_vqa(ann / "questions_train.json", ann / "annotations_train.json")
        qvocab, answers = build_question_vocab(train.questions), build_answer_vocab(train.questions, 20)
        net = VQANet(VQAConfig(vocab_size=len(qvocab), num_answers=len(answers), encoder_dim=encoder.out_dim,
                               embed_dim=8, question_dim=16, attention_dim=16, hidden_dim=32))
    return {"caption": save_model(out / "captioner.safetensors", "captioner", decoder.eval(), encoder, vocab,
                                  training={"max_caption_len": 12}),
            "vqa": save_model(out / "vqa.safetensors", "vqa", net.eval(), encoder, qvocab, answers,
                              training={"max_question_len": 30})}


def test_eval_caption_checkpoint_on_shapes_split(tmp_path, shapes_dir, checkpoints):
    from mmapp.inference import Captioner

    out = tmp_path / "eval"
    assert main(["eval", "caption", "--checkpoint", str(checkpoints["caption"]), "--data", str(shapes_dir),
                 "--split", "test", "--out", str(out)]) == 0
    results = json.loads((out / "captions_test_results.json").read_text())
    references = json.loads((shapes_dir / "annotations" / "captions_test.json").read_text())
    assert sorted(r["image_id"] for r in results) == sorted(im["id"] for im in references["images"])
    captioner = Captioner.from_checkpoint(checkpoints["caption"], device="cpu")
    files = {im["id"]: shapes_dir / "images" / "test" / im["file_name"] for im in references["images"]}
    for r in results:  # batched decoding == the inference API one image at a time (beam 3, max_len 12)
        expected = captioner.caption(files[r["image_id"]], beam_size=3, max_len=12)[0]
        assert r["caption"] == expected.text and len(expected.tokens) <= 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_missing"] == 0 and metrics["num_images"] == 4 and "CIDEr" in metrics["overall"]
    assert metrics["inputs"]["annotations"] == str(shapes_dir / "annotations" / "captions_test.json")
    decode = json.loads((out / "decode.json").read_text())
    assert decode["results"] == 4 and decode["split"] == "test" and decode["beam_size"] == 3


def test_eval_vqa_checkpoint_on_shapes_split(tmp_path, shapes_dir, checkpoints):
    from mmapp.inference import VQAModel

    out = tmp_path / "eval"
    assert main(["eval", "vqa", "--checkpoint", str(checkpoints["vqa"]), "--data", str(shapes_dir),
                 "--split", "val", "--out", str(out)]) == 0
    results = json.loads((out / "vqa_val_results.json").read_text())
    questions = json.loads((shapes_dir / "annotations" / "questions_val.json").read_text())["questions"]
    assert sorted(r["question_id"] for r in results) == sorted(q["question_id"] for q in questions)
    model = VQAModel.from_checkpoint(checkpoints["vqa"], device="cpu")
    files = {im["id"]: shapes_dir / "images" / "val" / im["file_name"]
             for im in json.loads((shapes_dir / "annotations" / "captions_val.json").read_text())["images"]}
    answer = {r["question_id"]: r["answer"] for r in results}
    for q in questions:  # each image encoded once for all its questions == one question at a time
        assert answer[q["question_id"]] == model.answer(files[q["image_id"]], q["question"])[0].answers[0][0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_missing"] == 0 and 0.0 <= metrics["overall"] <= 1.0
    assert metrics["inputs"]["questions"] == str(shapes_dir / "annotations" / "questions_val.json")


def test_decode_coco_layout_and_karpathy_split(tmp_path, checkpoints):
    from mmapp.decode_split import decode_split

    # official captions_val2014.json, images in val2014/
    files = decode_split(task="caption", checkpoint=checkpoints["caption"], data_dir=COCO, split="val",
                         out_dir=tmp_path / "val", progress=False, workers=0)
    assert files["annotations"] == COCO / "annotations" / "captions_val2014.json"
    assert sorted(r["image_id"] for r in json.loads(files["results"].read_text())) == [42, 73]
    # no captions_test*.json: the Karpathy test split of dataset_coco.json, references written out
    files = decode_split(task="caption", checkpoint=checkpoints["caption"], data_dir=COCO, split="test",
                         out_dir=tmp_path / "test", progress=False, workers=0)
    references = json.loads(files["annotations"].read_text())
    assert [im["id"] for im in references["images"]] == [73] and len(references["annotations"]) == 2
    assert [r["image_id"] for r in json.loads(files["results"].read_text())] == [73]
    # karpathy_<split> takes the Karpathy split even where an official file of that name exists
    files = decode_split(task="caption", checkpoint=checkpoints["caption"], data_dir=COCO, split="karpathy_val",
                         out_dir=tmp_path / "kval", progress=False, workers=0)
    assert [r["image_id"] for r in json.loads(files["results"].read_text())] == [42]
    assert files["annotations"] == tmp_path / "kval" / "captions_karpathy_val_references.json"
    # VQA v2 files in vqa/, image files from the captions file's index
    files = decode_split(task="vqa", checkpoint=checkpoints["vqa"], data_dir=COCO, split="train",
                         out_dir=tmp_path / "vqa", progress=False, workers=0)
    assert files["questions"] == COCO / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json"
    assert files["annotations"] == COCO / "vqa" / "v2_mscoco_train2014_annotations.json"
    answers = json.loads(files["results"].read_text())
    assert sorted(r["question_id"] for r in answers) == [9000, 9001, 25000, 30000, 30001]
    # without any captions file: official COCO_train2014_<id>.jpg names in train2014/
    bare = tmp_path / "bare"
    shutil.copytree(COCO / "vqa", bare / "vqa")
    shutil.copytree(COCO / "train2014", bare / "train2014")
    files = decode_split(task="vqa", checkpoint=checkpoints["vqa"], data_dir=bare, split="train",
                         out_dir=tmp_path / "bare_out", progress=False, workers=0)
    assert json.loads(files["results"].read_text()) == answers
    assert main(["eval", "vqa", "--results", str(files["results"]), "--annotations", str(files["annotations"]),
                 "--questions", str(files["questions"])]) == 0
    # test-dev: questions of data_subtype test-dev2015 about test2015 images, no annotations
    questions = json.loads((COCO / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json").read_text())
    questions["data_subtype"] = "test-dev2015"
    testdev = tmp_path / "testdev"
    (testdev / "vqa").mkdir(parents=True)
    (testdev / "vqa" / "v2_OpenEnded_mscoco_test-dev2015_questions.json").write_text(json.dumps(questions))
    (testdev / "test2015").mkdir()
    for image in (COCO / "train2014").iterdir():
        shutil.copy(image, testdev / "test2015" / image.name.replace("train2014", "test2015"))
    files = decode_split(task="vqa", checkpoint=checkpoints["vqa"], data_dir=testdev, split="test-dev2015",
                         out_dir=tmp_path / "testdev_out", progress=False, workers=0)
    assert "annotations" not in files and files["results"].name == "vqa_test-dev2015_results.json"
    assert json.loads(files["results"].read_text()) == answers


def test_decode_from_a_feature_cache(tmp_path, shapes_dir, checkpoints, captioner_checkpoint):
    from mmapp.decode_split import decode_split

    cache = tmp_path / "cache"
    assert main(["features", "--images", str(shapes_dir / "images" / "test"), "--out", str(cache),
                 "encoder.input_size=64", "--workers", "0", "--quiet"]) == 0
    from_images = decode_split(task="vqa", checkpoint=checkpoints["vqa"], data_dir=shapes_dir, split="test",
                               out_dir=tmp_path / "images", progress=False, workers=0)
    from_cache = decode_split(task="vqa", checkpoint=checkpoints["vqa"], data_dir=shapes_dir, split="test",
                              out_dir=tmp_path / "cached", features=cache, progress=False)
    by_images = json.loads(from_images["results"].read_text())
    by_cache = json.loads(from_cache["results"].read_text())
    assert [r["question_id"] for r in by_cache] == [r["question_id"] for r in by_images]
    agree = sum(a["answer"] == b["answer"] for a, b in zip(by_images, by_cache))
    assert agree >= 0.8 * len(by_images)  # float16 grids: an answer on a near tie may flip
    assert json.loads((tmp_path / "cached" / "decode.json").read_text())["features"] == str(cache)
    # a cache of other encoder weights (the random conftest encoder at the same size) is refused
    with pytest.raises(DataError, match="weights"):
        decode_split(task="caption", checkpoint=captioner_checkpoint, data_dir=shapes_dir, split="test",
                     out_dir=tmp_path / "refused", features=cache, progress=False)


def test_eval_checkpoint_errors_are_one_line(tmp_path, shapes_dir, checkpoints, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(shapes_dir / "annotations", broken / "annotations")
    shutil.copytree(shapes_dir / "images" / "test", broken / "images" / "test")
    second = json.loads((broken / "annotations" / "captions_test.json").read_text())["images"][1]["file_name"]
    (broken / "images" / "test" / second).unlink()
    cases = [
        (["caption", "--checkpoint", str(checkpoints["caption"]), "--data", str(shapes_dir), "--split", "nope"],
         "no captions file for split 'nope'"),
        (["caption", "--checkpoint", str(checkpoints["caption"]), "--data", str(tmp_path / "absent")],
         f"file not found: {tmp_path / 'absent'}"),
        (["caption", "--checkpoint", str(checkpoints["vqa"]), "--data", str(shapes_dir)], "not a captioner model"),
        (["vqa", "--checkpoint", str(checkpoints["vqa"]), "--data", str(COCO), "--split", "val"],
         "no VQA questions file for split 'val'"),
        (["caption", "--checkpoint", str(checkpoints["caption"]), "--data", str(broken), "--split", "test"],
         f"file not found: {broken / 'images' / 'test' / second}"),
    ]
    for args, expected in cases:
        assert main(["eval", *args, "--out", str(tmp_path / "out")]) == 3, expected  # bad input
        err = capsys.readouterr().err.strip()
        assert err.startswith("mmapp eval: error: ") and expected in err and "\n" not in err, err
