"""Greedy decoding of encoder-decoder models through a plain forward function (no KV cache).

For models whose incremental decoding cannot reuse a cache, e.g. the linearised models of
:mod:`fusion_bench.models.linearized` (a cache of ``f_lin`` is not the linearisation of
incremental decoding): every step runs the whole decoded prefix again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fusion_bench.errors import FusionBenchError

Seq2SeqForward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(input_ids, attention_mask, decoder_input_ids, rows) -> logits [rows, decoder_length, vocab]``:
the first three are already restricted to ``rows``, the indices of the rows in the full batch
(for callers that cache per-row state such as encoder outputs)."""


def greedy_generate(
    forward: Seq2SeqForward,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    max_new_tokens: int,
    decoder_start_token_id: int,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None,
) -> torch.Tensor:
    """Greedy decoding of an encoder-decoder model without a KV cache.

    Each step runs ``forward`` on the whole decoded prefix and appends the arg-max of the last
    position's logits, as ``transformers``' ``generate(do_sample=False, num_beams=1)`` does:
    rows that have emitted an EOS token get ``pad_token_id`` from then on, and decoding stops when
    every row has finished or after ``max_new_tokens`` tokens. Finished rows are left out of the
    later forward passes (each row's logits do not depend on the other rows).

    Args:
        forward: ``(input_ids, attention_mask, decoder_input_ids, rows) -> logits`` of shape
            ``[len(rows), decoder_length, vocab]``, see :data:`Seq2SeqForward`.
        input_ids: encoder token ids ``[batch, length]``.
        attention_mask: encoder mask ``[batch, length]``; ``None``: all ones.
        max_new_tokens: at most this many tokens are generated per row.
        decoder_start_token_id: the first decoder token of every row.
        eos_token_id: end-of-sequence id(s); ``None``: decode ``max_new_tokens`` tokens.
        pad_token_id: written after a row's EOS; ``None``: the (first) EOS id.

    Returns:
        ``[batch, 1 + n]`` token ids starting with ``decoder_start_token_id``, ``n <=
        max_new_tokens``, on ``input_ids``' device.

    Raises:
        FusionBenchError: if ``max_new_tokens < 1`` or no pad id can be chosen.
    """
    if max_new_tokens < 1:
        raise FusionBenchError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = input_ids.device
    eos_ids = (
        []
        if eos_token_id is None
        else (
            [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]
        )
    )
    if pad_token_id is None:
        if not eos_ids:
            raise FusionBenchError("greedy_generate needs a pad_token_id or an eos_token_id")
        pad_token_id = eos_ids[0]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    batch = input_ids.shape[0]
    out = torch.full((batch, 1), int(decoder_start_token_id), dtype=torch.long, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        rows = unfinished.nonzero().squeeze(-1)
        everyone = len(rows) == batch
        logits = forward(
            input_ids if everyone else input_ids[rows],
            attention_mask if everyone else attention_mask[rows],
            out if everyone else out[rows],
            rows,
        )
        step = torch.full((batch,), int(pad_token_id), dtype=torch.long, device=device)
        step[rows] = logits[:, -1, :].argmax(-1)
        out = torch.cat([out, step[:, None]], dim=1)
        if len(eos_ids):
            unfinished &= ~torch.isin(step, eos)
        if not unfinished.any():
            break
    return out
