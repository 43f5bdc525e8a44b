"""scripts/naming_probe.py: the renormalised ImageNet prior it measures (the name matching is
``mmapp.models.imagenet_evidence``'s, tested in tests/test_vqa_readout.py)."""

import math

import torch

from tests.support.scripts import load_script

naming_probe = load_script("naming_probe")


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


def test_accuracy_by_source_splits_photographs_renders_and_lone_objects():
    pred, gold = torch.tensor([1, 0, 3, 4]), torch.tensor([1, 0, 3, 0])
    out = naming_probe.accuracy_by_source(pred, gold, ["tuxpaint+alone", "tuxpaint", "emoji", "emoji+alone"])
    assert out == {"all": 0.75, "n": 4, "alone": 0.5, "n_alone": 2, "emoji": 0.5, "n_emoji": 2,
                   "tuxpaint": 1.0, "n_tuxpaint": 2}
