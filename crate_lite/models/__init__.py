"""The course's neural networks, as one family: shared parts, CRATE, its baselines, and
checkpoint conversion (chapters 06-07 and the chapters after them).

Why a ``models/`` subpackage beside flat derivation modules: ``pca``, ``coding_rate``,
``mcr2``, ``sparse`` and ``redunet`` each hold what one chapter derives (functions of
tensors, read top to bottom next to that chapter), and stay flat. The networks are
different: every one of them (the CRATE classifier, the ViT baseline, later the
autoencoder, the language model and the self-supervised backbone) is the same frame,
``Backbone(embed, layers, pool, head)``, with different parts. Keeping them together
lets each model file be short and read as a variation on the others: ``parts.py``
(embeddings, attention masks, pooling, heads, :class:`Intermediates`, the frame),
``crate.py`` (the CRATE layer and classifier, presets), ``vit.py`` (the baseline: the
same parts around a different layer), ``official.py`` (the reference implementation's
checkpoint keys), ``autoencoder.py`` (CRATE-MAE and ViT-MAE, chapter 08), ``language.py``
(CRATE-GPT, CRATE-BERT and their GPT / BERT baselines, chapter 10), ``tost.py`` (ToST,
token-statistics attention, chapter 13). Models import
the derivation modules (``crate.py`` uses ``sparse.ista_step``), never the reverse.

    from crate_lite.models import crate as C          # C.CRATE, C.preset, ... (chapters 06-07)
    from crate_lite.models import CRATE, ViT, preset
"""

from .autoencoder import (
    CRATEMAE,
    CRATEDecoderLayer,
    MAEOutput,
    MaskedAutoencoder,
    ViTMAE,
    evaluate_mae,
    mae_loss,
    masked_mse,
    random_masking,
    ridge_probe,
)
from .crate import (
    CRATE,
    MSSA,
    PRESET_PARAMS,
    PRESETS,
    SDPA_MIN_TOKENS,
    CRATEAlphaLayer,
    CRATEConfig,
    CRATELayer,
    ISTABlock,
    OvercompleteISTABlock,
    alpha_layer_param_count,
    ista_matrix,
    layer_param_count,
    preset,
    vit_layer_param_count,
)
from .language import (
    GPTBlock,
    LanguageModel,
    LMConfig,
    causal_lm_loss,
    evaluate_lm,
    evaluate_mlm,
    generate,
    lm_param_count,
    mask_tokens,
    masked_lm_loss,
    match_dim,
    next_token_loss,
)
from .official import load_official_state_dict, official_keys, to_official_state_dict
from .parts import (
    Backbone,
    ClassifierHead,
    ImageEmbedding,
    Intermediates,
    PatchEmbedding,
    Pool,
    TokenEmbedding,
    causal_mask,
    check_mask,
    image_classifier_parts,
    padding_mask,
    patchify,
    unpatchify,
)
from .tost import TSSA, ToST, ToSTConfig, ToSTLayer, tost_layer_param_count, tssa_step, variational_rate
from .vit import ViT, ViTLayer

__all__ = [
    "Backbone",
    "CRATE",
    "CRATEAlphaLayer",
    "CRATEDecoderLayer",
    "CRATEMAE",
    "CRATEConfig",
    "CRATELayer",
    "ClassifierHead",
    "GPTBlock",
    "ISTABlock",
    "ImageEmbedding",
    "Intermediates",
    "LMConfig",
    "LanguageModel",
    "MAEOutput",
    "MSSA",
    "MaskedAutoencoder",
    "OvercompleteISTABlock",
    "PRESETS",
    "PRESET_PARAMS",
    "PatchEmbedding",
    "Pool",
    "SDPA_MIN_TOKENS",
    "TSSA",
    "ToST",
    "ToSTConfig",
    "ToSTLayer",
    "TokenEmbedding",
    "ViT",
    "ViTLayer",
    "ViTMAE",
    "alpha_layer_param_count",
    "causal_lm_loss",
    "causal_mask",
    "check_mask",
    "evaluate_lm",
    "evaluate_mae",
    "evaluate_mlm",
    "generate",
    "image_classifier_parts",
    "ista_matrix",
    "layer_param_count",
    "lm_param_count",
    "load_official_state_dict",
    "mae_loss",
    "mask_tokens",
    "masked_lm_loss",
    "masked_mse",
    "match_dim",
    "next_token_loss",
    "official_keys",
    "padding_mask",
    "patchify",
    "preset",
    "random_masking",
    "ridge_probe",
    "to_official_state_dict",
    "tost_layer_param_count",
    "tssa_step",
    "unpatchify",
    "variational_rate",
    "vit_layer_param_count",
]
