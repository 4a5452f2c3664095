"""A small replica of DeepSeek-MoE-16B's remote-code configuration (model_type `deepseek`), for offline tests."""

from transformers import PretrainedConfig


class DeepseekConfig(PretrainedConfig):
    model_type = "deepseek"

    def __init__(self, vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                 num_hidden_layers=3, n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=2,
                 first_k_dense_replace=1, norm_topk_prob=False, scoring_func="softmax", aux_loss_alpha=0.001,
                 seq_aux=True, rms_norm_eps=1e-6, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.moe_intermediate_size = moe_intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.n_shared_experts = n_shared_experts
        self.n_routed_experts = n_routed_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.first_k_dense_replace = first_k_dense_replace
        self.norm_topk_prob = norm_topk_prob
        self.scoring_func = scoring_func
        self.aux_loss_alpha = aux_loss_alpha
        self.seq_aux = seq_aux
        self.rms_norm_eps = rms_norm_eps
        super().__init__(**kwargs)
