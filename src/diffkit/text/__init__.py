"""Text conditioning: the `TextCondition` a text model's denoiser takes as y, the sentence encoder (loaded only
when a text model needs it), the cached caption embeddings training reads, and prompts -> y for sampling."""

from diffkit.text.condition import TextCondition, batch_of, join_conditions

__all__ = ["TextCondition", "batch_of", "join_conditions"]
