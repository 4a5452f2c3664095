"""Tiny random models of every supported MoE family, built from configs offline."""

from __future__ import annotations

import torch
from transformers import (DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM,
                          MixtralConfig, MixtralForCausalLM, OlmoeConfig, OlmoeForCausalLM, Qwen2MoeConfig,
                          Qwen2MoeForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

COMMON = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
              max_position_embeddings=64, pad_token_id=0, bos_token_id=0, eos_token_id=0)


def _olmoe():
    return OlmoeForCausalLM(OlmoeConfig(**COMMON, intermediate_size=16, num_experts=8, num_experts_per_tok=2))


def _qwen2_moe():
    return Qwen2MoeForCausalLM(Qwen2MoeConfig(**COMMON, intermediate_size=48, moe_intermediate_size=16,
                                              shared_expert_intermediate_size=24, num_experts=8,
                                              num_experts_per_tok=2, norm_topk_prob=True))


def _qwen3_moe():
    return Qwen3MoeForCausalLM(Qwen3MoeConfig(**COMMON, head_dim=16, intermediate_size=48, moe_intermediate_size=16,
                                              num_experts=8, num_experts_per_tok=2))


def _mixtral():
    return MixtralForCausalLM(MixtralConfig(**COMMON, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2))


def _deepseek_v2():
    return DeepseekV2ForCausalLM(DeepseekV2Config(
        **COMMON, intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, first_k_dense_replace=1, n_group=4, topk_group=2, topk_method="group_limited_greedy",
        kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        routed_scaling_factor=1.5))


def _deepseek_v3():
    return DeepseekV3ForCausalLM(DeepseekV3Config(
        **COMMON, intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, first_k_dense_replace=1, n_group=4, topk_group=2, norm_topk_prob=True,
        kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        routed_scaling_factor=2.5))


BUILDERS = {"olmoe": _olmoe, "qwen2_moe": _qwen2_moe, "qwen3_moe": _qwen3_moe, "mixtral": _mixtral,
            "deepseek_v2": _deepseek_v2, "deepseek_v3": _deepseek_v3}


def build(family: str, seed: int = 0):
    """A tiny random model of `family` whose routers give non-trivial, varied decisions."""
    torch.manual_seed(seed)
    model = BUILDERS[family]().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gate.weight") and param.dim() == 2 and param.shape[0] == 8:
                param.normal_(0, 1.0)
            elif param.dim() == 3:
                param.normal_(0, 0.2)
        for module in model.modules():
            bias = getattr(module, "e_score_correction_bias", None)
            if bias is not None:
                bias.copy_(torch.randn(bias.shape) * 0.1)
    return model


REMOTE_CODE = __import__("pathlib").Path(__file__).parent / "remote_deepseek_moe"


def deepseek_moe_folder(folder):
    """A checkpoint folder in the form of DeepSeek-MoE-16B: remote code + config with auto_map + safetensors."""
    import json
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    for source in REMOTE_CODE.glob("*.py"):
        shutil.copy(source, folder / source.name)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "deepseek", "architectures": ["DeepseekForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekConfig",
                     "AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM"}}))
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def _deepseek_moe():
    import tempfile
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory(prefix="romer-deepseek-") as temporary:
        return AutoModelForCausalLM.from_pretrained(deepseek_moe_folder(Path(temporary)), trust_remote_code=True)


BUILDERS["deepseek"] = _deepseek_moe
