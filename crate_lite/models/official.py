"""Checkpoints of the reference CRATE implementation (Ma-Lab-Berkeley/CRATE
``model/crate.py``) to and from :class:`crate_lite.models.crate.CRATE` (chapter 06).

The reference module tree gives these state-dict keys (docs/design.md):
``to_patch_embedding.{1,2,3}.*`` (LayerNorm, Linear, LayerNorm), ``pos_embedding``,
``cls_token``, ``transformer.layers.{i}.0.norm.*`` and ``.0.fn.qkv.weight``,
``.0.fn.to_out.0.*`` (absent when heads = 1 and dim_head = dim), ``.1.norm.*`` and
``.1.fn.weight`` (the ISTA dictionary), ``mlp_head.{0,1}.*``. The computation is the same
as ours (``tests/reference_crate.py`` re-implements it and the tests compare logits), so
loading is a renaming of keys plus checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace

import torch

from .crate import CRATE, PRESET_PARAMS, PRESETS, SWITCH_DEFAULTS, CRATEConfig

__all__ = ["load_official_state_dict", "to_official_state_dict", "official_keys"]


def _key_map(depth: int, project_out: bool = True) -> dict[str, str]:
    """official key -> crate_lite key."""
    m = {
        "to_patch_embedding.1.weight": "embed.patch.norm_in.weight",
        "to_patch_embedding.1.bias": "embed.patch.norm_in.bias",
        "to_patch_embedding.2.weight": "embed.patch.proj.weight",
        "to_patch_embedding.2.bias": "embed.patch.proj.bias",
        "to_patch_embedding.3.weight": "embed.patch.norm_out.weight",
        "to_patch_embedding.3.bias": "embed.patch.norm_out.bias",
        "pos_embedding": "embed.pos_embedding",
        "cls_token": "embed.cls_token",
        "mlp_head.0.weight": "head.norm.weight",
        "mlp_head.0.bias": "head.norm.bias",
        "mlp_head.1.weight": "head.linear.weight",
        "mlp_head.1.bias": "head.linear.bias",
    }
    for i in range(depth):
        o, c = f"transformer.layers.{i}", f"layers.{i}"
        m[f"{o}.0.norm.weight"] = f"{c}.norm1.weight"
        m[f"{o}.0.norm.bias"] = f"{c}.norm1.bias"
        m[f"{o}.0.fn.qkv.weight"] = f"{c}.mssa.qkv.weight"
        if project_out:
            m[f"{o}.0.fn.to_out.0.weight"] = f"{c}.mssa.to_out.weight"
            m[f"{o}.0.fn.to_out.0.bias"] = f"{c}.mssa.to_out.bias"
        m[f"{o}.1.norm.weight"] = f"{c}.norm2.weight"
        m[f"{o}.1.norm.bias"] = f"{c}.norm2.bias"
        m[f"{o}.1.fn.weight"] = f"{c}.ista.weight"
    return m


def _projects_out(config: CRATEConfig) -> bool:
    """Whether MSSA has an output projection (not when K = 1 and p = d, as in the reference)."""
    return not (config.heads == 1 and config.dim_head == config.dim)


def _reference_layout(config: CRATEConfig) -> None:
    """Refuse the ablation switches that change the parameter layout (chapter 12): the
    reference checkpoints have an untied output projection and both LayerNorms."""
    for name in ("out_proj", "norm"):
        if getattr(config, name) != SWITCH_DEFAULTS[name]:
            expected, got = SWITCH_DEFAULTS[name], getattr(config, name)
            raise ValueError(f"{name}: the reference CRATE layout has {name}={expected!r}, got {got!r}")


def official_keys(config: CRATEConfig) -> list[str]:
    """The state-dict keys of the reference implementation for ``config``."""
    _reference_layout(config)
    return list(_key_map(config.depth, _projects_out(config)))


def _unwrap(state_dict: object) -> dict[str, torch.Tensor]:
    """Strip checkpoint nesting (``model`` / ``state_dict``) and ``module.`` prefixes."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of names to tensors, got {type(state_dict).__name__}")
    sd: Mapping = state_dict
    for _ in range(3):
        nested = [k for k in ("state_dict", "model") if isinstance(sd.get(k), Mapping)]
        if not nested or "cls_token" in sd:
            break
        sd = sd[nested[0]]
    out = {}
    for k, t in sd.items():
        k = str(k)
        while k.startswith("module."):
            k = k[len("module.") :]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict: expected tensor values, got {type(t).__name__} at key {k!r}")
        out[k] = t
    return out


def _infer_config(sd: dict[str, torch.Tensor], heads: int | None, overrides: dict[str, object]) -> CRATEConfig:
    for k in ("cls_token", "pos_embedding", "to_patch_embedding.2.weight", "mlp_head.1.weight"):
        if k not in sd:
            raise ValueError(f"state_dict: missing key {k!r} needed to infer the model size; pass config=")
    dim = sd["cls_token"].shape[-1]
    num_patches = sd["pos_embedding"].shape[1] - 1
    patch_dim = sd["to_patch_embedding.2.weight"].shape[1]
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    depth = max(layer_ids) + 1 if layer_ids else 0
    qkv = sd.get("transformer.layers.0.0.fn.qkv.weight")
    inner = qkv.shape[0] if qkv is not None else dim
    if heads is None:  # released checkpoints: the paper's four sizes (a guess elsewhere would be silent)
        paper = (PRESETS[name] for name in PRESET_PARAMS)
        known = {(p["dim"], p["depth"], p["heads"] * p["dim_head"]): p["heads"] for p in paper}
        if (dim, depth, inner) not in known:
            raise ValueError(
                f"heads: cannot be read from the weights (only heads * dim_head = {inner} can); "
                f"pass heads= or config= for dim={dim}, depth={depth}"
            )
        heads = known[(dim, depth, inner)]
    if inner % heads:
        raise ValueError(f"heads: expected a divisor of heads*dim_head={inner}, got {heads}")
    grid = math.isqrt(num_patches)
    tried = [int(overrides.pop("channels"))] if "channels" in overrides else [3, 1]
    for channels in tried:  # patch_dim = channels * P^2: RGB first, then grey
        P = math.isqrt(patch_dim // channels)
        if channels * P * P == patch_dim:
            break
    if grid * grid != num_patches or channels * P * P != patch_dim:
        raise ValueError(
            f"state_dict: cannot infer a square image from {num_patches} patches of {patch_dim} values "
            f"with channels in {tried}; pass config="
        )
    return CRATEConfig(
        image_size=grid * P,
        patch_size=P,
        channels=channels,
        num_classes=sd["mlp_head.1.weight"].shape[0],
        dim=dim,
        depth=depth,
        heads=heads,
        dim_head=inner // heads,
        **overrides,
    )


def load_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: CRATEConfig | None = None,
    *,
    heads: int | None = None,
    **overrides: object,
) -> CRATE:
    """A :class:`CRATE` holding the weights of a checkpoint saved by the reference
    implementation (Ma-Lab-Berkeley/CRATE ``model/crate.py``); its forward pass equals
    the reference model's on the same weights.

    ``state_dict``: keys as listed in this module's docstring (``to_patch_embedding.{1,2,3}.*``,
    ``pos_embedding``, ``cls_token``, ``transformer.layers.{i}.{0,1}...``, ``mlp_head.{0,1}.*``),
    optionally prefixed by ``module.`` and/or nested under ``model`` or ``state_dict``.
    ``config``: the model's sizes; if omitted they are read from the tensor shapes
    (square images; ``channels`` 3 if patch_dim / 3 is a square, else 1, or pass
    ``channels=``; ``heads`` must be passed unless dim, depth and heads * dim_head are
    those of CRATE-T/S/B/L, since only heads * dim_head is visible in the weights).
    ``overrides`` (e.g. ``pool="mean"``, ``lam=0.1``, ``fast=False``) go to the config.
    Raises ``ValueError`` listing missing and unexpected keys, or mismatched shapes.
    """
    sd = _unwrap(state_dict)
    if config is None:
        config = _infer_config(sd, heads, dict(overrides))
    else:
        if not isinstance(config, CRATEConfig):
            raise TypeError(f"config: expected a CRATEConfig or None, got {type(config).__name__}")
        config = replace(config, **overrides) if overrides else config
    _reference_layout(config)
    model = CRATE(config)
    mapping = _key_map(config.depth, _projects_out(config))
    missing = sorted(set(mapping) - set(sd))
    unexpected = sorted(set(sd) - set(mapping))
    if missing or unexpected:
        raise ValueError(
            f"state_dict: does not match the reference CRATE layout for {config}:\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}"
        )
    ours = model.state_dict()
    bad = [
        f"{k}: expected {tuple(ours[mapping[k]].shape)}, got {tuple(sd[k].shape)}"
        for k in mapping
        if tuple(sd[k].shape) != tuple(ours[mapping[k]].shape)
    ]
    if bad:
        raise ValueError("state_dict: shape mismatch:\n  " + "\n  ".join(bad))
    model.load_state_dict({mapping[k]: sd[k] for k in mapping})
    return model


def to_official_state_dict(model: CRATE) -> dict[str, torch.Tensor]:
    """``model``'s weights under the reference implementation's keys (inverse of
    :func:`load_official_state_dict`)."""
    if not isinstance(model, CRATE):
        raise TypeError(f"model: expected a CRATE, got {type(model).__name__}")
    _reference_layout(model.config)
    ours = model.state_dict()
    return {k: ours[ck] for k, ck in _key_map(model.config.depth, _projects_out(model.config)).items()}
