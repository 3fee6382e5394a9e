"""Top-k / top-p sampling that draws only from the k kept tokens.

Hugging Face ``generate(do_sample=True)`` masks every token outside the top k to ``-inf`` and then
calls ``torch.multinomial`` on the whole vocabulary, which draws one exponential variate per
vocabulary entry per row: with SmolLM2's 49,152 tokens that was a fifth of all CPU time in a
135M-parameter model's generation. :class:`TopKSampler` draws from the k kept tokens instead.

For next-token logits ``z`` (one row), temperature ``T``, top-k ``k`` and top-p ``p``:

    s = z / T
    K = the k largest entries of s, in descending order s_(1) >= ... >= s_(k)
    q_i = exp(s_(i)) / sum_{j<=k} exp(s_(j))                   (softmax over K)
    keep i iff sum_{j<i} q_j < p                              (nucleus; i = 1 is always kept)
    P(token = K_i) = q_i [i kept] / sum_j q_j [j kept]

which is exactly the distribution of Hugging Face's temperature, top-k and top-p warpers applied
in that order followed by softmax sampling (up to ties at the k-th value, which HF keeps). The
sampler is a logits processor: it returns scores that are ``0`` at the drawn token and ``-inf``
elsewhere, so ``generate`` runs in greedy mode and picks it. Only the random stream differs from
HF's sampler, so the same seed gives different (equally distributed) texts.
"""

from __future__ import annotations

import torch


class TopKSampler:
    """Draw the next token from ``softmax(top_k(logits / temperature))`` cut to top-p (see module)."""

    def __init__(self, *, top_k: int, temperature: float = 1.0, top_p: float = 1.0) -> None:
        if top_k < 1:
            raise ValueError(f"TopKSampler needs top_k >= 1, got {top_k}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], got {top_p}")
        self.top_k = top_k
        self.temperature = temperature
        self.top_p = top_p

    def probabilities(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs, token_ids)``, each ``(rows, min(k, vocab))``: the distribution drawn from."""
        scores = scores.float()
        if self.temperature != 1.0:
            scores = scores / self.temperature
        values, token_ids = scores.topk(min(self.top_k, scores.shape[-1]), dim=-1)
        probs = torch.softmax(values, dim=-1)
        if self.top_p < 1.0:
            mass_before = probs.cumsum(dim=-1) - probs
            probs = probs * (mass_before < self.top_p)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        return probs, token_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs, token_ids = self.probabilities(scores)
        drawn = token_ids.gather(-1, torch.multinomial(probs, num_samples=1))
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(-1, drawn, 0.0)
