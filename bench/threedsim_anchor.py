"""romer's bill against IBM's 3D-CiM LLM inference simulator (Büchel et al., Nat. Comput. Sci. 2025), same inputs.

    python bench/threedsim_anchor.py --simulator /path/to/3D-CiM-LLM-Inference-Simulator/src

Runs the simulator's README example as published (a decoder-only transformer of 3 layers, d_model 512, d_ff 2048,
vocabulary 1,024, one sequence generated from 1 to 12 tokens without a KV cache, tiers of 512×512 at its default
100 ns and 10 nJ per MVM) and prints its MVM energy (`energy_breakdown["tier_linear"]`) and the MVMs it scheduled
per module. Then prices the same matrices with romer's `3d-cim` preset (`romer.cost.price`): every projection used
once per token pass, the token embedding one tier per token (a one-hot MVM), the output head once per generated
token; without a KV cache the simulator runs the whole prefix again at every step, 1 + 2 + ... + 11 = 66 token
passes. Prints both and their ratio. Only the analog MVM energy is compared: the simulator's total adds its passive
power, digital units at 10 nJ per vector and a placeholder for attention (1 nJ), which romer prices otherwise.
"""

from __future__ import annotations

import argparse
import sys

from romer.cost import MatrixUse, Usage, get_chip_cost, price

LAYERS, D_MODEL, D_FF, VOCAB, START, TARGET = 3, 512, 2048, 1024, 1, 12


def romer_mvm_energy_nj() -> dict:
    cost = get_chip_cost("3d-cim")
    matrices = []
    for layer in range(LAYERS):
        for name, out_features, in_features in (("q", D_MODEL, D_MODEL), ("k", D_MODEL, D_MODEL),
                                                ("v", D_MODEL, D_MODEL), ("o", D_MODEL, D_MODEL),
                                                ("ffn1", D_FF, D_MODEL), ("ffn2", D_MODEL, D_FF)):
            matrices.append(MatrixUse(f"layers.{layer}.{name}", layer, "attention" if len(name) == 1 else "dense_mlp",
                                      out_features, in_features, (out_features, in_features), (1.0,), (0,), (False,)))
    per_pass = price(Usage(matrices=matrices, layers=LAYERS, moe_layers=0, hidden=D_MODEL), cost, context=0).analog_nj
    passes = sum(range(START, TARGET))          # the prefix run again at every generated token
    steps = TARGET - START
    embedding = passes * cost.mvm_energy_nj(D_MODEL, cost.tile_rows)  # one tier of the stacked table per token
    head = steps * cost.mvm_energy_nj(VOCAB, D_MODEL)
    return {"token_passes": passes, "per_pass_nj": per_pass, "embedding_nj": embedding, "head_nj": head,
            "mvm_energy_nj": passes * per_pass + embedding + head}


def simulator_mvm_energy_nj(source: str) -> dict:
    sys.path.insert(0, source)
    import re
    from collections import Counter

    from threedsim.accelerator import Accelerator, AcceleratorConfig
    from threedsim.graph.processing import get_op_info
    from threedsim.inference import fast_trace_decoder, schedule_execution
    from threedsim.mapping import Mapper, MapStrategy, Strategy
    from threedsim.models import DecoderOnlyTransformer
    from threedsim.modules import TransformerDecoderLayer
    from threedsim.modules.base import assign_acc, fill_name_fields, make_traceable, make_use_linear

    accelerator = Accelerator(AcceleratorConfig(tiles=100, tiers=1024, tier_shape=(512, 512), kv_caching=False),
                              device="meta")
    model = DecoderOnlyTransformer(TransformerDecoderLayer, num_layers=LAYERS,
                                   decoder_layer_kwargs={"d_model": D_MODEL, "nhead": 8, "dim_feedforward": D_FF},
                                   embedding_layer_kwargs={"vocab_size": VOCAB, "embedding_dim": D_MODEL,
                                                           "max_seq_length": TARGET}, device="meta")
    assign_acc(model, accelerator)
    Mapper(accelerator=accelerator, model=model, map_strategy=MapStrategy(
        strategy=Strategy.GREEDY_IN_ORDER, split_ffn=True, stack_embedding=True)).map_network()
    fill_name_fields(model)
    make_traceable(model, is_traceable=True)
    make_use_linear(model, use_linear=True)
    traced = fast_trace_decoder(model, start_len=START, target_len=TARGET, bsz=1)
    counts = Counter(re.sub(r"\d+", "#", str(get_op_info(n).get("layer_name")))
                     for n in traced.graph.nodes if "tier_linear" in n.name)
    _, _, _, energy, _, breakdown, _ = schedule_execution(traced.graph, accelerator=model.accelerator,
                                                          copy_and_cleanup_graph=False, communication=True)
    return {"mvm_energy_nj": breakdown["tier_linear"], "total_energy_nj": energy, "mvms": dict(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulator", required=True, help="the simulator's src folder (a checkout of "
                        "IBM/3D-CiM-LLM-Inference-Simulator)")
    args = parser.parse_args()
    theirs, ours = simulator_mvm_energy_nj(args.simulator), romer_mvm_energy_nj()
    print(f"simulator: MVM energy {theirs['mvm_energy_nj']:,.0f} nJ (total {theirs['total_energy_nj']:,.0f} nJ), "
          f"MVMs per module: {theirs['mvms']}")
    print(f"romer 3d-cim: {ours['token_passes']} token passes × {ours['per_pass_nj']:,.0f} nJ + embedding "
          f"{ours['embedding_nj']:,.0f} nJ + head {ours['head_nj']:,.0f} nJ = {ours['mvm_energy_nj']:,.0f} nJ")
    print(f"ratio romer / simulator: {ours['mvm_energy_nj'] / theirs['mvm_energy_nj']:.4f}")


if __name__ == "__main__":
    main()
