"""Partial linearisation of a model around its initial trainable parameters (L-LoRA).

Tang et al., "Parameter Efficient Multi-task Model Fusion with Partial Linearization",
arXiv 2310.04742. Only the trainable (adapter, e.g. LoRA) parameters ``phi`` are linearised
around their initial value ``phi_0``; every other weight of the model stays frozen::

    f_lin(x; phi) = f(x; phi_0) + J_phi f(x; phi_0) (phi - phi_0)

evaluated in one forward pass with ``torch.func.jvp`` over ``torch.func.functional_call``
(primal at ``phi_0``, tangent ``phi - phi_0``). ``f_lin`` is exactly affine in ``phi``, so the
task vectors ``tau_i = phi_i - phi_0`` of adapters fine-tuned from the same ``phi_0`` add up
without interference from the non-linearity: the merged model
``phi = phi_0 + sum_i lambda_i tau_i`` outputs ``f(phi_0) + sum_i lambda_i J tau_i``.

Outputs may be tensors or any pytree of them (tuples, dicts, ``transformers`` ``ModelOutput``):
every floating-point tensor leaf is linearised; integer tensors are passed through; other leaves
(e.g. a KV ``Cache``) become ``None``, because a cache of the linearised model is not the
linearisation of incremental decoding (generate without a cache).

Caveat: pass HF models no ``labels``: their internal loss would be linearised too (a first-order
expansion of the loss), whereas L-LoRA trains the loss of the linearised logits.

Text generation: :meth:`LinearizedModel.generate` decodes encoder-decoder models greedily with
:func:`~fusion_bench.models.generation.greedy_generate`, one full linearised forward per new token (no KV cache), with the same
output convention as ``transformers``' ``generate`` (ids start with the decoder start token,
finished rows are padded), so the GLUE text-to-text task pool evaluates L-LoRA models unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils import _pytree as pytree

from fusion_bench.errors import FusionBenchError
from fusion_bench.merging.task_arithmetic import sum_task_vectors
from fusion_bench.models.generation import Seq2SeqForward, greedy_generate

Params = dict[str, torch.Tensor]


def linearized_forward(
    module: nn.Module,
    params0: Mapping[str, torch.Tensor],
    params: Mapping[str, torch.Tensor],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> Any:
    """``f(phi_0) + J_phi f(phi_0) (phi - phi_0)`` for one call ``module(*args, **kwargs)``.

    Args:
        module: the network; its own tensors are used for every name not given below.
        params0: ``name -> phi_0``, the linearisation point (constants).
        params: ``name -> phi`` with the same keys; gradients flow to these through the tangent.
        args: positional inputs of ``module``.
        kwargs: keyword inputs of ``module``.
        buffers: optional further ``name -> tensor`` held fixed (e.g. frozen weights or buffers to
            substitute), passed to ``functional_call`` alongside ``params0``.

    Returns:
        ``module``'s output structure with every floating-point tensor leaf linearised.

    Raises:
        FusionBenchError: if ``params`` and ``params0`` do not have the same keys.
    """
    if set(params) != set(params0):
        raise FusionBenchError(
            f"params and params0 must share keys (only in params: {sorted(set(params) - set(params0))[:1]}, "
            f"only in params0: {sorted(set(params0) - set(params))[:1]})"
        )
    names = list(params0)
    fixed = dict(buffers or {})
    kwargs = dict(kwargs or {})
    spec: list[pytree.TreeSpec] = []
    kinds: list[str] = []  # per leaf: "float" (linearised), "tensor" (passed through), "other"

    def f(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = torch.func.functional_call(
            module, {**fixed, **dict(zip(names, values, strict=True))}, tuple(args), kwargs
        )
        leaves, tree = pytree.tree_flatten(out)
        spec.append(tree)
        kinds.extend(
            ("float" if x.is_floating_point() or x.is_complex() else "tensor")
            if isinstance(x, torch.Tensor)
            else "other"
            for x in leaves
        )
        # jvp needs tensor outputs; non-tensor leaves never leave the transform.
        return tuple(x for x in leaves if isinstance(x, torch.Tensor))

    primals = tuple(params0[n].detach() for n in names)
    tangents = tuple(params[n] - params0[n].detach() for n in names)
    # Fused SDPA kernels (flash / memory-efficient) have no forward-mode derivative; the math
    # backend is plain matmul + softmax, which does (HF models use SDPA by default).
    with sdpa_kernel(SDPBackend.MATH):
        out0, dout = torch.func.jvp(f, primals, tangents)
    tensors = iter(zip(out0, dout, strict=True))
    leaves = []
    for kind in kinds:
        if kind == "other":
            leaves.append(None)
            continue
        y0, dy = next(tensors)
        leaves.append(y0 + dy if kind == "float" else y0)
    return pytree.tree_unflatten(leaves, spec[0])


def merge_linearized_params(
    params0: Mapping[str, torch.Tensor],
    task_vectors: Iterable[Mapping[str, torch.Tensor]],
    scaling_factor: float | Sequence[float],
) -> Params:
    """Task arithmetic over linearised adapters: ``phi = phi_0 + sum_i lambda_i tau_i``.

    Args:
        params0: ``name -> phi_0``, the shared initial adapter parameters.
        task_vectors: ``tau_i = phi_i - phi_0`` (see :func:`task_vector`), streamed one at a time
            when ``scaling_factor`` is a scalar.
        scaling_factor: one ``lambda`` for all tasks, or one per task.

    Returns:
        New tensors ``name -> phi`` in ``params0``'s dtypes.

    Raises:
        FusionBenchError: on missing/extra keys, mismatched shapes, no task vectors, or a number of
            scaling factors different from the number of task vectors.
    """
    if isinstance(scaling_factor, (int, float)):
        total, lam = sum_task_vectors(task_vectors), float(scaling_factor)
    else:
        tvs, lams = list(task_vectors), list(scaling_factor)
        if len(tvs) != len(lams):
            raise FusionBenchError(f"{len(lams)} scaling factors for {len(tvs)} task vectors")
        total = sum_task_vectors(
            {k: lam * v for k, v in tv.items()} for tv, lam in zip(tvs, lams, strict=True)
        )
        lam = 1.0
    missing, extra = set(params0) - set(total), set(total) - set(params0)
    if missing or extra:
        raise FusionBenchError(
            f"task vectors must have exactly the linearised parameters' keys "
            f"(missing: {sorted(missing)[:1]}, unexpected: {sorted(extra)[:1]})"
        )
    out = {}
    for k, p0 in params0.items():
        if tuple(total[k].shape) != tuple(p0.shape):
            raise FusionBenchError(f"task vector '{k}' has shape {tuple(total[k].shape)}")
        acc = torch.promote_types(p0.dtype, torch.float32)
        out[k] = (p0.to(acc) + lam * total[k].to(device=p0.device, dtype=acc)).to(p0.dtype)
    return out


def _set_buffer(root: nn.Module, name: str, value: torch.Tensor) -> None:
    """Register ``value`` at dotted ``name`` under ``root``, creating empty containers."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        if part not in module._modules:
            module.add_module(part, nn.Module())
        module = module._modules[part]
    module.register_buffer(leaf, value, persistent=True)


def _jvp(
    fn: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    tangents: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(primals), J fn(primals) tangents)`` for a function returning one tensor (SDPA's
    math backend, as in :func:`linearized_forward`)."""
    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(fn, tuple(primals), tuple(tangents))


def _generation_config(model: nn.Module) -> Any:
    """The ``generation_config`` (else ``config``) of the first submodule that has one (the HF
    model inside e.g. a ``PeftModel``)."""
    for m in model.modules():
        for attr in ("generation_config", "config"):
            cfg = getattr(m, attr, None)
            if cfg is not None and hasattr(cfg, "decoder_start_token_id"):
                return cfg
    return None


class LinearizedModel(nn.Module):
    """``f_lin(x; phi) = f(x; phi_0) + J_phi f(x; phi_0) (phi - phi_0)`` (L-LoRA, arXiv 2310.04742).

    ``phi`` are the trainable parameters of ``model`` (by default those with ``requires_grad``,
    e.g. PEFT's LoRA weights); all other parameters are frozen (``requires_grad`` set to
    ``False``). ``phi_0`` is a copy of their values at construction, stored as *persistent*
    buffers so a saved state dict is self-contained: its keys are ``model.<name>`` (the wrapped
    model, including the current ``phi``) and ``params0.<name>`` (the linearisation point), with
    ``<name>`` the wrapped model's own parameter names (e.g. ``...lora_A.default.weight``).

    Args:
        model: the network to linearise; wrapped, not copied (its trainable parameters are the
            ones of this module).
        trainable_names: names (as in ``model.named_parameters()``) of the parameters to
            linearise; ``None`` takes those with ``requires_grad=True``.

    Raises:
        FusionBenchError: if a name is unknown or not floating-point, or none is trainable.
    """

    def __init__(self, model: nn.Module, trainable_names: Iterable[str] | None = None) -> None:
        super().__init__()
        named = dict(model.named_parameters())
        if trainable_names is None:
            names = [n for n, p in named.items() if p.requires_grad]
        else:
            names = list(trainable_names)
            unknown = [n for n in names if n not in named]
            if unknown:
                raise FusionBenchError(f"unknown parameter '{unknown[0]}' to linearise")
        if not names:
            raise FusionBenchError("no trainable parameters to linearise")
        bad = [n for n in names if not named[n].is_floating_point()]
        if bad:
            raise FusionBenchError(f"parameter '{bad[0]}' is not floating-point")
        self.model = model
        self.trainable_names = names
        for n, p in named.items():
            p.requires_grad_(n in names)
        self.params0 = nn.Module()
        for n in names:
            _set_buffer(self.params0, n, named[n].detach().clone())

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """``name -> phi`` (live parameters, the wrapped model's names)."""
        named = dict(self.model.named_parameters())
        return {n: named[n] for n in self.trainable_names}

    def initial_parameters(self) -> Params:
        """``name -> phi_0`` (the linearisation point, buffers)."""
        return {n: self.params0.get_buffer(n) for n in self.trainable_names}

    @torch.no_grad()
    def set_parameters(self, params: Mapping[str, torch.Tensor]) -> None:
        """Copy ``params`` into ``phi`` in place; keys must be exactly the trainable names."""
        if set(params) != set(self.trainable_names):
            raise FusionBenchError("parameters must have exactly the linearised parameters' keys")
        for n, p in self.trainable_parameters().items():
            p.copy_(params[n])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate the linearised model on ``model(*args, **kwargs)``'s inputs."""
        return linearized_forward(
            self.model, self.initial_parameters(), self.trainable_parameters(), args, kwargs
        )

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Greedy text generation of a linearised encoder-decoder model (e.g. L-LoRA Flan-T5).

        Every step evaluates ``f_lin`` on the whole decoded prefix (``use_cache=False``: a KV
        cache of the linearised model would not be its linearisation), see
        :func:`greedy_generate`; the ids come out like ``transformers``' ``generate``. The
        encoder runs once: its output ``h_0`` and tangent ``dh = J_phi enc (phi - phi_0)`` are
        kept, and each step takes the jvp of the decoder in ``(phi, h)`` at ``(phi_0, h_0)``
        along ``(phi - phi_0, dh)``, which by the chain rule equals the jvp of the whole model
        (models without ``get_encoder`` run the whole linearised model every step).

        Args:
            input_ids: encoder token ids ``[batch, length]``.
            attention_mask: encoder mask; ``None``: all ones.
            max_new_tokens: generation limit; ``None``: the wrapped model's
                ``generation_config.max_new_tokens``, else 20.
            **kwargs: other ``generate`` arguments, ignored; ``do_sample=True`` and
                ``num_beams > 1`` are refused (only greedy decoding is implemented).

        Returns:
            ``[batch, 1 + n]`` token ids starting with the decoder start token.

        Raises:
            FusionBenchError: sampling or beam search was asked for, or the wrapped model has no
                ``decoder_start_token_id``.
        """
        if kwargs.get("do_sample") or (kwargs.get("num_beams") or 1) > 1:
            raise FusionBenchError(
                "LinearizedModel.generate decodes greedily only (do_sample=False, num_beams=1)"
            )
        gen_cfg = _generation_config(self.model)
        start = getattr(gen_cfg, "decoder_start_token_id", None)
        if start is None:
            raise FusionBenchError(
                f"{type(self.model).__name__} has no decoder_start_token_id: "
                "LinearizedModel.generate supports encoder-decoder models only"
            )
        if max_new_tokens is None:
            max_new_tokens = getattr(gen_cfg, "max_new_tokens", None) or 20

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return greedy_generate(
            self._decoding_forward(input_ids, attention_mask),
            input_ids,
            attention_mask,
            max_new_tokens=int(max_new_tokens),
            decoder_start_token_id=int(start),
            eos_token_id=getattr(gen_cfg, "eos_token_id", None),
            pad_token_id=getattr(gen_cfg, "pad_token_id", None),
        )

    def _decoding_forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> Seq2SeqForward:
        """The per-step ``f_lin`` logits for :func:`greedy_generate`, encoder linearised once."""
        get_encoder = getattr(self.model, "get_encoder", None)
        encoder = get_encoder() if callable(get_encoder) else None
        prefix = next((n for n, m in self.model.named_modules() if m is encoder), None)
        if encoder is None or not prefix:

            def full(ids, mask, dec, rows):
                out = self(
                    input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False
                )
                return out.logits

            return full
        names = self.trainable_names
        phi0, phi = self.initial_parameters(), self.trainable_parameters()
        primals = tuple(phi0[n].detach() for n in names)
        tangents = tuple(phi[n].detach() - phi0[n].detach() for n in names)
        prefix += "."
        enc_idx = [i for i, n in enumerate(names) if n.startswith(prefix)]
        enc_names = [names[i][len(prefix) :] for i in enc_idx]

        def encode(*values: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(
                encoder,
                dict(zip(enc_names, values, strict=True)),
                (),
                {"input_ids": input_ids, "attention_mask": attention_mask, "return_dict": True},
            ).last_hidden_state

        if enc_idx:
            h0, dh = _jvp(encode, [primals[i] for i in enc_idx], [tangents[i] for i in enc_idx])
        else:  # nothing linearised in the encoder: its output does not move
            h0 = encode()
            dh = torch.zeros_like(h0)

        def step(ids, mask, dec, rows):
            def decode(*values: torch.Tensor) -> torch.Tensor:
                *params, h = values
                return torch.func.functional_call(
                    self.model,
                    dict(zip(names, params, strict=True)),
                    (),
                    {
                        "encoder_outputs": (h,),
                        "attention_mask": mask,
                        "decoder_input_ids": dec,
                        "use_cache": False,
                        "return_dict": True,
                    },
                ).logits

            y0, dy = _jvp(decode, [*primals, h0[rows]], [*tangents, dh[rows]])
            return y0 + dy

        return step


def task_vector(linearized: LinearizedModel) -> Params:
    """``tau = phi - phi_0`` over the trainable parameters (detached copies)."""
    phi0 = linearized.initial_parameters()
    return {n: (p.detach() - phi0[n]).clone() for n, p in linearized.trainable_parameters().items()}


def merge_linearized(
    base: LinearizedModel,
    task_vectors: Iterable[Mapping[str, torch.Tensor]],
    scaling_factor: float | Sequence[float],
) -> LinearizedModel:
    """Set ``base``'s ``phi = phi_0 + sum_i lambda_i tau_i`` in place and return it.

    ``base`` must share ``phi_0`` (and the frozen weights) with the models the task vectors come
    from: L-LoRA experts are fine-tuned from one adapter initialisation. See
    :func:`merge_linearized_params` for the maths and errors.
    """
    base.set_parameters(
        merge_linearized_params(base.initial_parameters(), task_vectors, scaling_factor)
    )
    return base
