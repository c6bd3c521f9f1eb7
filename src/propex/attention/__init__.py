"""Attention-based explanations (``attention``, ``attention_rollout``, ``attention_flow``,
``grad_attention``), the attention capture behind them, rollout / max-flow on raw matrices, the
ViT patch-map helper and models whose attention is faithful or unfaithful by construction.
See ``docs/attention.md``."""
from .capture import AttentionMaps, capture_attention
from .graph import attention_flow, max_flow, residual_attention, rollout
from .methods import AttentionFlow, AttentionMethod, AttentionRollout, GradAttention, RawAttention
from .rankings import attention_rankings
from .vit import patch_map

__all__ = [
    "RawAttention", "AttentionRollout", "AttentionFlow", "GradAttention", "AttentionMethod",
    "AttentionMaps", "capture_attention", "rollout", "residual_attention", "attention_flow", "max_flow",
    "patch_map", "attention_rankings",
]
