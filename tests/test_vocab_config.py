"""Tokeniser, word and answer vocabularies, and configs (YAML + key=value overrides)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from mmapp.config import (CaptionDecoderConfig, EncoderConfig, VQAConfig, from_dict, load_config,
                          parse_overrides, save_config, to_dict)
from mmapp.vocab import SPECIALS, AnswerVocab, Vocab, tokenize


def test_tokenize() -> None:
    assert tokenize("A red circle, left of two Squares.") == ["a", "red", "circle", "left", "of", "two", "squares"]
    assert tokenize("  What's   on\tthe\ntable?  ") == ["what", "'s", "on", "the", "table"]
    assert tokenize("") == [] and tokenize(" \n ") == [] and tokenize("?!") == []


def test_vocab_build_orders_by_frequency_then_alphabet() -> None:
    vocab = Vocab.build(["b a c", "a b", "a d"])
    assert vocab.words == SPECIALS + ("a", "b", "c", "d")
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert len(vocab) == 8 and "c" in vocab and "zebra" not in vocab


def test_vocab_min_freq_and_max_size() -> None:
    texts = ["a a a b b c", "a b d"]
    assert Vocab.build(texts, min_freq=2).words == SPECIALS + ("a", "b")
    assert Vocab.build(texts, min_freq=3).words == SPECIALS + ("a", "b")
    assert Vocab.build(texts, min_freq=4).words == SPECIALS + ("a",)
    assert Vocab.build(texts, max_size=5).words == SPECIALS + ("a",)


def test_vocab_encode_decode() -> None:
    vocab = Vocab.build(["a red circle", "a blue square"])
    ids = vocab.encode("A red SQUARE, and a star!")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert ids[1:-1] == [vocab.id("a"), vocab.id("red"), vocab.id("square"), vocab.unk_id, vocab.id("a"),
                         vocab.unk_id]
    assert vocab.decode(ids) == ["a", "red", "square", "<unk>", "a", "<unk>"]
    assert vocab.encode("a red circle", max_len=2) == [1, vocab.id("a"), vocab.id("red"), 2]
    assert vocab.encode(["blue", "circle"]) == [1, vocab.id("blue"), vocab.id("circle"), 2]
    # decoding stops at <end>, skips <start>/<pad>
    assert vocab.decode([1, vocab.id("blue"), 0, vocab.id("circle"), 2, vocab.id("red"), 0]) == ["blue", "circle"]
    assert vocab.encode_question("is the square blue?") == [vocab.unk_id, vocab.unk_id, vocab.id("square"),
                                                           vocab.id("blue")]
    assert vocab.encode_question("a a a a", max_len=2) == [vocab.id("a")] * 2


def test_vocab_json_round_trip_and_validation() -> None:
    vocab = Vocab.build(["the cat sat on the mat"])
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.id("mat") == vocab.id("mat")
    with pytest.raises(ValueError, match="must start with"):
        Vocab(("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(SPECIALS + ("a", "a"))


def test_answer_vocab() -> None:
    answers = AnswerVocab.build(["yes", "no", "yes", "2", "red", "no", "yes", "blue"], top_k=3)
    assert answers.answers == ("yes", "no", "2")  # by count, ties alphabetical
    assert len(answers) == 3 and answers.index("no") == 1 and answers.index("blue") is None
    assert AnswerVocab.from_dict(json.loads(json.dumps(answers.to_dict()))) == answers
    with pytest.raises(ValueError, match="duplicate"):
        AnswerVocab(("yes", "yes"))


# ------------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class RunForTest:
    """A nested run config like a training command's (defined here so the test owns its shape)."""

    name: str = "run"
    seed: int = 0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: CaptionDecoderConfig = field(default_factory=CaptionDecoderConfig)


def test_component_configs_are_frozen_and_validated() -> None:
    cfg = EncoderConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.input_size = 448  # type: ignore[misc]
    with pytest.raises(ValueError, match="grid"):
        EncoderConfig(grid="middle")
    with pytest.raises(ValueError, match="multiple of 32"):
        EncoderConfig(input_size=100)
    with pytest.raises(ValueError, match="num_layers"):
        CaptionDecoderConfig(num_layers=0)
    with pytest.raises(ValueError, match="fusion"):
        VQAConfig(fusion="sum")


def test_to_dict_from_dict_round_trip() -> None:
    cfg = RunForTest(encoder=EncoderConfig(input_size=448, mean=(0.1, 0.2, 0.3)),
                     decoder=CaptionDecoderConfig(cell="gru"))
    data = to_dict(cfg)
    assert data["encoder"]["mean"] == [0.1, 0.2, 0.3]  # tuples become lists
    assert from_dict(RunForTest, json.loads(json.dumps(data))) == cfg


def test_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: exp1\nencoder:\n  input_size: 448\n  grid: last\ndecoder:\n  dropout: 0.1\n")
    cfg = load_config(RunForTest, path, ["encoder.input_size=224", "decoder.hidden_dim=64", "seed=7",
                                         "encoder.mean=[0.1, 0.2, 0.3]"])
    assert cfg.name == "exp1" and cfg.seed == 7
    assert cfg.encoder.input_size == 224 and cfg.encoder.grid == "last"  # override beats YAML, YAML kept
    assert cfg.encoder.mean == (0.1, 0.2, 0.3) and isinstance(cfg.encoder.mean, tuple)
    assert cfg.decoder.dropout == 0.1 and cfg.decoder.hidden_dim == 64
    assert cfg.decoder.embed_dim == CaptionDecoderConfig().embed_dim  # untouched defaults remain
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    assert load_config(RunForTest, out) == cfg


def test_type_coercion() -> None:
    cfg = from_dict(CaptionDecoderConfig, {"hidden_dim": "64", "dropout": 1, "cell": "gru"})
    assert cfg.hidden_dim == 64 and isinstance(cfg.hidden_dim, int)
    assert cfg.dropout == 1.0 and isinstance(cfg.dropout, float)
    assert load_config(RunForTest, None, ["name=123"]).name == "123"  # a str field keeps a str
    with pytest.raises(ValueError, match="hidden_dim: expected an integer"):
        from_dict(CaptionDecoderConfig, {"hidden_dim": 2.5})
    with pytest.raises(ValueError, match="expected int"):
        from_dict(CaptionDecoderConfig, {"hidden_dim": "wide"})
    with pytest.raises(ValueError, match="encoder.mean: expected 3 values"):
        load_config(RunForTest, None, ["encoder.mean=[0.5, 0.5]"])


def test_bool_coercion() -> None:
    @dataclass(frozen=True)
    class Flags:
        amp: bool = False

    assert from_dict(Flags, {"amp": "yes"}).amp is True
    assert from_dict(Flags, {"amp": "off"}).amp is False
    with pytest.raises(ValueError, match="expected a boolean"):
        from_dict(Flags, {"amp": "maybe"})


def test_unknown_keys_are_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown config key\(s\): encoder.input_sise"):
        load_config(RunForTest, None, ["encoder.input_sise=448"])
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(RunForTest, None, ["learning_rate=0.1"])
    path = tmp_path / "typo.yaml"
    path.write_text("decoder:\n  hiden_dim: 3\n")
    with pytest.raises(ValueError, match="decoder.hiden_dim"):
        load_config(RunForTest, path)


def test_bad_override_strings_and_files(tmp_path) -> None:
    assert parse_overrides(["a.b.c=1", "a.d=x", "e="]) == {"a": {"b": {"c": 1}, "d": "x"}, "e": ""}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["encoder.input_size"])
    with pytest.raises(ValueError, match="empty key"):
        parse_overrides(["encoder..grid=last"])
    with pytest.raises(FileNotFoundError):
        load_config(RunForTest, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("encoder: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(RunForTest, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_config(RunForTest, listy)
