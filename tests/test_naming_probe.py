"""scripts/naming_probe.py: the ImageNet-name matching and the renormalised prior it measures."""

import importlib.util
import math
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("naming_probe", REPO / "scripts" / "naming_probe.py")
naming_probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naming_probe)


def test_lemma_table_is_the_classifiers_order():
    lemmas, _ = naming_probe.lemma_table()
    assert len(lemmas) == 1000
    assert lemmas[0][0] == "tench" and "tabby" in lemmas[281] and lemmas[291][0] == "lion"


def test_match_imagenet_takes_whole_words_and_plurals():
    lemmas = [["egyptian cat"], ["catamaran"], ["lion", "king of beasts"], ["bell peppers"], ["dog"]]
    match = naming_probe.match_imagenet(["cat", "lion", "bell pepper", "zebra"], {"bell pepper": "bell peppers"}, lemmas)
    assert match == {"cat": [0], "lion": [2], "bell pepper": [3], "zebra": []}


def test_imagenet_log_prior_renormalises_over_matched_classes():
    classifier = torch.nn.Linear(4, 5)
    pooled = torch.randn(3, 4)
    match = {"cat": [0, 1], "dog": [3], "zebra": []}
    prior = naming_probe.imagenet_log_prior(pooled, classifier, match, ["cat", "dog", "zebra"])
    logits = classifier(pooled).detach()[:, [0, 1, 3]]
    expected_cat = torch.logsumexp(logits[:, :2], 1) - torch.logsumexp(logits, 1)
    assert torch.allclose(prior[:, 0], expected_cat, atol=1e-5)
    assert torch.allclose(prior[:, :2].exp().sum(1), torch.ones(3), atol=1e-5)  # a distribution over matched nouns
    assert torch.equal(prior[:, 2], torch.zeros(3))  # no match: no evidence either way
    assert not math.isclose(prior[0, 0].item(), prior[1, 0].item())
