"""The text metrics' arithmetic: retrieval ranks among groups of 32 (against a brute-force count), chance of a
random encoder, radical classes by count, and the pooled sentence embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffkit.evaluate import classifier as domain
from diffkit.evaluate.text_metrics import GROUP, Judges, radical_classes, retrieval, sentence_embeddings
from diffkit.text.captions import CaptionTable


class LookupEncoder(domain.DomainClassifier):
    """A 'meaning encoder' that returns row k of a table for an image whose first pixel holds k."""

    def __init__(self, table: torch.Tensor):
        super().__init__(domain.ClassifierConfig(1, table.shape[1], 4))
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = ((x[:, 0, 0, 0] + 1) * 127.5).round().long()  # back from [-1, 1] to the stored uint8
        return self.table[index]


def images_numbered(count: int) -> torch.Tensor:
    images = torch.zeros(count, 1, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count, dtype=torch.uint8)
    return images


def test_retrieval_ranks_match_a_brute_force_count():
    generator = torch.Generator().manual_seed(0)
    sentences = F.normalize(torch.randn(2 * GROUP, 16, generator=generator), dim=1)
    perfect = Judges(radical=None, meaning=LookupEncoder(sentences).eval(), radicals=[])
    assert retrieval(perfect, images_numbered(2 * GROUP), sentences) == {"top1": 1.0, "top5": 1.0}
    noisy_table = sentences + 0.9 * torch.randn(2 * GROUP, 16, generator=generator)
    noisy = Judges(radical=None, meaning=LookupEncoder(noisy_table).eval(), radicals=[])
    found = retrieval(noisy, images_numbered(2 * GROUP), sentences)
    ranks = []
    for index in range(2 * GROUP):
        group = slice(index // GROUP * GROUP, index // GROUP * GROUP + GROUP)
        scores = [float(F.normalize(noisy_table[index], dim=0) @ other) for other in sentences[group]]
        ranks.append(sum(score > scores[index % GROUP] for score in scores))
    assert found["top1"] == sum(rank < 1 for rank in ranks) / len(ranks)
    assert found["top5"] == sum(rank < 5 for rank in ranks) / len(ranks)
    assert 0 < found["top1"] < 1


def test_radical_classes_keep_radicals_with_enough_characters():
    radicals = torch.tensor([85] * 5 + [30] * 3 + [9] * 5 + [0] * 9)
    assert radical_classes(radicals, 5) == [9, 85]  # numeric order; 0 (unknown) never counts


def test_sentence_embeddings_are_the_unit_mean_of_real_tokens():
    tokens = torch.randn(3, 4, 6).half()
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    embedded = sentence_embeddings(CaptionTable(tokens, mask), torch.tensor([2, 0]))
    expected = F.normalize(torch.stack([tokens[2, :1].float().mean(0), tokens[0, :2].float().mean(0)]), dim=1)
    torch.testing.assert_close(embedded, expected)
